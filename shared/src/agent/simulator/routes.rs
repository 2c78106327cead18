//! The simulator's HTTP surface: the agent service's paths, auth, status codes and error
//! `detail`s (FastAPI/pydantic shapes), per `docs/upstream-agent-api.md` §2-§6.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use reqwest::Url;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::state::{KillCall, ListFilter, NewRun, ReceivedMessage, kill_method};
use super::{Fault, Shared, WorkflowEntry};
use crate::agent::client::API_KEY_HEADER;
use crate::model::AgentRunStatus;

/// The API's base path.
pub const BASE: &str = "/api/v1/workflows/claude-code";

/// Paths the service's `APIKeyMiddleware` lets through without a key (exact matches).
const OPEN_PATHS: [&str; 6] = [
    "/health",
    "/",
    "/api/v1/docs",
    "/api/v1/redoc",
    "/api/v1/openapi.json",
    "/api/v1/mcp/health",
];

const MISSING_KEY: &str = "API key is missing. Provide via x-api-key header, query parameter, or Authorization: Bearer header";
const INVALID_KEY: &str = "Invalid API Key";

pub fn router(shared: Arc<Shared>) -> Router {
    let path = |rest: &str| format!("{BASE}{rest}");
    Router::new()
        .route(&path("/run/{workflow_name}"), post(start_run))
        .route(&path("/run/{run_id}/status"), get(run_status))
        .route(&path("/runs"), get(list_runs))
        .route(&path("/run/{run_id}/kill"), post(kill_run))
        .route(&path("/run/{run_id}/cleanup"), post(cleanup_run))
        .route(&path("/run/{run_id}/add-message"), post(add_message))
        .route(&path("/run/{run_id}/message-queue"), get(message_queue))
        .route(&path("/health"), get(agent_health))
        .route(
            &path("/manage"),
            get(list_workflows)
                .post(create_workflow)
                .put(update_workflow)
                .delete(delete_workflow),
        )
        .route("/health", get(root_health))
        .route("/", get(root))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

// ---------------------------------------------------------------------------------------------
// Responses

fn detail(status: StatusCode, text: impl Into<String>) -> Response {
    (status, Json(json!({ "detail": text.into() }))).into_response()
}

fn unprocessable(errors: Vec<Value>) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({ "detail": errors })),
    )
        .into_response()
}

fn ok(body: Value) -> Response {
    (StatusCode::OK, Json(body)).into_response()
}

async fn not_found() -> Response {
    detail(StatusCode::NOT_FOUND, "Not Found")
}

async fn method_not_allowed() -> Response {
    detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

// ---------------------------------------------------------------------------------------------
// Auth, request counting and injected faults

/// The service's `APIKeyMiddleware`: header `x-api-key`, else query `x-api-key`, else
/// `Authorization: Bearer`. Then the test's injected faults for API paths.
async fn gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let open = request.method() == Method::OPTIONS || OPEN_PATHS.contains(&path.as_str());
    if !open {
        let headers = request.headers();
        let key = headers
            .get(API_KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| query_map(request.uri()).remove("x-api-key"))
            .or_else(|| {
                headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_string)
            });
        match key {
            None => return detail(StatusCode::UNAUTHORIZED, MISSING_KEY),
            Some(key) if key.is_empty() => return detail(StatusCode::UNAUTHORIZED, MISSING_KEY),
            Some(key) if key != shared.api_key => {
                return detail(StatusCode::UNAUTHORIZED, INVALID_KEY);
            }
            Some(_) => {}
        }
    }
    let fault = {
        let mut state = shared.lock();
        state.requests += 1;
        if path.starts_with(BASE) {
            state.faults.pop_front()
        } else {
            None
        }
    };
    match fault {
        Some(Fault::Status(code)) => detail(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            format!("Simulated fault: the test asked for HTTP {code}"),
        ),
        Some(Fault::Delay(delay)) => {
            // The request is processed, then the answer is held back: what a client that
            // times out sees from a slow service that still acted.
            let response = next.run(request).await;
            tokio::time::sleep(delay).await;
            response
        }
        None => next.run(request).await,
    }
}

// ---------------------------------------------------------------------------------------------
// Query and body validation, in pydantic v2's shapes

fn query_map(uri: &Uri) -> HashMap<String, String> {
    let Some(query) = uri.query() else {
        return HashMap::new();
    };
    match Url::parse(&format!("http://simulator/?{query}")) {
        Ok(url) => url.query_pairs().into_owned().collect(),
        Err(_) => HashMap::new(),
    }
}

