//! `GET /v1/analytics` through the router, over runs in the embedded store: the numbers
//! (counts, success rate, p50/p95 duration, turns, cost, approval wait), the window and
//! workflow filters, paging through more runs than one store page, and bad parameters.

mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use flowgate_shared::definition::parse_definition;
use flowgate_shared::model::{
    AgentProgress, ApprovalDecision, ApprovalState, ApprovalStatus, DecisionRecord, Millis, Run,
    RunStatus, StepStatus,
};
use flowgate_shared::ports::RunStore;
use flowgate_shared::runtime::ManualClock;
use serde_json::{Value, json};
use support::{TestApi, TestOptions};

const GATED: &str = r#"
id: gated
steps:
  - {id: build, kind: agent, workflow: implement, message: go, max_turns: 50}
  - {id: ok, kind: approval, depends_on: [build], message: ship it?}
"#;

const MINUTE: Millis = 60_000;
const HOUR: Millis = 60 * MINUTE;
/// The API's clock: a fixed "now", so windows are exact.
const NOW: Millis = 1_800_000_000_000;

async fn api() -> TestApi {
    TestApi::start_with(TestOptions {
        api_clock: Some(Arc::new(ManualClock::new(NOW))),
        ..TestOptions::default()
    })
    .await
}

struct Spec {
    id: String,
    workflow: &'static str,
    status: RunStatus,
    /// How long before NOW the run was created.
    age: Millis,
    duration: Millis,
    turns: u32,
    cost: f64,
    /// The approval's wait until its decision, or `None` for no approval.
    approval_wait: Option<Millis>,
}

async fn store(api: &TestApi, spec: Spec) {
    let def = parse_definition(&GATED.replace("id: gated", &format!("id: {}", spec.workflow)))
        .expect("valid");
    let created = NOW - spec.age;
    let mut run = Run::new(spec.id.as_str(), &def, 1, Default::default(), created);
    run.status = spec.status;
    run.started_at = Some(created);
    if spec.status.is_terminal() {
        run.completed_at = Some(created + spec.duration);
    }
    let build = run.steps.get_mut("build").expect("step");
    build.status = StepStatus::Succeeded;
    build.agent = Some(AgentProgress {
        turns: spec.turns,
        cost_usd: spec.cost,
        ..AgentProgress::default()
    });
    if let Some(wait) = spec.approval_wait {
        run.steps.get_mut("ok").expect("step").approval = Some(ApprovalState {
            id: format!("{}.ok.1", spec.id),
            status: ApprovalStatus::Approved,
            message: "ship it?".into(),
            approvers: vec![],
            required: 1,
            requested_at: created + MINUTE,
            expires_at: None,
            decisions: vec![DecisionRecord {
                by: "bob".into(),
                decision: ApprovalDecision::Approve,
                comment: None,
                at: created + MINUTE + wait,
            }],
            escalated: false,
            kind: Default::default(),
            remind_at: None,
            reminders: 0,
            escalate_at: None,
        });
    }
    api.store.create_run(&run, &[]).await.expect("create run");
}

fn spec(id: &str, status: RunStatus, age: Millis, duration: Millis) -> Spec {
    Spec {
        id: id.to_string(),
        workflow: "gated",
        status,
        age,
        duration,
        turns: 0,
        cost: 0.0,
        approval_wait: None,
    }
}

async fn get(api: &TestApi, uri: &str) -> (StatusCode, Value) {
    let answer = api.call("GET", uri, None).await;
    (answer.status, answer.body)
}

fn stats<'a>(body: &'a Value, workflow: &str) -> &'a Value {
    body["workflows"]
        .as_array()
        .expect("workflows")
        .iter()
        .find(|w| w["workflow_id"] == workflow)
        .unwrap_or_else(|| panic!("no {workflow} in {body:#}"))
}

