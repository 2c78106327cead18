//! Creating and starting a run of a stored workflow (the API and triggers reuse this).

use serde_json::{Map, Value};
use tracing::{info, warn};

use crate::definition::{Problem, StoredWorkflow, WorkflowDefinition, resolve_inputs};
use crate::engine::Event;
use crate::model::{Millis, Run};
use crate::ports::{CreateOutcome, RunStore, StoreError, WorkMessage, WorkQueue, WorkflowStore};

/// What to start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewRun {
    pub workflow_id: String,
    pub inputs: Map<String, Value>,
    /// A retried request with the same key gets the first run back instead of a second run.
    pub idempotency_key: Option<String>,
    /// The principal starting the run (may not approve its own gates).
    pub started_by: Option<String>,
    /// Name of the agent conversation the run's agent steps are filed under.
    pub session_name: Option<String>,
    /// Agent session id to continue (from an earlier run's session record).
    pub resume_session_id: Option<String>,
    /// Name of an earlier session to continue: its agent session id becomes
    /// `resume_session_id`, and the run files its own agent steps under the same name unless
    /// `session_name` says otherwise.
    pub continue_session: Option<String>,
    pub parent_run_id: Option<String>,
    pub chain_depth: u32,
    /// Caps the turns of every agent step of the run.
    pub max_turns: Option<u32>,
}

/// A run that exists and has been (or will be) started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedRun {
    pub run_id: String,
    pub workflow_version: u64,
    /// The idempotency key already named this run; nothing new was created.
    pub existing: bool,
    /// Whether the start message was enqueued. When it was not, the run still starts: it is
    /// pending with `wake_at` = its creation time, so the sweeper wakes it, and the engine
    /// starts a pending run on a tick.
    pub enqueued: bool,
}

/// Why a run could not be created.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("workflow {0:?} does not exist or was deleted; create it first or check the id")]
    UnknownWorkflow(String),
    #[error("the inputs do not fit workflow {workflow_id}: {}; fix them and start again", list(.problems))]
    InvalidInputs {
        workflow_id: String,
        problems: Vec<Problem>,
    },
    #[error("there is no session named {0:?} to continue; list the sessions and check the name")]
    UnknownSession(String),
    #[error(
        "session {0:?} has no agent conversation yet (its agent step has not started); wait for it, or start without continue_session"
    )]
    SessionNotStarted(String),
    #[error("run store: {0}")]
    Store(#[from] StoreError),
}

impl StartError {
    /// Whether the same request may succeed later (transient store trouble). Retrying with the
    /// same idempotency key never creates a second run.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StartError::Store(e) if e.is_retryable())
    }
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Create a run of the latest version of `new.workflow_id` (the run is pinned to it), with
/// inputs checked and defaulted, and enqueue its `Start`: [`check_run`] then [`create_run`].
pub async fn start_run(
    store: &dyn RunStore,
    workflows: &dyn WorkflowStore,
    queue: &dyn WorkQueue,
    now: Millis,
    new: NewRun,
) -> Result<StartedRun, StartError> {
    let stored = workflows
        .get_workflow(&new.workflow_id, None)
        .await?
        .ok_or_else(|| StartError::UnknownWorkflow(new.workflow_id.clone()))?;
    let checked = check_run(store, &stored.definition, new).await?;
    create_run(store, queue, now, &stored, checked).await
}

/// A start request checked against a definition (inputs resolved, session looked up), not
/// written yet: [`create_run`] writes it. The split lets a caller check a definition it has not
/// stored yet before storing it (the API's one-step agent runs).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedRun {
    new: NewRun,
    inputs: Map<String, Value>,
}

/// Check `new` against `def`: inputs typed and defaulted, a `continue_session` resolved to its
/// agent session id. Reads the session store only.
pub async fn check_run(
    store: &dyn RunStore,
    def: &WorkflowDefinition,
    mut new: NewRun,
) -> Result<CheckedRun, StartError> {
    let inputs =
        resolve_inputs(def, &new.inputs).map_err(|problems| StartError::InvalidInputs {
            workflow_id: new.workflow_id.clone(),
            problems,
        })?;
    if let Some(name) = &new.continue_session {
        let record = store
            .get_session(name)
            .await?
            .ok_or_else(|| StartError::UnknownSession(name.clone()))?;
        let id = record
            .agent_session_id
            .ok_or_else(|| StartError::SessionNotStarted(name.clone()))?;
        new.resume_session_id = Some(id);
        new.session_name = new.session_name.or_else(|| Some(name.clone()));
    }
    Ok(CheckedRun { new, inputs })
}

/// Write a checked run pinned to `stored` (in `pending`, no audit entry: `run.started` is
/// written by the engine when the executor applies the start) and enqueue its `Start`. A
/// repeated idempotency key re-enqueues the start of the existing run, which repairs a first
/// request that stopped between the write and the enqueue (starting twice is harmless).
pub async fn create_run(
    store: &dyn RunStore,
    queue: &dyn WorkQueue,
    now: Millis,
    stored: &StoredWorkflow,
    checked: CheckedRun,
) -> Result<StartedRun, StartError> {
    let CheckedRun { new, inputs } = checked;
    let mut run = Run::new(
        uuid::Uuid::new_v4().to_string(),
        &stored.definition,
        stored.version,
        inputs,
        now,
    );
    run.idempotency_key = new.idempotency_key;
    run.started_by = new.started_by;
    run.session_name = new.session_name;
    run.resume_session_id = new.resume_session_id;
    run.parent_run_id = new.parent_run_id;
    run.chain_depth = new.chain_depth;
    run.max_turns = new.max_turns;
    let (run_id, existing) = match store.create_run(&run, &[]).await? {
        CreateOutcome::Created => (run.id.clone(), false),
        CreateOutcome::Existing(id) => (id, true),
    };
    let message = WorkMessage::Event {
        run_id: run_id.clone(),
        event: Event::Start,
    };
    let enqueued = match queue.send(&message, std::time::Duration::ZERO).await {
        Ok(()) => true,
        Err(e) => {
            warn!(run_id = %run_id, error = %e, "run created but its start was not enqueued; the sweeper will start it");
            false
        }
    };
    info!(run_id = %run_id, workflow_id = %new.workflow_id, version = stored.version, existing, "run created");
    Ok(StartedRun {
        run_id,
        workflow_version: stored.version,
        existing,
        enqueued,
    })
}
