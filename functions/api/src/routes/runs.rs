//! `/v1/runs`: start, list, read, audit log, and the run commands.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use flowgate_shared::api::{
    CancelRequest, CommandResponse, ErrorBody, EventList, EventView, IDEMPOTENCY_KEY_HEADER,
    ListRunsParams, MessageRequest, RetryRequest, RollbackRequest, RunDetail, RunLinks, RunList,
    StartRunRequest, StartRunResponse,
};
use flowgate_shared::engine::Event;
use flowgate_shared::model::RunStatus;
use flowgate_shared::ports::{MAX_PAGE_SIZE, RunQuery, RunSort, SortOrder};
use flowgate_shared::runtime::{CommandError, ExecError, NewRun, create_run, observe_live};
use serde::Deserialize;
use serde_json::Value;
use tracing::info;

use super::{Path, Query};
use crate::Services;
use crate::auth::Principal;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::views;

use super::workflows::workflow_for_start;

/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 200;
/// Longest feedback message (characters).
const MAX_MESSAGE_CHARS: usize = 100_000;
/// Most audit entries one `GET /v1/runs/{id}/events` returns.
const MAX_EVENTS_PAGE: usize = 1_000;

/// Start a run of a stored workflow, or of one of the agent service's workflows by name (a
/// one-step run). Answers at once; the run proceeds in the background.
#[utoipa::path(
    post,
    path = "/v1/runs",
    tag = "runs",
    request_body = StartRunRequest,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Retrying with the same key returns the first run instead of starting another")),
    responses(
        (status = 202, description = "The run was created and will start (`queued` when the workflow's concurrency limit is reached: it starts when a slot frees)", body = StartRunResponse),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Unknown workflow, invalid inputs or unknown session", body = ErrorBody),
        (status = 429, description = "The workflow's concurrency limit is reached and it refuses more (`when_full: reject`); retry later", body = ErrorBody),
        (status = 503, description = "The store or the agent service is unavailable; retry", body = ErrorBody),
    )
)]
pub(crate) async fn start_run(
    State(s): State<Services>,
    Principal(principal): Principal,
    headers: HeaderMap,
    JsonBody(req): JsonBody<StartRunRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let idempotency_key = idempotency_key(&headers, &principal)?;
    if req.workflow.trim().is_empty() {
        return Err(
            ApiError::unprocessable("invalid_request", "workflow must not be empty")
                .with_field("workflow"),
        );
    }
    if req.max_turns == Some(0) {
        return Err(
            ApiError::unprocessable("invalid_request", "max_turns must be at least 1")
                .with_field("max_turns"),
        );
    }
    let mut inputs = req.inputs.clone();
    for (name, value) in [
        ("message", &req.message),
        ("repository_url", &req.repository_url),
        ("git_branch", &req.git_branch),
    ] {
        let Some(value) = value else { continue };
        match inputs.get(name) {
            Some(existing) if existing != &Value::from(value.as_str()) => {
                return Err(ApiError::unprocessable(
                    "invalid_request",
                    format!("{name} is given twice (as a field and in inputs) with different values; give it once"),
                )
                .with_field(name));
            }
            _ => {
                inputs.insert(name.to_string(), Value::from(value.as_str()));
            }
        }
    }
    let new = NewRun {
        workflow_id: req.workflow.clone(),
        inputs,
        idempotency_key,
        started_by: Some(principal.clone()),
        session_name: req.session_name,
        continue_session: req.continue_session,
        max_turns: req.max_turns,
        ..NewRun::default()
    };
    let (stored, checked) = workflow_for_start(&s, new).await?;
    let started = create_run(
        s.store.as_ref(),
        s.queue.as_ref(),
        s.notifier.webhooks().records().as_ref(),
        s.clock.now_ms(),
        &stored,
        checked,
    )
    .await?;
    info!(run_id = %started.run_id, workflow_id = %req.workflow, principal = %principal, existing = started.existing, "run accepted");
    let links = RunLinks::for_run(&started.run_id);
    let location = links.self_.clone();
    let body = StartRunResponse {
        run_id: started.run_id,
        workflow_id: req.workflow,
        workflow_version: started.workflow_version,
        existing: started.existing,
        queued: started.queued,
        links,
    };
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(body),
    ))
}

/// The idempotency key, scoped to the caller so two callers' keys never collide.
fn idempotency_key(headers: &HeaderMap, principal: &str) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = |why: &str| {
        ApiError::bad_request("invalid_header", format!("Idempotency-Key {why}"))
            .with_field("Idempotency-Key")
    };
    if values.next().is_some() {
        return Err(bad("is sent more than once; send one"));
    }
    let key = value
        .to_str()
        .map_err(|_| bad("must be printable ASCII"))?
        .trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(bad(&format!(
            "must be 1..={MAX_IDEMPOTENCY_KEY} characters"
        )));
    }
    Ok(Some(format!("{principal}:{key}")))
}