#[tokio::test]
async fn figures_per_workflow_over_the_window() {
    let api = api().await;
    // gated: four finished runs of 1, 2, 3 and 20 minutes (3 succeeded, 1 failed), one running;
    // approvals waited 5 and 15 minutes.
    for s in [
        Spec {
            turns: 10,
            cost: 0.5,
            approval_wait: Some(5 * MINUTE),
            ..spec("g1", RunStatus::Succeeded, HOUR, MINUTE)
        },
        Spec {
            turns: 20,
            cost: 1.5,
            approval_wait: Some(15 * MINUTE),
            ..spec("g2", RunStatus::Succeeded, 2 * HOUR, 2 * MINUTE)
        },
        spec("g3", RunStatus::Succeeded, 3 * HOUR, 3 * MINUTE),
        spec("g4", RunStatus::Failed, 4 * HOUR, 20 * MINUTE),
        Spec {
            turns: 4,
            ..spec("g5", RunStatus::Running, 10 * MINUTE, 0)
        },
        // Created two days ago: outside 24h, inside 7d.
        spec("g-old", RunStatus::Failed, 48 * HOUR, 30 * MINUTE),
        // Another workflow.
        Spec {
            workflow: "nightly",
            ..spec("n1", RunStatus::TimedOut, 5 * HOUR, 60 * MINUTE)
        },
    ] {
        store(&api, s).await;
    }

    let (status, body) = get(&api, "/v1/analytics?window=24h").await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!(body["window"], "24h");
    assert_eq!(body["to"], NOW);
    assert_eq!(body["from"], NOW - 24 * HOUR);
    assert_eq!(body["runs_read"], 6, "g-old is outside the window");
    assert_eq!(body["truncated"], false);
    assert_eq!(body["totals"]["runs"], 6);
    assert_eq!(body["totals"]["success_rate"], 0.6, "3 of 5 finished");

    let gated = stats(&body, "gated");
    assert_eq!(gated["runs"], 5);
    assert_eq!(gated["active"], 1);
    assert_eq!(gated["succeeded"], 3);
    assert_eq!(gated["failed"], 1);
    assert_eq!(gated["success_rate"], 0.75);
    assert_eq!(
        gated["duration_ms"],
        json!({"count": 4, "p50": 2 * MINUTE, "p95": 20 * MINUTE, "max": 20 * MINUTE})
    );
    assert_eq!(gated["agent_turns"], 34);
    assert_eq!(gated["cost_usd"], 2.0);
    assert_eq!(gated["cost_per_run_usd"], 0.4);
    assert_eq!(gated["approvals"]["decided"], 2);
    assert_eq!(
        gated["approvals"]["wait_ms"],
        json!({"count": 2, "p50": 5 * MINUTE, "p95": 15 * MINUTE, "max": 15 * MINUTE})
    );
    let nightly = stats(&body, "nightly");
    assert_eq!(nightly["runs"], 1);
    assert_eq!(nightly["timed_out"], 1);
    assert_eq!(nightly["success_rate"], 0.0);
    assert_eq!(
        body["workflows"][0]["workflow_id"], "gated",
        "most runs first"
    );

    // The series: 24 hourly buckets holding the six runs where they were created.
    assert_eq!(body["series"]["bucket_ms"], HOUR);
    let buckets = body["series"]["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), 24);
    let in_buckets: u64 = buckets.iter().map(|b| b["runs"].as_u64().unwrap()).sum();
    assert_eq!(in_buckets, 6);
    assert_eq!(buckets[23]["active"], 1, "g5, created 10 minutes ago");

    // A longer window takes in the older run; a workflow filter keeps only its runs.
    let (_, week) = get(&api, "/v1/analytics?window=7d").await;
    assert_eq!(stats(&week, "gated")["runs"], 6);
    assert_eq!(stats(&week, "gated")["success_rate"], 0.6);
    let (_, only) = get(&api, "/v1/analytics?window=24h&workflow=nightly").await;
    assert_eq!(only["workflow"], "nightly");
    assert_eq!(only["workflows"].as_array().unwrap().len(), 1);
    assert_eq!(only["totals"]["runs"], 1);
    // The default window is 24h.
    let (_, default) = get(&api, "/v1/analytics").await;
    assert_eq!(default["window"], "24h");
    assert_eq!(default["totals"]["runs"], 6);
    // An hour takes in g1 (created exactly an hour ago) and g5.
    let (_, hour) = get(&api, "/v1/analytics?window=1h").await;
    assert_eq!(hour["totals"]["runs"], 2);
    assert_eq!(hour["series"]["bucket_ms"], 5 * MINUTE);
}

#[tokio::test]
async fn more_runs_than_one_store_page_are_all_counted() {
    let api = api().await;
    for i in 0..230 {
        let status = if i % 10 == 0 {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        };
        store(
            &api,
            spec(
                &format!("r{i:03}"),
                status,
                (i + 1) * MINUTE,
                (i + 1) * 1_000,
            ),
        )
        .await;
    }
    let (status, body) = get(&api, "/v1/analytics?window=7d").await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!(body["runs_read"], 230);
    assert_eq!(body["totals"]["failed"], 23);
    assert_eq!(body["totals"]["succeeded"], 207);
    // Durations 1..=230 s: nearest rank p50 = 115 s, p95 = ceil(218.5) = 219 s.
    assert_eq!(body["totals"]["duration_ms"]["p50"], 115_000);
    assert_eq!(body["totals"]["duration_ms"]["p95"], 219_000);
}

#[tokio::test]
async fn bad_parameters_are_refused_naming_them() {
    let api = api().await;
    for (uri, field) in [
        ("/v1/analytics?window=soon", Some("window")),
        ("/v1/analytics?window=10s", Some("window")),
        ("/v1/analytics?window=365d", Some("window")),
        ("/v1/analytics?window=-1h", Some("window")),
        ("/v1/analytics?windw=24h", None),
    ] {
        let answer = api.call("GET", uri, None).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(answer.code(), "invalid_query", "{uri}");
        match field {
            Some(f) => assert_eq!(answer.body["error"]["field"], f, "{uri}"),
            None => assert!(
                answer.body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("windw"),
                "the message names the unknown parameter: {:?}",
                answer.body
            ),
        }
    }
    let without_key = api
        .send(
            Request::get("/v1/analytics")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(without_key.status, StatusCode::UNAUTHORIZED);
}
