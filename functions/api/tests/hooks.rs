//! Inbound webhook triggers, `POST /hooks/{trigger_id}`: the GitHub fixtures in
//! `events/triggers/` go through `lambda_http`'s request conversion into
//! [`flowgate_api::hooks_app`] (the triggers function's router); Standard Webhooks and
//! shared-secret triggers, and the refusals, are sent as plain requests.
//!
//! GitHub's published test vector G1 is checked against the verifier itself in
//! `shared/tests/signing.rs` (`g1_signs_and_verifies`); here it goes through the route.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{Request, StatusCode};
use flowgate_api::{ApiKeys, HookSecrets, Services};
use flowgate_shared::agent::{AgentClient, AgentClientConfig};
use flowgate_shared::model::RunStatus;
use flowgate_shared::notify::config::NotifyConfig;
use flowgate_shared::ports::{RecordStore, RunQuery, RunStore};
use flowgate_shared::runtime::{Clock, ManualClock, SystemClock};
use flowgate_shared::signing::{WebhookSecret, sign_github, sign_standard};
use http_body_util::BodyExt;
use lambda_http::request::LambdaRequest;
use serde_json::{Value, json};
use support::{KEY, PRINCIPAL, TestApi, TestOptions};
use tower::ServiceExt;

/// The secret the GitHub fixtures are signed with.
const GITHUB_SECRET: &str = "flowgate-test-hook-secret";
/// The labeled fixture's `x-github-delivery`.
const LABELED_DELIVERY: &str = "9f1c4a2e-0873-11ef-8e3c-5b2d7f0a91c4";
/// GitHub's test vector G1 (docs: "Validating webhook deliveries").
const G1_SECRET: &str = "It's a Secret to Everybody";
const G1_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
/// A Standard Webhooks secret (the spec's example).
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SHARED: &str = "correct-horse-battery-staple";

/// Only `issues` events labeled `agent`, with the issue and repository as inputs.
const ISSUE_AGENT: &str = r#"
id: issue-agent
description: An agent takes issues labeled "agent"
inputs:
  title: {type: string, required: true}
  body: {type: string, default: ""}
  repository_url: {type: string, required: true}
  issue: {type: integer, required: true}
steps:
  - id: fix
    kind: agent
    workflow: implement
    message: "Fix issue #${{ inputs.issue }}: ${{ inputs.title }}\n\n${{ inputs.body }}"
    repository_url: "${{ inputs.repository_url }}"
triggers:
  - type: webhook
    id: gh-issues
    verify: github
    filter:
      header:x-github-event: issues
      /action: labeled
      /label/name: agent
    inputs:
      title: /issue/title
      body: /issue/body
      repository_url: /repository/clone_url
      issue: /issue/number
  - type: webhook
    id: g1
    verify: github
    inputs:
      title: /title
      repository_url: /repo
      issue: /n
  - type: webhook
    id: unconfigured
    verify: github
    inputs:
      title: /title
      repository_url: /repo
      issue: /n
"#;

/// A Standard Webhooks trigger and a shared-secret one (its secret in `x-deploy-token`).
const CI_FIX: &str = r#"
id: ci-fix
inputs:
  branch: {type: string, required: true}
  source: {type: string}
steps:
  - id: fix
    kind: agent
    workflow: implement
    message: "Make ${{ inputs.branch }} green"
triggers:
  - type: webhook
    id: ci-red
    verify: standard_webhooks
    filter:
      /event: pipeline.failed
    inputs:
      branch: /pipeline/branch
  - type: webhook
    id: deploy
    verify: shared_secret
    inputs:
      branch: /branch
      source: header:user-agent
"#;

fn secrets() -> String {
    format!(
        "gh-issues={GITHUB_SECRET},g1={G1_SECRET},ci-red={WHSEC},deploy@x-deploy-token={SHARED}"
    )
}

