//! Why handling a work message failed, and whether the message should come back.

use crate::agent::AgentError;
use crate::ports::{QueueError, StoreError};

/// A failed [`Executor::handle`](super::Executor::handle). [`ExecError::is_retryable`] decides
/// whether the message is redelivered (SQS partial batch failure, `MemQueue` visibility) or
/// dropped; either way the run stays recoverable because it records when it next needs
/// attention (`wake_at`) and the sweeper re-wakes it.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("run store: {0}")]
    Store(#[from] StoreError),
    #[error("work queue: {0}")]
    Queue(#[from] QueueError),
    #[error("agent service: {0}")]
    Agent(#[from] AgentError),
    /// The run is pinned to a definition version the workflow store does not have.
    #[error(
        "run {run_id} is pinned to workflow {workflow_id} v{version}, which the workflow store \
         does not have; restore that version (runs keep their pinned version) or cancel the run"
    )]
    MissingWorkflow {
        run_id: String,
        workflow_id: String,
        version: u64,
    },
    /// Every write lost a race with another writer of the same run.
    #[error(
        "run {run_id} changed under every one of {attempts} attempts to write it; the message \
         will be retried (heavy contention on one run is unusual: look for a hot loop)"
    )]
    Contention { run_id: String, attempts: u32 },
    /// The executor could not be set up.
    #[error("executor configuration: {0}")]
    Config(String),
}

impl ExecError {
    /// Whether handling the same message again later may succeed: transient store, queue and
    /// agent failures and lost write races. Anything else is logged and the message dropped.
    pub fn is_retryable(&self) -> bool {
        match self {
            ExecError::Store(e) => e.is_retryable(),
            ExecError::Queue(e) => e.is_retryable(),
            ExecError::Agent(e) => e.is_retryable(),
            ExecError::Contention { .. } => true,
            ExecError::MissingWorkflow { .. } | ExecError::Config(_) => false,
        }
    }
}
