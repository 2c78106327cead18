//! Support for the runtime tests: real ports (redb store, in-process queue, the agent
//! simulator over HTTP) behind wrappers that count I/O calls and can "crash" the process.
//!
//! A crash is modelled as the process dying right after its N-th I/O call: that call takes
//! effect, its caller gets an error instead of the answer, and every later call fails without
//! effect until the test "restarts" the process ([`Fuse::restart`]). So whatever the handler
//! does after the crash point never reaches the outside world, as with a real crash.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flowgate_shared::adapters::embedded::EmbeddedStore;
use flowgate_shared::adapters::memqueue::MemQueue;
use flowgate_shared::agent::simulator::{Simulator, SimulatorConfig, SimulatorHandle};
use flowgate_shared::agent::{
    AddMessageResponse, AgentCall, AgentClient, AgentClientConfig, AgentError, KillOutcome,
    MessageType, RunSummary, StartRunResponse,
};
use flowgate_shared::definition::{StoredWorkflow, WorkflowDefinition, parse_definition};
use flowgate_shared::engine::{AgentObservation, AgentStartSpec};
use flowgate_shared::model::{AuditEntry, Millis, Run};
use flowgate_shared::ports::{
    CreateOutcome, QueueError, Received, RecordStore, RunPage, RunQuery, RunStore, SessionRecord,
    StoreError, WorkMessage, WorkQueue, WorkflowStore,
};
use flowgate_shared::runtime::AgentApi;

/// A three-step agent workflow (a → b → c) polling every `poll`.
pub fn three_agent_steps(id: &str, poll: &str) -> WorkflowDefinition {
    let yaml = format!(
        r#"
id: {id}
polling: {{initial: {poll}, factor: 1, max: {poll}}}
steps:
  - id: a
    kind: agent
    workflow: builder
    message: "design the change"
  - id: b
    kind: agent
    workflow: builder
    depends_on: [a]
    message: "implement: ${{{{ steps.a.output }}}}"
  - id: c
    kind: agent
    workflow: builder
    depends_on: [b]
    message: "review: ${{{{ steps.b.output }}}}"
"#
    );
    match parse_definition(&yaml) {
        Ok(def) => def,
        Err(e) => panic!("test definition is invalid: {e}"),
    }
}

/// The simulator with fast runs.
pub async fn fast_simulator() -> SimulatorHandle {
    Simulator::start(SimulatorConfig::fast())
        .await
        .expect("start the agent simulator")
}

/// A client of `sim`. `clock_skew` is how far the executor's clock may run ahead of the
/// simulator's when looking a run up by session name (tests with a manual clock that jumps
/// ahead need a large one).
pub fn client(sim: &SimulatorHandle, clock_skew: Duration) -> AgentClient {
    AgentClient::new(
        &sim.base_url,
        &sim.api_key,
        AgentClientConfig {
            clock_skew,
            ..AgentClientConfig::default()
        },
    )
    .expect("agent client")
}

/// Real local ports with an executor that has a notifier (lifecycle deliveries are what chain
/// runs and release concurrency slots), with `defs` (YAML) stored.
pub struct NotifiedWorld {
    pub dir: tempfile::TempDir,
    pub sim: SimulatorHandle,
    pub store: Arc<EmbeddedStore>,
    pub queue: Arc<MemQueue>,
    pub executor: flowgate_shared::runtime::Executor,
}

impl NotifiedWorld {
    /// Start a run of `workflow` with `inputs` (an object) and an optional idempotency key,
    /// as the API would.
    pub async fn try_start(
        &self,
        workflow: &str,
        inputs: serde_json::Value,
        key: Option<&str>,
    ) -> Result<flowgate_shared::runtime::StartedRun, flowgate_shared::runtime::StartError> {
        use flowgate_shared::runtime::{Clock as _, NewRun, SystemClock, start_run};
        let serde_json::Value::Object(inputs) = inputs else {
            panic!("inputs must be an object");
        };
        start_run(
            &*self.store,
            &*self.store,
            &*self.queue,
            &*self.store,
            SystemClock.now_ms(),
            NewRun {
                workflow_id: workflow.into(),
                inputs,
                idempotency_key: key.map(str::to_string),
                ..NewRun::default()
            },
        )
        .await
    }
}

