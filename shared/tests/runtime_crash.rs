//! Crash anywhere, finish anyway.
//!
//! A clean run of a three-step agent workflow (API start, then the poller handling every
//! message) makes some number of I/O calls (store, queue, agent service). For every N from 1
//! to that number, the same run is made with the process "dying" right after its N-th call:
//! that call took effect, nothing after it does, and the message being handled is not acked.
//! Then the process restarts and work continues the only ways it would in production: the
//! queue redelivers unacked messages after the visibility timeout, a client retries its start
//! request with the same idempotency key, and the sweeper re-wakes runs whose `wake_at` passed
//! (the test moves a manual clock ahead when nothing is left to deliver, as time would).
//!
//! Every run must succeed, and the agent service must have seen exactly one run per step
//! attempt (the session-name lookup before each start is what guarantees it).

mod runtime_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowgate_shared::adapters::memqueue::MemQueue;
use flowgate_shared::agent::simulator::{Simulator, SimulatorConfig};
use flowgate_shared::engine::session_name;
use flowgate_shared::model::RunStatus;
use flowgate_shared::ports::{RunStore, WorkQueue, WorkflowStore};
use flowgate_shared::runtime::{Clock, Executor, ManualClock, NewRun, start_run, sweep};
use runtime_support::*;
use tokio::sync::Semaphore;

/// Unacked messages come back this soon.
const VISIBILITY: Duration = Duration::from_millis(200);
/// Waiting this long (longer than the visibility timeout and any poll delay) with nothing to
/// deliver means something was lost: time to let the sweeper find it.
const IDLE_WAIT: Duration = Duration::from_millis(400);
/// How far the clock moves per idle round (the sweeper runs every minute in production; a lost
/// poll chain is noticed about six minutes after its last write).
const IDLE_STEP: Duration = Duration::from_secs(120);
/// Scenarios run at once (each has its own simulator, store and queue; they mostly wait).
const PARALLEL: usize = 8;
/// How long each simulated agent run runs, and how often the workflow polls.
const RUN_DURATION: Duration = Duration::from_millis(400);
const POLL_EVERY: &str = "250ms";
/// Upper bound on one scenario.
const SCENARIO_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Outcome {
    crash_at: Option<usize>,
    fired: Option<&'static str>,
    calls: usize,
    status: RunStatus,
    /// (step, attempt) → agent runs the simulator holds for that attempt's session name.
    starts: BTreeMap<(String, u32), usize>,
    runs_started: usize,
    sweeps: usize,
    elapsed: Duration,
}

async fn scenario(crash_at: Option<usize>) -> Outcome {
    let began = Instant::now();
    // Timing chosen so every run makes the same calls: each agent run is pending for 10 ms and
    // running for 400 ms, and polls come every 250 ms, so the first poll of a step sees it
    // running (with tokens, a write) and the second sees it completed, even on a busy machine.
    let sim = Simulator::start(SimulatorConfig {
        pending_for: Duration::from_millis(10),
        run_duration: RUN_DURATION,
        ..SimulatorConfig::fast()
    })
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("temp dir");
    let raw_store = open_store(&dir);
    let raw_queue = Arc::new(MemQueue::new(VISIBILITY));
    let clock = Arc::new(ManualClock::starting_now());
    let def = three_agent_steps("crashy", POLL_EVERY);
    raw_store
        .put_workflow(&def, clock.now_ms())
        .await
        .expect("workflow");

    let fuse = match crash_at {
        Some(n) => Fuse::crash_after(n),
        None => Fuse::never(),
    };
    let store = Arc::new(CrashStore {
        inner: raw_store.clone(),
        fuse: fuse.clone(),
    });
    let queue = Arc::new(CrashQueue::new(raw_queue.clone(), fuse.clone()));
    // The manual clock runs ahead of the simulator's wall clock by the idle steps taken, so
    // the session-name lookup must tolerate a large skew.
    let agent = Arc::new(CrashAgent {
        inner: client(&sim, Duration::from_secs(86_400)),
        fuse: fuse.clone(),
    });
    let process = || {
        Executor::new(
            store.clone(),
            store.clone(),
            queue.clone(),
            agent.clone(),
            clock.clone(),
        )
        .expect("executor")
    };

    // The API: create the run and enqueue its start. A client whose request died retries
    // with the same idempotency key.
    let request = NewRun {
        workflow_id: "crashy".into(),
        idempotency_key: Some("crash-test".into()),
        ..NewRun::default()
    };
    let run_id = loop {
        let result = start_run(
            &*store,
            &*store,
            &*queue,
            &*store.inner,
            clock.now_ms(),
            request.clone(),
        )
        .await;
        let died = fuse.is_dead();
        fuse.restart();
        match result {
            Ok(started) if !died => break started.run_id,
            _ => {}
        }
        assert!(
            began.elapsed() < SCENARIO_LIMIT,
            "the start never succeeded"
        );
    };

    // The poller, one message at a time so the I/O count is a property of the scenario.
    let mut executor = process();
    let mut sweeps = 0;
    loop {
        let run = raw_store
            .get_run(&run_id)
            .await
            .expect("read")
            .expect("run exists");
        if run.status.is_terminal() {
            break;
        }
        assert!(
            began.elapsed() < SCENARIO_LIMIT,
            "crash after call {crash_at:?} ({:?}): the run is stuck after {sweeps} sweeps: \
             {run:#?}\ncalls: {:?}",
            fuse.fired(),
            fuse.log()
        );
        let received = raw_queue.receive(1, IDLE_WAIT).await.expect("receive");
        let Some(message) = received.into_iter().next() else {
            clock.advance(IDLE_STEP);
            sweep(&*raw_store, &*raw_queue, clock.now_ms(), 100)
                .await
                .expect("sweep");
            sweeps += 1;
            continue;
        };
        let result = executor.handle(&message.message).await;
        if fuse.is_dead() {
            // The process died mid-message: no ack; a new process starts cold.
            fuse.restart();
            executor = process();
            continue;
        }
        if matches!(&result, Err(e) if e.is_retryable()) {
            continue; // left for redelivery
        }
        let acked = queue.ack(&message.receipt).await;
        if acked.is_err() || fuse.is_dead() {
            fuse.restart();
            executor = process();
        }
    }

    let run = raw_store
        .get_run(&run_id)
        .await
        .expect("read")
        .expect("run");
    let mut starts = BTreeMap::new();
    for (step, state) in &run.steps {
        for attempt in 1..=state.attempt {
            starts.insert(
                (step.clone(), attempt),
                sim.runs_with_session_name(&session_name(&run_id, step, attempt)),
            );
        }
    }
    Outcome {
        crash_at,
        fired: fuse.fired(),
        calls: fuse.calls(),
        status: run.status,
        starts,
        runs_started: sim.runs_started(),
        sweeps,
        elapsed: began.elapsed(),
    }
}

