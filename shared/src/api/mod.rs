//! The HTTP API's wire types: what `functions/api` accepts and answers, and what the API client
//! ([`client::FlowgateClient`], used by the CLI and the MCP proxy) sends and reads.
//!
//! One definition for both sides keeps them from drifting; the `ToSchema` derives feed the
//! OpenAPI document the API serves at `/openapi.json`. Times are milliseconds since the Unix
//! epoch, like everywhere else in Flowgate.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::model::{
    AgentRunStatus, ApprovalDecision, ApprovalKind, ApprovalStatus, AuditEntry, Millis, RunStatus,
    StepStatus,
};

pub mod client;

/// Header that makes a `POST /v1/runs` safe to retry.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Header carrying an API key (`Authorization: Bearer <key>` works too).
pub const API_KEY_HEADER: &str = "x-api-key";
/// Largest request body the API reads (bigger ones get 413).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Every error the API answers has this shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_json`, `unknown_workflow`, `conflict`.
    pub code: String,
    /// What went wrong and what to do about it.
    pub message: String,
    /// The request field at fault (a JSON path such as `inputs.topic`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every problem found, for validation failures that have several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<ProblemView>,
}

/// One problem in a definition or a request, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProblemView {
    pub path: String,
    pub message: String,
}

// ---------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------

/// `POST /v1/runs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRunRequest {
    /// A stored workflow's id, or the name of one of the agent service's workflows
    /// (`architect`, `implement`, ...) to run it as a one-step run.
    pub workflow: String,
    /// The workflow's inputs.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schema(value_type = Object)]
    pub inputs: Map<String, Value>,
    /// Shorthand for the `message` input (required by one-step agent runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Caps every agent step of the run at this many turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub max_turns: Option<u32>,
    /// File the run's agent conversation under this name (to continue it later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    /// Continue the agent conversation of this earlier session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_session: Option<String>,
    /// Shorthand for the `repository_url` input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_url: Option<String>,
    /// Shorthand for the `git_branch` input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_branch: Option<String>,
}

/// Where to find a run and what can be done with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunLinks {
    #[serde(rename = "self")]
    pub self_: String,
    pub events: String,
    pub cancel: String,
    pub messages: String,
}

impl RunLinks {
    pub fn for_run(run_id: &str) -> Self {
        let base = format!("/v1/runs/{run_id}");
        RunLinks {
            events: format!("{base}/events"),
            cancel: format!("{base}/cancel"),
            messages: format!("{base}/messages"),
            self_: base,
        }
    }
}

/// `202` answer to `POST /v1/runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StartRunResponse {
    pub run_id: String,
    pub workflow_id: String,
    pub workflow_version: u64,
    /// The `Idempotency-Key` already named this run: nothing new was started.
    pub existing: bool,
    /// The workflow's concurrency limit is reached: the run waits (`pending`) and starts when
    /// an earlier run of its group finishes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub queued: bool,
    pub links: RunLinks,
}

/// A run in a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunSummary {
    pub id: String,
    pub workflow_id: String,
    pub workflow_version: u64,
    pub status: RunStatus,
    pub created_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// Agent spend so far, all steps and attempts.
    pub cost_usd: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
}

/// `GET /v1/runs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunSummary>,
    /// Pass as `cursor` (with the same filters) for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// An agent step's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentView {
    /// The agent service workflow.
    pub workflow: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AgentRunStatus>,
    pub turns: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    pub tokens: u64,
    pub cost_usd: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_at: Option<Millis>,
    /// When `status`, `turns`, `tokens`, `cost_usd` and `phase` were read live from the agent
    /// service for this answer (`GET /v1/runs/{id}` asks it about each running agent step).
    /// Absent: the figures the last recorded poll saw, which may be minutes old while the
    /// agent runs (`polling.progress_every`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Millis>,
}

/// An approval, open or decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApprovalView {
    pub id: String,
    pub run_id: String,
    /// The approval step, or the step whose budget was crossed (empty for the run's budget).
    pub step: String,
    /// `step` (an approval step) or `budget` ("continue past the budget?"); servers from
    /// before budget gates send none, which reads as `step`.
    #[serde(default)]
    pub kind: ApprovalKind,
    pub status: ApprovalStatus,
    pub message: String,
    pub approvers: Vec<String>,
    pub required: u32,
    pub requested_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Millis>,
    pub decisions: Vec<DecisionView>,
}

/// Approvals, newest request first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApprovalList {
    pub approvals: Vec<ApprovalView>,
}

/// A decision on an approval (`POST /v1/approvals/{id}/decision`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// `approve`, `reject`, `retry` (run the agent step before the gate again with `comment`
    /// as feedback), `skip` or `cancel` (the run).
    pub decision: ApprovalDecision,
    /// Reason (reject), feedback for the agent (retry, required), or a note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// What a decision did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DecisionResponse {
    pub approval: ApprovalView,
    pub run_status: RunStatus,
    /// Who the decision was recorded for.
    pub by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DecisionView {
    pub by: String,
    pub decision: ApprovalDecision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub at: Millis,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StepView {
    pub id: String,
    /// `agent`, `approval`, `notify`, `http` or `wait`.
    pub kind: String,
    pub depends_on: Vec<String>,
    pub status: StepStatus,
    /// 0 before the first attempt.
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalView>,
}

/// `GET /v1/runs/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub summary: RunSummary,
    #[schema(value_type = Object)]
    pub inputs: Map<String, Value>,
    #[schema(value_type = Object)]
    pub outputs: Map<String, Value>,
    /// In definition order.
    pub steps: Vec<StepView>,
    /// Approvals waiting for a decision.
    pub open_approvals: Vec<ApprovalView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<String>,
    pub updated_at: Millis,
    pub links: RunLinks,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    pub seq: u64,
    pub at: Millis,
    pub actor: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    pub message: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    #[schema(value_type = Object)]
    pub data: Value,
}