pub async fn notified_world(defs: &[&str]) -> NotifiedWorld {
    notified_world_with(
        defs,
        |sim| Arc::new(client(sim, Duration::from_secs(300))),
        |store| store,
    )
    .await
}

/// [`notified_world`] with the agent and the notifier's record store made by the caller (a
/// counting or failing wrapper around the simulator's client or the store).
pub async fn notified_world_with(
    defs: &[&str],
    agent: impl FnOnce(&SimulatorHandle) -> Arc<dyn AgentApi>,
    records: impl FnOnce(Arc<EmbeddedStore>) -> Arc<dyn RecordStore>,
) -> NotifiedWorld {
    use flowgate_shared::runtime::{Clock as _, Executor, SystemClock};
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(&dir);
    let queue = Arc::new(MemQueue::new(Duration::from_secs(1)));
    let sim = fast_simulator().await;
    let notifier = flowgate_shared::notify::config::NotifyConfig::default()
        .build(records(store.clone()))
        .expect("notifier");
    let executor = Executor::new(
        store.clone(),
        store.clone(),
        queue.clone(),
        agent(&sim),
        Arc::new(SystemClock),
    )
    .expect("executor")
    .with_notifier(Arc::new(notifier));
    for yaml in defs {
        let def = parse_definition(yaml).unwrap_or_else(|e| panic!("invalid test definition: {e}"));
        store
            .put_workflow(&def, SystemClock.now_ms())
            .await
            .expect("store the workflow");
    }
    NotifiedWorld {
        dir,
        sim,
        store,
        queue,
        executor,
    }
}

pub fn open_store(dir: &tempfile::TempDir) -> Arc<EmbeddedStore> {
    Arc::new(EmbeddedStore::open(dir.path()).expect("open the embedded store"))
}

// ---------------------------------------------------------------------------------------------
// The fuse: counts I/O calls and trips once, at a chosen call.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
pub struct Fuse {
    calls: AtomicUsize,
    /// 1-based index of the call after which the process dies; 0 = never.
    crash_at: AtomicUsize,
    dead: AtomicBool,
    /// The call after which it died.
    fired: Mutex<Option<&'static str>>,
    /// Every call made, in order (for the report of which kinds were crashed at).
    log: Mutex<Vec<&'static str>>,
}

#[derive(Debug)]
pub struct Crashed;

impl Fuse {
    pub fn never() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn crash_after(n: usize) -> Arc<Self> {
        let fuse = Self::default();
        fuse.crash_at.store(n, Ordering::SeqCst);
        Arc::new(fuse)
    }

    /// Before a call: refuse if the process is dead.
    fn enter(&self) -> Result<(), Crashed> {
        if self.dead.load(Ordering::SeqCst) {
            Err(Crashed)
        } else {
            Ok(())
        }
    }

    /// After a call took effect: count it, and die if it is the chosen one.
    fn leave(&self, what: &'static str) -> Result<(), Crashed> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.log.lock().expect("fuse log").push(what);
        if n == self.crash_at.load(Ordering::SeqCst) {
            self.dead.store(true, Ordering::SeqCst);
            *self.fired.lock().expect("fuse") = Some(what);
            return Err(Crashed);
        }
        Ok(())
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// The process came back (the crash happens once).
    pub fn restart(&self) {
        self.dead.store(false, Ordering::SeqCst);
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn fired(&self) -> Option<&'static str> {
        *self.fired.lock().expect("fuse")
    }

    pub fn log(&self) -> Vec<&'static str> {
        self.log.lock().expect("fuse log").clone()
    }
}

fn store_crash(_: Crashed) -> StoreError {
    StoreError::Unavailable {
        message: "simulated crash: the process died".into(),
    }
}

