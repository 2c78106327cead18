//! The API behind API Gateway: the sample HTTP API events in `events/api/` (payload format
//! 2.0) go through `lambda_http`'s request conversion into the router, and the answers back
//! through its response conversion, the way `lambda_http::run` (see `main.rs`) does it.
//!
//! Ids that only exist at test time are written `{{name}}` in the files and substituted here.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::StatusCode;
use flowgate_shared::model::RunStatus;
use lambda_http::lambda_runtime::{Context, LambdaEvent};
use lambda_http::request::{LambdaRequest, RequestOrigin};
use lambda_http::{Body, IntoResponse as _};
use serde_json::{Value, json};
use support::{TWO_STEPS, TestApi};
use tower::ServiceExt;

const UNDOABLE: &str = r#"
id: undoable
inputs:
  task: {type: string, required: true}
steps:
  - id: change
    kind: agent
    workflow: implement
    message: "Change: ${{ inputs.task }}"
    compensate:
      kind: agent
      workflow: fix
      message: "Undo the change to ${{ inputs.task }}"
"#;

const SESSION: &str = "events-session";

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events/api")
}

/// The event file's text with the `{{name}}` placeholders filled in.
fn event_text(file: &str, ids: &[(&str, &str)]) -> String {
    let path = events_dir().join(file);
    let mut text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    for (name, value) in ids {
        text = text.replace(&format!("{{{{{name}}}}}"), value);
    }
    let left = text
        .match_indices("{{")
        .find(|(at, _)| text[at + 2..].starts_with(|c: char| c.is_ascii_lowercase()));
    assert!(left.is_none(), "{file}: a placeholder is not filled in");
    text
}

/// Parse an event the way the Lambda runtime does (as `LambdaRequest`), and convert it into
/// the `http::Request` the router gets.
fn request(file: &str, text: &str) -> lambda_http::Request {
    let event: LambdaRequest =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{file} is not an event: {e}"));
    assert!(
        matches!(event.request_origin(), RequestOrigin::ApiGatewayV2),
        "{file} is not an API Gateway v2 event"
    );
    event.into()
}

/// What the router answered, after `lambda_http`'s response conversion.
struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

async fn send(api: &TestApi, file: &str, text: &str) -> Answer {
    let req = request(file, text);
    let res = api.app.clone().oneshot(req).await.expect("infallible");
    // The conversion `lambda_http::run` applies to a handler's answer.
    let res = res.into_response().await;
    let (parts, body) = res.into_parts();
    let html = parts
        .headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    let body = match body {
        Body::Empty => Value::Null,
        Body::Text(text) if text.is_empty() => Value::Null,
        // The dashboard's page: kept as text.
        Body::Text(text) if html => Value::String(text),
        Body::Text(text) => serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{file}: the answer is not JSON ({e}): {text}")),
        other => panic!("{file}: a JSON answer became a binary body: {other:?}"),
    };
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// What one event file must get.
struct Expect {
    file: &'static str,
    status: StatusCode,
    check: fn(&Value, &Ids),
}

struct Ids {
    run: String,
    live: String,
    failed: String,
    rollback: String,
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|item| item[key].as_str().expect("string").to_string())
        .collect()
}