/// A fixture from `events/triggers/`, converted the way the Lambda runtime converts it.
fn event(file: &str) -> lambda_http::Request {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/triggers")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let request: LambdaRequest = serde_json::from_str(&text).unwrap();
    request.into()
}

/// The fixture's body, as sent.
fn event_body(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/triggers")
        .join(file);
    let event: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    event["body"].as_str().unwrap().to_string()
}

async fn send<B>(app: &Router, request: Request<B>) -> (StatusCode, Value)
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, body)
}

fn post(path: &str, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Request<Body> {
    let mut req = Request::post(path).header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Body::from(body.into())).unwrap()
}

/// The triggers function's router over the test API's store and queue.
fn hooks_app(api: &TestApi, hooks: &str, clock: Arc<dyn Clock>) -> Router {
    let agent = AgentClient::new(
        &api.sim.base_url,
        &api.sim.api_key,
        AgentClientConfig::default(),
    )
    .unwrap();
    flowgate_api::hooks_app(Services {
        store: api.store.clone(),
        workflows: api.store.clone(),
        queue: api.queue.clone(),
        executor: api.executor.clone(),
        agent: Arc::new(agent),
        clock,
        keys: Arc::new(ApiKeys::single(PRINCIPAL, KEY)),
        notifier: Arc::new(NotifyConfig::default().build(api.store.clone()).unwrap()),
        approvals: Arc::default(),
        hooks: Arc::new(HookSecrets::parse(hooks).unwrap()),
        scheduler: None,
    })
}

async fn world() -> (TestApi, Router) {
    let api = TestApi::start().await;
    for (id, yaml) in [("issue-agent", ISSUE_AGENT), ("ci-fix", CI_FIX)] {
        let put = api.put_yaml(id, yaml).await;
        assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);
    }
    let app = hooks_app(&api, &secrets(), Arc::new(SystemClock));
    (api, app)
}

async fn runs(api: &TestApi) -> Vec<flowgate_shared::model::Run> {
    api.store
        .list_runs(&RunQuery {
            limit: 100,
            ..RunQuery::default()
        })
        .await
        .unwrap()
        .runs
}

async fn deliveries(api: &TestApi, trigger: &str) -> Vec<(String, Value)> {
    api.store
        .list_records(&format!("hook-deliveries.{trigger}"), None, 100)
        .await
        .unwrap()
}

#[tokio::test]
async fn github_labeled_issue_starts_one_run_with_inputs_from_the_payload() {
    let (api, app) = world().await;

    let (status, body) = send(&app, event("github-issues-labeled.json")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["existing"], false, "{body}");
    assert_eq!(body["delivery"], LABELED_DELIVERY);
    assert!(body.get("duplicate").is_none(), "{body}");
    let run_id = body["run_id"].as_str().unwrap().to_string();

    let run = api.store.get_run(&run_id).await.unwrap().unwrap();
    assert_eq!(run.workflow_id, "issue-agent");
    assert_eq!(run.started_by.as_deref(), Some("hook:gh-issues"));
    assert_eq!(
        run.idempotency_key.as_deref(),
        Some(format!("trigger:gh-issues:{LABELED_DELIVERY}").as_str())
    );
    assert_eq!(
        Value::Object(run.inputs.clone()),
        json!({
            "title": "The /healthz endpoint answers 500 when the cache is cold",
            "body": "GET /healthz returns 500 for the first request after a deploy.\n\nExpected: 200 with `{\"status\": \"ok\"}`.",
            "repository_url": "https://github.com/octocat/Hello-World.git",
            "issue": 1347,
        })
    );
    let recorded = deliveries(&api, "gh-issues").await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].0, LABELED_DELIVERY);
    assert_eq!(recorded[0].1["run_id"], run_id.as_str());

    // GitHub redelivers (same delivery id): nothing new starts.
    let before = api.snapshot().await;
    let (status, body) = send(&app, event("github-issues-labeled.json")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["duplicate"], true, "{body}");
    assert_eq!(body["run_id"], run_id.as_str());
    assert_eq!(
        api.snapshot().await,
        before,
        "a repeated delivery writes nothing"
    );
    assert_eq!(runs(&api).await.len(), 1);

    // The run goes on from the queue like any other.
    let done = api.pump_to_end(&run_id).await;
    assert_eq!(done.status, RunStatus::Succeeded, "{done:#?}");
}

