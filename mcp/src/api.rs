//! What the tools call: the Flowgate HTTP API, behind a trait with one implementation per
//! transport.
//!
//! The tools never touch stores or the engine. They call the API, so MCP callers get exactly
//! what HTTP callers get: the same authentication, validation, idempotency, error codes and
//! audit trail, and there is one place (the API's handlers) where each rule lives.
//!
//! - `flowgate mcp` (stdio) runs on a user's machine, far from the store: its
//!   [`FlowgateApi`] is [`FlowgateClient`], the typed HTTP client the CLI uses.
//! - The remote `/mcp` endpoint runs inside the api function, next to the router: the api
//!   crate implements [`FlowgateApi`] by handing each call to the router in-process (no network
//!   hop back through API Gateway), with the API key of the MCP request that asked.
//!
//! [`Connector`] is what picks the API for one MCP request: over stdio there is one client for
//! the process; over HTTP each request brings its own key.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use flowgate_shared::api::client::{ClientError, FlowgateClient, ListApprovalsParams};
use flowgate_shared::api::{
    AgentWorkflowList, ApprovalList, CancelRequest, CommandResponse, DecisionRequest,
    DecisionResponse, EventList, Identity, ListRunsParams, MessageRequest, RunDetail, RunList,
    SessionList, SessionView, StartRunRequest, StartRunResponse, WorkflowList,
};

/// The API routes the tools use, one method per route (named after [`FlowgateClient`]'s).
#[async_trait]
pub trait FlowgateApi: Send + Sync + fmt::Debug {
    /// `GET /v1/me`.
    async fn me(&self) -> Result<Identity, ClientError>;
    /// `POST /v1/runs`.
    async fn start_run(&self, request: &StartRunRequest) -> Result<StartRunResponse, ClientError>;
    /// `GET /v1/runs`.
    async fn list_runs(&self, params: &ListRunsParams) -> Result<RunList, ClientError>;
    /// `GET /v1/runs/{id}`.
    async fn get_run(&self, run_id: &str) -> Result<RunDetail, ClientError>;
    /// `GET /v1/runs/{id}/events`.
    async fn run_events(
        &self,
        run_id: &str,
        after: Option<u64>,
        limit: Option<u32>,
    ) -> Result<EventList, ClientError>;
    /// `POST /v1/runs/{id}/cancel`.
    async fn cancel_run(
        &self,
        run_id: &str,
        request: &CancelRequest,
    ) -> Result<CommandResponse, ClientError>;
    /// `POST /v1/runs/{id}/messages`.
    async fn send_message(
        &self,
        run_id: &str,
        request: &MessageRequest,
    ) -> Result<CommandResponse, ClientError>;
    /// `GET /v1/workflows`.
    async fn list_workflows(&self) -> Result<WorkflowList, ClientError>;
    /// `GET /v1/agent-workflows`.
    async fn list_agent_workflows(&self) -> Result<AgentWorkflowList, ClientError>;
    /// `GET /v1/sessions`.
    async fn list_sessions(&self, active: Option<bool>) -> Result<SessionList, ClientError>;
    /// `GET /v1/sessions/{name}`.
    async fn get_session(&self, name: &str) -> Result<SessionView, ClientError>;
    /// `GET /v1/approvals`.
    async fn list_approvals(
        &self,
        params: &ListApprovalsParams,
    ) -> Result<ApprovalList, ClientError>;
    /// `POST /v1/approvals/{id}/decision`.
    async fn decide_approval(
        &self,
        approval_id: &str,
        request: &DecisionRequest,
    ) -> Result<DecisionResponse, ClientError>;
}

#[async_trait]
impl FlowgateApi for FlowgateClient {
    async fn me(&self) -> Result<Identity, ClientError> {
        FlowgateClient::me(self).await
    }
    async fn start_run(&self, request: &StartRunRequest) -> Result<StartRunResponse, ClientError> {
        // No idempotency key: a tool call that failed is reported to the model, which decides;
        // the client itself never repeats a start.
        FlowgateClient::start_run(self, request, None).await
    }
    async fn list_runs(&self, params: &ListRunsParams) -> Result<RunList, ClientError> {
        FlowgateClient::list_runs(self, params).await
    }
    async fn get_run(&self, run_id: &str) -> Result<RunDetail, ClientError> {
        FlowgateClient::get_run(self, run_id).await
    }
    async fn run_events(
        &self,
        run_id: &str,
        after: Option<u64>,
        limit: Option<u32>,
    ) -> Result<EventList, ClientError> {
        FlowgateClient::run_events(self, run_id, after, limit).await
    }
    async fn cancel_run(
        &self,
        run_id: &str,
        request: &CancelRequest,
    ) -> Result<CommandResponse, ClientError> {
        FlowgateClient::cancel_run(self, run_id, request).await
    }
    async fn send_message(
        &self,
        run_id: &str,
        request: &MessageRequest,
    ) -> Result<CommandResponse, ClientError> {
        FlowgateClient::send_message(self, run_id, request).await
    }
    async fn list_workflows(&self) -> Result<WorkflowList, ClientError> {
        FlowgateClient::list_workflows(self).await
    }
    async fn list_agent_workflows(&self) -> Result<AgentWorkflowList, ClientError> {
        FlowgateClient::list_agent_workflows(self).await
    }
    async fn list_sessions(&self, active: Option<bool>) -> Result<SessionList, ClientError> {
        FlowgateClient::list_sessions(self, active).await
    }
    async fn get_session(&self, name: &str) -> Result<SessionView, ClientError> {
        FlowgateClient::get_session(self, name).await
    }
    async fn list_approvals(
        &self,
        params: &ListApprovalsParams,
    ) -> Result<ApprovalList, ClientError> {
        FlowgateClient::list_approvals(self, params).await
    }
    async fn decide_approval(
        &self,
        approval_id: &str,
        request: &DecisionRequest,
    ) -> Result<DecisionResponse, ClientError> {
        FlowgateClient::decide_approval(self, approval_id, request).await
    }
}

/// Picks the API one MCP request talks to.
pub trait Connector: Send + Sync + fmt::Debug + 'static {
    /// The API as the caller of this MCP request sees it. `http` is the HTTP request that
    /// carried the MCP message (Streamable HTTP: its headers hold the caller's API key), `None`
    /// over stdio.
    fn connect(&self, http: Option<&http::request::Parts>) -> Arc<dyn FlowgateApi>;

    /// Whether one API's answer to `GET /v1/me` holds for every later request of this server.
    /// True over stdio (one key for the process), so the permission is asked once; false over
    /// HTTP, where each request may carry another key.
    fn identity_is_fixed(&self) -> bool;
}

/// The stdio proxy's connector: one HTTP client, with the key `flowgate mcp` was given.
#[derive(Debug, Clone)]
pub struct ClientConnector {
    client: Arc<FlowgateClient>,
}

impl ClientConnector {
    pub fn new(client: FlowgateClient) -> Self {
        ClientConnector {
            client: Arc::new(client),
        }
    }
}

impl Connector for ClientConnector {
    fn connect(&self, _http: Option<&http::request::Parts>) -> Arc<dyn FlowgateApi> {
        self.client.clone()
    }

    fn identity_is_fixed(&self) -> bool {
        true
    }
}
