//! An in-process simulator of the agent service (automagik Claude Code workflow API).
//!
//! It serves the same paths, shapes, status codes, error `detail`s and auth as the real service
//! (`docs/upstream-agent-api.md`), including its quirks, so the client and the poller are tested
//! against the behaviour they must absorb rather than against an idealised API:
//!
//! - runs go pending → running → completed/failed over [`SimulatorConfig::run_duration`];
//!   `progress.turns` stays 0 while running and only `debug.metadata.current_turns` grows
//!   (quirk 4); cost and input/output tokens appear at completion; completion drops `max_turns`;
//! - the failure reason is only in the run list's `error_message` (quirk 5);
//! - a run started without `input_format` (or with `timeout` > 7200) is accepted and fails when
//!   it starts, with pydantic's error text (quirks 1, 2);
//! - kill has no state guard (quirk 6); a 200 can carry `status: "failed"` (quirk 9, via
//!   [`SimulatorHandle::fail_next_starts`]).
//!
//! The task message scripts a run: `[fail]` fails it at the end, `[slow]` makes it
//! [`SimulatorConfig::slow_factor`] times longer, `[timeout]` keeps it running until killed,
//! `[turns=N]` makes it end with N turns.
//!
//! Time is tokio's clock, read when a request arrives (nothing runs in the background), so a
//! paused test clock drives the runs deterministically.

mod routes;
mod state;

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use routes::BASE;
pub use state::{KillCall, ReceivedMessage, Script};

use crate::model::AgentRunStatus;
use state::SimState;

/// The service's system workflows at the reference commit.
pub const SYSTEM_WORKFLOWS: [&str; 9] = [
    "brain",
    "builder",
    "claude",
    "flashinho_thinker",
    "genie",
    "guardian",
    "lina",
    "shipper",
    "surgeon",
];

/// Workflow names Flowgate's example definitions use; served as custom (DB) workflows.
pub const FLOWGATE_WORKFLOWS: [&str; 5] = ["architect", "implement", "test", "review", "fix"];

/// The key the simulator accepts unless configured otherwise.
pub const DEFAULT_API_KEY: &str = "flowgate-simulator-key";

/// How the simulator behaves.
#[derive(Clone, PartialEq)]
pub struct SimulatorConfig {
    /// Where to listen; port 0 picks a free one.
    pub bind: SocketAddr,
    /// The key every API call must carry.
    pub api_key: String,
    /// Workflows that can be started (`/manage`, `/health`, the 404 "Available" list).
    pub workflows: Vec<String>,
    /// How long a run stays pending.
    pub pending_for: Duration,
    /// How long a run runs (`[slow]` multiplies it, `[timeout]` makes it endless).
    pub run_duration: Duration,
    /// Granularity of progress: tokens grow once per tick, and a queued message is consumed a
    /// tick after it arrives (the real monitor checks every 2 s).
    pub tick: Duration,
    /// Turns a run ends with unless the message says `[turns=N]` (capped by `max_turns`).
    pub default_turns: u32,
    /// How much longer a `[slow]` run takes.
    pub slow_factor: u32,
    /// The `/health` status (`healthy`, `warning`, `disabled`, `error`).
    pub health_status: String,
}

impl fmt::Debug for SimulatorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatorConfig")
            .field("bind", &self.bind)
            .field("api_key", &"<redacted>")
            .field("workflows", &self.workflows)
            .field("pending_for", &self.pending_for)
            .field("run_duration", &self.run_duration)
            .field("tick", &self.tick)
            .field("default_turns", &self.default_turns)
            .field("slow_factor", &self.slow_factor)
            .field("health_status", &self.health_status)
            .finish()
    }
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: DEFAULT_API_KEY.to_string(),
            workflows: SYSTEM_WORKFLOWS
                .iter()
                .chain(FLOWGATE_WORKFLOWS.iter())
                .map(|s| s.to_string())
                .collect(),
            pending_for: Duration::from_millis(250),
            run_duration: Duration::from_secs(3),
            tick: Duration::from_millis(250),
            default_turns: 5,
            slow_factor: 10,
            health_status: "healthy".to_string(),
        }
    }
}

impl SimulatorConfig {
    /// Runs that finish in about a tenth of a second: for tests.
    pub fn fast() -> Self {
        SimulatorConfig {
            pending_for: Duration::from_millis(10),
            run_duration: Duration::from_millis(100),
            tick: Duration::from_millis(5),
            ..SimulatorConfig::default()
        }
    }
}

/// A fault injected into the next API request (auth is checked first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and a `detail`, without acting on the request.
    Status(u16),
    /// Act on the request, then hold the answer back this long (a client that times out has
    /// still caused the effect: the ambiguous case).
    Delay(Duration),
}

/// A workflow the simulator serves.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowEntry {
    name: String,
    system: bool,
    description: String,
    category: String,
}

impl WorkflowEntry {
    fn new(name: &str) -> Self {
        let system = SYSTEM_WORKFLOWS.contains(&name);
        WorkflowEntry {
            name: name.to_string(),
            system,
            description: format!("Simulated {name} workflow"),
            category: if system { "system" } else { "custom" }.to_string(),
        }
    }

    fn custom(name: &str, body: &Map<String, Value>) -> Self {
        let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_string);
        WorkflowEntry {
            name: name.to_string(),
            system: false,
            description: text("description").unwrap_or_else(|| format!("Custom {name} workflow")),
            category: text("category").unwrap_or_else(|| "custom".to_string()),
        }
    }

    fn to_json(&self) -> Value {
        let mut display = self.name.replace('_', " ");
        if let Some(first) = display.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        json!({
            "name": self.name,
            "description": self.description,
            "path": format!("automagik/agents/claude_code/workflows/{}", self.name),
            "valid": true,
            "icon": "Bot",
            "mainColour": "#6366F1",
            "displayName": display,
            "category": self.category,
            "capabilities": [],
            "emoji": "🤖",
            "maxTurns": Value::Null,
            "suggestedTurns": Value::Null,
        })
    }
}