fn check(outcome: &Outcome) {
    assert_eq!(
        outcome.status,
        RunStatus::Succeeded,
        "crash after call {:?} ({:?}): {outcome:#?}",
        outcome.crash_at,
        outcome.fired
    );
    assert_eq!(
        outcome.starts.len(),
        3,
        "one attempt per step expected: {outcome:#?}"
    );
    assert!(
        outcome.starts.values().all(|&n| n == 1),
        "crash after call {:?} ({:?}): an attempt's agent run was started more than once \
         (or never): {outcome:#?}",
        outcome.crash_at,
        outcome.fired
    );
    assert_eq!(outcome.runs_started, 3, "{outcome:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_any_io_call_leaves_a_run_that_finishes_with_one_agent_run_per_attempt() {
    let began = Instant::now();
    let clean = scenario(None).await;
    check(&clean);
    assert_eq!(clean.sweeps, 0, "a clean run needs no sweeper: {clean:#?}");
    let total = clean.calls;
    assert!(
        total > 30,
        "a clean run makes dozens of I/O calls, not {total}"
    );

    let permits = Arc::new(Semaphore::new(PARALLEL));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 1..=total {
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore");
            scenario(Some(n)).await
        });
    }
    let mut outcomes = Vec::new();
    while let Some(outcome) = tasks.join_next().await {
        outcomes.push(outcome.expect("scenario task"));
    }
    outcomes.sort_by_key(|o| o.crash_at);
    for outcome in &outcomes {
        check(outcome);
    }

    // Which kinds of call the process died after. A crash point fires when the scenario makes
    // at least as many calls as the clean run did up to it; the timing above makes that so
    // (a run on an overloaded machine may still poll once less, hence the 90 %).
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for o in &outcomes {
        if let Some(kind) = o.fired {
            *by_kind.entry(kind).or_default() += 1;
        }
    }
    let fired = by_kind.values().sum::<usize>();
    let swept = outcomes.iter().filter(|o| o.sweeps > 0).count();
    let slowest = outcomes.iter().map(|o| o.elapsed).max().unwrap_or_default();
    println!(
        "crash points tested: {total} (a clean run makes {total} I/O calls); crashes that \
         fired: {fired}; runs that needed the sweeper: {swept}; slowest scenario {slowest:?}; \
         total {:?}",
        began.elapsed()
    );
    println!("crashes by the call they followed: {by_kind:?}");
    assert!(
        fired * 10 >= total * 9,
        "only {fired} of {total} crash points fired: {by_kind:?}"
    );
    for kind in [
        "workflows.get",
        "store.create_run",
        "store.get_run",
        "store.put_run",
        "queue.send",
        "queue.ack",
        // A first start performed by the handler that wrote it makes no look-up by session
        // name, so a clean run makes none to crash after; the re-issued starts that do look
        // up are what recovers the crashes right after `agent.start_run` below (the look-up
        // finds the run and adopts it: one agent run per attempt, checked above).
        "agent.start_run",
        "agent.observe",
    ] {
        assert!(
            by_kind.contains_key(kind),
            "no crash right after a {kind} call; crashes by kind: {by_kind:?}"
        );
    }
    assert!(
        swept > 0,
        "some crash must have lost a message for the sweeper to find"
    );
}