fn queue_crash(_: Crashed) -> QueueError {
    QueueError::Unavailable {
        message: "simulated crash: the process died".into(),
    }
}

fn agent_crash(call: AgentCall) -> impl Fn(Crashed) -> AgentError {
    move |_| AgentError::Transport {
        call,
        message: "simulated crash: the process died".into(),
        attempts: 1,
    }
}

macro_rules! guarded {
    ($fuse:expr, $what:literal, $err:expr, $call:expr) => {{
        $fuse.enter().map_err($err)?;
        let out = $call.await;
        $fuse.leave($what).map_err($err)?;
        out
    }};
}

// ---------------------------------------------------------------------------------------------
// Wrappers
// ---------------------------------------------------------------------------------------------

/// The embedded store behind a fuse.
pub struct CrashStore {
    pub inner: Arc<EmbeddedStore>,
    pub fuse: Arc<Fuse>,
}

#[async_trait]
impl RunStore for CrashStore {
    async fn create_run(
        &self,
        run: &Run,
        audit: &[AuditEntry],
    ) -> Result<CreateOutcome, StoreError> {
        guarded!(
            self.fuse,
            "store.create_run",
            store_crash,
            self.inner.create_run(run, audit)
        )
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<Run>, StoreError> {
        guarded!(
            self.fuse,
            "store.get_run",
            store_crash,
            self.inner.get_run(run_id)
        )
    }

    async fn put_run(
        &self,
        run: &Run,
        expected_version: u64,
        audit: &[AuditEntry],
    ) -> Result<(), StoreError> {
        guarded!(
            self.fuse,
            "store.put_run",
            store_crash,
            self.inner.put_run(run, expected_version, audit)
        )
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<RunPage, StoreError> {
        guarded!(
            self.fuse,
            "store.list_runs",
            store_crash,
            self.inner.list_runs(query)
        )
    }

    async fn due_runs(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<(String, Millis)>, StoreError> {
        guarded!(
            self.fuse,
            "store.due_runs",
            store_crash,
            self.inner.due_runs(now, limit)
        )
    }

    async fn audit(
        &self,
        run_id: &str,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        guarded!(
            self.fuse,
            "store.audit",
            store_crash,
            self.inner.audit(run_id, after_seq, limit)
        )
    }

    async fn find_idempotency_key(&self, key: &str) -> Result<Option<String>, StoreError> {
        guarded!(
            self.fuse,
            "store.find_idempotency_key",
            store_crash,
            self.inner.find_idempotency_key(key)
        )
    }

    async fn put_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        guarded!(
            self.fuse,
            "store.put_session",
            store_crash,
            self.inner.put_session(session)
        )
    }

    async fn get_session(&self, name: &str) -> Result<Option<SessionRecord>, StoreError> {
        guarded!(
            self.fuse,
            "store.get_session",
            store_crash,
            self.inner.get_session(name)
        )
    }

    async fn list_sessions(&self, active_only: bool) -> Result<Vec<SessionRecord>, StoreError> {
        guarded!(
            self.fuse,
            "store.list_sessions",
            store_crash,
            self.inner.list_sessions(active_only)
        )
    }
}

#[async_trait]
impl WorkflowStore for CrashStore {
    async fn put_workflow(
        &self,
        definition: &WorkflowDefinition,
        now: Millis,
    ) -> Result<StoredWorkflow, StoreError> {
        guarded!(
            self.fuse,
            "workflows.put",
            store_crash,
            self.inner.put_workflow(definition, now)
        )
    }

    async fn get_workflow(
        &self,
        id: &str,
        version: Option<u64>,
    ) -> Result<Option<StoredWorkflow>, StoreError> {
        guarded!(
            self.fuse,
            "workflows.get",
            store_crash,
            self.inner.get_workflow(id, version)
        )
    }

    async fn list_workflows(&self) -> Result<Vec<StoredWorkflow>, StoreError> {
        guarded!(
            self.fuse,
            "workflows.list",
            store_crash,
            self.inner.list_workflows()
        )
    }

    async fn delete_workflow(&self, id: &str) -> Result<bool, StoreError> {
        guarded!(
            self.fuse,
            "workflows.delete",
            store_crash,
            self.inner.delete_workflow(id)
        )
    }
}

/// The in-process queue behind a fuse, recording every message sent (with its delay).
/// `receive` is not guarded: the test driver receives directly, like the Lambda event source.
pub struct CrashQueue {
    pub inner: Arc<MemQueue>,
    pub fuse: Arc<Fuse>,
    pub sent: Mutex<Vec<(WorkMessage, Duration)>>,
}

impl CrashQueue {
    pub fn new(inner: Arc<MemQueue>, fuse: Arc<Fuse>) -> Self {
        Self {
            inner,
            fuse,
            sent: Mutex::new(Vec::new()),
        }
    }

    pub fn sent(&self) -> Vec<(WorkMessage, Duration)> {
        self.sent.lock().expect("sent").clone()
    }
}

#[async_trait]
impl WorkQueue for CrashQueue {
    async fn send(&self, message: &WorkMessage, delay: Duration) -> Result<(), QueueError> {
        let out = guarded!(
            self.fuse,
            "queue.send",
            queue_crash,
            self.inner.send(message, delay)
        );
        if out.is_ok() {
            self.sent
                .lock()
                .expect("sent")
                .push((message.clone(), delay));
        }
        out
    }

    async fn send_batch(&self, messages: &[(WorkMessage, Duration)]) -> Result<(), QueueError> {
        let out = guarded!(
            self.fuse,
            "queue.send_batch",
            queue_crash,
            self.inner.send_batch(messages)
        );
        if out.is_ok() {
            self.sent
                .lock()
                .expect("sent")
                .extend(messages.iter().cloned());
        }
        out
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        self.inner.receive(max, wait).await
    }

    async fn ack(&self, receipt: &str) -> Result<(), QueueError> {
        guarded!(self.fuse, "queue.ack", queue_crash, self.inner.ack(receipt))
    }

    async fn redeliver(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        guarded!(
            self.fuse,
            "queue.redeliver",
            queue_crash,
            self.inner.redeliver(receipt, delay)
        )
    }
}

/// The real agent client (HTTP to the simulator) behind a fuse.
pub struct CrashAgent {
    pub inner: AgentClient,
    pub fuse: Arc<Fuse>,
}

#[async_trait]
impl AgentApi for CrashAgent {
    async fn start_run(&self, spec: &AgentStartSpec) -> Result<StartRunResponse, AgentError> {
        guarded!(
            self.fuse,
            "agent.start_run",
            agent_crash(AgentCall::StartRun),
            self.inner.start_run(spec)
        )
    }

    async fn find_run_by_session_name(
        &self,
        workflow: &str,
        session_name: &str,
        not_before: Option<Millis>,
    ) -> Result<Option<RunSummary>, AgentError> {
        guarded!(
            self.fuse,
            "agent.find_run_by_session_name",
            agent_crash(AgentCall::ListRuns),
            self.inner
                .find_run_by_session_name(workflow, session_name, not_before)
        )
    }

    async fn observe(&self, workflow: &str, run_id: &str) -> Result<AgentObservation, AgentError> {
        guarded!(
            self.fuse,
            "agent.observe",
            agent_crash(AgentCall::Status),
            self.inner.observe(workflow, run_id)
        )
    }

    async fn kill_if_active(&self, run_id: &str, force: bool) -> Result<KillOutcome, AgentError> {
        guarded!(
            self.fuse,
            "agent.kill_if_active",
            agent_crash(AgentCall::Kill),
            self.inner.kill_if_active(run_id, force)
        )
    }

    async fn add_message(
        &self,
        run_id: &str,
        message_type: MessageType,
        content: &str,
    ) -> Result<AddMessageResponse, AgentError> {
        guarded!(
            self.fuse,
            "agent.add_message",
            agent_crash(AgentCall::AddMessage),
            self.inner.add_message(run_id, message_type, content)
        )
    }
}
