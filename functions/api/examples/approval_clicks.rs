//! Benchmark: the approvals handler's own time for a Slack click.
//!
//! Opens `--runs` approvals (a one-step approval workflow on the embedded store and the
//! in-process queue, as `flowgate serve` runs it), then sends one signed `block_actions` approve
//! click per approval through the approvals router, `--concurrency` at a time, and prints the
//! p50/p99/max of the time from request to answer: signature check, payload parse, the
//! conditional write of the decision and the enqueue of its effects. Slack needs the answer
//! within 3 s.
//!
//! ```text
//! cargo run --release -p flowgate-api --example approval_clicks -- --runs 2000 --concurrency 8
//! # the Lambda's path, on moto (scripts/moto_server.py) instead of the embedded store:
//! AWS_ENDPOINT_URL=http://127.0.0.1:5123 AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test \
//!   AWS_SECRET_ACCESS_KEY=test cargo run --release -p flowgate-api --example approval_clicks -- --moto --runs 300
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use flowgate_api::{ApiKeys, ApprovalSettings, Services};
use flowgate_shared::adapters::dynamodb::DynamoStore;
use flowgate_shared::adapters::embedded::EmbeddedStore;
use flowgate_shared::adapters::memqueue::MemQueue;
use flowgate_shared::adapters::sqs::SqsQueue;
use flowgate_shared::agent::{AgentClient, AgentClientConfig};
use flowgate_shared::definition::parse_definition;
use flowgate_shared::model::ApprovalStatus;
use flowgate_shared::notify::config::NotifyConfig;
use flowgate_shared::ports::{RecordStore, RunStore, WorkQueue, WorkflowStore};
use flowgate_shared::runtime::{Clock, Executor, NewRun, SystemClock, start_run};
use flowgate_shared::signing::sign_slack;
use futures::StreamExt;
use tower::ServiceExt;

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

const GATE: &str = r#"
id: gate
steps:
  - id: review
    kind: approval
    message: "Ship it?"
    approvers: [U2CERLKJA]
"#;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn click_body(approval_id: &str) -> String {
    let payload = serde_json::json!({
        "type": "block_actions",
        "user": {"id": "U2CERLKJA", "username": "roadrunner", "team_id": "T1DC2JH3J"},
        "api_app_id": "A0FLOWGATE",
        "team": {"id": "T1DC2JH3J"},
        "container": {"type": "message", "message_ts": "1531420600.000100", "channel_id": "G8PSS9T3V"},
        "trigger_id": "398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c",
        "channel": {"id": "G8PSS9T3V"},
        "actions": [{"type": "button", "action_id": "approve",
                     "block_id": format!("approval:{approval_id}"), "value": "approve"}]
    });
    flowgate_shared::slack::interaction::form_body(&payload.to_string())
}

/// A store with every port the click path uses.
trait Backend: RunStore + WorkflowStore + RecordStore {
    fn records(self: Arc<Self>) -> Arc<dyn RecordStore>;
    fn runs(self: Arc<Self>) -> Arc<dyn RunStore>;
    fn workflows(self: Arc<Self>) -> Arc<dyn WorkflowStore>;
}

