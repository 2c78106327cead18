//! The executor on real local ports (redb store, in-process queue, the agent simulator over
//! HTTP, wiremock for HTTP steps): timer chaining, stale polls, write races, effects, sessions,
//! and the sweeper starting a run whose start message was lost.

mod runtime_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use flowgate_shared::adapters::embedded::EmbeddedStore;
use flowgate_shared::adapters::memqueue::MemQueue;
use flowgate_shared::agent::simulator::SimulatorHandle;
use flowgate_shared::definition::{WorkflowDefinition, parse_definition};
use flowgate_shared::engine::{Effect, Event, REISSUE_AFTER_MS, decide, session_name};
use flowgate_shared::model::{AuditEntry, Millis, Run, RunStatus, StepStatus};
use flowgate_shared::ports::{
    CreateOutcome, MAX_DELAY, REDELIVER_MAX_RECEIVES, RunPage, RunQuery, RunStore, SessionRecord,
    SessionRun, StoreError, WorkMessage, WorkQueue, WorkflowStore,
};
use flowgate_shared::runtime::{
    Clock, Executor, Handled, ManualClock, NewRun, Receipt, SWEEP_GRACE_MS, SystemClock,
    live_session, live_sessions, session_record_name, start_run, sweep,
};
use runtime_support::*;
use serde_json::{Map, json};
use tokio::sync::oneshot;
use wiremock::matchers::{body_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn def(yaml: &str) -> WorkflowDefinition {
    match parse_definition(yaml) {
        Ok(d) => d,
        Err(e) => panic!("test definition is invalid: {e}"),
    }
}

/// Handle messages from `queue` until the run is terminal (acking what was handled, leaving
/// retryable failures for redelivery), within `limit`.
async fn drive(
    executor: &Executor,
    queue: &dyn WorkQueue,
    store: &dyn RunStore,
    run_id: &str,
    limit: Duration,
) -> Run {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let run = store.get_run(run_id).await.expect("read").expect("run");
        if run.status.is_terminal() {
            return run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run did not finish within {limit:?}: {run:#?}"
        );
        for m in queue
            .receive(10, Duration::from_millis(200))
            .await
            .expect("receive")
        {
            match executor.handle(&m.message).await {
                Err(e) if e.is_retryable() => {}
                _ => queue.ack(&m.receipt).await.expect("ack"),
            }
        }
    }
}

struct Local {
    _dir: tempfile::TempDir,
    store: Arc<EmbeddedStore>,
    queue: Arc<CrashQueue>,
    mem: Arc<MemQueue>,
}

impl Local {
    /// An executor over these ports and the simulator, on the system clock.
    fn executor(&self, sim: &SimulatorHandle) -> Executor {
        Executor::new(
            self.store.clone(),
            self.store.clone(),
            self.queue.clone(),
            Arc::new(client(sim, Duration::from_secs(300))),
            Arc::new(SystemClock),
        )
        .expect("executor")
    }

    /// Store `def` and start a run of it with default inputs; the run's id.
    async fn start(&self, def: &WorkflowDefinition) -> String {
        self.store
            .put_workflow(def, SystemClock.now_ms())
            .await
            .expect("workflow");
        start_run(
            &*self.store,
            &*self.store,
            &*self.queue,
            &*self.store,
            SystemClock.now_ms(),
            NewRun {
                workflow_id: def.id.clone(),
                ..NewRun::default()
            },
        )
        .await
        .expect("start")
        .run_id
    }
}

/// The first message a start enqueued: the effects of the start decision, made when the run
/// was created.
fn start_message(l: &Local) -> WorkMessage {
    l.queue
        .sent()
        .into_iter()
        .map(|(m, _)| m)
        .next()
        .expect("the start enqueued a message")
}

fn local() -> Local {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(&dir);
    let mem = Arc::new(MemQueue::new(Duration::from_secs(5)));
    let queue = Arc::new(CrashQueue::new(mem.clone(), Fuse::never()));
    Local {
        _dir: dir,
        store,
        queue,
        mem,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_longer_than_the_queue_delay_are_chained_in_hops_of_at_most_900_s() {
    let l = local();
    let t0: Millis = 1_760_000_000_000;
    let clock = Arc::new(ManualClock::new(t0));
    let fuse = Fuse::never();
    let store = Arc::new(CrashStore {
        inner: l.store.clone(),
        fuse: fuse.clone(),
    });
    let sim = fast_simulator().await;
    let executor = Executor::new(
        store.clone(),
        store.clone(),
        l.queue.clone(),
        Arc::new(client(&sim, Duration::from_secs(300))),
        clock.clone(),
    )
    .expect("executor");
    let d = def("id: pause\nsteps:\n  - id: nap\n    kind: wait\n    duration: 1h\n");
    l.store.put_workflow(&d, t0).await.expect("workflow");
    let started = start_run(
        &*l.store,
        &*l.store,
        &*l.queue,
        &*l.store,
        t0,
        NewRun {
            workflow_id: "pause".into(),
            ..NewRun::default()
        },
    )
    .await
    .expect("start");
    let run_id = started.run_id;

    // Start: the run was written started; its effects (among them the wait step's timer,
    // an hour away) went to the queue. Performing them sends the wake-up with the longest
    // delay the queue allows, carrying the timer's time.
    let start = start_message(&l);
    assert!(matches!(start, WorkMessage::Perform { .. }), "{start:?}");
    executor.handle(&start).await.expect("start");
    let at = t0 + 3_600_000;
    let wake = WorkMessage::Wake {
        run_id: run_id.clone(),
        at: Some(at),
    };
    assert_eq!(l.queue.sent().last(), Some(&(wake.clone(), MAX_DELAY)));

    // Each early arrival re-sends the same wake-up for min(at - now, 900 s) and touches
    // nothing else (no store call at all).
    for (now, expected) in [
        (t0 + 900_000, MAX_DELAY),
        (t0 + 1_800_000, MAX_DELAY),
        (t0 + 3_000_000, Duration::from_secs(600)),
        (t0 + 3_599_000, Duration::from_secs(1)),
    ] {
        clock.set(now);
        let calls = fuse.calls();
        executor.handle(&wake).await.expect("early wake");
        assert_eq!(l.queue.sent().last(), Some(&(wake.clone(), expected)));
        assert_eq!(
            fuse.calls(),
            calls,
            "an early wake-up must not read the run"
        );
        let run = l.store.get_run(&run_id).await.expect("read").expect("run");
        assert_eq!(run.step("nap").map(|s| s.status), Some(StepStatus::Running));
    }

    // On time: it ticks, the wait ends, the run succeeds, nothing is re-sent.
    clock.set(at);
    let sent = l.queue.sent().len();
    executor.handle(&wake).await.expect("due wake");
    let run = l.store.get_run(&run_id).await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::Succeeded);
    assert!(
        l.queue.sent()[sent..]
            .iter()
            .all(|(m, _)| !matches!(m, WorkMessage::Wake { .. })),
        "no further wake-up after the timer fired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_polls_are_dropped_without_calling_the_agent() {
    let l = local();
    let sim = fast_simulator().await;
    let executor = l.executor(&sim);
    let d = three_agent_steps("stale", "50ms");
    let run_id = l.start(&d).await;
    executor.handle(&start_message(&l)).await.expect("start");
    let live = l
        .queue
        .sent()
        .into_iter()
        .find_map(|(m, _)| matches!(m, WorkMessage::Poll { .. }).then_some(m))
        .expect("the start enqueued the first poll");
    let WorkMessage::Poll {
        upstream_run_id,
        poll,
        ..
    } = live.clone()
    else {
        unreachable!()
    };
    assert_eq!(poll, 0);
    let version = l
        .store
        .get_run(&run_id)
        .await
        .expect("read")
        .expect("run")
        .version;

    let stale = |step: &str, attempt: u32, upstream: &str, poll: u32| WorkMessage::Poll {
        run_id: run_id.clone(),
        step: step.into(),
        attempt,
        upstream_run_id: upstream.into(),
        poll,
    };
    for message in [
        stale("a", 1, &upstream_run_id, 3), // an older or duplicated poll chain
        stale("a", 2, &upstream_run_id, 0), // another attempt
        stale("a", 1, "someone-elses-run", 0), // another agent run
        stale("b", 1, &upstream_run_id, 0), // a step that is not running
        stale("nope", 1, &upstream_run_id, 0), // a step that does not exist
    ] {
        let requests = sim.requests();
        executor.handle(&message).await.expect("stale poll is fine");
        assert_eq!(sim.requests(), requests, "no agent call for {message:?}");
    }
    let run = l.store.get_run(&run_id).await.expect("read").expect("run");
    assert_eq!(run.version, version, "stale polls write nothing");

    // The live poll does call the agent service.
    let requests = sim.requests();
    executor.handle(&live).await.expect("live poll");
    assert!(sim.requests() > requests, "the live poll calls the agent");
}

/// A store that holds its first `get_run` answer until the test opens the gate, so its
/// executor decides on a version someone else overwrites meanwhile, and answers
/// `get_run_relaxed` with a version the test chose (as an eventually consistent read may);
/// it counts reads of both kinds, writes and lost races.
struct GatedStore {
    inner: Arc<EmbeddedStore>,
    gate: tokio::sync::Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
    stale: std::sync::Mutex<Option<Run>>,
    reads: AtomicUsize,
    relaxed: AtomicUsize,
    writes: AtomicUsize,
    conflicts: AtomicUsize,
}

impl GatedStore {
    fn over(inner: Arc<EmbeddedStore>) -> Self {
        GatedStore {
            inner,
            gate: tokio::sync::Mutex::new(None),
            stale: std::sync::Mutex::new(None),
            reads: AtomicUsize::new(0),
            relaxed: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
            conflicts: AtomicUsize::new(0),
        }
    }

    fn serve_stale(&self, run: Run) {
        *self.stale.lock().expect("lock") = Some(run);
    }
}

#[async_trait]
impl RunStore for GatedStore {
    async fn create_run(
        &self,
        run: &Run,
        audit: &[AuditEntry],
    ) -> Result<CreateOutcome, StoreError> {
        self.inner.create_run(run, audit).await
    }
    async fn get_run(&self, run_id: &str) -> Result<Option<Run>, StoreError> {
        let out = self.inner.get_run(run_id).await;
        self.reads.fetch_add(1, Ordering::SeqCst);
        if let Some((reached, open)) = self.gate.lock().await.take() {
            let _ = reached.send(());
            let _ = open.await;
        }
        out
    }
    async fn get_run_relaxed(&self, run_id: &str) -> Result<Option<Run>, StoreError> {
        self.relaxed.fetch_add(1, Ordering::SeqCst);
        let stale = self.stale.lock().expect("lock").clone();
        match stale {
            Some(run) => Ok(Some(run)),
            None => self.inner.get_run(run_id).await,
        }
    }
    async fn put_run(
        &self,
        run: &Run,
        expected: u64,
        audit: &[AuditEntry],
    ) -> Result<(), StoreError> {
        let out = self.inner.put_run(run, expected, audit).await;
        self.writes.fetch_add(1, Ordering::SeqCst);
        if out.as_ref().is_err_and(StoreError::is_conflict) {
            self.conflicts.fetch_add(1, Ordering::SeqCst);
        }
        out
    }
    async fn list_runs(&self, query: &RunQuery) -> Result<RunPage, StoreError> {
        self.inner.list_runs(query).await
    }
    async fn due_runs(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<(String, Millis)>, StoreError> {
        self.inner.due_runs(now, limit).await
    }
    async fn audit(
        &self,
        run_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit(run_id, after, limit).await
    }
    async fn find_idempotency_key(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.find_idempotency_key(key).await
    }
    async fn put_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        self.inner.put_session(session).await
    }
    async fn get_session(&self, name: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.inner.get_session(name).await
    }
    async fn list_sessions(&self, active_only: bool) -> Result<Vec<SessionRecord>, StoreError> {
        self.inner.list_sessions(active_only).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_executors_racing_on_one_run_both_land_after_a_re_read() {
    let l = local();
    let sim = fast_simulator().await;
    let now = SystemClock.now_ms();
    let d = def(r#"
id: race
steps:
  - id: left
    kind: http
    url: "http://127.0.0.1:9/never-called"
  - id: right
    kind: http
    url: "http://127.0.0.1:9/never-called"
"#);
    let stored = l.store.put_workflow(&d, now).await.expect("workflow");
    // Both steps running, their HTTP calls in flight (the engine decides it; the calls are not
    // made here: the test reports their outcomes).
    let run = Run::new("race-1", &d, stored.version, Map::new(), now);
    l.store.create_run(&run, &[]).await.expect("create");
    let mut started = decide(&run, &d, &Event::Start, now).expect("start").run;
    started.version = 1;
    let audit = decide(&run, &d, &Event::Start, now).expect("start").audit;
    l.store.put_run(&started, 0, &audit).await.expect("put");

    let (reached_tx, reached_rx) = oneshot::channel();
    let (open_tx, open_rx) = oneshot::channel();
    let gated = Arc::new(GatedStore::over(l.store.clone()));
    *gated.gate.lock().await = Some((reached_tx, open_rx));
    let agent = Arc::new(client(&sim, Duration::from_secs(300)));
    let slow = Arc::new(
        Executor::new(
            gated.clone(),
            l.store.clone(),
            l.queue.clone(),
            agent.clone(),
            Arc::new(SystemClock),
        )
        .expect("executor"),
    );
    let fast = Executor::new(
        l.store.clone(),
        l.store.clone(),
        l.queue.clone(),
        agent,
        Arc::new(SystemClock),
    )
    .expect("executor");

    let done = |step: &str| WorkMessage::Event {
        run_id: "race-1".into(),
        event: Event::StepSucceeded {
            step: step.into(),
            attempt: 1,
            output: json!({"step": step}),
        },
    };
    let slow_task = {
        let slow = slow.clone();
        let message = done("left");
        tokio::spawn(async move { slow.handle(&message).await })
    };
    reached_rx.await.expect("the slow executor read the run");
    // While the slow one holds version 1, the fast one records its step (version 2).
    fast.handle(&done("right")).await.expect("fast executor");
    assert_eq!(
        l.store
            .get_run("race-1")
            .await
            .expect("read")
            .expect("run")
            .version,
        2
    );
    open_tx.send(()).expect("open the gate");
    slow_task.await.expect("join").expect("slow executor");

    assert_eq!(
        gated.conflicts.load(Ordering::SeqCst),
        1,
        "the slow write lost once"
    );
    assert_eq!(gated.reads.load(Ordering::SeqCst), 2, "then it re-read");
    assert_eq!(gated.writes.load(Ordering::SeqCst), 2, "and wrote again");
    let run = l.store.get_run("race-1").await.expect("read").expect("run");
    assert_eq!(run.version, 3);
    assert_eq!(run.status, RunStatus::Succeeded);
    for step in ["left", "right"] {
        let s = run.step(step).expect("step");
        assert_eq!(s.status, StepStatus::Succeeded, "{step}");
        assert_eq!(s.output, Some(json!({"step": step})));
    }
    let audit = l.store.audit("race-1", None, 100).await.expect("audit");
    let seqs: Vec<u64> = audit.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (0..audit.len() as u64).collect::<Vec<_>>(),
        "audit is contiguous"
    );
    let succeeded: Vec<_> = audit
        .iter()
        .filter(|e| e.kind == "step.succeeded")
        .filter_map(|e| e.step_id.clone())
        .collect();
    assert_eq!(succeeded, vec!["right".to_string(), "left".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_notify_steps_call_real_servers_and_report_outcomes() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/deploy"))
        .and(body_json(json!({"ref": "main"})))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"deployment": 42})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/broken"))
        .respond_with(ResponseTemplate::new(503).set_body_string("upstream is down"))
        .mount(&server)
        .await;

    let l = local();
    let sim = fast_simulator().await;
    let executor = l.executor(&sim);
    let yaml = format!(
        r#"
id: calls
steps:
  - id: deploy
    kind: http
    method: POST
    url: "{base}/deploy"
    body: {{ref: main}}
  - id: tell
    kind: notify
    depends_on: [deploy]
    message: "deployed ${{{{ steps.deploy.output }}}}"
    webhook_url: "{base}/hook"
  - id: check
    kind: http
    depends_on: [tell]
    url: "{base}/broken"
"#,
        base = server.uri()
    );
    let d = def(&yaml);
    let run_id = l.start(&d).await;
    let run = drive(
        &executor,
        &*l.queue,
        &*l.store,
        &run_id,
        Duration::from_secs(20),
    )
    .await;

    assert_eq!(run.status, RunStatus::Failed);
    let deploy = run.step("deploy").expect("deploy");
    assert_eq!(deploy.status, StepStatus::Succeeded);
    assert_eq!(deploy.output, Some(json!({"deployment": 42})));
    assert_eq!(
        run.step("tell").map(|s| s.status),
        Some(StepStatus::Succeeded)
    );
    let check = run.step("check").expect("check");
    assert_eq!(check.status, StepStatus::Failed);
    assert_eq!(check.error.as_deref(), Some("503 upstream is down"));

    let hooks: Vec<_> = server
        .received_requests()
        .await
        .expect("recorded")
        .into_iter()
        .filter(|r| r.url.path() == "/hook")
        .collect();
    assert_eq!(hooks.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&hooks[0].body).expect("json");
    assert_eq!(body["run_id"], json!(run_id));
    assert_eq!(body["step"], json!("tell"));
    assert!(
        body["text"].as_str().is_some_and(|t| t.contains("42")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_step_agent_run_completes_and_files_its_sessions() {
    let l = local();
    let sim = fast_simulator().await;
    let executor = l.executor(&sim);
    let d = three_agent_steps("agents", "20ms");
    let run_id = l.start(&d).await;
    let run = drive(
        &executor,
        &*l.queue,
        &*l.store,
        &run_id,
        Duration::from_secs(20),
    )
    .await;

    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
    assert_eq!(sim.runs_started(), 3);
    for step in ["a", "b", "c"] {
        let s = run.step(step).expect("step");
        assert!(s.output.is_some(), "step {step} has an output");
        assert_eq!(
            sim.runs_with_session_name(&session_name(&run_id, step, 1)),
            1
        );
        let agent = s.agent.as_ref().expect("agent progress");
        let session_id = agent
            .session_id
            .clone()
            .expect("session id captured while running");
        let record = l
            .store
            .get_session(&session_record_name(&run, step))
            .await
            .expect("read")
            .expect("session record");
        assert_eq!(
            record.agent_session_id.as_deref(),
            Some(session_id.as_str())
        );
        assert_eq!(record.runs.len(), 1);
        assert_eq!(record.runs[0].run_id, run_id);
        assert_eq!(record.runs[0].step_id, step);
        assert!(
            record.active,
            "stored once, when the session was first seen; not rewritten when the run ended"
        );
        let live = live_session(&*l.store, record).await.expect("live");
        assert!(
            !live.active,
            "the run finished, so its sessions are inactive"
        );
    }
    // Inputs of later steps were rendered from earlier outputs.
    let b_run = sim.run_ids_for_session_name(&session_name(&run_id, "b", 1));
    let body = sim.start_body(&b_run[0]).expect("start body");
    let a_output = run
        .step("a")
        .and_then(|s| s.output.clone())
        .expect("a output");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains(a_output.as_str().unwrap_or("?"))),
        "{body}"
    );

    // A later run continues step c's conversation by its session name.
    let c_session = session_record_name(&run, "c");
    let c_agent_session = run
        .step("c")
        .and_then(|s| s.agent.as_ref())
        .and_then(|a| a.session_id.clone())
        .expect("c's agent session");
    let started = start_run(
        &*l.store,
        &*l.store,
        &*l.queue,
        &*l.store,
        SystemClock.now_ms(),
        NewRun {
            workflow_id: "agents".into(),
            continue_session: Some(c_session.clone()),
            ..NewRun::default()
        },
    )
    .await
    .expect("start a continuation");
    let next = l
        .store
        .get_run(&started.run_id)
        .await
        .expect("read")
        .expect("run");
    assert_eq!(
        next.resume_session_id.as_deref(),
        Some(c_agent_session.as_str())
    );
    assert_eq!(next.session_name.as_deref(), Some(c_session.as_str()));
    let err = start_run(
        &*l.store,
        &*l.store,
        &*l.queue,
        &*l.store,
        SystemClock.now_ms(),
        NewRun {
            workflow_id: "agents".into(),
            continue_session: Some("no-such-session".into()),
            ..NewRun::default()
        },
    )
    .await
    .expect_err("unknown session");
    assert!(err.to_string().contains("no session named"), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_carries_on_a_run_whose_start_message_was_lost() {
    let l = local();
    let sim = fast_simulator().await;
    let t0 = SystemClock.now_ms();
    let clock = Arc::new(ManualClock::new(t0));
    let executor = Executor::new(
        l.store.clone(),
        l.store.clone(),
        l.queue.clone(),
        Arc::new(client(&sim, Duration::from_secs(3_600))),
        clock.clone(),
    )
    .expect("executor");
    let d = three_agent_steps("lost", "20ms");
    l.store.put_workflow(&d, t0).await.expect("workflow");
    let run_id = start_run(
        &*l.store,
        &*l.store,
        &*l.queue,
        &*l.store,
        t0,
        NewRun {
            workflow_id: "lost".into(),
            ..NewRun::default()
        },
    )
    .await
    .expect("start")
    .run_id;
    // The start message is lost.
    let lost = l.mem.receive(10, Duration::ZERO).await.expect("receive");
    assert_eq!(lost.len(), 1);
    l.mem.ack(&lost[0].receipt).await.expect("ack");

    // Within the grace period the sweeper leaves it alone (a start may be in flight) ...
    clock.set(t0 + REISSUE_AFTER_MS + 10_000);
    assert_eq!(
        sweep(&*l.store, &*l.queue, clock.now_ms(), 100)
            .await
            .expect("sweep"),
        0
    );
    // ... after it (the start's effects are presumed lost once the agent start they issued
    // has had REISSUE_AFTER_MS to be recorded), the run is woken and the tick issues the
    // agent start again.
    clock.set(t0 + REISSUE_AFTER_MS + SWEEP_GRACE_MS + 1_000);
    assert_eq!(
        sweep(&*l.store, &*l.queue, clock.now_ms(), 100)
            .await
            .expect("sweep"),
        1
    );
    let run = drive(
        &executor,
        &*l.queue,
        &*l.store,
        &run_id,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(sim.runs_started(), 3);
}

/// A new run is written once, already started (the engine decides the start before the first
/// write), and the start's effects go to the queue as one `Perform`; a repeated idempotency
/// key queues a `Start`, which changes nothing on the started run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_run_is_written_started_and_its_effects_are_queued_as_one_perform() {
    let l = local();
    let sim = fast_simulator().await;
    let executor = l.executor(&sim);
    let d = three_agent_steps("born", "20ms");
    l.store
        .put_workflow(&d, SystemClock.now_ms())
        .await
        .expect("workflow");
    let new = NewRun {
        workflow_id: d.id.clone(),
        idempotency_key: Some("born-1".into()),
        ..NewRun::default()
    };
    let start = || {
        start_run(
            &*l.store,
            &*l.store,
            &*l.queue,
            &*l.store,
            SystemClock.now_ms(),
            new.clone(),
        )
    };
    let started = start().await.expect("start");
    assert!(started.enqueued && !started.existing);
    let run_id = started.run_id;

    let run = l.store.get_run(&run_id).await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.step("a").map(|s| s.status), Some(StepStatus::Running));
    let kinds: Vec<String> = l
        .store
        .audit(&run_id, None, 100)
        .await
        .expect("audit")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(
        kinds.starts_with(&["run.started".to_string(), "step.started".to_string()]),
        "{kinds:?}"
    );
    let sent: Vec<WorkMessage> = l.queue.sent().into_iter().map(|(m, _)| m).collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let WorkMessage::Perform {
        run_id: to,
        effects,
    } = &sent[0]
    else {
        panic!("expected the start's effects, got {:?}", sent[0]);
    };
    assert_eq!(to, &run_id);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::StartAgent { step, reissue: false, .. } if step == "a")),
        "{effects:?}"
    );
    assert_eq!(
        sim.runs_started(),
        0,
        "nothing is started before the message is handled"
    );

    // The same key again: the first run, and a `Start` that is a no-op on it.
    let again = start().await.expect("repeat");
    assert!(again.existing);
    assert_eq!(again.run_id, run_id);
    let repeat = l.queue.sent().last().cloned().expect("sent").0;
    assert!(
        matches!(
            &repeat,
            WorkMessage::Event {
                event: Event::Start,
                ..
            }
        ),
        "{repeat:?}"
    );
    executor.handle(&repeat).await.expect("repeat start");
    let after = l.store.get_run(&run_id).await.expect("read").expect("run");
    assert_eq!(
        after.version, run.version,
        "a repeated start writes nothing"
    );

    executor.handle(&sent[0]).await.expect("perform");
    assert_eq!(sim.runs_started(), 1);
    let run = drive(
        &executor,
        &*l.queue,
        &*l.store,
        &run_id,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(sim.runs_started(), 3);
}

/// Polls read their run with `get_run_relaxed` (on DynamoDB an eventually consistent read at
/// half the units). A version that is behind must neither drop a live poll (it only looks
/// stale: a consistent read decides) nor get a decision written (the conditional write loses,
/// and the poll is decided again from a fresh read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_read_relaxed_and_a_version_behind_neither_drops_a_poll_nor_is_written_over() {
    let l = local();
    let sim = fast_simulator().await;
    let plain = l.executor(&sim);
    let d = three_agent_steps("relaxed", "20ms");
    let run_id = l.start(&d).await;
    let created = l.store.get_run(&run_id).await.expect("read").expect("run");
    plain.handle(&start_message(&l)).await.expect("start");
    let last_poll = || {
        l.queue
            .sent()
            .into_iter()
            .rev()
            .find_map(|(m, _)| matches!(m, WorkMessage::Poll { .. }).then_some(m))
            .expect("a poll was queued")
    };

    let store = Arc::new(GatedStore::over(l.store.clone()));
    let executor = Executor::new(
        store.clone(),
        l.store.clone(),
        l.queue.clone(),
        Arc::new(client(&sim, Duration::from_secs(300))),
        Arc::new(SystemClock),
    )
    .expect("executor");

    // A live poll, read relaxed.
    let requests = sim.requests();
    executor.handle(&last_poll()).await.expect("poll");
    assert_eq!(store.relaxed.load(Ordering::SeqCst), 1);
    assert_eq!(
        store.reads.load(Ordering::SeqCst),
        0,
        "no consistent read needed"
    );
    assert!(sim.requests() > requests, "the poll called the agent");

    // The relaxed read answers with the run from before its agent run started: the live poll
    // looks stale, and a consistent read keeps it alive.
    store.serve_stale(created);
    let requests = sim.requests();
    executor.handle(&last_poll()).await.expect("poll");
    assert_eq!(store.reads.load(Ordering::SeqCst), 1);
    assert!(sim.requests() > requests, "the poll was not dropped");

    // The relaxed read answers with the latest content under an older version: whenever the
    // poll has something to write, the write loses and the poll is decided again.
    let mut written = 0;
    while written < 2 {
        let fresh = l.store.get_run(&run_id).await.expect("read").expect("run");
        if fresh.step("a").map(|s| s.status) != Some(StepStatus::Running) {
            break;
        }
        let mut behind = fresh.clone();
        behind.version -= 1;
        store.serve_stale(behind);
        let conflicts = store.conflicts.load(Ordering::SeqCst);
        executor.handle(&last_poll()).await.expect("poll");
        let after = l.store.get_run(&run_id).await.expect("read").expect("run");
        if after.version != fresh.version {
            written += 1;
            // The decision from the stale read lost its write once and landed on the latest
            // version (a step that finished may start the next one: a second write).
            assert!(
                after.version > fresh.version,
                "written on the latest version"
            );
            assert_eq!(store.conflicts.load(Ordering::SeqCst), conflicts + 1);
        }
    }
    assert!(written > 0, "no poll had anything to write");
}

/// A session is active while the last run that used it is going; a record stored inactive
/// (as earlier versions wrote at a run's end) stays so; a last run that is gone has finished.
#[tokio::test]
async fn a_session_is_active_while_its_last_run_is_going() {
    let l = local();
    let now = SystemClock.now_ms();
    let d = def("id: s\nsteps:\n  - id: w\n    kind: wait\n    duration: 1h\n");
    let stored = l.store.put_workflow(&d, now).await.expect("workflow");
    for (id, status) in [
        ("s-done", RunStatus::Succeeded),
        ("s-going", RunStatus::Running),
    ] {
        let mut run = Run::new(id, &d, stored.version, Map::new(), now);
        run.status = status;
        l.store.create_run(&run, &[]).await.expect("create");
    }
    let record = |name: &str, runs: &[&str], active: bool| SessionRecord {
        name: name.into(),
        agent_session_id: Some("agent-session".into()),
        runs: runs
            .iter()
            .map(|id| SessionRun {
                run_id: (*id).into(),
                step_id: "w".into(),
                at: now,
            })
            .collect(),
        active,
        created_at: now,
        updated_at: now,
    };
    let live = live_sessions(
        &*l.store,
        vec![
            record("used-again", &["s-done", "s-going"], true),
            record("finished", &["s-going", "s-done"], true),
            record("closed-before", &["s-going"], false),
            record("gone", &["s-expired"], true),
        ],
    )
    .await
    .expect("live");
    let active: Vec<(&str, bool)> = live.iter().map(|r| (r.name.as_str(), r.active)).collect();
    assert_eq!(
        active,
        [
            ("used-again", true),
            ("finished", false),
            ("closed-before", false),
            ("gone", false)
        ]
    );
}

/// Hand `received` to `executor` as a consumer that can hand it back, as received
/// `receive_count` times.
async fn delivered(
    executor: &Executor,
    received: &flowgate_shared::ports::Received,
    receive_count: u32,
) -> Handled {
    let receipt = Receipt {
        receipt: &received.receipt,
        receive_count,
    };
    executor
        .handle_delivered(&received.message, Some(receipt))
        .await
        .expect("handled")
}

/// A poll whose chain goes on unchanged hands its own message back to the queue for the next
/// poll (one request, nothing sent); a poll that records something (the agent run leaving
/// `pending` starts a new chain) sends the next poll as a new message, and so does a message
/// received too often (SQS counts every receive towards the dead-letter limit).
#[tokio::test]
async fn a_poll_chain_hands_its_message_back_until_it_records_something() {
    let l = local();
    let sim = fast_simulator().await;
    let executor = l.executor(&sim);
    let d = def(
        "id: handback\npolling: {initial: 30ms, factor: 1, max: 30ms}\nsteps:\n  - id: a\n    kind: agent\n    workflow: builder\n    message: \"[timeout] keep going\"\n",
    );
    let run_id = l.start(&d).await;
    executor.handle(&start_message(&l)).await.expect("start");
    let next_poll = || async {
        loop {
            let received = l
                .mem
                .receive(1, Duration::from_secs(5))
                .await
                .expect("receive")
                .pop()
                .expect("a message within 5 s");
            if matches!(received.message, WorkMessage::Poll { .. }) {
                return received;
            }
            l.mem.ack(&received.receipt).await.expect("ack");
        }
    };

    // The first poll (30 ms in) sees the run leave `pending` (10 ms): recorded, a new chain.
    let first = next_poll().await;
    let sent = l.queue.sent().len();
    let outcome = delivered(&executor, &first, first.receive_count).await;
    assert_eq!(outcome, Handled::Done);
    assert_eq!(l.queue.sent().len(), sent + 1, "the new chain's message");
    l.mem.ack(&first.receipt).await.expect("ack");

    // Growing tokens are not recorded for 5 minutes: the chain goes on with its own message.
    let second = next_poll().await;
    let version = l.store.get_run(&run_id).await.unwrap().unwrap().version;
    let sent = l.queue.sent().len();
    let outcome = delivered(&executor, &second, second.receive_count).await;
    assert_eq!(outcome, Handled::HandedBack);
    assert_eq!(l.queue.sent().len(), sent, "nothing sent");
    let again = next_poll().await;
    assert_eq!(again.message, second.message, "the same message, unchanged");
    assert_eq!(again.receive_count, second.receive_count + 1);
    let after = l.store.get_run(&run_id).await.unwrap().unwrap();
    assert_eq!(after.version, version, "nothing recorded");

    // Received as often as the dead-letter limit allows: a fresh message, the old one done.
    let outcome = delivered(&executor, &again, REDELIVER_MAX_RECEIVES).await;
    assert_eq!(outcome, Handled::Done);
    let sent = l.queue.sent();
    assert_eq!(
        sent.last().map(|(m, _)| m),
        Some(&again.message),
        "the chain goes on in a new message"
    );
}

/// A wake-up for a timer hours away is handed back until the timer is due, up to 11 h at a
/// time, instead of re-sent every 15 minutes; at the receive limit it is re-sent as before.
#[tokio::test]
async fn a_wake_up_for_a_timer_hours_away_is_handed_back_not_re_sent() {
    let l = local();
    let sim = fast_simulator().await;
    let executor = l.executor(&sim);
    let at = SystemClock.now_ms() + 24 * 3_600_000;
    let wake = WorkMessage::Wake {
        run_id: "r-later".into(),
        at: Some(at),
    };
    l.mem.send(&wake, Duration::ZERO).await.expect("send");
    let received = l
        .mem
        .receive(1, Duration::from_secs(5))
        .await
        .expect("receive")
        .pop()
        .expect("the wake-up");
    let sent = l.queue.sent().len();
    let outcome = delivered(&executor, &received, received.receive_count).await;
    assert_eq!(outcome, Handled::HandedBack);
    assert_eq!(l.queue.sent().len(), sent, "nothing re-sent");
    let hidden = l.mem.receive(1, Duration::ZERO).await.expect("receive");
    assert!(hidden.is_empty(), "handed back for hours: {hidden:?}");

    let outcome = delivered(&executor, &received, REDELIVER_MAX_RECEIVES).await;
    assert_eq!(outcome, Handled::Done);
    assert_eq!(
        l.queue.sent().last(),
        Some(&(wake, MAX_DELAY)),
        "re-sent for the queue's longest delay"
    );
}
