//! Creating and starting a run of a stored workflow (the API and triggers reuse this).

use serde_json::{Map, Value};
use tracing::{info, warn};

use super::concurrency::{self, Admission};
use super::executor::Before;
use super::sessions::record_sessions;
use crate::definition::{Problem, StoredWorkflow, WhenFull, WorkflowDefinition, resolve_inputs};
use crate::engine::{Event, decide_mut};
use crate::model::{AuditEntry, Millis, Run};
use crate::ports::{
    CreateOutcome, RecordStore, RunStore, StoreError, WorkMessage, WorkQueue, WorkflowStore,
};

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
    /// Whether the start's effects (or, for a repeated key, a `Start`) were enqueued. When
    /// they were not, the run still goes on: its wake-up makes the sweeper tick it, and a tick
    /// re-issues effects whose outcome was never recorded.
    pub enqueued: bool,
    /// The run waits for a slot in its workflow's concurrency group (it starts when one frees).
    pub queued: bool,
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
    #[error(
        "workflow {workflow_id} already has {limit} active run(s) in concurrency group {group:?} and refuses more (concurrency.when_full: reject); retry when one finishes"
    )]
    ConcurrencyLimit {
        workflow_id: String,
        group: String,
        limit: u32,
    },
    #[error("run store: {0}")]
    Store(#[from] StoreError),
}