#[tokio::test]
async fn filtered_out_and_badly_signed_deliveries_start_nothing() {
    let (api, app) = world().await;
    let before = api.snapshot().await;

    // `opened`, not `labeled`: verified, then ignored.
    let (status, body) = send(&app, event("github-issues-opened.json")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["ignored"], "filtered out", "{body}");
    assert_eq!(body["reason"], r#"/action is "opened", not "labeled""#);
    assert!(body.get("run_id").is_none());

    // The labeled body signed with another secret.
    let (status, body) = send(&app, event("github-bad-signature.json")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "signature_mismatch", "{body}");

    // The right signature over one changed byte, and no signature at all.
    let labeled = event_body("github-issues-labeled.json");
    let signature = sign_github(GITHUB_SECRET.as_bytes(), labeled.as_bytes());
    let tampered = labeled.replace("1347", "1348");
    let headers = [
        ("x-github-event", "issues"),
        ("x-hub-signature-256", signature.as_str()),
    ];
    let (status, body) = send(&app, post("/hooks/gh-issues", &headers, tampered)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "signature_mismatch");
    let (status, body) = send(
        &app,
        post("/hooks/gh-issues", &[("x-github-event", "issues")], labeled),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "missing_header");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-hub-signature-256")
    );

    assert_eq!(api.snapshot().await, before, "nothing was written");
    assert!(deliveries(&api, "gh-issues").await.is_empty());
}

