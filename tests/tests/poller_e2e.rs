//! The poller end to end: real SQS messages from moto, shaped as Lambda delivers them, drive
//! `handle_batch` with an executor on DynamoDB + SQS (moto) and the agent-service simulator,
//! through a three-step agent workflow to completion.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowgate_poller::handle_batch;
use flowgate_shared::agent::simulator::{Simulator, SimulatorConfig, SimulatorHandle};
use flowgate_shared::agent::{AgentClient, AgentClientConfig};
use flowgate_shared::definition::{WorkflowDefinition, parse_definition};
use flowgate_shared::engine::session_name;
use flowgate_shared::model::{AgentRunStatus, RunStatus, StepStatus};
use flowgate_shared::ports::{RunStore, WorkflowStore};
use flowgate_shared::runtime::{Clock, Executor, NewRun, SystemClock, start_run};
use flowgate_tests::runtime::{MotoPorts, moto_ports, three_agent_steps};

/// An executor on the moto ports and the simulator `sim`.
fn executor_on(ports: &MotoPorts, sim: &SimulatorHandle) -> Executor {
    let agent = AgentClient::new(&sim.base_url, &sim.api_key, AgentClientConfig::default())
        .expect("client");
    Executor::new(
        ports.store.clone(),
        ports.store.clone(),
        ports.queue.clone(),
        Arc::new(agent),
        Arc::new(SystemClock),
    )
    .expect("executor")
}

/// Store `def` and start a run of it, as the API function does; its id.
async fn start(ports: &MotoPorts, def: &WorkflowDefinition) -> String {
    ports
        .store
        .put_workflow(def, SystemClock.now_ms())
        .await
        .expect("store the workflow");
    let started = start_run(
        &*ports.store,
        &*ports.store,
        &*ports.queue,
        &*ports.store,
        SystemClock.now_ms(),
        NewRun {
            workflow_id: def.id.clone(),
            ..NewRun::default()
        },
    )
    .await
    .expect("start the run");
    assert!(started.enqueued);
    started.run_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_batches_drive_a_three_step_agent_workflow_to_completion() {
    let began = Instant::now();
    let ports = moto_ports(Duration::from_secs(5)).await;
    // Runs take about 2 s (pending for 0.25 s, then running with tokens growing every 0.25 s),
    // so polls every second see several states of each run.
    let sim = Simulator::start(SimulatorConfig {
        run_duration: Duration::from_secs(2),
        ..SimulatorConfig::default()
    })
    .await
    .expect("simulator");
    let executor = executor_on(&ports, &sim);
    let run_id = start(&ports, &three_agent_steps("e2e-agents", "1s")).await;

    let deadline = began + Duration::from_secs(120);
    let mut progress_seen: BTreeSet<String> = BTreeSet::new();
    let (mut batches, mut records, mut deleted, mut failures) = (0, 0, 0, 0);
    let run = loop {
        let run = ports
            .store
            .get_run(&run_id)
            .await
            .expect("read the run")
            .expect("the run exists");
        // Progress written while a step runs (the simulator reports tokens long before the
        // run ends), visible to anyone reading the store between polls.
        for (step, state) in &run.steps {
            if let Some(agent) = &state.agent
                && state.status == StepStatus::Running
                && agent.upstream_status == Some(AgentRunStatus::Running)
                && agent.tokens > 0
            {
                progress_seen.insert(step.clone());
            }
        }
        if run.status.is_terminal() {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not finish in time after {batches} batches: {run:#?}"
        );
        let event = ports.receive_event(Duration::from_secs(1)).await;
        if event.records.is_empty() {
            continue;
        }
        batches += 1;
        records += event.records.len();
        let response = handle_batch(&executor, event.clone()).await;
        failures += response.batch_item_failures.len();
        deleted += ports.delete_handled(&event, &response).await;
    };
    println!(
        "run {run_id}: {batches} batches, {records} records, {deleted} deleted, {failures} \
         reported failed, {:?}",
        began.elapsed()
    );

    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
    for step in ["a", "b", "c"] {
        let state = run.step(step).expect("step state");
        assert_eq!(state.status, StepStatus::Succeeded);
        let output = state.output.as_ref().and_then(|o| o.as_str()).unwrap_or("");
        assert!(!output.is_empty(), "step {step} has its agent's final text");
        assert_eq!(
            sim.runs_with_session_name(&session_name(&run_id, step, 1)),
            1,
            "one agent run for step {step}"
        );
        let agent = state.agent.as_ref().expect("agent progress");
        assert_eq!(agent.upstream_status, Some(AgentRunStatus::Completed));
        assert!(
            agent.polls >= 2,
            "step {step} was polled while running: {agent:?}"
        );
    }
    assert_eq!(
        progress_seen,
        BTreeSet::from(["a".to_string(), "b".to_string(), "c".to_string()]),
        "running progress (tokens > 0) was visible in the store for every step"
    );
    assert_eq!(sim.start_requests(), 3, "exactly three agent starts");
    assert_eq!(sim.runs_started(), 3);
    assert!(
        records >= 7,
        "the start and at least two polls per step: {records}"
    );
    assert_eq!(deleted + failures, records);
    let audit = ports.store.audit(&run_id, None, 200).await.expect("audit");
    let kinds: Vec<&str> = audit.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"run.started"));
    assert_eq!(kinds.last(), Some(&"run.completed"));
    assert_eq!(kinds.iter().filter(|k| **k == "agent.started").count(), 3);
}