fn error(kind: &str, loc: &[&str], msg: &str, input: Value, ctx: Option<Value>) -> Value {
    let mut e = json!({ "type": kind, "loc": loc, "msg": msg, "input": input });
    if let (Some(ctx), Some(obj)) = (ctx, e.as_object_mut()) {
        obj.insert("ctx".into(), ctx);
    }
    e
}

fn missing(loc: &[&str], input: Value) -> Value {
    error("missing", loc, "Field required", input, None)
}

/// Pydantic's lax boolean (`true/false/1/0/yes/no/on/off/t/f/y/n`).
/// The `?force=` flag of kill and cleanup (default false), or the validation errors for the
/// service's 422 answer.
fn force_query(uri: &Uri) -> Result<bool, Vec<Value>> {
    let mut errors = Vec::new();
    let force = query_bool(&query_map(uri), "force", false, &mut errors);
    if errors.is_empty() {
        Ok(force)
    } else {
        Err(errors)
    }
}

fn query_bool(
    q: &HashMap<String, String>,
    name: &str,
    default: bool,
    errors: &mut Vec<Value>,
) -> bool {
    let Some(raw) = q.get(name) else {
        return default;
    };
    match raw.to_ascii_lowercase().as_str() {
        "1" | "true" | "t" | "yes" | "y" | "on" => true,
        "0" | "false" | "f" | "no" | "n" | "off" => false,
        _ => {
            errors.push(error(
                "bool_parsing",
                &["query", name],
                "Input should be a valid boolean, unable to interpret input",
                json!(raw),
                None,
            ));
            default
        }
    }
}

fn query_int(
    q: &HashMap<String, String>,
    name: &str,
    default: i64,
    errors: &mut Vec<Value>,
) -> i64 {
    let Some(raw) = q.get(name) else {
        return default;
    };
    match raw.trim().parse::<i64>() {
        Ok(n) => n,
        Err(_) => {
            errors.push(error(
                "int_parsing",
                &["query", name],
                "Input should be a valid integer, unable to parse string as an integer",
                json!(raw),
                None,
            ));
            default
        }
    }
}

/// Reads a JSON body as an object, or records why not (`missing`, `json_invalid`,
/// `model_attributes_type`).
fn body_object(body: &Bytes, errors: &mut Vec<Value>) -> Option<Map<String, Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        errors.push(missing(&["body"], Value::Null));
        return None;
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Some(map),
        Ok(other) => {
            errors.push(error(
                "model_attributes_type",
                &["body"],
                "Input should be a valid dictionary or object to extract fields from",
                other,
                None,
            ));
            None
        }
        Err(e) => {
            let position = body_position(body, e.line(), e.column());
            let mut err = error(
                "json_invalid",
                &["body"],
                "JSON decode error",
                json!({}),
                Some(json!({ "error": "Expecting value" })),
            );
            if let Some(loc) = err.get_mut("loc").and_then(Value::as_array_mut) {
                loc.push(json!(position));
            }
            errors.push(err);
            None
        }
    }
}

fn body_position(body: &[u8], line: usize, column: usize) -> usize {
    let text = String::from_utf8_lossy(body);
    let before: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(|l| l.chars().count())
        .sum();
    before + column.saturating_sub(1)
}

/// `str | None`.
fn opt_string(map: &Map<String, Value>, name: &str, errors: &mut Vec<Value>) -> Option<String> {
    match map.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            errors.push(error(
                "string_type",
                &["body", name],
                "Input should be a valid string",
                other.clone(),
                None,
            ));
            None
        }
    }
}

/// A lax pydantic integer: ints, integral floats and numeric strings.
fn lax_int(value: &Value, loc: &[&str], errors: &mut Vec<Value>) -> Option<i64> {
    let fail = |kind: &str, msg: &str, errors: &mut Vec<Value>| {
        errors.push(error(kind, loc, msg, value.clone(), None));
        None
    };
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(i)
            } else if let Some(f) = n.as_f64() {
                if f.fract() == 0.0 && f.abs() < 9.0e18 {
                    Some(f as i64)
                } else {
                    fail(
                        "int_from_float",
                        "Input should be a valid integer, got a number with a fractional part",
                        errors,
                    )
                }
            } else {
                Some(i64::MAX)
            }
        }
        Value::String(s) => match s.trim().parse::<i64>() {
            Ok(i) => Some(i),
            Err(_) => fail(
                "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer",
                errors,
            ),
        },
        _ => fail("int_type", "Input should be a valid integer", errors),
    }
}

