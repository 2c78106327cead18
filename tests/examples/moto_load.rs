//! Whole runs under load through the AWS adapters: N runs of an agent → approval → agent
//! workflow on DynamoDB and SQS (moto), the work queue drained by poller "instances" calling the
//! Lambda handler (`flowgate_poller::handle_batch`) with SQS batches as the event source
//! mapping delivers them, approvals decided the way the approvals function records them
//! (`Executor::command_deferred`), agent steps on the simulator. Checks every accepted run
//! succeeded and reports throughput and step-to-step latency (read from the audit logs, as
//! `cli/examples/runs_load.rs` does for `flowgate serve`).
//!
//! ```sh
//! # with moto running (scripts/test starts one; or .venv/bin/python scripts/moto_server.py -p 5000)
//! AWS_ENDPOINT_URL=http://127.0.0.1:5000 AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test \
//!   AWS_SECRET_ACCESS_KEY=test cargo run --profile sim -p flowgate-tests --example moto_load
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flowgate_poller::handle_batch;
use flowgate_shared::agent::simulator::{Simulator, SimulatorConfig};
use flowgate_shared::agent::{AgentClient, AgentClientConfig};
use flowgate_shared::definition::parse_definition;
use flowgate_shared::engine::Event;
use flowgate_shared::model::{ApprovalDecision, ApprovalStatus, RunStatus};
use flowgate_shared::notify::config::NotifyConfig;
use flowgate_shared::ports::{RunQuery, RunStore, WorkflowStore};
use flowgate_shared::runtime::{Clock, Executor, NewRun, SystemClock, start_run};
use flowgate_tests::runtime::moto_ports;

const WORKFLOW: &str = r#"
id: moto-load
polling: {initial: 1s, factor: 1.5, max: 3s}
steps:
  - {id: build, kind: agent, workflow: implement, message: build the change}
  - {id: approve, kind: approval, message: ship it?, approvers: [approver], depends_on: [build]}
  - {id: review, kind: agent, workflow: review, message: review the change, depends_on: [approve]}
