//! Schedules on moto's EventBridge Scheduler API, through the API's workflow routes: after
//! storing, updating and deleting workflows, the schedules in the group equal what the
//! definitions say (names, expressions, time zones, and the start each one delivers).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use flowgate_api::{ApiKeys, Services};
use flowgate_shared::adapters::eventbridge::EventBridgeScheduler;
use flowgate_shared::agent::{AgentClient, AgentClientConfig};
use flowgate_shared::notify::config::NotifyConfig;
use flowgate_shared::ports::{Scheduler, WorkflowStore};
use flowgate_shared::runtime::{Executor, SystemClock};
use flowgate_shared::schedule::{ScheduleEntry, schedules_of};
use flowgate_tests::runtime::moto_ports;
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;

const KEY: &str = "test-key-alice";

struct World {
    app: axum::Router,
    scheduler: EventBridgeScheduler,
    workflows: Arc<dyn WorkflowStore>,
}

async fn world() -> World {
    let ports = moto_ports(Duration::from_secs(5)).await;
    let group = format!("flowgate-test-{}", uuid::Uuid::new_v4().simple());
    let scheduler = EventBridgeScheduler::from_sdk_config(
        &flowgate_shared::adapters::aws_config(None).await,
        group,
        "arn:aws:lambda:us-east-1:123456789012:function:flowgate-triggers",
        "arn:aws:iam::123456789012:role/flowgate-scheduler",
    );
    scheduler.ensure_group().await.expect("schedule group");
    let agent = Arc::new(
        AgentClient::new("http://127.0.0.1:9", "unused", AgentClientConfig::default())
            .expect("client"),
    );
    let notifier = Arc::new(
        NotifyConfig::default()
            .build(ports.store.clone())
            .expect("test setup"),
    );
    let executor = Arc::new(
        Executor::new(
            ports.store.clone(),
            ports.store.clone(),
            ports.queue.clone(),
            agent.clone(),
            Arc::new(SystemClock),
        )
        .expect("test setup")
        .with_notifier(notifier.clone()),
    );
    let services = Services {
        store: ports.store.clone(),
        workflows: ports.store.clone(),
        queue: ports.queue.clone(),
        executor,
        agent,
        clock: Arc::new(SystemClock),
        keys: Arc::new(ApiKeys::single("alice", KEY)),
        notifier,
        approvals: Arc::default(),
        hooks: Arc::default(),
        scheduler: Some(Arc::new(scheduler.clone())),
    };
    World {
        app: flowgate_api::app(services),
        scheduler,
        workflows: ports.store.clone(),
    }
}

impl World {
    async fn send(&self, method: &str, id: &str, yaml: Option<&str>) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("/v1/workflows/{id}"))
            .header("x-api-key", KEY);
        if yaml.is_some() {
            req = req.header("content-type", "application/yaml");
        }
        let req = req
            .body(Body::from(yaml.unwrap_or_default().to_string()))
            .expect("test setup");
        let res = self.app.clone().oneshot(req).await.expect("test setup");
        let status = res.status();
        let bytes = res
            .into_body()
            .collect()
            .await
            .expect("test setup")
            .to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Every schedule in the group, read back from moto.
    async fn present(&self) -> BTreeMap<String, ScheduleEntry> {
        let mut out = BTreeMap::new();
        for name in self.scheduler.list_schedules("").await.expect("list") {
            let entry = self
                .scheduler
                .get_schedule(&name)
                .await
                .expect("get")
                .expect("listed, so present");
            out.insert(name, entry);
        }
        out
    }

    /// What the stored definitions ask for.
    async fn wanted(&self) -> BTreeMap<String, ScheduleEntry> {
        let mut out = BTreeMap::new();
        for stored in self.workflows.list_workflows().await.expect("list") {
            for entry in schedules_of(&stored) {
                out.insert(entry.name.clone(), entry);
            }
        }
        out
    }

    async fn assert_in_sync(&self, expected_names: &[&str]) {
        let present = self.present().await;
        assert_eq!(
            present,
            self.wanted().await,
            "the group equals the definitions"
        );
        let names: Vec<&str> = present.keys().map(String::as_str).collect();
        assert_eq!(names, expected_names);
    }
}