fn bounded(
    value: i64,
    loc: &[&str],
    min: i64,
    max: i64,
    input: &Value,
    errors: &mut Vec<Value>,
) -> bool {
    if value < min {
        errors.push(error(
            "greater_than_equal",
            loc,
            &format!("Input should be greater than or equal to {min}"),
            input.clone(),
            Some(json!({ "ge": min })),
        ));
        false
    } else if value > max {
        errors.push(error(
            "less_than_equal",
            loc,
            &format!("Input should be less than or equal to {max}"),
            input.clone(),
            Some(json!({ "le": max })),
        ));
        false
    } else {
        true
    }
}

/// Python's repr of a list of strings: `['brain', 'builder']`.
fn python_list(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    format!("[{}]", quoted.join(", "))
}

// ---------------------------------------------------------------------------------------------
// Runs

async fn start_run(
    State(shared): State<Arc<Shared>>,
    Path(workflow): Path<String>,
    uri: Uri,
    body: Bytes,
) -> Response {
    let now = Instant::now();
    let q = query_map(&uri);
    let mut errors = Vec::new();
    let persistent = query_bool(&q, "persistent", true, &mut errors);
    let auto_merge = query_bool(&q, "auto_merge", false, &mut errors);
    let temp_workspace = query_bool(&q, "temp_workspace", false, &mut errors);
    let map = body_object(&body, &mut errors);
    let mut new = None;
    if let Some(map) = &map {
        let message = match map.get("message") {
            None => {
                errors.push(missing(&["body", "message"], Value::Object(map.clone())));
                None
            }
            Some(_) => opt_string(map, "message", &mut errors).or_else(|| {
                if map.get("message") == Some(&Value::Null) {
                    errors.push(error(
                        "string_type",
                        &["body", "message"],
                        "Input should be a valid string",
                        Value::Null,
                        None,
                    ));
                }
                None
            }),
        };
        let max_turns = match map.get("max_turns") {
            None | Some(Value::Null) => None,
            Some(v) => lax_int(v, &["body", "max_turns"], &mut errors)
                .filter(|n| bounded(*n, &["body", "max_turns"], 1, 200, v, &mut errors))
                .map(|n| n as u32),
        };
        let timeout = match map.get("timeout") {
            None => Some(7200),
            Some(v) => lax_int(v, &["body", "timeout"], &mut errors)
                .filter(|n| bounded(*n, &["body", "timeout"], 60, 14400, v, &mut errors)),
        };
        let session_id = opt_string(map, "session_id", &mut errors);
        let session_name = opt_string(map, "session_name", &mut errors);
        let user_id = opt_string(map, "user_id", &mut errors);
        let git_branch = opt_string(map, "git_branch", &mut errors);
        let repository_url = opt_string(map, "repository_url", &mut errors);
        let input_format = opt_string(map, "input_format", &mut errors);
        if let (Some(message), Some(timeout)) = (message, timeout) {
            new = Some(NewRun {
                workflow: workflow.clone(),
                message,
                max_turns,
                session_id,
                session_name,
                user_id,
                git_branch,
                repository_url,
                timeout,
                input_format,
                persistent,
                body: Value::Object(map.clone()),
            });
        }
    }
    let mut state = shared.lock();
    state.start_requests += 1;
    if !errors.is_empty() {
        return unprocessable(errors);
    }
    let Some(new) = new else {
        return unprocessable(vec![missing(&["body"], Value::Null)]);
    };
    if temp_workspace && (new.repository_url.is_some() || new.git_branch.is_some() || auto_merge) {
        return detail(
            StatusCode::BAD_REQUEST,
            "temp_workspace cannot be used with: repository_url, git_branch, auto_merge. \
             Temporary workspaces are isolated environments without git integration.",
        );
    }
    if !state.workflows.contains_key(&workflow) {
        let names: Vec<String> = state.workflows.keys().cloned().collect();
        return detail(
            StatusCode::NOT_FOUND,
            format!(
                "Workflow '{workflow}' not found. Available: {}",
                python_list(&names)
            ),
        );
    }
    let response_session = new
        .session_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let started_at = state.wall(now);
    if state.failed_starts > 0 {
        // Quirk 9: setup threw inside the route; the 409 is turned into a 200 "failed".
        state.failed_starts -= 1;
        let run_id = uuid::Uuid::new_v4().to_string();
        return ok(json!({
            "run_id": run_id,
            "status": "failed",
            "message": format!(
                "Failed to start {workflow} workflow: 409: Task for run_id {run_id} is already running"
            ),
            "session_id": response_session,
            "workflow_name": workflow,
            "started_at": started_at,
            "auto_commit_sha": Value::Null,
        }));
    }
    let run = state.create(new, now);
    ok(json!({
        "run_id": run.run_id,
        "status": "pending",
        "message": format!("Started {workflow} workflow. Use the status endpoint to track progress."),
        "session_id": response_session,
        "workflow_name": workflow,
        "started_at": started_at,
        "auto_commit_sha": Value::Null,
    }))
}