/// Every file in `events/api/`, in the order they are sent (the state they need is made by
/// the ones before: the message goes to the live run before the cancel stops it, the
/// workflow is stored before it is deleted).
fn expectations() -> Vec<Expect> {
    vec![
        Expect {
            file: "healthz.json",
            status: StatusCode::OK,
            check: |b, _| assert_eq!(b["status"], "ok"),
        },
        Expect {
            file: "openapi.json",
            status: StatusCode::OK,
            check: |b, _| {
                assert!(
                    b["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")),
                    "{b}"
                );
                assert!(b["paths"]["/v1/runs/{id}/cancel"]["post"].is_object());
            },
        },
        Expect {
            file: "dashboard.json",
            status: StatusCode::OK,
            check: |b, _| {
                let page = b.as_str().expect("the page as text");
                assert!(page.contains("src=\"/ui/app.js\""), "{page}");
            },
        },
        Expect {
            file: "analytics.json",
            status: StatusCode::OK,
            check: |b, _| {
                // The query arrived: the window and the workflow filter, over the one
                // succeeded two-steps run made before.
                assert_eq!(b["window"], "7d");
                assert_eq!(b["workflow"], "two-steps");
                assert_eq!(b["totals"]["runs"], 1, "{b}");
                assert_eq!(b["totals"]["success_rate"], 1.0, "{b}");
            },
        },
        Expect {
            file: "start-run.json",
            status: StatusCode::ACCEPTED,
            check: |b, _| {
                assert_eq!(b["workflow_id"], "two-steps");
                assert_eq!(b["existing"], false);
            },
        },
        Expect {
            file: "list-runs.json",
            status: StatusCode::OK,
            check: |b, ids| {
                // The filter arrived decoded (`succeeded%2Cfailed`): only the finished run.
                assert_eq!(names(&b["runs"], "id"), [ids.run.as_str()], "{b}");
            },
        },
        Expect {
            file: "get-run.json",
            status: StatusCode::OK,
            check: |b, ids| {
                assert_eq!(b["id"], ids.run.as_str());
                assert_eq!(b["status"], "succeeded");
                assert_eq!(b["inputs"]["task"], "a parser");
            },
        },
        Expect {
            file: "run-events.json",
            status: StatusCode::OK,
            check: |b, _| {
                assert_eq!(names(&b["events"], "kind")[0], "run.started", "{b}");
                assert_eq!(names(&b["events"], "kind").len(), 2);
                assert!(b["next_after"].is_u64(), "{b}");
            },
        },
        Expect {
            file: "send-message.json",
            status: StatusCode::ACCEPTED,
            check: |b, ids| {
                assert_eq!(b["run_id"], ids.live.as_str());
                assert_eq!(b["status"], "running");
            },
        },
        Expect {
            file: "get-session.json",
            status: StatusCode::OK,
            check: |b, ids| {
                assert_eq!(b["name"], SESSION);
                assert_eq!(b["active"], true);
                assert_eq!(b["runs"][0]["run_id"], ids.live.as_str());
            },
        },
        Expect {
            file: "cancel-run.json",
            status: StatusCode::ACCEPTED,
            check: |b, ids| {
                assert_eq!(b["run_id"], ids.live.as_str());
                assert_eq!(b["status"], "cancelled");
            },
        },
        Expect {
            file: "list-sessions.json",
            status: StatusCode::OK,
            check: |b, _| assert_eq!(names(&b["sessions"], "name"), [SESSION]),
        },
        Expect {
            file: "retry-run.json",
            status: StatusCode::ACCEPTED,
            check: |b, ids| {
                assert_eq!(b["run_id"], ids.failed.as_str());
                assert_eq!(b["status"], "running");
            },
        },
        Expect {
            file: "rollback-run.json",
            status: StatusCode::ACCEPTED,
            check: |b, ids| {
                assert_eq!(b["run_id"], ids.rollback.as_str());
                assert_eq!(b["status"], "compensating", "{b}");
            },
        },
        Expect {
            file: "list-workflows.json",
            status: StatusCode::OK,
            check: |b, _| {
                let ids = names(&b["workflows"], "id");
                assert!(ids.contains(&"two-steps".to_string()), "{ids:?}");
            },
        },
        Expect {
            file: "get-workflow.json",
            status: StatusCode::OK,
            check: |b, _| {
                assert_eq!(b["id"], "two-steps");
                assert_eq!(b["version"], 1);
                assert_eq!(b["definition"]["steps"][1]["id"], "build");
            },
        },
        Expect {
            file: "put-workflow.json",
            status: StatusCode::CREATED,
            check: |b, _| {
                assert_eq!(b["id"], "events-demo");
                assert_eq!(b["version"], 1);
            },
        },
        Expect {
            file: "delete-workflow.json",
            status: StatusCode::NO_CONTENT,
            check: |b, _| assert_eq!(*b, Value::Null),
        },
        Expect {
            file: "validate-workflow.json",
            status: StatusCode::OK,
            check: |b, _| {
                // The base64 body was decoded and read as YAML: the one problem is the
                // misspelt agent workflow, found by the strict check.
                assert_eq!(b["strict"], true);
                assert_eq!(b["valid"], false);
                assert_eq!(names(&b["problems"], "path"), ["steps[0].workflow"], "{b}");
            },
        },
        Expect {
            file: "agent-workflows.json",
            status: StatusCode::OK,
            check: |b, _| {
                let names = names(&b["workflows"], "name");
                assert!(names.contains(&"architect".to_string()), "{names:?}");
            },
        },
        Expect {
            file: "bad-missing-key.json",
            status: StatusCode::UNAUTHORIZED,
            check: |b, _| assert_eq!(b["error"]["code"], "unauthorized"),
        },
        Expect {
            file: "bad-malformed-json.json",
            status: StatusCode::BAD_REQUEST,
            check: |b, _| assert_eq!(b["error"]["code"], "invalid_json"),
        },
        Expect {
            file: "bad-unknown-route.json",
            status: StatusCode::NOT_FOUND,
            check: |b, _| assert_eq!(b["error"]["code"], "route_not_found"),
        },
    ]
}

