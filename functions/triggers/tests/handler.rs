//! The triggers function's handler on real local ports (redb store and records, in-process
//! queue): the scheduled-event fixture starts one run however often it is delivered; the
//! overlap policies; the sweep; a GitHub delivery through API Gateway's event shape; and an
//! event it does not know.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flowgate_api::{ApiKeys, HookSecrets, Services};
use flowgate_shared::adapters::embedded::EmbeddedStore;
use flowgate_shared::adapters::memqueue::MemQueue;
use flowgate_shared::adapters::record_scheduler::RecordScheduler;
use flowgate_shared::agent::{AgentClient, AgentClientConfig};
use flowgate_shared::definition::parse_definition;
use flowgate_shared::model::RunStatus;
use flowgate_shared::notify::config::NotifyConfig;
use flowgate_shared::ports::{RunQuery, RunStore, WorkQueue, WorkflowStore};
use flowgate_shared::runtime::{Clock, Executor, SystemClock};
use flowgate_triggers::Triggers;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

const NIGHTLY: &str = r#"
id: nightly-tests
inputs:
  branch: {type: string, required: true}
steps:
  - {id: nap, kind: wait, duration: 1h}
triggers:
  - type: schedule
    expression: cron(0 2 * * ? *)
    timezone: Europe/Paris
    inputs: {branch: main}
"#;

const ISSUE_AGENT: &str = r#"
id: issue-agent
inputs:
  title: {type: string, required: true}
steps:
  - {id: nap, kind: wait, duration: 1h}
triggers:
  - type: webhook
    id: gh-issues
    verify: github
    filter:
      header:x-github-event: issues
      /action: labeled
    inputs:
      title: /issue/title
"#;

struct World {
    _dir: tempfile::TempDir,
    store: Arc<EmbeddedStore>,
    queue: Arc<MemQueue>,
    executor: Arc<Executor>,
    triggers: Triggers,
}

async fn world(defs: &[&str]) -> World {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
    let queue = Arc::new(MemQueue::new(Duration::from_secs(30)));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Nothing here talks to the agent service: the workflows only wait.
    let agent = Arc::new(
        AgentClient::new("http://127.0.0.1:9", "unused", AgentClientConfig::default())
            .expect("client"),
    );
    let notifier = Arc::new(
        NotifyConfig::default()
            .build(store.clone())
            .expect("notifier"),
    );
    let executor = Arc::new(
        Executor::new(
            store.clone(),
            store.clone(),
            queue.clone(),
            agent.clone(),
            clock.clone(),
        )
        .expect("executor")
        .with_notifier(notifier.clone()),
    );
    for yaml in defs {
        let def = parse_definition(yaml).unwrap_or_else(|e| panic!("invalid definition: {e}"));
        store
            .put_workflow(&def, clock.now_ms())
            .await
            .expect("store");
    }
    let services = Services {
        store: store.clone(),
        workflows: store.clone(),
        queue: queue.clone(),
        executor: executor.clone(),
        agent,
        clock,
        keys: Arc::new(ApiKeys::default()),
        notifier,
        approvals: Arc::default(),
        hooks: Arc::new(
            HookSecrets::parse("gh-issues=flowgate-test-hook-secret").expect("secrets"),
        ),
        scheduler: Some(Arc::new(RecordScheduler::new(store.clone()))),
    };
    World {
        _dir: dir,
        store,
        queue,
        executor,
        triggers: Triggers::new(services),
    }
}

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/triggers")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

impl World {
    async fn invoke(&self, payload: Value) -> Result<Value, lambda_runtime::Error> {
        self.triggers
            .handle(LambdaEvent::new(payload, Context::default()))
            .await
    }

    async fn runs(&self) -> Vec<flowgate_shared::model::Run> {
        self.store
            .list_runs(&RunQuery {
                limit: 100,
                ..RunQuery::default()
            })
            .await
            .expect("list")
            .runs
    }

    /// Apply every queued message now (starts, cancels); waits of an hour stay queued.
    async fn drain(&self) {
        for m in self
            .queue
            .receive(100, Duration::from_millis(20))
            .await
            .expect("receive")
        {
            self.executor.handle(&m.message).await.expect("handled");
            self.queue.ack(&m.receipt).await.expect("ack");
        }
    }
}