/// On SQS (moto), a poll chain that records nothing goes on in one message: the handler hands
/// the record back with `ChangeMessageVisibility` and reports it, so the event source mapping
/// leaves it, and SQS delivers the same message again after the next interval with a higher
/// receive count. Nothing else is sent while the agent runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_chain_goes_on_in_one_sqs_message_handed_back() {
    let ports = moto_ports(Duration::from_secs(5)).await;
    let sim = Simulator::start(SimulatorConfig::fast())
        .await
        .expect("simulator");
    let executor = executor_on(&ports, &sim);
    let def = parse_definition(
        "id: endless\npolling: {initial: 1s, factor: 1, max: 1s}\nsteps:\n  - id: a\n    kind: agent\n    workflow: builder\n    message: \"[timeout] keep going\"\n",
    )
    .expect("definition");
    let run_id = start(&ports, &def).await;

    // message id → receive counts seen for poll records.
    let mut polls: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut handed_back = 0;
    while handed_back < 4 {
        assert!(
            Instant::now() < deadline,
            "no chain handed back 4 times: {polls:?}"
        );
        let event = ports.receive_event(Duration::from_secs(2)).await;
        let response = handle_batch(&executor, event.clone()).await;
        for record in &event.records {
            let id = record.message_id.clone().unwrap_or_default();
            let reported = response
                .batch_item_failures
                .iter()
                .any(|f| f.item_identifier == id);
            if record
                .body
                .as_deref()
                .unwrap_or("")
                .contains("\"type\":\"poll\"")
            {
                let count = record.attributes["ApproximateReceiveCount"]
                    .parse()
                    .expect("a count");
                polls.entry(id).or_default().push(count);
                handed_back += usize::from(reported);
            }
        }
        ports.delete_handled(&event, &response).await;
    }
    // The first poll saw the run leave `pending`, recorded it and started the chain that then
    // went on in one message: one message received again and again, counting up.
    let (chain, counts) = polls
        .iter()
        .max_by_key(|(_, counts)| counts.len())
        .expect("polls");
    assert!(counts.len() >= 4, "{polls:?}");
    assert_eq!(
        *counts,
        (1..=counts.len() as u32).collect::<Vec<_>>(),
        "message {chain} received again and again"
    );
    assert!(
        polls.len() <= 2,
        "at most the first poll's message and the chain's: {polls:?}"
    );
    let run = ports.store.get_run(&run_id).await.unwrap().unwrap();
    assert_eq!(run.step("a").map(|s| s.status), Some(StepStatus::Running));
}