impl<T: RunStore + WorkflowStore + RecordStore + 'static> Backend for T {
    fn records(self: Arc<Self>) -> Arc<dyn RecordStore> {
        self
    }
    fn runs(self: Arc<Self>) -> Arc<dyn RunStore> {
        self
    }
    fn workflows(self: Arc<Self>) -> Arc<dyn WorkflowStore> {
        self
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs = arg("--runs", 2000);
    let concurrency = arg("--concurrency", 8).max(1);
    let moto = std::env::args().any(|a| a == "--moto");
    let dir = tempfile::tempdir()?;
    // `--moto`: DynamoDB and SQS on the moto server at AWS_ENDPOINT_URL (the Lambda's path:
    // GetItem, TransactWriteItems, SendMessage per click), else the embedded store and queue.
    let (store, queue, backend): (Arc<dyn Backend>, Arc<dyn WorkQueue>, &str) = if moto {
        let config = flowgate_shared::adapters::aws_config(None).await;
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let dynamo = aws_sdk_dynamodb::Client::new(&config);
        let table = format!("flowgate-clicks-{suffix}");
        DynamoStore::create_table(&dynamo, &table).await?;
        let sqs = aws_sdk_sqs::Client::new(&config);
        let queue = SqsQueue::create_queue(
            &sqs,
            &format!("flowgate-clicks-{suffix}"),
            Duration::from_secs(30),
        )
        .await?;
        (
            Arc::new(DynamoStore::new(dynamo, table)),
            Arc::new(queue),
            "DynamoDB + SQS on moto",
        )
    } else {
        (
            Arc::new(EmbeddedStore::open(dir.path())?),
            Arc::new(MemQueue::new(Duration::from_secs(30))),
            "embedded store",
        )
    };
    // No agent step runs here; the client only has to exist.
    let agent = Arc::new(AgentClient::new(
        "http://127.0.0.1:9",
        "unused",
        AgentClientConfig::default(),
    )?);
    let notifier = Arc::new(NotifyConfig::default().build(store.clone().records())?);
    let executor = Arc::new(
        Executor::new(
            store.clone().runs(),
            store.clone().workflows(),
            queue.clone(),
            agent.clone(),
            Arc::new(SystemClock),
        )?
        .with_notifier(notifier.clone()),
    );
    store
        .put_workflow(&parse_definition(GATE)?, SystemClock.now_ms())
        .await?;

    // Open the approvals: start the runs and handle their start messages.
    let mut approvals = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = start_run(
            &*store,
            &*store,
            &*queue,
            &*store,
            SystemClock.now_ms(),
            NewRun {
                workflow_id: "gate".into(),
                started_by: Some("bench".into()),
                ..NewRun::default()
            },
        )
        .await?;
        approvals.push(started.run_id);
    }
    loop {
        let wait = Duration::from_millis(if moto { 1000 } else { 50 });
        let got = queue.receive(64, wait).await?;
        if got.is_empty() {
            break;
        }
        for m in got {
            executor.handle(&m.message).await?;
            queue.ack(&m.receipt).await?;
        }
    }
    let mut ids = Vec::with_capacity(runs);
    for run_id in &approvals {
        let run = store.get_run(run_id).await?.ok_or("run vanished")?;
        let (_, a) = run.approvals().next().ok_or("no approval opened")?;
        ids.push(a.id.clone());
    }

    let services = Services {
        store: store.clone().runs(),
        workflows: store.clone().workflows(),
        queue: queue.clone(),
        executor,
        agent,
        clock: Arc::new(SystemClock),
        keys: Arc::new(ApiKeys::single("bench", "bench-key")),
        notifier,
        approvals: Arc::new(ApprovalSettings {
            slack_signing_secret: Some(SECRET.as_bytes().to_vec()),
            ..ApprovalSettings::default()
        }),
        hooks: Arc::default(),
        scheduler: None,
    };
    let app = flowgate_api::approvals_app(services);

    let began = Instant::now();
    let mut times: Vec<Duration> = futures::stream::iter(ids.iter().cloned())
        .map(|id| {
            let app = app.clone();
            async move {
                let body = click_body(&id);
                let ts = SystemClock.now_ms() / 1000;
                let request = Request::post("/slack/interactions")
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("x-slack-request-timestamp", ts.to_string())
                    .header(
                        "x-slack-signature",
                        sign_slack(SECRET.as_bytes(), ts, body.as_bytes()),
                    )
                    .body(Body::from(body))
                    .expect("request");
                let t = Instant::now();
                let response = app.oneshot(request).await.expect("infallible");
                let elapsed = t.elapsed();
                assert_eq!(response.status(), 200, "click on {id}");
                elapsed
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let wall = began.elapsed();

    // Every click was recorded (one conditional write each).
    for run_id in &approvals {
        let run = store.get_run(run_id).await?.ok_or("run vanished")?;
        let (_, a) = run.approvals().next().ok_or("no approval")?;
        assert_eq!(a.status, ApprovalStatus::Approved, "run {run_id}");
    }
    times.sort();
    println!(
        "approval clicks ({backend}, {runs} approvals, {concurrency} at a time): \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {:.0} clicks/s; all {runs} decisions recorded",
        percentile(&times, 0.50).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        runs as f64 / wall.as_secs_f64(),
    );
    Ok(())
}