#[tokio::test]
async fn the_scheduled_event_fixture_delivered_twice_starts_one_run() {
    let w = world(&[NIGHTLY]).await;
    let event = fixture("schedule-nightly.json");
    let first = w.invoke(event.clone()).await.expect("first delivery");
    assert_eq!(first["outcome"], "started", "{first}");
    assert_eq!(first["existing"], false);
    let second = w.invoke(event).await.expect("repeated delivery");
    assert_eq!(second["outcome"], "started", "{second}");
    assert_eq!(second["existing"], true, "the repeat found the first run");
    assert_eq!(second["run_id"], first["run_id"]);

    let runs = w.runs().await;
    assert_eq!(runs.len(), 1, "one run for one firing");
    let run = &runs[0];
    assert_eq!(run.inputs["branch"], "main");
    assert_eq!(run.started_by.as_deref(), Some("schedule:nightly-tests.0"));
    assert_eq!(
        run.idempotency_key.as_deref(),
        Some("schedule:nightly-tests.0:2026-11-21T02:00:00Z")
    );
}

/// The fixture fired at another time, with another overlap policy.
fn firing(time: &str, overlap: &str) -> Value {
    let mut event = fixture("schedule-nightly.json");
    event["scheduled_time"] = json!(time);
    event["overlap"] = json!(overlap);
    event
}

#[tokio::test]
async fn overlap_skip_starts_nothing_while_the_previous_run_is_active() {
    let w = world(&[NIGHTLY]).await;
    let first = w
        .invoke(firing("2026-11-21T02:00:00Z", "skip"))
        .await
        .expect("fires");
    w.drain().await;
    let next = w
        .invoke(firing("2026-11-22T02:00:00Z", "skip"))
        .await
        .expect("fires");
    assert_eq!(next["outcome"], "skipped", "{next}");
    assert!(
        next["reason"]
            .as_str()
            .unwrap_or_default()
            .contains(first["run_id"].as_str().unwrap()),
        "{next}"
    );
    assert_eq!(w.runs().await.len(), 1);

    // Allow starts a second run beside it.
    let allowed = w
        .invoke(firing("2026-11-23T02:00:00Z", "allow"))
        .await
        .expect("fires");
    assert_eq!(allowed["outcome"], "started", "{allowed}");
    assert_eq!(w.runs().await.len(), 2);
}

#[tokio::test]
async fn overlap_cancel_previous_cancels_the_active_run_and_starts_a_new_one() {
    let w = world(&[NIGHTLY]).await;
    let first = w
        .invoke(firing("2026-11-21T02:00:00Z", "cancel_previous"))
        .await
        .expect("fires");
    w.drain().await;
    let first_id = first["run_id"].as_str().expect("run id").to_string();
    assert_eq!(
        w.store.get_run(&first_id).await.unwrap().unwrap().status,
        RunStatus::Running
    );
    let next = w
        .invoke(firing("2026-11-22T02:00:00Z", "cancel_previous"))
        .await
        .expect("fires");
    assert_eq!(next["outcome"], "started", "{next}");
    assert_eq!(next["cancelled_previous"], first_id.as_str());
    w.drain().await;
    let old = w.store.get_run(&first_id).await.unwrap().unwrap();
    assert_eq!(old.status, RunStatus::Cancelled, "{old:?}");
    let new_id = next["run_id"].as_str().expect("run id");
    assert_eq!(
        w.store.get_run(new_id).await.unwrap().unwrap().status,
        RunStatus::Running
    );
}

#[tokio::test]
async fn a_scheduled_start_without_a_time_or_of_a_deleted_workflow_starts_nothing() {
    let w = world(&[NIGHTLY]).await;
    let mut event = fixture("schedule-nightly.json");
    event["scheduled_time"] = json!("<aws.scheduler.scheduled-time>");
    let answer = w.invoke(event).await.expect("answered, not retried");
    assert_eq!(answer["outcome"], "refused", "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("scheduled_time"),
        "{answer}"
    );

    w.store
        .delete_workflow("nightly-tests")
        .await
        .expect("delete");
    let answer = w
        .invoke(fixture("schedule-nightly.json"))
        .await
        .expect("answered");
    assert_eq!(answer["outcome"], "skipped", "{answer}");
    assert!(w.runs().await.is_empty());
}

#[tokio::test]
async fn the_sweep_events_run_the_sweep_and_fix_missing_schedules() {
    let w = world(&[NIGHTLY]).await;
    // The workflow was stored without a sync (as if the sync had failed): the sweep adds it.
    let report = w.invoke(fixture("sweep.json")).await.expect("sweeps");
    assert_eq!(report["schedules_fixed"], 1, "{report}");
    let report = w
        .invoke(fixture("eventbridge-scheduled-event.json"))
        .await
        .expect("sweeps");
    assert_eq!(report["schedules_fixed"], 0, "{report}");
    assert_eq!(report["woken"], 0);
}