/// List runs: filter by workflow, status and creation time; sort; page with a cursor.
#[utoipa::path(
    get,
    path = "/v1/runs",
    tag = "runs",
    params(ListRunsParams),
    responses(
        (status = 200, description = "One page of runs", body = RunList),
        (status = 400, description = "Bad filter, sort, page size or cursor", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
    )
)]
pub(crate) async fn list_runs(
    State(s): State<Services>,
    _: Principal,
    Query(params): Query<ListRunsParams>,
) -> Result<Json<RunList>, ApiError> {
    let query = run_query(params)?;
    let page = s.store.list_runs(&query).await?;
    Ok(Json(RunList {
        runs: page.runs.iter().map(views::run_summary).collect(),
        next_cursor: page.next_cursor,
    }))
}

fn run_query(p: ListRunsParams) -> Result<RunQuery, ApiError> {
    let bad = |field: &'static str, message: String| {
        ApiError::bad_request("invalid_query", message).with_field(field)
    };
    let statuses = match p.status.as_deref() {
        None | Some("") => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|s| s.trim().parse::<RunStatus>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("status", e.to_string()))?,
    };
    let sort = match p.sort.as_deref() {
        None | Some("started_at") => RunSort::StartedAt,
        Some("completed_at") => RunSort::CompletedAt,
        Some("duration") => RunSort::Duration,
        Some("cost") => RunSort::Cost,
        Some(other) => {
            return Err(bad(
                "sort",
                format!("unknown sort {other:?}; use started_at, completed_at, duration or cost"),
            ));
        }
    };
    let order = match p.order.as_deref() {
        None | Some("desc") => SortOrder::Desc,
        Some("asc") => SortOrder::Asc,
        Some(other) => {
            return Err(bad(
                "order",
                format!("unknown order {other:?}; use asc or desc"),
            ));
        }
    };
    let limit = p.limit.unwrap_or(20);
    if limit == 0 || limit > MAX_PAGE_SIZE {
        return Err(bad(
            "limit",
            format!("limit must be 1..={MAX_PAGE_SIZE}, got {limit}"),
        ));
    }
    if let (Some(from), Some(to)) = (p.from, p.to)
        && from > to
    {
        return Err(bad("from", format!("from ({from}) is after to ({to})")));
    }
    Ok(RunQuery {
        workflow_id: p.workflow.filter(|w| !w.is_empty()),
        statuses,
        created_from: p.from,
        created_to: p.to,
        sort,
        order,
        limit,
        cursor: p.cursor.filter(|c| !c.is_empty()),
    })
}

/// A run: status, per-step progress (turns, tokens, cost; read live from the agent service for
/// running agent steps), timings, outputs, open approvals.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}",
    tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run", body = RunDetail),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
    )
)]
pub(crate) async fn get_run(
    State(s): State<Services>,
    _: Principal,
    Path(id): Path<String>,
) -> Result<Json<RunDetail>, ApiError> {
    let run = s
        .store
        .get_run(&id)
        .await?
        .ok_or_else(|| ApiError::run_not_found(&id))?;
    // Pinned versions never change: the executor's definition cache answers most reads.
    let def = match s.executor.definition(&run).await {
        Ok(def) => Some(def),
        Err(ExecError::MissingWorkflow { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    // Progress is recorded every few minutes; whoever reads one run sees it as of now.
    let live = match def.as_deref() {
        Some(def) => observe_live(&*s.agent, &run, def).await,
        None => Default::default(),
    };
    Ok(Json(views::run_detail_live(
        &run,
        def.as_deref(),
        &live,
        s.clock.now_ms(),
    )))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsParams {
    /// Only entries after this sequence number (the `next_after` of the previous page).
    after: Option<u64>,
    /// Page size, 1..=1000 (default 100).
    limit: Option<usize>,
}

/// The run's audit log, oldest first.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}/events",
    tag = "runs",
    params(("id" = String, Path, description = "Run id"), EventsParams),
    responses(
        (status = 200, description = "Audit entries", body = EventList),
        (status = 400, description = "Bad paging parameters", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
    )
)]
pub(crate) async fn run_events(
    State(s): State<Services>,
    _: Principal,
    Path(id): Path<String>,
    Query(params): Query<EventsParams>,
) -> Result<Json<EventList>, ApiError> {
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_EVENTS_PAGE {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1..={MAX_EVENTS_PAGE}, got {limit}"),
        )
        .with_field("limit"));
    }
    if s.store.get_run(&id).await?.is_none() {
        return Err(ApiError::run_not_found(&id));
    }
    let events = s.store.audit(&id, params.after, limit).await?;
    let next_after = (events.len() == limit)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    Ok(Json(EventList {
        events: events.into_iter().map(EventView::from).collect(),
        next_after,
    }))
}

/// Apply a command and answer 202 with the run's new status.
async fn command(
    s: &Services,
    id: &str,
    event: Event,
) -> Result<(StatusCode, Json<CommandResponse>), ApiError> {
    let executor = Arc::clone(&s.executor);
    let run = executor.command(id, event).await.map_err(|e| match e {
        CommandError::NotFound(id) => ApiError::run_not_found(&id),
        CommandError::Rejected(r) => r.into(),
        CommandError::Exec(e) => e.into(),
    })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(CommandResponse {
            run_id: run.id.clone(),
            status: run.status,
            links: RunLinks::for_run(&run.id),
        }),
    ))
}