async fn run_status(
    State(shared): State<Arc<Shared>>,
    Path(run_id): Path<String>,
    uri: Uri,
) -> Response {
    let now = Instant::now();
    let q = query_map(&uri);
    let mut errors = Vec::new();
    let debug = query_bool(&q, "debug", false, &mut errors);
    if !errors.is_empty() {
        return unprocessable(errors);
    }
    let mut state = shared.lock();
    if state.refresh(&run_id, now).is_none() {
        return detail(StatusCode::NOT_FOUND, format!("Run {run_id} not found"));
    }
    let state = &*state;
    match state.runs.get(&run_id) {
        Some(run) => ok(run.status_json(state, now, debug)),
        None => detail(StatusCode::NOT_FOUND, format!("Run {run_id} not found")),
    }
}

async fn list_runs(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let now = Instant::now();
    let q = query_map(&uri);
    let mut errors = Vec::new();
    let page = query_int(&q, "page", 1, &mut errors);
    let page_size = query_int(&q, "page_size", 20, &mut errors);
    if !errors.is_empty() {
        return unprocessable(errors);
    }
    if page < 1 {
        return detail(StatusCode::BAD_REQUEST, "Page must be >= 1");
    }
    if !(1..=100).contains(&page_size) {
        return detail(
            StatusCode::BAD_REQUEST,
            "Page size must be between 1 and 100",
        );
    }
    let sort_by = q.get("sort_by").map_or("started_at", String::as_str);
    if !["started_at", "completed_at", "execution_time", "total_cost"].contains(&sort_by) {
        return detail(StatusCode::BAD_REQUEST, "Invalid sort_by field");
    }
    let sort_order = q.get("sort_order").map_or("desc", String::as_str);
    if !["asc", "desc"].contains(&sort_order) {
        return detail(
            StatusCode::BAD_REQUEST,
            "Sort order must be 'asc' or 'desc'",
        );
    }
    let status = match q.get("status").map(String::as_str) {
        None => None,
        Some("timeout") => Some("failed"),
        Some(s @ ("pending" | "running" | "completed" | "failed")) => Some(s),
        Some(_) => return detail(StatusCode::BAD_REQUEST, "Invalid status filter"),
    };
    let mut state = shared.lock();
    state.refresh_all(now);
    let state = &*state;
    let runs = state.sorted_runs(&ListFilter {
        workflow: q.get("workflow_name").map(String::as_str),
        status,
        user_id: q.get("user_id").map(String::as_str),
        sort_by,
        desc: sort_order == "desc",
    });
    let total = runs.len() as i64;
    let skip = usize::try_from((page - 1).saturating_mul(page_size)).unwrap_or(usize::MAX);
    let items: Vec<Value> = runs
        .into_iter()
        .skip(skip)
        .take(page_size as usize)
        .map(|run| run.summary_json(state, now))
        .collect();
    ok(json!({
        "runs": items,
        "total_count": total,
        "page": page,
        "page_size": page_size,
        "has_next": page.saturating_mul(page_size) < total,
    }))
}

async fn kill_run(
    State(shared): State<Arc<Shared>>,
    Path(run_id): Path<String>,
    uri: Uri,
) -> Response {
    let now = Instant::now();
    let force = match force_query(&uri) {
        Ok(force) => force,
        Err(errors) => return unprocessable(errors),
    };
    let mut state = shared.lock();
    let killed_at = state.wall(now);
    let Some(run) = state.refresh(&run_id, now) else {
        return detail(StatusCode::NOT_FOUND, format!("Run {run_id} not found"));
    };
    let status_before = run.status;
    let active = !status_before.is_terminal();
    let duration_ms: u64 = match (active, force) {
        (false, _) => 3,
        (true, true) => 118,
        (true, false) => 2034,
    };
    let success = run.kill(force, now, killed_at.clone(), duration_ms);
    let workflow = run.workflow.clone();
    state.kill_calls.push(KillCall {
        run_id: run_id.clone(),
        force,
        status_before,
    });
    let how = if force {
        "force killed"
    } else {
        "gracefully terminated"
    };
    ok(json!({
        "success": success,
        "run_id": run_id,
        "workflow_name": workflow,
        "killed_at": killed_at,
        "kill_method": kill_method(force),
        "kill_duration_ms": duration_ms,
        "cleanup_status": {
            "session_updated": true,
            "audit_logged": true,
            "process_terminated": success,
        },
        "message": format!("Workflow {workflow} ({how}) in {:.2}s", duration_ms as f64 / 1000.0),
    }))
}