async fn start(api: &TestApi, body: Value) -> String {
    let started = api.call("POST", "/v1/runs", Some(body)).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{:?}", started.body);
    started.body["run_id"].as_str().expect("run_id").to_string()
}

/// A succeeded run, a failed one, a live one with a session, and a finished run with a
/// compensation to roll back.
async fn runs(api: &TestApi) -> Ids {
    assert_eq!(
        api.put_yaml("two-steps", TWO_STEPS).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        api.put_yaml("undoable", UNDOABLE).await.status,
        StatusCode::CREATED
    );
    let run = start(
        api,
        json!({"workflow": "two-steps", "inputs": {"task": "a parser"}}),
    )
    .await;
    assert_eq!(api.pump_to_end(&run).await.status, RunStatus::Succeeded);
    let failed = start(api, json!({"workflow": "architect", "message": "x [fail]"})).await;
    assert_eq!(api.pump_to_end(&failed).await.status, RunStatus::Failed);
    let rollback = start(
        api,
        json!({"workflow": "undoable", "inputs": {"task": "the lexer"}}),
    )
    .await;
    assert_eq!(
        api.pump_to_end(&rollback).await.status,
        RunStatus::Succeeded
    );
    let live = start(
        api,
        json!({"workflow": "architect", "message": "go on [timeout]", "session_name": SESSION}),
    )
    .await;
    api.pump_until(&live, Duration::from_secs(10), |r| {
        r.steps["architect"]
            .agent
            .as_ref()
            .is_some_and(|a| a.session_id.is_some())
    })
    .await;
    Ids {
        run,
        live,
        failed,
        rollback,
    }
}

