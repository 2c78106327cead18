//! Completion chaining on real local ports (redb store, in-process queue, the agent simulator):
//! a finished run starts the workflows whose `workflow_completed` trigger names it, with inputs
//! mapped from its outputs; statuses filter; a loop stops at the chain-depth limit with an
//! audit entry; a redelivered lifecycle message starts nothing new.

mod runtime_support;

use std::time::Duration;

use flowgate_shared::model::{AuditEntry, Run, RunStatus};
use flowgate_shared::notify::Delivery;
use flowgate_shared::ports::{RunQuery, RunStore, WorkMessage, WorkQueue};
use flowgate_shared::runtime::MAX_CHAIN_DEPTH;
use runtime_support::*;
use serde_json::{Map, Value, json};

/// `build` maps its inputs to outputs; `deploy` starts when it completes.
const BUILD: &str = r#"
id: build
inputs:
  repo: {type: string, required: true}
steps:
  - {id: nap, kind: wait, duration: 10ms}
outputs:
  repo: "${{ inputs.repo }}"
  artifact: "${{ inputs.repo }}@${{ run.id }}"
"#;

const DEPLOY: &str = r#"
id: deploy
inputs:
  repo: {type: string, required: true}
  artifact: {type: string, required: true}
  note: {type: string, default: none}
  stage: {type: string, default: staging}
triggers:
  - type: workflow_completed
    workflow: build
    inputs:
      repo: "${{ run.outputs.repo }}"
      artifact: "${{ run.outputs.artifact }}"
      note: "after ${{ run.workflow }} ${{ run.status }}"
steps:
  - {id: nap, kind: wait, duration: 10ms}
"#;

type World = NotifiedWorld;

async fn world(defs: &[&str]) -> World {
    notified_world(defs).await
}

impl World {
    async fn start(&self, workflow: &str, inputs: Value) -> String {
        self.try_start(workflow, inputs, None)
            .await
            .expect("start")
            .run_id
    }

    /// Handle messages until the queue is empty (every run finished, every delivery done);
    /// the messages handled, in order.
    async fn settle(&self) -> Vec<WorkMessage> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut handled = Vec::new();
        while !self.queue.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the queue did not settle: {} messages left",
                self.queue.len()
            );
            for m in self
                .queue
                .receive(10, Duration::from_millis(50))
                .await
                .expect("receive")
            {
                match self.executor.handle(&m.message).await {
                    Ok(()) => self.queue.ack(&m.receipt).await.expect("ack"),
                    Err(e) if e.is_retryable() => {}
                    Err(e) => panic!("handling {:?} failed: {e}", m.message),
                }
                handled.push(m.message);
            }
        }
        handled
    }

    async fn run(&self, id: &str) -> Run {
        self.store.get_run(id).await.expect("read").expect("run")
    }

    /// Every run, oldest first.
    async fn runs(&self) -> Vec<Run> {
        let mut runs = Vec::new();
        let mut query = RunQuery {
            limit: 100,
            ..RunQuery::default()
        };
        loop {
            let page = self.store.list_runs(&query).await.expect("list runs");
            runs.extend(page.runs);
            match page.next_cursor {
                Some(c) => query.cursor = Some(c),
                None => break,
            }
        }
        runs.sort_by_key(|r| (r.created_at, r.chain_depth));
        runs
    }

    async fn runs_of(&self, workflow: &str) -> Vec<Run> {
        self.runs()
            .await
            .into_iter()
            .filter(|r| r.workflow_id == workflow)
            .collect()
    }

    async fn audit(&self, id: &str) -> Vec<AuditEntry> {
        self.store.audit(id, None, 1000).await.expect("audit")
    }

    /// The run's audit entries about chaining.
    async fn chain_entries(&self, id: &str) -> Vec<AuditEntry> {
        self.audit(id)
            .await
            .into_iter()
            .filter(|e| e.kind.starts_with("chain."))
            .collect()
    }
}

fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_run_starts_the_chained_workflow_with_inputs_from_its_outputs() {
    let w = world(&[BUILD, DEPLOY]).await;
    let build = w.start("build", json!({"repo": "acme/app"})).await;
    w.settle().await;

    let x = w.run(&build).await;
    assert_eq!(x.status, RunStatus::Succeeded);
    let deploys = w.runs_of("deploy").await;
    assert_eq!(deploys.len(), 1, "one chained run: {deploys:#?}");
    let y = &deploys[0];
    assert_eq!(
        y.status,
        RunStatus::Succeeded,
        "the chained run ran: {y:#?}"
    );
    assert_eq!(
        y.inputs,
        obj(json!({
            "repo": "acme/app",
            "artifact": format!("acme/app@{build}"),
            "note": "after build succeeded",
            "stage": "staging",
        })),
        "mapped from the outputs; unmapped inputs take their defaults"
    );
    assert_eq!(y.parent_run_id.as_deref(), Some(build.as_str()));
    assert_eq!(y.chain_depth, x.chain_depth + 1);
    assert_eq!(y.started_by, Some(format!("chain:{build}")));
    assert_eq!(y.idempotency_key, Some(format!("chain:{build}:deploy")));

    let entries = w.chain_entries(&build).await;
    assert_eq!(entries.len(), 1, "{entries:#?}");
    let started = &entries[0];
    assert_eq!(started.kind, "chain.started");
    assert_eq!(started.actor, "system");
    assert_eq!(started.data["workflow"], "deploy");
    assert_eq!(started.data["run_id"], y.id.as_str());
    assert_eq!(started.data["chain_depth"], 1);
    assert!(started.message.contains(&y.id), "{}", started.message);
    // The entry was appended after the run's own: the log stays contiguous.
    let seqs: Vec<u64> = w.audit(&build).await.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(w.run(&build).await.audit_seq, seqs.len() as u64);
    // Nothing chains to deploy.
    assert!(w.chain_entries(&y.id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_with_statuses_fires_only_on_those_statuses() {
    let agentic = r#"
id: agentic
inputs:
  task: {type: string, required: true}
polling: {initial: 20ms, factor: 1, max: 20ms}
steps:
  - id: work
    kind: agent
    workflow: builder
    message: "${{ inputs.task }}"
"#;
    let fixer = r#"
id: fixer
inputs:
  failed_run: {type: string, required: true}
  reason: {type: string}
triggers:
  - type: workflow_completed
    workflow: agentic
    statuses: [failed]
    inputs:
      failed_run: "${{ run.id }}"
      reason: "${{ run.error }}"
steps:
  - {id: nap, kind: wait, duration: 10ms}
"#;
    // No statuses: any way of finishing.
    let report = r#"
id: report
inputs:
  status: {type: string, required: true}
triggers:
  - type: workflow_completed
    workflow: agentic
    inputs:
      status: "${{ run.status }}"
steps:
  - {id: nap, kind: wait, duration: 10ms}
"#;
    let w = world(&[agentic, fixer, report]).await;

    let ok = w.start("agentic", json!({"task": "build it"})).await;
    w.settle().await;
    assert_eq!(w.run(&ok).await.status, RunStatus::Succeeded);
    assert!(
        w.runs_of("fixer").await.is_empty(),
        "a [failed] trigger does not fire on success"
    );
    let reports = w.runs_of("report").await;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].inputs["status"], "succeeded");
    let kinds: Vec<String> = w
        .chain_entries(&ok)
        .await
        .iter()
        .map(|e| format!("{} {}", e.kind, e.data["workflow"]))
        .collect();
    assert_eq!(kinds, ["chain.started \"report\""]);

    let bad = w.start("agentic", json!({"task": "[fail] build it"})).await;
    w.settle().await;
    let failed = w.run(&bad).await;
    assert_eq!(failed.status, RunStatus::Failed);
    let fixers = w.runs_of("fixer").await;
    assert_eq!(fixers.len(), 1, "the [failed] trigger fires on failure");
    let fix = &fixers[0];
    assert_eq!(fix.inputs["failed_run"], bad.as_str());
    assert_eq!(
        fix.inputs["reason"].as_str(),
        failed.error.as_deref(),
        "run.error reaches the fixer"
    );
    assert!(fix.inputs["reason"].as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(fix.parent_run_id.as_deref(), Some(bad.as_str()));
    let reports = w.runs_of("report").await;
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[1].inputs["status"], "failed");
    let mut kinds: Vec<String> = w
        .chain_entries(&bad)
        .await
        .iter()
        .map(|e| format!("{} {}", e.kind, e.data["workflow"]))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["chain.started \"fixer\"", "chain.started \"report\""]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_of_workflows_stops_at_the_chain_depth_limit_with_an_audit_entry() {
    let ping = r#"
id: ping
inputs:
  hops: {type: string, default: "0"}
triggers:
  - {type: workflow_completed, workflow: pong, inputs: {hops: "${{ run.outputs.hops }}+"}}
steps:
  - {id: nap, kind: wait, duration: 10ms}
outputs:
  hops: "${{ inputs.hops }}"
"#;
    let pong = r#"
id: pong
inputs:
  hops: {type: string, required: true}
triggers:
  - {type: workflow_completed, workflow: ping, inputs: {hops: "${{ run.outputs.hops }}+"}}
steps:
  - {id: nap, kind: wait, duration: 10ms}
outputs:
  hops: "${{ inputs.hops }}"
"#;
    let w = world(&[ping, pong]).await;
    let first = w.start("ping", json!({})).await;
    w.settle().await;

    let runs = w.runs().await;
    assert_eq!(
        runs.len(),
        MAX_CHAIN_DEPTH as usize + 1,
        "ping → pong → ping … stops after the run at the limit: {:#?}",
        runs.iter()
            .map(|r| (&r.workflow_id, r.chain_depth))
            .collect::<Vec<_>>()
    );
    // One chain: each run started by the one before, one deeper, alternating workflows.
    let mut parent: Option<String> = None;
    for (depth, run) in runs.iter().enumerate() {
        assert_eq!(run.chain_depth, depth as u32);
        assert_eq!(run.parent_run_id, parent);
        assert_eq!(run.status, RunStatus::Succeeded);
        assert_eq!(
            run.workflow_id,
            if depth % 2 == 0 { "ping" } else { "pong" }
        );
        assert_eq!(run.inputs["hops"], format!("0{}", "+".repeat(depth)));
        parent = Some(run.id.clone());
    }
    assert_eq!(runs[0].id, first);

    for run in &runs[..runs.len() - 1] {
        let entries = w.chain_entries(&run.id).await;
        assert_eq!(entries.len(), 1, "{entries:#?}");
        assert_eq!(entries[0].kind, "chain.started");
    }
    let last = &runs[runs.len() - 1];
    assert_eq!(last.chain_depth, MAX_CHAIN_DEPTH);
    let entries = w.chain_entries(&last.id).await;
    assert_eq!(entries.len(), 1, "{entries:#?}");
    let stopped = &entries[0];
    assert_eq!(stopped.kind, "chain.stopped");
    assert_eq!(stopped.data["workflow"], "ping");
    assert_eq!(stopped.data["chain_depth"], MAX_CHAIN_DEPTH + 1);
    assert_eq!(stopped.data["limit"], MAX_CHAIN_DEPTH);
    assert!(
        stopped.message.contains(&format!(
            "would start ping at chain depth {}; the chain-depth limit is {MAX_CHAIN_DEPTH}",
            MAX_CHAIN_DEPTH + 1
        )),
        "{}",
        stopped.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_lifecycle_message_starts_one_run() {
    let w = world(&[BUILD, DEPLOY]).await;
    let build = w.start("build", json!({"repo": "acme/app"})).await;
    let handled = w.settle().await;
    let completed = handled
        .into_iter()
        .find(|m| {
            matches!(m, WorkMessage::Deliver { run_id, delivery: Delivery::Lifecycle { event, .. }, .. }
                if *run_id == build && event == "run.completed")
        })
        .expect("the run.completed delivery was handled");
    let audit_before = w.audit(&build).await.len();

    // Again, then twice at once (the second write loses the race and must not duplicate).
    w.executor.handle(&completed).await.expect("redelivery");
    let (a, b) = tokio::join!(w.executor.handle(&completed), w.executor.handle(&completed));
    a.expect("concurrent redelivery");
    b.expect("concurrent redelivery");
    w.settle().await;

    let deploys = w.runs_of("deploy").await;
    assert_eq!(deploys.len(), 1, "{deploys:#?}");
    let entries = w.chain_entries(&build).await;
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0].data["run_id"], deploys[0].id.as_str());
    assert_eq!(w.audit(&build).await.len(), audit_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_that_cannot_be_mapped_leave_one_chain_failed_entry() {
    // `repo` maps from an output build does not have (absent → not given → required input
    // missing). (A template completion templates cannot read at all, like `run.started_by`,
    // is refused when the workflow is stored: see definitions.rs.)
    let missing = r#"
id: missing
inputs:
  repo: {type: string, required: true}
triggers:
  - type: workflow_completed
    workflow: build
    inputs: {repo: "${{ run.outputs.nope }}"}
steps:
  - {id: nap, kind: wait, duration: 10ms}
"#;
    let w = world(&[BUILD, missing]).await;
    let build = w.start("build", json!({"repo": "acme/app"})).await;
    let handled = w.settle().await;
    assert_eq!(w.runs().await.len(), 1, "nothing was started");

    let entries = w.chain_entries(&build).await;
    assert_eq!(entries.len(), 1, "{entries:#?}");
    let m = &entries[0];
    assert_eq!(m.data["workflow"], "missing");
    assert_eq!(m.kind, "chain.failed");
    assert!(
        m.message.contains("required input \"repo\" is missing")
            && m.message
                .contains("workflow_completed trigger of workflow missing"),
        "{}",
        m.message
    );

    // A redelivery does not try again (no retry loop, no second entry).
    let completed = handled
        .into_iter()
        .find(|m| matches!(m, WorkMessage::Deliver { delivery: Delivery::Lifecycle { event, .. }, .. } if event == "run.completed"))
        .expect("the run.completed delivery was handled");
    w.executor.handle(&completed).await.expect("redelivery");
    assert_eq!(w.chain_entries(&build).await.len(), 1);
    assert_eq!(w.runs().await.len(), 1);
}

/// The lifecycle deliveries among handled messages: (event, run).
fn lifecycle_deliveries(handled: &[WorkMessage]) -> Vec<(String, String)> {
    handled
        .iter()
        .filter_map(|m| match m {
            WorkMessage::Deliver {
                run_id,
                delivery: Delivery::Lifecycle { event, .. },
                ..
            } => Some((event.clone(), run_id.clone())),
            _ => None,
        })
        .collect()
}

/// A run's end costs a message and an invocation only when something needs it: here nothing
/// does (no Slack, no webhook subscription, no concurrency limit, no workflow chains on
/// `build`), so none is queued. Once a chained workflow exists, the end goes out; a trigger
/// stored moments after the list was read applies once the list is older than
/// `CHAIN_SOURCES_TTL_MS`, as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_end_is_delivered_only_when_something_waits_on_it() {
    let alone = world(&[BUILD]).await;
    let build = alone.start("build", json!({"repo": "acme/app"})).await;
    let handled = alone.settle().await;
    assert_eq!(alone.run(&build).await.status, RunStatus::Succeeded);
    assert!(
        lifecycle_deliveries(&handled).is_empty(),
        "nothing needs build's end: {handled:#?}"
    );

    let chained = world(&[BUILD, DEPLOY]).await;
    let build = chained.start("build", json!({"repo": "acme/app"})).await;
    let handled = chained.settle().await;
    assert_eq!(
        lifecycle_deliveries(&handled),
        vec![("run.completed".to_string(), build)],
        "deploy chains on build, so build's end goes out (deploy's own does not)"
    );

    // The executor that just saw "nothing chains on build" keeps that answer for a while.
    use flowgate_shared::ports::WorkflowStore as _;
    use flowgate_shared::runtime::{Clock as _, SystemClock};
    let deploy = flowgate_shared::definition::parse_definition(DEPLOY).expect("deploy");
    alone
        .store
        .put_workflow(&deploy, SystemClock.now_ms())
        .await
        .expect("store deploy");
    let again = alone.start("build", json!({"repo": "acme/other"})).await;
    let handled = alone.settle().await;
    assert_eq!(alone.run(&again).await.status, RunStatus::Succeeded);
    assert!(lifecycle_deliveries(&handled).is_empty(), "{handled:#?}");
    assert!(alone.runs_of("deploy").await.is_empty());
}