async fn cleanup_run(
    State(shared): State<Arc<Shared>>,
    Path(run_id): Path<String>,
    uri: Uri,
) -> Response {
    let now = Instant::now();
    let force = match force_query(&uri) {
        Ok(force) => force,
        Err(errors) => return unprocessable(errors),
    };
    let mut state = shared.lock();
    let cleanup_time = state.wall(now);
    let Some(run) = state.refresh(&run_id, now) else {
        return detail(
            StatusCode::NOT_FOUND,
            format!("Workflow run not found: {run_id}"),
        );
    };
    let active = !run.status.is_terminal();
    if active && !force {
        return detail(
            StatusCode::BAD_REQUEST,
            format!(
                "Workflow is still {}. Use force=true to cleanup anyway.",
                run.status
            ),
        );
    }
    let (removed, path) = run.cleanup();
    ok(json!({
        "success": removed,
        "run_id": run_id,
        "workflow_name": run.workflow,
        "cleanup_time": cleanup_time,
        "cleanup_duration_ms": 12,
        "cleanup_details": {
            "workspace_removed": removed,
            "temp_files_removed": removed,
            "git_worktree_removed": removed,
            "process_cleaned": active,
            "workspace_path": path,
            "errors": [],
        },
        "message": if removed {
            "Workspace cleanup completed successfully"
        } else {
            "No workspace to clean up"
        },
    }))
}

async fn add_message(
    State(shared): State<Arc<Shared>>,
    Path(run_id): Path<String>,
    body: Bytes,
) -> Response {
    let now = Instant::now();
    let mut errors = Vec::new();
    let map = body_object(&body, &mut errors);
    let mut fields = None;
    if let Some(map) = &map {
        let mut field = |name: &str| match map.get(name) {
            None => {
                errors.push(missing(&["body", name], Value::Null));
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                errors.push(error(
                    "string_type",
                    &["body", name],
                    "Input should be a valid string",
                    other.clone(),
                    None,
                ));
                None
            }
        };
        let message_type = field("message_type");
        let content = field("content");
        if let (Some(t), Some(c)) = (message_type, content) {
            fields = Some((t, c));
        }
    }
    if !errors.is_empty() {
        return unprocessable(errors);
    }
    let Some((message_type, content)) = fields else {
        return unprocessable(vec![missing(&["body", "message_type"], Value::Null)]);
    };
    if !["user", "system"].contains(&message_type.as_str()) {
        return detail(
            StatusCode::BAD_REQUEST,
            "message_type must be 'user' or 'system'",
        );
    }
    if content.trim().is_empty() {
        return detail(StatusCode::BAD_REQUEST, "content cannot be empty");
    }
    let mut state = shared.lock();
    let tick = state.config.tick;
    let Some(run) = state.refresh(&run_id, now) else {
        return detail(
            StatusCode::NOT_FOUND,
            format!("Workflow run {run_id} not found"),
        );
    };
    if !matches!(
        run.status,
        AgentRunStatus::Pending | AgentRunStatus::Running
    ) {
        return detail(
            StatusCode::BAD_REQUEST,
            format!("Cannot add messages to workflow in {} state", run.status),
        );
    }
    run.add_message(
        ReceivedMessage {
            message_type,
            content,
        },
        now,
    );
    let stats = run.queue_stats(now, tick);
    ok(json!({
        "success": true,
        "message": "Message added to queue",
        "queue_size": stats.get("current_size").cloned().unwrap_or(json!(0)),
        "run_id": run_id,
        "queue_stats": stats,
    }))
}