/// State shared by the handlers and the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    api_key: String,
    state: Mutex<SimState>,
}

impl Shared {
    /// The state lock. A handler that panicked cannot leave the state half-written in a way
    /// that matters to a test double, so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why the simulator could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    #[error(
        "the agent simulator could not listen on {addr}: {source}; pick another address or port 0"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the agent simulator's server failed: {0}")]
    Serve(std::io::Error),
    #[error("the agent simulator's server task ended abnormally: {0}")]
    Task(String),
}

/// Starts simulators.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Binds `config.bind` and serves the API on the current tokio runtime until
    /// [`SimulatorHandle::shutdown`] (or until the handle is dropped).
    pub async fn start(config: SimulatorConfig) -> Result<SimulatorHandle, SimulatorError> {
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| SimulatorError::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| SimulatorError::Bind {
                addr: config.bind,
                source,
            })?;
        let api_key = config.api_key.clone();
        let mut state = SimState::new(config.clone());
        for name in &config.workflows {
            state
                .workflows
                .insert(name.clone(), WorkflowEntry::new(name));
        }
        let shared = Arc::new(Shared {
            api_key: api_key.clone(),
            state: Mutex::new(state),
        });
        let app = routes::router(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(%addr, "agent simulator listening");
        Ok(SimulatorHandle {
            base_url: format!("http://{addr}"),
            api_key,
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// A running simulator: where it listens, its key, introspection and fault knobs for tests.
pub struct SimulatorHandle {
    /// The service root, e.g. `http://127.0.0.1:40123` (the client appends the API path).
    pub base_url: String,
    /// The key the simulator accepts.
    pub api_key: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl fmt::Debug for SimulatorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatorHandle")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl SimulatorHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs accepted by `POST /run/{workflow}` (each accepted POST is a new run).
    pub fn runs_started(&self) -> usize {
        self.shared.lock().runs.len()
    }

    /// `POST /run/{workflow}` requests that passed auth, accepted or not.
    pub fn start_requests(&self) -> usize {
        self.shared.lock().start_requests
    }

    /// Requests that passed auth, on any path.
    pub fn requests(&self) -> usize {
        self.shared.lock().requests
    }

    /// How many runs were started with `session_name` (more than one means a duplicate start).
    pub fn runs_with_session_name(&self, session_name: &str) -> usize {
        self.shared
            .lock()
            .runs
            .values()
            .filter(|r| r.session_name == session_name)
            .count()
    }

    /// The run ids started with `session_name`.
    pub fn run_ids_for_session_name(&self, session_name: &str) -> Vec<String> {
        self.shared
            .lock()
            .runs
            .values()
            .filter(|r| r.session_name == session_name)
            .map(|r| r.run_id.clone())
            .collect()
    }

    /// Messages accepted by add-message for a run, in order.
    pub fn messages(&self, run_id: &str) -> Vec<ReceivedMessage> {
        self.shared
            .lock()
            .runs
            .get(run_id)
            .map(|r| r.messages.clone())
            .unwrap_or_default()
    }

    /// Every kill request received, in order.
    pub fn kill_calls(&self) -> Vec<KillCall> {
        self.shared.lock().kill_calls.clone()
    }

    /// The start body a run was created from, as received.
    pub fn start_body(&self, run_id: &str) -> Option<Value> {
        self.shared.lock().runs.get(run_id).map(|r| r.body.clone())
    }

    /// The `session_id` the run stored (only a UUID sent in the start is kept).
    pub fn stored_session_id(&self, run_id: &str) -> Option<String> {
        self.shared
            .lock()
            .runs
            .get(run_id)
            .and_then(|r| r.stored_session_id().map(str::to_string))
    }

    /// A run's status as of now.
    pub fn run_status(&self, run_id: &str) -> Option<AgentRunStatus> {
        let mut state = self.shared.lock();
        state
            .refresh(run_id, tokio::time::Instant::now())
            .map(|r| r.status)
    }

    /// Queues faults for the next API requests, one per request, in order.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.lock().faults.extend(faults);
    }

    /// Answers the next `n` API requests with `status` (e.g. 500, 503) without acting on them.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.inject(std::iter::repeat_n(Fault::Status(status), n));
    }

    /// Acts on the next `n` API requests but answers each only after `delay`.
    pub fn delay_next(&self, n: usize, delay: Duration) {
        self.inject(std::iter::repeat_n(Fault::Delay(delay), n));
    }

    /// Drops faults not yet used.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Answers the next `n` valid starts with HTTP 200 `status: "failed"` and no run (quirk 9).
    pub fn fail_next_starts(&self, n: u32) {
        self.shared.lock().failed_starts += n;
    }

    /// Sets what `/health` reports (it stays HTTP 200).
    pub fn set_health_status(&self, status: &str) {
        self.shared.lock().health_status = status.to_string();
    }

    /// Stops accepting connections, lets in-flight requests finish and waits for the server.
    pub async fn shutdown(mut self) -> Result<(), SimulatorError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => match task.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(SimulatorError::Serve(e)),
                Err(e) => Err(SimulatorError::Task(e.to_string())),
            },
            None => Ok(()),
        }
    }
}

impl Drop for SimulatorHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