impl StartError {
    /// Whether the same request may succeed later (transient store trouble). Retrying with the
    /// same idempotency key never creates a second run.
    pub fn is_retryable(&self) -> bool {
        match self {
            StartError::Store(e) => e.is_retryable(),
            StartError::ConcurrencyLimit { .. } => true,
            _ => false,
        }
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
    records: &dyn RecordStore,
    now: Millis,
    new: NewRun,
) -> Result<StartedRun, StartError> {
    let stored = workflows
        .get_workflow(&new.workflow_id, None)
        .await?
        .ok_or_else(|| StartError::UnknownWorkflow(new.workflow_id.clone()))?;
    let checked = check_run(store, &stored.definition, new).await?;
    create_run(store, queue, records, now, &stored, checked).await
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

/// Write a checked run pinned to `stored`, already started, and queue the start's effects.
///
/// The engine's start decision is pure, so it is made here, before the first write: the run
/// is written once, running, with its `run.started` entries, and the effects of the start
/// (the first steps' HTTP calls, agent starts, wake-ups) go to the queue as one
/// [`WorkMessage::Perform`], as an approval's do. Writing the run `pending` and queueing a
/// `Start` for the executor to decide cost a second run write, two listing-index writes for
/// the status change and a move in the `due` index (5 of a reference run's 45 write units;
/// `docs/benchmarks.md`). If the enqueue fails the run still proceeds: the start decision
/// gave the run a wake-up for the effects it issued, and the sweeper's tick re-issues the
/// steps' effects (not the `run.started` event, as after an approval's lost `Perform`).
/// A repeated idempotency key enqueues a `Start` for the existing run, which is harmless on
/// a started run and starts one left pending by a crash in a version that wrote them so.
///
/// A workflow with a concurrency limit goes through its group (see
/// [`concurrency`](super::concurrency)): with `when_full: reject` a slot is taken first and a
/// full group refuses the start ([`StartError::ConcurrencyLimit`], nothing written but the
/// group's registry entry); with `when_full: queue` the run is queued first, created with
/// `queued` set and a `run.queued` audit entry, and admitted by the pump (at once when a slot
/// is free).
pub async fn create_run(
    store: &dyn RunStore,
    queue: &dyn WorkQueue,
    records: &dyn RecordStore,
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
    let admission = Admission {
        store,
        records,
        queue,
    };
    let def = &stored.definition;
    let group = concurrency::group_of(def, &run.id, &run.inputs);
    // What the group holds for this start, undone when the key names an existing run.
    let mut taken_slot = false;
    let mut entry = None;
    let mut audit = Vec::new();
    if let Some((group, limit)) = &group {
        run.concurrency_group = Some(group.clone());
        match limit.when_full {
            WhenFull::Reject => {
                if !admission
                    .try_take(group, &def.id, limit.limit, &run.id, now)
                    .await?
                {
                    return Err(StartError::ConcurrencyLimit {
                        workflow_id: def.id.clone(),
                        group: group.clone(),
                        limit: limit.limit,
                    });
                }
                taken_slot = true;
            }
            WhenFull::Queue => {
                entry = Some(
                    admission
                        .enqueue(group, &def.id, limit.limit, &run.id, now)
                        .await?,
                );
                run.queued = true;
                run.wake_at = None;
                audit.push(AuditEntry {
                    run_id: run.id.clone(),
                    seq: 0,
                    at: now,
                    actor: run
                        .started_by
                        .clone()
                        .unwrap_or_else(|| crate::engine::SYSTEM.to_string()),
                    kind: "run.queued".to_string(),
                    step_id: None,
                    attempt: None,
                    message: format!(
                        "queued: at most {} run(s) of concurrency group {group:?} run at once; it starts when a slot frees",
                        limit.limit
                    ),
                    data: serde_json::json!({"group": group, "limit": limit.limit}),
                });
                run.audit_seq = 1;
            }
        }
    }
    // A run that waits for a slot is started by the admission pump instead.
    let before = Before::of(&run);
    let mut effects = Vec::new();
    let decided = !run.queued
        && match decide_mut(&mut run, def, &Event::Start, now) {
            Ok(changes) => {
                audit.extend(changes.audit);
                effects = changes.effects;
                true
            }
            // Not expected of a new run (a refused event leaves the run as it was); the
            // executor then decides it as it used to.
            Err(rejection) => {
                warn!(run_id = %run.id, %rejection, "the engine refused to start the new run here; queueing its start");
                false
            }
        };
    let (run_id, existing) = match store.create_run(&run, &audit).await? {
        CreateOutcome::Created => (run.id.clone(), false),
        CreateOutcome::Existing(id) => (id, true),
    };
    if decided && !existing {
        record_sessions(store, &before, &run, now).await;
    }
    if existing && let Some((group, _)) = &group {
        // The key named an earlier run: give back what this start took.
        if taken_slot {
            admission.free(group, &run.id).await?;
        }
        if let Some(entry) = &entry {
            admission.dequeue(group, entry).await?;
        }
    }
    // The group the run waits in, if it waits (a repeated key reads whether the earlier run
    // still does; only workflows that queue pay that read).
    let queue_group = match &group {
        Some((g, l)) if l.when_full == WhenFull::Queue => {
            let waiting = if existing {
                store
                    .get_run(&run_id)
                    .await?
                    .is_some_and(|r| r.queued && !r.status.is_terminal())
            } else {
                run.queued
            };
            waiting.then_some((g.as_str(), l.limit))
        }
        _ => None,
    };
    let (enqueued, queued) = if let Some((group, limit)) = queue_group {
        match admission.pump(group, limit, now).await {
            Ok(admitted) => (true, !admitted.contains(&run_id)),
            Err(e) => {
                warn!(run_id = %run_id, error = %e, "run queued but the admission pump failed; the sweeper admits it");
                (false, true)
            }
        }
    } else {
        let message = if decided && !existing {
            (!effects.is_empty()).then(|| WorkMessage::Perform {
                run_id: run_id.clone(),
                effects,
            })
        } else {
            Some(WorkMessage::Event {
                run_id: run_id.clone(),
                event: Event::Start,
            })
        };
        match message {
            None => (true, false),
            Some(message) => match queue.send(&message, std::time::Duration::ZERO).await {
                Ok(()) => (true, false),
                Err(e) => {
                    warn!(run_id = %run_id, error = %e, "run created but its start was not enqueued; the sweeper's tick will carry it on");
                    (false, false)
                }
            },
        }
    };
    info!(run_id = %run_id, workflow_id = %new.workflow_id, version = stored.version, existing, queued, "run created");
    Ok(StartedRun {
        run_id,
        workflow_version: stored.version,
        existing,
        enqueued,
        queued,
    })
}