async fn message_queue(State(shared): State<Arc<Shared>>, Path(run_id): Path<String>) -> Response {
    let now = Instant::now();
    let mut state = shared.lock();
    let tick = state.config.tick;
    match state.refresh(&run_id, now) {
        Some(run) if run.has_queue() => ok(json!({
            "success": true,
            "run_id": run_id,
            "queue_stats": run.queue_stats(now, tick),
        })),
        _ => detail(
            StatusCode::NOT_FOUND,
            format!("No message queue found for workflow {run_id}"),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Health and workflow management

async fn agent_health(State(shared): State<Arc<Shared>>) -> Response {
    let now = Instant::now();
    let state = shared.lock();
    let workflows: Map<String, Value> = state
        .workflows
        .keys()
        .map(|name| (name.clone(), json!(true)))
        .collect();
    let status = state.health_status.clone();
    let mut body = json!({
        "status": status,
        "timestamp": state.wall(now),
        "agent_available": status != "disabled" && status != "error",
        "workflows": workflows,
        "container_manager": false,
        "feature_enabled": status != "disabled",
        "claude_cli_path": "/usr/local/bin/claude",
    });
    if status != "healthy"
        && let Some(obj) = body.as_object_mut()
    {
        obj.insert(
            "message".into(),
            json!(format!(
                "Simulated agent health set to {status} by the test"
            )),
        );
    }
    ok(body)
}

async fn root_health(State(shared): State<Arc<Shared>>) -> Response {
    let state = shared.lock();
    ok(json!({
        "status": "healthy",
        "timestamp": state.wall(Instant::now()),
        "version": concat!("flowgate-simulator-", env!("CARGO_PKG_VERSION")),
        "environment": "simulator",
    }))
}

async fn root() -> Response {
    ok(json!({
        "name": "Automagik Agents (Flowgate simulator)",
        "status": "online",
        "docs": "/api/v1/docs",
    }))
}

async fn list_workflows(State(shared): State<Arc<Shared>>) -> Response {
    let state = shared.lock();
    let items: Vec<Value> = state
        .workflows
        .values()
        .map(WorkflowEntry::to_json)
        .collect();
    ok(Value::Array(items))
}

/// The reference page gives the `/manage` write shapes but not their error texts; these
/// follow the route's wording style.
async fn create_workflow(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    upsert_workflow(shared, body, false)
}

async fn update_workflow(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    upsert_workflow(shared, body, true)
}

fn upsert_workflow(shared: Arc<Shared>, body: Bytes, update: bool) -> Response {
    let mut errors = Vec::new();
    let Some(map) = body_object(&body, &mut errors) else {
        return unprocessable(errors);
    };
    for required in ["name", "prompt_template"] {
        if !map.contains_key(required) {
            errors.push(missing(&["body", required], Value::Object(map.clone())));
        }
    }
    let name = opt_string(&map, "name", &mut errors).unwrap_or_default();
    if !errors.is_empty() {
        return unprocessable(errors);
    }
    let mut state = shared.lock();
    let existing = state.workflows.get(&name).map(|w| w.system);
    match (update, existing) {
        (_, Some(true)) => {
            return detail(
                StatusCode::BAD_REQUEST,
                format!("Cannot modify system workflow '{name}'"),
            );
        }
        (true, None) => {
            return detail(
                StatusCode::NOT_FOUND,
                format!("Workflow '{name}' not found"),
            );
        }
        (false, Some(false)) => {
            return detail(
                StatusCode::BAD_REQUEST,
                format!("Workflow '{name}' already exists"),
            );
        }
        _ => {}
    }
    let entry = WorkflowEntry::custom(&name, &map);
    let workflow = entry.to_json();
    state.workflows.insert(name.clone(), entry);
    let verb = if update { "updated" } else { "created" };
    ok(json!({
        "success": true,
        "message": format!("Workflow '{name}' {verb} successfully"),
        "workflow": workflow,
    }))
}

async fn delete_workflow(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let q = query_map(&uri);
    let Some(name) = q.get("name") else {
        return unprocessable(vec![missing(&["query", "name"], Value::Null)]);
    };
    let mut state = shared.lock();
    match state.workflows.get(name).map(|w| w.system) {
        None => detail(
            StatusCode::NOT_FOUND,
            format!("Workflow '{name}' not found"),
        ),
        Some(true) => detail(
            StatusCode::BAD_REQUEST,
            format!("Cannot delete system workflow '{name}'"),
        ),
        Some(false) => {
            state.workflows.remove(name);
            ok(json!({
                "success": true,
                "message": format!("Workflow '{name}' deleted successfully"),
            }))
        }
    }
}
