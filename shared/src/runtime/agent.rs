//! The agent calls the executor makes, as a port.
//!
//! Production passes an [`AgentClient`]. The executor holds the agent behind this trait (rather
//! than the concrete client) so tests can wrap the real client, e.g. to make it fail as if the
//! process died after its N-th call, while still talking HTTP to the simulator.

use async_trait::async_trait;

use crate::agent::{
    AddMessageResponse, AgentClient, AgentError, KillOutcome, MessageType, RunSummary,
    StartRunResponse,
};
use crate::engine::{AgentObservation, AgentStartSpec};
use crate::model::Millis;

/// The subset of [`AgentClient`] the executor uses; see its methods for the quirks each absorbs.
#[async_trait]
pub trait AgentApi: Send + Sync {
    /// [`AgentClient::start_run`].
    async fn start_run(&self, spec: &AgentStartSpec) -> Result<StartRunResponse, AgentError>;

    /// [`AgentClient::find_run_by_session_name`].
    async fn find_run_by_session_name(
        &self,
        workflow: &str,
        session_name: &str,
        not_before: Option<Millis>,
    ) -> Result<Option<RunSummary>, AgentError>;

    /// [`AgentClient::observe`].
    async fn observe(&self, workflow: &str, run_id: &str) -> Result<AgentObservation, AgentError>;

    /// [`AgentClient::kill_if_active`].
    async fn kill_if_active(&self, run_id: &str, force: bool) -> Result<KillOutcome, AgentError>;

    /// [`AgentClient::add_message`].
    async fn add_message(
        &self,
        run_id: &str,
        message_type: MessageType,
        content: &str,
    ) -> Result<AddMessageResponse, AgentError>;
}

#[async_trait]
impl AgentApi for AgentClient {
    async fn start_run(&self, spec: &AgentStartSpec) -> Result<StartRunResponse, AgentError> {
        AgentClient::start_run(self, spec).await
    }

    async fn find_run_by_session_name(
        &self,
        workflow: &str,
        session_name: &str,
        not_before: Option<Millis>,
    ) -> Result<Option<RunSummary>, AgentError> {
        AgentClient::find_run_by_session_name(self, workflow, session_name, not_before).await
    }

    async fn observe(&self, workflow: &str, run_id: &str) -> Result<AgentObservation, AgentError> {
        AgentClient::observe(self, workflow, run_id).await
    }

    async fn kill_if_active(&self, run_id: &str, force: bool) -> Result<KillOutcome, AgentError> {
        AgentClient::kill_if_active(self, run_id, force).await
    }

    async fn add_message(
        &self,
        run_id: &str,
        message_type: MessageType,
        content: &str,
    ) -> Result<AddMessageResponse, AgentError> {
        AgentClient::add_message(self, run_id, message_type, content).await
    }
}