impl From<AuditEntry> for EventView {
    fn from(e: AuditEntry) -> Self {
        EventView {
            seq: e.seq,
            at: e.at,
            actor: e.actor,
            kind: e.kind,
            step_id: e.step_id,
            attempt: e.attempt,
            message: e.message,
            data: e.data,
        }
    }
}

/// `GET /v1/runs/{id}/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    pub events: Vec<EventView>,
    /// Pass as `after` for the next page; absent when this page reached the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

/// `POST /v1/runs/{id}/cancel`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Kill agent runs at once instead of letting them stop gracefully.
    #[serde(default)]
    pub force: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Who a feedback message speaks as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    #[default]
    User,
    System,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::User => "user",
            MessageKind::System => "system",
        }
    }
}

/// `POST /v1/runs/{id}/messages`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    pub content: String,
    #[serde(default, rename = "type")]
    pub kind: MessageKind,
    /// The agent step to send to; the running one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// `POST /v1/runs/{id}/retry`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// Resume from this step (and everything after it); the failed steps when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_step: Option<String>,
}

/// `POST /v1/runs/{id}/rollback`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `202` answer to a run command (cancel, messages, retry, rollback): the command was recorded
/// and its effects performed or under way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CommandResponse {
    pub run_id: String,
    /// The run's status after the command was applied.
    pub status: RunStatus,
    pub links: RunLinks,
}

// ---------------------------------------------------------------------------------------------
// Workflows
// ---------------------------------------------------------------------------------------------

/// A stored workflow in a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowSummary {
    pub id: String,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub steps: usize,
    pub created_at: Millis,
}

/// `GET /v1/workflows`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowList {
    pub workflows: Vec<WorkflowSummary>,
}

/// `GET /v1/workflows/{id}` and the answer to `PUT`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowDetail {
    pub id: String,
    pub version: u64,
    pub created_at: Millis,
    /// The definition as stored (the same schema `flowgate validate` checks).
    #[schema(value_type = Object)]
    pub definition: Value,
}

/// `POST /v1/workflows/validate`: always `200`; `valid` says whether the definition passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ValidationReport {
    pub valid: bool,
    pub problems: Vec<ProblemView>,
    /// Whether the agent workflow names were checked against the agent service (`strict`).
    pub strict: bool,
}

/// A workflow the agent service offers (runnable directly as a one-step run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentWorkflowView {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
}

/// `GET /v1/agent-workflows`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentWorkflowList {
    pub workflows: Vec<AgentWorkflowView>,
}

// ---------------------------------------------------------------------------------------------
// Sessions and health
// ---------------------------------------------------------------------------------------------

/// A named agent conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_session_id: Option<String>,
    /// The last run that used the session has not finished.
    pub active: bool,
    pub created_at: Millis,
    /// When a step last started using the session.
    pub updated_at: Millis,
    /// Steps that used the session, oldest first.
    pub runs: Vec<SessionRunView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionRunView {
    pub run_id: String,
    pub step_id: String,
    pub at: Millis,
}

/// `GET /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

/// `GET /v1/me`: who an API key belongs to and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Identity {
    /// The key's principal: what audit logs, `started_by` and approval decisions show.
    pub principal: String,
    /// Whether the key may decide approvals (`FLOWGATE_API_KEY_APPROVERS`; every key when
    /// unset). An approval's own `approvers` list and the no-self-approval rule still apply.
    pub may_approve: bool,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
}

/// Query of `GET /v1/runs` (also what the client sends).
#[derive(
    Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema, utoipa::IntoParams,
)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListRunsParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Comma-separated statuses, e.g. `running,pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Created at or after (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Millis>,
    /// Created before (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Millis>,
    /// `started_at` (default), `completed_at`, `duration` or `cost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<String>,
    /// `desc` (default) or `asc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    /// 1..=100, default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------------------------

pub use crate::notify::webhooks::{AttemptResult, DeliveryLogEntry, Subscription};

/// `POST /v1/webhooks`: subscribe a URL to lifecycle events.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// Absolute `https` (or `http`) URL deliveries are POSTed to. Redirects are not followed.
    pub url: String,
    /// `run.started`, `step.completed`, `step.failed`, `approval.requested`,
    /// `approval.decided`, `run.completed`, `run.failed`, `run.cancelled`, or `*` for all.
    pub events: Vec<String>,
    /// A Standard Webhooks secret (`whsec_` + base64 of 24 to 512 bytes) to sign with; one is
    /// generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Only runs of this workflow id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
}

impl std::fmt::Debug for CreateWebhookRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateWebhookRequest")
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("description", &self.description)
            .field("workflow", &self.workflow)
            .finish()
    }
}

/// `POST /v1/webhooks` answer: the subscription and its signing secret. This is the only
/// answer that carries the secret; store it now.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookCreated {
    #[serde(flatten)]
    pub webhook: Subscription,
    /// `whsec_…`: verify deliveries' `webhook-signature` with it (Standard Webhooks v1).
    pub secret: String,
}

impl std::fmt::Debug for WebhookCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookCreated")
            .field("webhook", &self.webhook)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// `GET /v1/webhooks`: every subscription, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<Subscription>,
}

/// `GET /v1/webhooks/{id}/deliveries`: delivery attempts, newest first (kept 30 days).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookDeliveryList {
    pub deliveries: Vec<DeliveryLogEntry>,
}

/// Query of `GET /v1/webhooks/{id}/deliveries`.
#[derive(
    Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema, utoipa::IntoParams,
)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WebhookDeliveriesParams {
    /// 1..=100, default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}