#[tokio::test]
async fn a_github_delivery_through_api_gateway_starts_a_run() {
    let w = world(&[ISSUE_AGENT]).await;
    let answer = w
        .invoke(fixture("github-issues-labeled.json"))
        .await
        .expect("answered");
    assert_eq!(answer["statusCode"], 202, "{answer}");
    let runs = w.runs().await;
    assert_eq!(runs.len(), 1);
    assert!(
        runs[0].inputs["title"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    let bad = w
        .invoke(fixture("github-bad-signature.json"))
        .await
        .expect("answered");
    assert_eq!(bad["statusCode"], 401, "{bad}");
    assert_eq!(w.runs().await.len(), 1, "a bad signature starts nothing");
}

#[tokio::test]
async fn an_unknown_event_is_an_error_that_says_what_was_expected() {
    let w = world(&[]).await;
    let err = w
        .invoke(json!({"hello": "world"}))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("unrecognised event"), "{err}");
}

/// The triggers function's bad-input sweep: events that are not what any source sends, or
/// that a source would send broken (wrong types, a missing or unreadable time, a workflow or
/// version that does not exist, an API Gateway request to a route it does not serve, a huge
/// body). Each is refused (an error the Lambda service records, a 4xx for HTTP, or an
/// answer saying `refused` or `skipped`), and none starts a run or queues work.
#[tokio::test]
async fn malformed_events_are_refused_and_change_nothing() {
    let w = world(&[NIGHTLY, ISSUE_AGENT]).await;
    let schedule = |fields: Value| {
        let mut event = json!({"flowgate": "schedule"});
        if let (Some(map), Value::Object(extra)) = (event.as_object_mut(), fields) {
            map.extend(extra);
        }
        event
    };
    let mut hook = fixture("github-issues-labeled.json");
    hook["rawPath"] = json!("/hooks/no-such-trigger");
    hook["requestContext"]["http"]["path"] = json!("/hooks/no-such-trigger");
    let mut huge = fixture("github-issues-labeled.json");
    huge["body"] = json!("x".repeat(2 * 1024 * 1024));
    let mut truncated = fixture("github-issues-labeled.json");
    let body = truncated["body"].as_str().unwrap_or_default().to_string();
    truncated["body"] = json!(body[..body.len() / 2]);
    let events = [
        ("null", json!(null)),
        ("an array", json!([1, 2, 3])),
        ("a string", json!("sweep")),
        ("a number", json!(42)),
        ("an empty object", json!({})),
        ("an unknown flowgate kind", json!({"flowgate": "explode"})),
        ("a schedule without fields", schedule(json!({}))),
        (
            "a schedule whose version is text",
            schedule(
                json!({"schedule": "nightly-tests.0", "workflow_id": "nightly-tests", "workflow_version": "one"}),
            ),
        ),
        (
            "a schedule with an unreadable time",
            schedule(
                json!({"schedule": "nightly-tests.0", "workflow_id": "nightly-tests", "workflow_version": 1, "scheduled_time": "yesterday"}),
            ),
        ),
        (
            "a schedule of a workflow that does not exist",
            schedule(
                json!({"schedule": "ghost.0", "workflow_id": "ghost", "workflow_version": 1, "scheduled_time": "2030-01-01T02:00:00Z"}),
            ),
        ),
        (
            "a schedule of a version that does not exist",
            schedule(
                json!({"schedule": "nightly-tests.0", "workflow_id": "nightly-tests", "workflow_version": 99, "scheduled_time": "2030-01-01T02:00:00Z"}),
            ),
        ),
        (
            "a schedule with inputs of the wrong type",
            schedule(
                json!({"schedule": "nightly-tests.0", "workflow_id": "nightly-tests", "workflow_version": 1, "scheduled_time": "2030-01-01T02:00:00Z", "inputs": {"branch": 7}}),
            ),
        ),
        ("a hook to an unknown trigger", hook),
        (
            "a hook body cut in half (signature no longer matches)",
            truncated,
        ),
        ("a 2 MiB hook body", huge),
        (
            "an API Gateway request without a path",
            json!({"version": "2.0", "requestContext": {}}),
        ),
    ];
    for (what, event) in events {
        let answer = w.invoke(event).await;
        if let Ok(answer) = &answer {
            let status = answer["statusCode"].as_u64();
            let declined = answer["outcome"] == "skipped" || answer["outcome"] == "refused";
            assert!(
                status.is_some_and(|s| (400..500).contains(&s)) || declined,
                "{what}: accepted: {answer}"
            );
        }
        assert!(w.runs().await.is_empty(), "{what}: a run was started");
        assert!(w.queue.is_empty(), "{what}: work was queued");
    }
}