/// Cancel a run: running agent steps are asked to stop (or killed at once with `force`), open
/// approvals are closed.
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/cancel",
    tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    request_body(content = CancelRequest, description = "Optional; an empty body cancels gracefully"),
    responses(
        (status = 202, description = "Cancellation recorded", body = CommandResponse),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "The run has already finished", body = ErrorBody),
        (status = 422, description = "Invalid body", body = ErrorBody),
    )
)]
pub(crate) async fn cancel_run(
    State(s): State<Services>,
    Principal(by): Principal,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<CancelRequest>,
) -> Result<impl IntoResponse, ApiError> {
    command(
        &s,
        &id,
        Event::CancelRequested {
            by,
            reason: req.reason,
            force: req.force,
        },
    )
    .await
}

/// Send feedback into a running agent step (the running one unless `step` names it).
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/messages",
    tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    request_body = MessageRequest,
    responses(
        (status = 202, description = "Feedback recorded and passed to the agent", body = CommandResponse),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "No running agent step to send to", body = ErrorBody),
        (status = 422, description = "Invalid body or unknown step", body = ErrorBody),
    )
)]
pub(crate) async fn send_message(
    State(s): State<Services>,
    Principal(by): Principal,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<MessageRequest>,
) -> Result<impl IntoResponse, ApiError> {
    if req.content.trim().is_empty() {
        return Err(
            ApiError::unprocessable("invalid_request", "content must not be empty")
                .with_field("content"),
        );
    }
    if req.content.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ApiError::unprocessable(
            "invalid_request",
            format!("content is longer than {MAX_MESSAGE_CHARS} characters"),
        )
        .with_field("content"));
    }
    command(
        &s,
        &id,
        Event::FeedbackSent {
            step: req.step,
            by,
            content: req.content,
            message_type: req.kind.as_str().to_string(),
        },
    )
    .await
}

/// Resume a failed, cancelled or timed-out run from its failed steps (or from `from_step`),
/// keeping the steps that finished.
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/retry",
    tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    request_body(content = RetryRequest, description = "Optional"),
    responses(
        (status = 202, description = "Retry recorded", body = CommandResponse),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "The run is not in a retryable state", body = ErrorBody),
        (status = 422, description = "Invalid body or unknown step", body = ErrorBody),
    )
)]
pub(crate) async fn retry_run(
    State(s): State<Services>,
    Principal(by): Principal,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RetryRequest>,
) -> Result<impl IntoResponse, ApiError> {
    command(
        &s,
        &id,
        Event::RetryRequested {
            by,
            from_step: req.from_step,
        },
    )
    .await
    .map_err(|e| match e.code {
        // The step is named by the request's `from_step`.
        "unknown_step" => e.with_field("from_step"),
        _ => e,
    })
}

/// Run the compensations of finished steps, newest first.
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/rollback",
    tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    request_body(content = RollbackRequest, description = "Optional"),
    responses(
        (status = 202, description = "Rollback recorded", body = CommandResponse),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "Nothing to roll back, or the run is still active", body = ErrorBody),
        (status = 422, description = "Invalid body", body = ErrorBody),
    )
)]
pub(crate) async fn rollback_run(
    State(s): State<Services>,
    Principal(by): Principal,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RollbackRequest>,
) -> Result<impl IntoResponse, ApiError> {
    command(
        &s,
        &id,
        Event::RollbackRequested {
            by,
            reason: req.reason,
        },
    )
    .await
}