fn placeholders(ids: &Ids) -> [(&'static str, &str); 4] {
    [
        ("run_id", ids.run.as_str()),
        ("live_run_id", ids.live.as_str()),
        ("failed_run_id", ids.failed.as_str()),
        ("rollback_run_id", ids.rollback.as_str()),
    ]
}

#[tokio::test]
async fn every_sample_event_gets_its_answer_through_lambda_http() {
    let api = TestApi::start().await;
    let ids = runs(&api).await;
    let expectations = expectations();

    let on_disk: BTreeSet<String> = std::fs::read_dir(events_dir())
        .expect("events/api")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    let expected: BTreeSet<String> = expectations.iter().map(|e| e.file.to_string()).collect();
    assert_eq!(on_disk, expected, "every event file has one expectation");

    for expect in &expectations {
        let text = event_text(expect.file, &placeholders(&ids));
        let answer = send(&api, expect.file, &text).await;
        assert_eq!(
            answer.status, expect.status,
            "{}: {:#}",
            expect.file, answer.body
        );
        if answer.status != StatusCode::NO_CONTENT {
            let content_type = match expect.file {
                "dashboard.json" => "text/html; charset=utf-8",
                _ => "application/json",
            };
            assert_eq!(
                answer.headers["content-type"], content_type,
                "{}",
                expect.file
            );
        }
        (expect.check)(&answer.body, &ids);
    }

    // The start event carries an Idempotency-Key header: sent again, it names the same run.
    let text = event_text("start-run.json", &[]);
    let again = send(&api, "start-run.json", &text).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body["existing"], true, "{:#}", again.body);
    let runs = api
        .call("GET", "/v1/runs?workflow=two-steps&status=running", None)
        .await;
    assert_eq!(
        names(&runs.body["runs"], "id"),
        [again.body["run_id"].as_str().unwrap()]
    );
    let deleted = api.call("GET", "/v1/workflows/events-demo", None).await;
    assert_eq!(deleted.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_request_keeps_method_path_query_headers_and_decoded_body() {
    let text = event_text("validate-workflow.json", &[]);
    let req = request("validate-workflow.json", &text);
    assert_eq!(req.method(), "POST");
    assert_eq!(req.uri().path(), "/v1/workflows/validate");
    assert_eq!(req.uri().query(), Some("strict=true"));
    assert_eq!(req.headers()["x-api-key"], support::KEY);
    assert_eq!(req.headers()["content-type"], "application/yaml");
    let Body::Binary(bytes) = req.body() else {
        panic!("a base64 body is binary: {:?}", req.body());
    };
    let yaml = std::str::from_utf8(bytes).expect("utf-8");
    assert!(yaml.starts_with("id: review-loop\n"), "{yaml}");
    assert_eq!(
        req.headers()["content-length"],
        bytes.len().to_string().as_str()
    );

    let text = event_text("list-workflows.json", &[]);
    let req = request("list-workflows.json", &text);
    assert_eq!(
        req.headers()["authorization"],
        format!("Bearer {}", support::KEY).as_str()
    );
    let text = event_text("healthz.json", &[]);
    let req = request("healthz.json", &text);
    assert_eq!(req.headers()["cookie"], "theme=dark");
}

/// The whole path `lambda_http::run` takes: the event as the runtime hands it over, through
/// `lambda_http`'s adapter around the router, to the response document API Gateway reads.
/// (`Adapter` is public but hidden from the docs; it is what `run` wraps the router in.)
#[tokio::test]
async fn the_adapter_lambda_http_run_uses_answers_in_the_api_gateway_v2_format() {
    let api = TestApi::start().await;
    api.put_yaml("two-steps", TWO_STEPS).await;
    let adapter = lambda_http::Adapter::from(api.app.clone());
    for (file, status) in [
        ("start-run.json", 202),
        ("bad-malformed-json.json", 400),
        ("bad-missing-key.json", 401),
    ] {
        let event: LambdaRequest = serde_json::from_str(&event_text(file, &[])).expect("event");
        let res = adapter
            .clone()
            .oneshot(LambdaEvent::new(event, Context::default()))
            .await
            .expect("infallible");
        let doc = serde_json::to_value(&res).expect("response document");
        assert_eq!(doc["statusCode"], status, "{file}: {doc:#}");
        assert_eq!(doc["isBase64Encoded"], false, "{file}: {doc:#}");
        assert_eq!(
            doc["headers"]["content-type"], "application/json",
            "{file}: {doc:#}"
        );
        let body: Value = serde_json::from_str(doc["body"].as_str().expect("text body"))
            .unwrap_or_else(|e| panic!("{file}: body is not JSON ({e}): {doc:#}"));
        if status == 202 {
            let run_id = body["run_id"].as_str().expect("run_id");
            assert_eq!(doc["headers"]["location"], format!("/v1/runs/{run_id}"));
        } else {
            assert!(body["error"]["code"].is_string(), "{file}: {body:#}");
        }
    }
}

/// The dashboard's page and a script through the adapter: text bodies (not base64) with their
/// Content-Security-Policy, which API Gateway passes to the browser unchanged.
#[tokio::test]
async fn the_dashboard_reaches_api_gateway_as_text_with_its_policy() {
    let api = TestApi::start().await;
    let adapter = lambda_http::Adapter::from(api.app.clone());
    for (path, content_type, marker) in [
        ("/", "text/html; charset=utf-8", "<!doctype html>"),
        ("/ui/app.js", "text/javascript; charset=utf-8", "x-api-key"),
    ] {
        let mut event: Value =
            serde_json::from_str(&event_text("dashboard.json", &[])).expect("event JSON");
        event["rawPath"] = json!(path);
        event["requestContext"]["http"]["path"] = json!(path);
        let event: LambdaRequest = serde_json::from_value(event).expect("event");
        let res = adapter
            .clone()
            .oneshot(LambdaEvent::new(event, Context::default()))
            .await
            .expect("infallible");
        let doc = serde_json::to_value(&res).expect("response document");
        assert_eq!(doc["statusCode"], 200, "{path}: {doc:#}");
        assert_eq!(doc["isBase64Encoded"], false, "{path}");
        assert_eq!(doc["headers"]["content-type"], content_type, "{path}");
        assert!(
            doc["headers"]["content-security-policy"]
                .as_str()
                .is_some_and(|p| p.starts_with("default-src 'self'")),
            "{path}: {doc:#}"
        );
        assert!(
            doc["body"].as_str().is_some_and(|b| b.contains(marker)),
            "{path}"
        );
    }
}

/// Deployment trap (see `events/README.md`): on a named stage `lambda_http` keeps the stage in
/// the path, and the router has no `/prod/...` routes.
#[tokio::test]
async fn a_named_stage_is_part_of_the_path_the_router_sees() {
    let mut event: Value =
        serde_json::from_str(&event_text("healthz.json", &[])).expect("event JSON");
    event["rawPath"] = json!("/prod/healthz");
    event["requestContext"]["stage"] = json!("prod");
    event["requestContext"]["http"]["path"] = json!("/prod/healthz");
    let text = event.to_string();
    assert_eq!(request("healthz.json", &text).uri().path(), "/prod/healthz");
    let api = TestApi::start().await;
    let answer = send(&api, "healthz.json", &text).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.body["error"]["code"], "route_not_found");
}