"#;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let runs: usize = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let pollers = 4;
    let ports = moto_ports(Duration::from_secs(10)).await;
    let sim = Simulator::start(SimulatorConfig {
        run_duration: Duration::from_secs(2),
        ..SimulatorConfig::default()
    })
    .await?;
    let agent = AgentClient::new(&sim.base_url, &sim.api_key, AgentClientConfig::default())?;
    let notifier = NotifyConfig::default().build(ports.store.clone())?;
    let executor = Arc::new(
        Executor::new(
            ports.store.clone(),
            ports.store.clone(),
            ports.queue.clone(),
            Arc::new(agent),
            Arc::new(SystemClock),
        )?
        .with_notifier(Arc::new(notifier)),
    );
    let def = parse_definition(WORKFLOW)?;
    ports.store.put_workflow(&def, SystemClock.now_ms()).await?;
    println!(
        "moto load: {runs} runs of agent → approval → agent on DynamoDB + SQS (moto), {pollers} pollers"
    );

    let began = Instant::now();
    let mut ids = Vec::new();
    for n in 0..runs {
        let started = start_run(
            &*ports.store,
            &*ports.store,
            &*ports.queue,
            &*ports.store,
            SystemClock.now_ms(),
            NewRun {
                workflow_id: "moto-load".into(),
                idempotency_key: Some(format!("moto-load-{n}")),
                started_by: Some("api:starter".into()),
                ..NewRun::default()
            },
        )
        .await?;
        ids.push(started.run_id);
    }
    println!(
        "  {} runs accepted in {:.1} s",
        ids.len(),
        began.elapsed().as_secs_f64()
    );

    let done = Arc::new(AtomicBool::new(false));
    let batches = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..pollers {
        let (ports, executor, done, batches) = (
            ports.clone(),
            executor.clone(),
            done.clone(),
            batches.clone(),
        );
        workers.push(tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let event = ports.receive_event(Duration::from_secs(1)).await;
                if event.records.is_empty() {
                    continue;
                }
                batches.fetch_add(1, Ordering::Relaxed);
                let response = handle_batch(&executor, event.clone()).await;
                ports.delete_handled(&event, &response).await;
            }
        }));
    }

    // The approver decides every open approval; the run list tells when all are finished.
    let deadline = began + Duration::from_secs(900);
    let mut decided = 0usize;
    let finished = loop {
        if Instant::now() > deadline {
            done.store(true, Ordering::Relaxed);
            return Err("not every run finished within 15 minutes".into());
        }
        let mut active = 0;
        for id in &ids {
            let Some(run) = ports.store.get_run(id).await? else {
                continue;
            };
            if !run.status.is_terminal() {
                active += 1;
            }
            for state in run.steps.values() {
                if let Some(approval) = &state.approval
                    && approval.status == ApprovalStatus::Pending
                {
                    let event = Event::ApprovalDecided {
                        approval_id: approval.id.clone(),
                        by: "approver".into(),
                        decision: ApprovalDecision::Approve,
                        comment: None,
                        groups: Vec::new(),
                    };
                    if executor.command_deferred(id, event).await.is_ok() {
                        decided += 1;
                    }
                }
            }
        }
        if active == 0 {
            break began.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    done.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await?;
    }

    let mut to_approval = Vec::new();
    let mut to_agent = Vec::new();
    let mut not_succeeded = Vec::new();
    for id in &ids {
        let run = ports
            .store
            .get_run(id)
            .await?
            .ok_or("an accepted run is missing")?;
        if run.status != RunStatus::Succeeded {
            not_succeeded.push(format!("{id}: {}", run.status));
        }
        let audit = ports.store.audit(id, None, 500).await?;
        let at = |kind: &str, step: &str| {
            audit
                .iter()
                .find(|e| e.kind == kind && e.step_id.as_deref() == Some(step))
                .map(|e| e.at)
        };
        if let (Some(a), Some(b)) = (
            at("step.succeeded", "build"),
            at("approval.requested", "approve"),
        ) {
            to_approval.push(b - a);
        }
        if let (Some(a), Some(b)) = (
            at("approval.decided", "approve"),
            at("agent.started", "review"),
        ) {
            to_agent.push(b - a);
        }
    }
    let listed = ports
        .store
        .list_runs(&RunQuery {
            workflow_id: Some("moto-load".into()),
            limit: 100,
            ..RunQuery::default()
        })
        .await?;
    let secs = finished.as_secs_f64();
    println!(
        "  all finished {secs:.1} s after the first start: {:.2} runs/s, {:.2} steps/s; {} SQS batches, {decided} approvals decided",
        ids.len() as f64 / secs,
        (ids.len() * 3) as f64 / secs,
        batches.load(Ordering::Relaxed)
    );
    report("step-to-step agent → approval (one decision)", to_approval);
    report(
        "step-to-step approval → agent (SQS hop + agent start)",
        to_agent,
    );
    println!(
        "  no-loss check: {} accepted, {} succeeded, {} not succeeded; the table lists {}{} runs of the workflow",
        ids.len(),
        ids.len() - not_succeeded.len(),
        not_succeeded.len(),
        listed.runs.len(),
        if listed.next_cursor.is_some() {
            "+"
        } else {
            ""
        }
    );
    if !not_succeeded.is_empty() {
        return Err(format!("runs that did not succeed: {not_succeeded:?}").into());
    }
    Ok(())
}

fn report(what: &str, mut ms: Vec<i64>) {
    if ms.is_empty() {
        println!("  {what}: no samples");
        return;
    }
    ms.sort_unstable();
    let pct = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1];
    println!(
        "  {what}: {} samples, p50 {} ms, p99 {} ms, max {} ms",
        ms.len(),
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
}