#[tokio::test]
async fn github_vector_g1_verifies_through_the_route() {
    let (api, app) = world().await;
    let before = api.snapshot().await;
    // G1's body is not JSON: verified (not 401), then refused as a payload.
    let (status, body) = send(
        &app,
        post(
            "/hooks/g1",
            &[("x-hub-signature-256", G1_SIG)],
            "Hello, World!",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_json", "{body}");
    let (status, body) = send(
        &app,
        post(
            "/hooks/g1",
            &[("x-hub-signature-256", G1_SIG)],
            "Hello, World!\n",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "signature_mismatch");

    // A signed JSON body with G1's secret starts a run; as a form post (GitHub's other
    // content type) too, verified over the encoded bytes.
    let payload = r#"{"title":"t","repo":"https://example.com/r.git","n":7}"#;
    let signature = sign_github(G1_SECRET.as_bytes(), payload.as_bytes());
    let (status, body) = send(
        &app,
        post("/hooks/g1", &[("x-hub-signature-256", &signature)], payload),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let form = serde_urlencoded::to_string([("payload", payload)]).unwrap();
    let signature = sign_github(G1_SECRET.as_bytes(), form.as_bytes());
    let request = Request::post("/hooks/g1")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-hub-signature-256", &signature)
        .body(Body::from(form))
        .unwrap();
    let (status, body) = send(&app, request).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // No x-github-delivery: dedupe falls back to the body's SHA-256.
    assert!(body["delivery"].as_str().unwrap().starts_with("sha256:"));
    assert_ne!(api.snapshot().await, before);
    assert_eq!(runs(&api).await.len(), 2);
}

#[tokio::test]
async fn standard_webhooks_trigger_accepts_a_good_signature_and_refuses_a_bad_one() {
    let api = TestApi::start().await;
    let put = api.put_yaml("ci-fix", CI_FIX).await;
    assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);
    let clock = Arc::new(ManualClock::starting_now());
    let app = hooks_app(&api, &secrets(), clock.clone());
    let now = clock.now_ms() / 1000;
    let secret = WebhookSecret::parse(WHSEC).unwrap();
    let payload = r#"{"event":"pipeline.failed","pipeline":{"branch":"main","id":42}}"#;
    let signed = |id: &str, at: i64, body: &str| {
        let signature = sign_standard(std::slice::from_ref(&secret), id, at, body.as_bytes());
        post(
            "/hooks/ci-red",
            &[
                ("webhook-id", id),
                ("webhook-timestamp", &at.to_string()),
                ("webhook-signature", &signature),
            ],
            body.to_string(),
        )
    };

    let before = api.snapshot().await;
    let other = WebhookSecret::generate();
    let forged = sign_standard(&[other], "msg_1", now, payload.as_bytes());
    let (status, body) = send(
        &app,
        post(
            "/hooks/ci-red",
            &[
                ("webhook-id", "msg_1"),
                ("webhook-timestamp", &now.to_string()),
                ("webhook-signature", &forged),
            ],
            payload,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "signature_mismatch");
    let (status, body) = send(&app, signed("msg_1", now - 301, payload)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "stale_timestamp");
    assert_eq!(api.snapshot().await, before);

    let (status, body) = send(&app, signed("msg_1", now, payload)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["delivery"], "msg_1");
    let run_id = body["run_id"].as_str().unwrap().to_string();
    let run = api.store.get_run(&run_id).await.unwrap().unwrap();
    assert_eq!(Value::Object(run.inputs), json!({"branch": "main"}));

    // A retry (same webhook-id, new timestamp and signature) starts nothing.
    clock.advance(std::time::Duration::from_secs(30));
    let (status, body) = send(&app, signed("msg_1", now + 30, payload)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["duplicate"], true);
    assert_eq!(body["run_id"], run_id.as_str());

    // Another event passes the signature and is filtered out.
    let (status, body) = send(&app, signed("msg_2", now, r#"{"event":"pipeline.passed"}"#)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["ignored"], "filtered out");
    assert_eq!(runs(&api).await.len(), 1);
}

#[tokio::test]
async fn shared_secret_trigger_reads_its_header_and_compares_exactly() {
    let (api, app) = world().await;
    let before = api.snapshot().await;
    let payload = r#"{"branch":"release/2.1"}"#;
    for (headers, code) in [
        (
            vec![("x-deploy-token", "correct-horse-battery-stapl")],
            "signature_mismatch",
        ),
        (
            vec![("x-deploy-token", "correct-horse-battery-staple!")],
            "signature_mismatch",
        ),
        // The default header is not the configured one.
        (vec![("x-flowgate-secret", SHARED)], "missing_header"),
        (
            vec![("x-deploy-token", SHARED), ("x-deploy-token", SHARED)],
            "duplicate_header",
        ),
    ] {
        let (status, body) = send(&app, post("/hooks/deploy", &headers, payload)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}: {body}");
        assert_eq!(body["error"]["code"], code, "{headers:?}: {body}");
    }
    assert_eq!(api.snapshot().await, before);

    let good = [
        ("x-deploy-token", SHARED),
        ("idempotency-key", "deploy-77"),
        ("user-agent", "deployer/1.0"),
    ];
    let (status, body) = send(&app, post("/hooks/deploy", &good, payload)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["delivery"], "deploy-77");
    let run = api
        .store
        .get_run(body["run_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        Value::Object(run.inputs),
        json!({"branch": "release/2.1", "source": "deployer/1.0"})
    );
    let (status, body) = send(&app, post("/hooks/deploy", &good, payload)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["duplicate"], true);
    assert_eq!(runs(&api).await.len(), 1);
}

#[tokio::test]
async fn unknown_unconfigured_and_unmappable_deliveries_are_refused() {
    let (api, app) = world().await;
    let before = api.snapshot().await;
    let payload = r#"{"title":"t","repo":"https://example.com/r.git","n":7}"#;
    let signature = sign_github(GITHUB_SECRET.as_bytes(), payload.as_bytes());
    let headers = [("x-hub-signature-256", signature.as_str())];

    let (status, body) = send(&app, post("/hooks/no-such-trigger", &headers, payload)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "trigger_not_found");

    // Declared, but FLOWGATE_HOOK_SECRETS has no entry: refused whatever is sent.
    let (status, body) = send(&app, post("/hooks/unconfigured", &headers, payload)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "hook_not_configured");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("FLOWGATE_HOOK_SECRETS"), "{message}");
    assert!(message.contains("unconfigured="), "{message}");

    // A mapped input the payload lacks, and one of the wrong type.
    let sign = |body: &str| sign_github(G1_SECRET.as_bytes(), body.as_bytes());
    let lacking = r#"{"title":"t","repo":"https://example.com/r.git"}"#;
    let sig = sign(lacking);
    let (status, body) = send(
        &app,
        post("/hooks/g1", &[("x-hub-signature-256", &sig)], lacking),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "missing_input");
    assert_eq!(body["error"]["field"], "inputs.issue");
    let mistyped = r#"{"title":"t","repo":"https://example.com/r.git","n":"seven"}"#;
    let sig = sign(mistyped);
    let (status, body) = send(
        &app,
        post("/hooks/g1", &[("x-hub-signature-256", &sig)], mistyped),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_inputs");
    assert_eq!(body["error"]["field"], "inputs.issue");

    assert_eq!(api.snapshot().await, before, "nothing was written");
    assert!(deliveries(&api, "g1").await.is_empty());

    // Two workflows declaring one trigger id: refused until one is renamed.
    let twin = ISSUE_AGENT.replace("id: issue-agent", "id: issue-agent-2");
    let put = api.put_yaml("issue-agent-2", &twin).await;
    assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);
    let (status, body) = send(&app, event("github-issues-labeled.json")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "ambiguous_trigger");
}

#[tokio::test]
async fn a_crash_between_the_delivery_record_and_the_start_is_repaired_by_the_retry() {
    let (api, app) = world().await;
    // The record exists without a run, as if the first attempt stopped right after writing it.
    let created = api
        .store
        .create_record(
            "hook-deliveries.gh-issues",
            LABELED_DELIVERY,
            &json!({"workflow_id": "issue-agent", "received_at": 1}),
            None,
        )
        .await
        .unwrap();
    assert!(created);
    let (status, body) = send(&app, event("github-issues-labeled.json")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let run_id = body["run_id"].as_str().unwrap().to_string();
    assert_eq!(runs(&api).await.len(), 1);
    let (_, record) = deliveries(&api, "gh-issues").await.remove(0);
    assert_eq!(record["run_id"], run_id.as_str());
    let (_, body) = send(&app, event("github-issues-labeled.json")).await;
    assert_eq!(body["run_id"], run_id.as_str());
    assert_eq!(runs(&api).await.len(), 1);
}

#[tokio::test]
async fn the_api_router_serves_hooks_and_definitions_check_header_filters() {
    let api = TestApi::start_with(TestOptions {
        hooks: HookSecrets::parse(&secrets()).unwrap(),
        ..TestOptions::default()
    })
    .await;
    let put = api.put_yaml("issue-agent", ISSUE_AGENT).await;
    assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);
    let (status, body) = send(&api.app, event("github-issues-labeled.json")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(body["run_id"].is_string());

    let bad = ISSUE_AGENT
        .replace("header:x-github-event: issues", "header:x-github-event: 5")
        .replace("/label/name: agent", "label.name: agent");
    let put = api.put_yaml("issue-agent", &bad).await;
    assert_eq!(
        put.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        put.body
    );
    let paths: Vec<&str> = put.body["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "triggers[0].filter.header:x-github-event",
            "triggers[0].filter.label.name"
        ],
        "{:?}",
        put.body
    );
}
