//! Approvals end to end on DynamoDB + SQS (moto): a run reaches an approval; a Slack request
//! signed like `events/approvals/slack-block-actions.json` decides it through the approvals
//! router; the poller (real SQS batches through `handle_batch`) carries the run on. Approve,
//! reject with a reason (modal submission) and retry with feedback (modal submission: the
//! feedback reaches the agent service in the next start of the agent step).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use flowgate_api::{ApiKeys, ApprovalSettings, Services};
use flowgate_poller::handle_batch;
use flowgate_shared::agent::simulator::{Simulator, SimulatorConfig, SimulatorHandle};
use flowgate_shared::agent::{AgentClient, AgentClientConfig};
use flowgate_shared::definition::parse_definition;
use flowgate_shared::engine::session_name;
use flowgate_shared::model::{ApprovalStatus, Run, RunStatus, StepStatus};
use flowgate_shared::notify::config::NotifyConfig;
use flowgate_shared::ports::{RunStore, WorkflowStore};
use flowgate_shared::runtime::{Clock, Executor, NewRun, SystemClock, start_run};
use flowgate_shared::signing::sign_slack;
use flowgate_shared::slack::interaction::form_body;
use flowgate_tests::runtime::{MotoPorts, moto_ports};
use serde_json::{Value, json};
use tower::ServiceExt;

const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const APPROVER: &str = "U2CERLKJA";

const WORKFLOW: &str = r#"
id: gated
polling: {initial: 1s, factor: 1, max: 1s}
steps:
  - id: architect
    kind: agent
    workflow: architect
    message: "design the change"
  - id: review
    kind: approval
    depends_on: [architect]
    message: "Approve this design? ${{ steps.architect.output }}"
    approvers: [U2CERLKJA]
  - id: implement
    kind: agent
    workflow: implement
    depends_on: [review]
    message: "implement the approved design"
"#;

struct World {
    ports: MotoPorts,
    executor: Arc<Executor>,
    app: axum::Router,
    sim: SimulatorHandle,
}

async fn world() -> World {
    let ports = moto_ports(Duration::from_secs(5)).await;
    let sim = Simulator::start(SimulatorConfig {
        run_duration: Duration::from_millis(1500),
        ..SimulatorConfig::default()
    })
    .await
    .unwrap();
    let agent = Arc::new(
        AgentClient::new(&sim.base_url, &sim.api_key, AgentClientConfig::default()).unwrap(),
    );
    let notifier = Arc::new(NotifyConfig::default().build(ports.store.clone()).unwrap());
    let executor = Arc::new(
        Executor::new(
            ports.store.clone(),
            ports.store.clone(),
            ports.queue.clone(),
            agent.clone(),
            Arc::new(SystemClock),
        )
        .unwrap()
        .with_notifier(notifier.clone()),
    );
    let services = Services {
        store: ports.store.clone(),
        workflows: ports.store.clone(),
        queue: ports.queue.clone(),
        executor: executor.clone(),
        agent,
        clock: Arc::new(SystemClock),
        keys: Arc::new(ApiKeys::single("alice", "test-key-alice")),
        notifier,
        approvals: Arc::new(ApprovalSettings {
            slack_signing_secret: Some(SIGNING_SECRET.as_bytes().to_vec()),
            ..ApprovalSettings::default()
        }),
        hooks: Arc::default(),
        scheduler: None,
    };
    let def = parse_definition(WORKFLOW).unwrap();
    ports
        .store
        .put_workflow(&def, SystemClock.now_ms())
        .await
        .unwrap();
    World {
        app: flowgate_api::approvals_app(services),
        ports,
        executor,
        sim,
    }
}

impl World {
    async fn start(&self) -> String {
        let started = start_run(
            &*self.ports.store,
            &*self.ports.store,
            &*self.ports.queue,
            &*self.ports.store,
            SystemClock.now_ms(),
            NewRun {
                workflow_id: "gated".into(),
                started_by: Some("alice".into()),
                ..NewRun::default()
            },
        )
        .await
        .unwrap();
        started.run_id
    }