const NIGHTLY: &str = r#"
id: nightly
inputs:
  branch: {type: string, default: main}
steps:
  - {id: nap, kind: wait, duration: 1s}
triggers:
  - {type: schedule, expression: "cron(0 2 * * ? *)", timezone: Europe/Paris, inputs: {branch: main}}
  - {type: schedule, expression: "rate(6 hours)", overlap: cancel_previous}
"#;

const HOURLY: &str = r#"
id: hourly
steps:
  - {id: nap, kind: wait, duration: 1s}
triggers:
  - {type: schedule, expression: "rate(1 hour)", overlap: allow}
"#;

#[tokio::test]
async fn schedules_in_eventbridge_follow_stored_updated_and_deleted_workflows() {
    let w = world().await;
    // Store two workflows.
    let (status, body) = w.send("PUT", "nightly", Some(NIGHTLY)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = w.send("PUT", "hourly", Some(HOURLY)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    w.assert_in_sync(&["hourly.0", "nightly.0", "nightly.1"])
        .await;
    let nightly = w.present().await["nightly.0"].clone();
    assert_eq!(nightly.expression, "cron(0 2 * * ? *)");
    assert_eq!(nightly.timezone, "Europe/Paris");
    assert_eq!(nightly.target.workflow_version, 1);
    assert_eq!(nightly.target.inputs["branch"], "main");

    // Update: one schedule changes its expression, the other goes away.
    let updated = NIGHTLY
        .replace("cron(0 2 * * ? *)", "cron(30 3 ? * MON-FRI *)")
        .replace(
            "  - {type: schedule, expression: \"rate(6 hours)\", overlap: cancel_previous}\n",
            "",
        );
    let (status, body) = w.send("PUT", "nightly", Some(&updated)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    w.assert_in_sync(&["hourly.0", "nightly.0"]).await;
    let nightly = w.present().await["nightly.0"].clone();
    assert_eq!(nightly.expression, "cron(30 3 ? * MON-FRI *)");
    assert_eq!(
        nightly.target.workflow_version, 2,
        "the target names the new version"
    );

    // Delete: its schedules go with it.
    let (status, _) = w.send("DELETE", "hourly", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    w.assert_in_sync(&["nightly.0"]).await;
    let (status, _) = w.send("DELETE", "nightly", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    w.assert_in_sync(&[]).await;
}

#[tokio::test]
async fn reconcile_puts_back_a_schedule_deleted_by_hand_and_removes_a_stray_one() {
    let w = world().await;
    let (status, _) = w.send("PUT", "hourly", Some(HOURLY)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        w.scheduler
            .delete_schedule("hourly.0")
            .await
            .expect("delete by hand")
    );
    // A schedule of a workflow that no longer exists (left by a failed delete).
    let stray = ScheduleEntry {
        name: "gone.0".into(),
        expression: "rate(1 day)".into(),
        timezone: "UTC".into(),
        target: flowgate_shared::schedule::ScheduledStart {
            schedule: "gone.0".into(),
            workflow_id: "gone".into(),
            workflow_version: 1,
            inputs: Default::default(),
            overlap: Default::default(),
            scheduled_time: None,
        },
    };
    w.scheduler
        .put_schedule(&stray)
        .await
        .expect("a stray schedule");

    let report = flowgate_shared::runtime::reconcile_schedules(&w.scheduler, w.workflows.as_ref())
        .await
        .expect("reconcile");
    assert_eq!(report.created, vec!["hourly.0".to_string()]);
    assert_eq!(report.deleted, vec!["gone.0".to_string()]);
    w.assert_in_sync(&["hourly.0"]).await;
}
