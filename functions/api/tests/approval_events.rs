//! The approvals function behind API Gateway: the sample events in `events/approvals/` go
//! through `lambda_http`'s request conversion (base64 bodies decoded first) into
//! [`flowgate_api::approvals_app`], with the clock pinned to the Slack fixtures' signing time.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use flowgate_api::{ApiKeys, ApprovalSettings, Services};
use flowgate_shared::agent::{AgentClient, AgentClientConfig};
use flowgate_shared::model::ApprovalStatus;
use flowgate_shared::notify::config::NotifyConfig;
use flowgate_shared::ports::RunStore;
use flowgate_shared::runtime::ManualClock;
use lambda_http::request::LambdaRequest;
use lambda_http::{Body, IntoResponse as _};
use serde_json::{Value, json};
use support::{KEY, PRINCIPAL, TestApi};
use tower::ServiceExt;

/// Slack's documented signing secret and timestamp (test vectors S1–S3).
const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SIGNED_AT_MS: i64 = 1_531_420_618_000;

const GATED: &str = r#"
id: gated
steps:
  - id: review
    kind: approval
    message: "Ship it?"
    approvers: [alice, bob]
"#;

fn event(file: &str, ids: &[(&str, &str)]) -> lambda_http::Request {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/approvals")
        .join(file);
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (name, value) in ids {
        text = text.replace(&format!("{{{{{name}}}}}"), value);
    }
    let request: LambdaRequest = serde_json::from_str(&text).unwrap();
    request.into()
}

async fn send(app: &axum::Router, request: lambda_http::Request) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_response().await.into_parts();
    let body = match body {
        Body::Empty => Value::Null,
        Body::Text(t) if t.is_empty() => Value::Null,
        Body::Text(t) => serde_json::from_str(&t).unwrap_or(Value::String(t)),
        Body::Binary(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    (parts.status, body)
}

/// The approvals router over the test API's store and queue, with `clock` and the Slack
/// signing secret, and keys for the starter (alice) and the approver (bob).
fn approvals_app(api: &TestApi, clock: Arc<ManualClock>) -> axum::Router {
    let agent = AgentClient::new(
        &api.sim.base_url,
        &api.sim.api_key,
        AgentClientConfig::default(),
    )
    .unwrap();
    let keys = ApiKeys::from_hashes(&format!(
        "{PRINCIPAL}={},bob={}",
        flowgate_api::hash_key(KEY),
        flowgate_api::hash_key("test-key-bob")
    ))
    .unwrap();
    flowgate_api::approvals_app(Services {
        store: api.store.clone(),
        workflows: api.store.clone(),
        queue: api.queue.clone(),
        executor: api.executor.clone(),
        agent: Arc::new(agent),
        clock,
        keys: Arc::new(keys),
        notifier: Arc::new(NotifyConfig::default().build(api.store.clone()).unwrap()),
        approvals: Arc::new(ApprovalSettings {
            slack_signing_secret: Some(SIGNING_SECRET.as_bytes().to_vec()),
            ..ApprovalSettings::default()
        }),
        hooks: Arc::default(),
        scheduler: None,
    })
}

#[tokio::test]
async fn slack_fixtures_are_verified_over_the_decoded_body_within_the_window() {
    let api = TestApi::start().await;
    let clock = Arc::new(ManualClock::new(SIGNED_AT_MS));
    let app = approvals_app(&api, clock.clone());
    let before = api.snapshot().await;

    // The doc's S3 event: base64 body, lower-case headers. The signature verifies over the
    // decoded bytes; its payload lacks a block id, so it is refused as a payload (400), not as
    // a signature (401).
    let (status, body) = send(&app, event("slack-s3-vector.json", &[])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_ne!(body["error"]["code"], "signature_mismatch");

    // A click on an approval that does not exist: verified, answered 200, nothing written.
    let (status, _) = send(&app, event("slack-block-actions.json", &[])).await;
    assert_eq!(status, StatusCode::OK);

    // The same bytes with a wrong signature, and the right ones 301 s late.
    let (status, body) = send(&app, event("slack-bad-signature.json", &[])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "signature_mismatch", "{body}");
    clock.set(SIGNED_AT_MS + 301_000);
    let (status, body) = send(&app, event("slack-block-actions.json", &[])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "stale_timestamp", "{body}");
    clock.set(SIGNED_AT_MS - 301_000);
    let (status, _) = send(&app, event("slack-block-actions.json", &[])).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a future timestamp is refused too"
    );
    clock.set(SIGNED_AT_MS + 300_000);
    let (status, _) = send(&app, event("slack-block-actions.json", &[])).await;
    assert_eq!(status, StatusCode::OK, "exactly 300 s is inside the window");

    // The store is as it was; the queue holds only the two "no such approval" replies to the
    // clicker (ephemeral Slack messages, delivered from the queue).
    let after = api.snapshot().await;
    let store_part = |s: &str| s.split("queue=").next().unwrap_or_default().to_string();
    assert_eq!(
        store_part(&before),
        store_part(&after),
        "nothing was written"
    );
    assert!(after.ends_with("queue=2"), "{after}");
}

#[tokio::test]
async fn api_key_decision_and_pending_list_fixtures() {
    let api = TestApi::start().await;
    let put = api.put_yaml("gated", GATED).await;
    assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);
    let started = api
        .call("POST", "/v1/runs", Some(json!({"workflow": "gated"})))
        .await;
    let run_id = started.body["run_id"].as_str().unwrap().to_string();
    let run = api
        .pump_until(&run_id, Duration::from_secs(10), |r| {
            r.approvals()
                .any(|(_, a)| a.status == ApprovalStatus::Pending)
        })
        .await;
    let approval_id = run.approvals().next().unwrap().1.id.clone();
    let app = approvals_app(&api, Arc::new(ManualClock::starting_now()));

    let (status, body) = send(&app, event("list-pending.json", &[])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids: Vec<&str> = body["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [approval_id.as_str()]);

    // The fixture carries alice's key: she started the run, so she may not approve it.
    let (status, body) = send(
        &app,
        event("decision-api-key.json", &[("approval_id", &approval_id)]),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "self_approval");
    let unchanged = api.store.get_run(&run_id).await.unwrap().unwrap();
    assert_eq!(
        unchanged.version, run.version,
        "a refused decision writes nothing"
    );

    // With bob's key (an approver) the same request approves.
    let mut request = event("decision-api-key.json", &[("approval_id", &approval_id)]);
    request
        .headers_mut()
        .insert("x-api-key", "test-key-bob".parse().unwrap());
    let (status, body) = send(&app, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["approval"]["status"], "approved");
    assert_eq!(body["by"], "bob");
    assert_eq!(body["approval"]["decisions"][0]["comment"], "ship it");
    let done = api.pump_to_end(&run_id).await;
    assert!(done.status.is_terminal());
}