    async fn run(&self, run_id: &str) -> Run {
        self.ports.store.get_run(run_id).await.unwrap().unwrap()
    }

    /// Feed SQS batches to the poller until `done` holds for the run (or fail after 90 s).
    async fn drive_until(&self, run_id: &str, what: &str, done: impl Fn(&Run) -> bool) -> Run {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let run = self.run(run_id).await;
            if done(&run) {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {run:#?}"
            );
            let event = self.ports.receive_event(Duration::from_secs(1)).await;
            if event.records.is_empty() {
                continue;
            }
            let response = handle_batch(&self.executor, event.clone()).await;
            self.ports.delete_handled(&event, &response).await;
        }
    }

    async fn pending_approval(&self, run_id: &str) -> String {
        let run = self
            .drive_until(run_id, "the approval to open", |r| {
                r.step("review")
                    .and_then(|s| s.approval.as_ref())
                    .is_some_and(|a| a.status == ApprovalStatus::Pending)
            })
            .await;
        run.step("review")
            .unwrap()
            .approval
            .as_ref()
            .unwrap()
            .id
            .clone()
    }

    /// POST a Slack interaction `payload` signed as Slack signs it (raw form body, now).
    async fn slack(&self, payload: &Value) -> (u16, Value) {
        let body = form_body(&serde_json::to_string(payload).unwrap());
        let ts = SystemClock.now_ms() / 1000;
        let request = Request::post("/slack/interactions")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", ts.to_string())
            .header(
                "x-slack-signature",
                sign_slack(SIGNING_SECRET.as_bytes(), ts, body.as_bytes()),
            )
            .body(Body::from(body))
            .unwrap();
        let began = Instant::now();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let elapsed = began.elapsed();
        assert!(
            elapsed < Duration::from_secs(3),
            "Slack needs an answer within 3 s; took {elapsed:?}"
        );
        let status = response.status().as_u16();
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }
}

/// A `block_actions` click, shaped like `events/approvals/slack-block-actions.json`.
fn click(approval_id: &str, action: &str) -> Value {
    json!({
        "type": "block_actions",
        "user": {"id": APPROVER, "username": "roadrunner", "team_id": "T1DC2JH3J"},
        "api_app_id": "A0FLOWGATE",
        "team": {"id": "T1DC2JH3J", "domain": "testteamnow"},
        "container": {"type": "message", "message_ts": "1531420600.000100",
                      "channel_id": "G8PSS9T3V", "is_ephemeral": false},
        "trigger_id": "398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c",
        "channel": {"id": "G8PSS9T3V", "name": "foobar"},
        "response_url": "https://hooks.slack.com/actions/T1DC2JH3J/397700885554/96rGlfmibIGlgcZRskXaIFfN",
        "actions": [{"type": "button", "action_id": action,
                     "block_id": format!("approval:{approval_id}"),
                     "value": action, "action_ts": "1531420618.123456"}]
    })
}

/// The modal's submission with `comment` (what Slack sends after the reject/retry modal).
fn submission(approval_id: &str, action: &str, comment: &str) -> Value {
    let meta = json!({"approval_id": approval_id, "action": action,
                      "channel": "G8PSS9T3V", "message_ts": "1531420600.000100"});
    json!({
        "type": "view_submission",
        "user": {"id": APPROVER, "username": "roadrunner", "team_id": "T1DC2JH3J"},
        "team": {"id": "T1DC2JH3J", "domain": "testteamnow"},
        "api_app_id": "A0FLOWGATE",
        "view": {
            "id": "V0MODAL01",
            "type": "modal",
            "callback_id": "approval_decision",
            "private_metadata": meta.to_string(),
            "state": {"values": {"comment": {"comment": {"type": "plain_text_input", "value": comment}}}}
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_slack_approval_lets_the_run_continue() {
    let w = world().await;
    let run_id = w.start().await;
    let approval = w.pending_approval(&run_id).await;

    let (status, _) = w.slack(&click(&approval, "approve")).await;
    assert_eq!(status, 200);
    // The decision is written before the answer (one conditional write), the rest queued.
    let run = w.run(&run_id).await;
    let gate = run.step("review").unwrap().approval.as_ref().unwrap();
    assert_eq!(gate.status, ApprovalStatus::Approved);
    assert_eq!(gate.decisions[0].by, format!("slack:{APPROVER}"));

    // A second click (or Slack re-sending) changes nothing.
    let version = run.version;
    let (status, _) = w.slack(&click(&approval, "approve")).await;
    assert_eq!(status, 200);
    assert_eq!(w.run(&run_id).await.version, version);

    let run = w
        .drive_until(&run_id, "the run to finish", |r| r.status.is_terminal())
        .await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
    assert_eq!(run.step("implement").unwrap().status, StepStatus::Succeeded);
    let audit = w.ports.store.audit(&run_id, None, 200).await.unwrap();
    let decided: Vec<_> = audit
        .iter()
        .filter(|e| e.kind == "approval.decided")
        .collect();
    assert_eq!(decided.len(), 1, "one decision recorded");
    assert_eq!(decided[0].actor, format!("slack:{APPROVER}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_with_a_reason_fails_the_run_with_it() {
    let w = world().await;
    let run_id = w.start().await;
    let approval = w.pending_approval(&run_id).await;

    let (status, body) = w
        .slack(&submission(
            &approval,
            "reject",
            "too risky before the release",
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, Value::Null, "an empty answer closes the modal");

    let run = w
        .drive_until(&run_id, "the run to finish", |r| r.status.is_terminal())
        .await;
    assert_eq!(run.status, RunStatus::Failed);
    let review = run.step("review").unwrap();
    assert_eq!(review.status, StepStatus::Failed);
    assert!(
        review
            .error
            .as_deref()
            .unwrap()
            .contains("too risky before the release"),
        "{review:?}"
    );
    assert_eq!(
        review.approval.as_ref().unwrap().status,
        ApprovalStatus::Rejected
    );
    assert_eq!(run.step("implement").unwrap().attempt, 0, "never started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_with_feedback_reaches_the_agent_in_the_same_session() {
    let w = world().await;
    let run_id = w.start().await;
    let first = w.pending_approval(&run_id).await;
    let first_session = w
        .run(&run_id)
        .await
        .step("architect")
        .unwrap()
        .agent
        .as_ref()
        .unwrap()
        .session_id
        .clone();
    assert!(
        first_session.is_some(),
        "the agent conversation was captured"
    );

    let (status, body) = w
        .slack(&submission(&first, "retry", "use postgres, not sqlite"))
        .await;
    assert_eq!(status, 200, "{body}");

    // The architect step runs again; its start request carries the feedback and continues the
    // same agent conversation.
    let run = w
        .drive_until(&run_id, "the second approval", |r| {
            r.step("review")
                .and_then(|s| s.approval.as_ref())
                .is_some_and(|a| a.status == ApprovalStatus::Pending && a.id != first)
        })
        .await;
    let architect = run.step("architect").unwrap();
    assert_eq!(architect.attempt, 2);
    let upstream = w
        .sim
        .run_ids_for_session_name(&session_name(&run_id, "architect", 2));
    assert_eq!(upstream.len(), 1, "one agent run for the second attempt");
    let start = w.sim.start_body(&upstream[0]).unwrap();
    let message = start["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("use postgres, not sqlite") && message.contains(APPROVER),
        "the feedback and who gave it reach the agent: {start}"
    );
    assert_eq!(
        start["session_id"].as_str(),
        first_session.as_deref(),
        "the same agent conversation continues: {start}"
    );

    // Approve the second round: the run finishes.
    let second = run
        .step("review")
        .unwrap()
        .approval
        .as_ref()
        .unwrap()
        .id
        .clone();
    assert_eq!(w.slack(&click(&second, "approve")).await.0, 200);
    let run = w
        .drive_until(&run_id, "the run to finish", |r| r.status.is_terminal())
        .await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
}
