//! The tools' arguments and results: what the input and output schemas are generated from.
//!
//! These are the MCP-facing shapes, not the API's wire types: names a model can guess
//! (`workflow_name`, `page`, `active_only`), every field described, statuses as plain strings,
//! and the API's bulk (links, full step outputs) left to `detailed` views. Optional output
//! fields are skipped when absent so the output schema marks them optional (a client that
//! validates `structuredContent` against the schema, as the Python SDK does, must accept every
//! result). Each result also renders itself as a short text for the model ([`Summary`]).

use std::fmt::Write as _;

use flowgate_shared::api::{
    AgentView, AgentWorkflowView, ApprovalView, EventView, RunDetail, RunSummary, SessionView,
    StepView, WorkflowSummary,
};
use flowgate_shared::model::{ApprovalDecision, Millis};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The longest a `run_workflow` call waits (`wait_seconds`). Well under API Gateway's 29-30 s
/// integration timeout, leaving room for the start and the final read; the same on both
/// transports so the tool's contract does not depend on how it is reached.
pub const MAX_WAIT_SECONDS: u32 = 20;

/// At most this many runs are walked to reach a `list_recent_runs` page (page x page_size).
pub const MAX_LISTED_RUNS: u32 = 1_000;

/// Audit entries a detailed status shows (the newest).
pub const DETAILED_EVENTS: usize = 20;

/// A result's short, readable rendering (the text block next to `structuredContent`).
pub trait Summary {
    fn summary(&self) -> String;
}

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

/// `run_workflow`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunWorkflowArgs {
    /// A stored workflow's id (see `list_workflows`), or the name of one of the agent service's
    /// workflows (`architect`, `implement`, ...) to run it as a one-step run.
    pub workflow_name: String,
    /// Instructions for the agent: the `message` input, required by one-step agent runs.
    #[serde(default)]
    pub message: Option<String>,
    /// The workflow's inputs by name (see the definition's `inputs`).
    #[serde(default)]
    pub inputs: Option<Map<String, Value>>,
    /// Cap every agent step of the run at this many turns (1-200).
    #[serde(default)]
    #[schemars(range(min = 1, max = 200))]
    pub max_turns: Option<u32>,
    /// File the run's agent conversation under this name, to continue it in a later run.
    #[serde(default)]
    pub session_name: Option<String>,
    /// Continue the agent conversation of this earlier session (see `list_sessions`).
    #[serde(default)]
    pub continue_session: Option<String>,
    /// Repository the agent works in (the `repository_url` input).
    #[serde(default)]
    pub repository_url: Option<String>,
    /// Branch the agent works on (the `git_branch` input).
    #[serde(default)]
    pub git_branch: Option<String>,
    /// Wait up to this many seconds (at most 20) for the run to finish, with progress
    /// notifications when the client asked for them. 0 or absent: return as soon as the run is
    /// started. A run still going when the wait ends keeps going; follow it with
    /// `get_workflow_status`.
    #[serde(default)]
    #[schemars(range(min = 0, max = 20))]
    pub wait_seconds: Option<u32>,
}

/// What to sort runs by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortBy {
    StartedAt,
    CompletedAt,
    Duration,
    Cost,
}

impl SortBy {
    pub fn as_str(self) -> &'static str {
        match self {
            SortBy::StartedAt => "started_at",
            SortBy::CompletedAt => "completed_at",
            SortBy::Duration => "duration",
            SortBy::Cost => "cost",
        }
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    Asc,
    Desc,
}

impl SortOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            SortOrder::Asc => "asc",
            SortOrder::Desc => "desc",
        }
    }
}

/// `list_recent_runs`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListRecentRunsArgs {
    /// Only runs of this workflow id.
    #[serde(default)]
    pub workflow: Option<String>,
    /// Only runs in these statuses, comma-separated: pending, running, cancelling,
    /// compensating, succeeded, failed, cancelled, timed_out.
    #[serde(default)]
    pub status: Option<String>,
    /// Page number, from 1 (the default).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub page: Option<u32>,
    /// Runs per page, 1-100 (default 20).
    #[serde(default)]
    #[schemars(range(min = 1, max = 100))]
    pub page_size: Option<u32>,
    /// Sort key (default `started_at`).
    #[serde(default)]
    pub sort_by: Option<SortBy>,
    /// Sort direction (default `desc`: newest, longest or most expensive first).
    #[serde(default)]
    pub sort_order: Option<SortOrder>,
}

/// `get_workflow_status`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetWorkflowStatusArgs {
    /// The run's id (from `run_workflow` or `list_recent_runs`).
    pub run_id: String,
    /// Also return inputs, each step's output and agent ids, and the newest audit log entries.
    #[serde(default)]
    pub detailed: bool,
}

/// `kill_workflow`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KillWorkflowArgs {
    /// The run's id.
    pub run_id: String,
    /// Kill the run's agent runs at once instead of letting them stop gracefully.
    #[serde(default)]
    pub force: bool,
    /// Why (kept in the run's audit log).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Who a feedback message speaks as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageType {
    #[default]
    User,
    System,
}

/// `send_feedback`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendFeedbackArgs {
    /// The run's id.
    pub run_id: String,
    /// The feedback, delivered to the run's running agent step.
    pub message: String,
    /// Who the message speaks as (default `user`).
    #[serde(default)]
    pub message_type: Option<MessageType>,
    /// The agent step to send to (default: the running one).
    #[serde(default)]
    pub step: Option<String>,
}

/// `list_sessions`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListSessionsArgs {
    /// Only sessions in use by an active run.
    #[serde(default)]
    pub active_only: bool,
}

/// `get_session_status`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetSessionStatusArgs {
    /// The session's name.
    pub session: String,
}

/// `list_pending_approvals`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListPendingApprovalsArgs {
    /// Only approvals of this workflow's runs.
    #[serde(default)]
    pub workflow: Option<String>,
}

/// A decision on an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Let the run go on.
    Approve,
    /// Refuse (give the reason as `comment`).
    Reject,
    /// Run the agent step before the gate again with `comment` as feedback.
    Retry,
    /// Skip the gate and the steps that need it.
    Skip,
    /// Cancel the run.
    Cancel,
}

impl From<Decision> for ApprovalDecision {
    fn from(d: Decision) -> Self {
        match d {
            Decision::Approve => ApprovalDecision::Approve,
            Decision::Reject => ApprovalDecision::Reject,
            Decision::Retry => ApprovalDecision::Retry,
            Decision::Skip => ApprovalDecision::Skip,
            Decision::Cancel => ApprovalDecision::Cancel,
        }
    }
}

/// `decide_approval`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideApprovalArgs {
    /// The approval's id (from `list_pending_approvals` or a run's `open_approvals`).
    pub approval_id: String,
    /// approve, reject, retry, skip or cancel.
    pub decision: Decision,
    /// The reason (reject), the feedback for the agent (retry: required), or a note.
    #[serde(default)]
    pub comment: Option<String>,
}

/// `list_workflows` takes no arguments.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

/// An agent step's progress.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct AgentProgress {
    /// The agent service workflow the step runs.
    pub workflow: String,
    /// Turns the agent has taken (this attempt).
    pub turns: u32,
    /// The turn limit, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// The agent run's status on the agent service: pending, running, completed, failed, killed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// What the agent is doing, when it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Agent spend of this step so far, in USD.
    pub cost_usd: f64,
    /// The agent service's run id (detailed views only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_run_id: Option<String>,
    /// The agent conversation id (detailed views only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_session_id: Option<String>,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct StepProgress {
    pub id: String,
    /// agent, approval, notify, http or wait.
    pub kind: String,
    /// pending, running, waiting, retrying, succeeded, failed, timed_out, skipped, cancelled.
    pub status: String,
    /// 0 before the first attempt.
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentProgress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The step's output (detailed views only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
}

/// An approval waiting for a decision.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ApprovalSummary {
    /// Pass to `decide_approval`.
    pub approval_id: String,
    pub run_id: String,
    /// The approval step (or the step whose budget was crossed).
    pub step: String,
    /// `step` (an approval step) or `budget` ("continue past the budget?").
    pub kind: String,
    /// pending, approved, rejected, expired, cancelled, retried, skipped.
    pub status: String,
    /// What the approvers are asked.
    pub message: String,
    /// Who may decide (empty: anyone with access).
    pub approvers: Vec<String>,
    /// Approvals needed.
    pub required: u32,
    /// Approvals given so far.
    pub approved: u32,
    /// When it was requested (ms since the Unix epoch).
    pub requested_at: Millis,
    /// When it expires (ms since the Unix epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Millis>,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct EventSummary {
    pub seq: u64,
    /// ms since the Unix epoch.
    pub at: Millis,
    pub actor: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
    pub message: String,
}

/// What a detailed status adds.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RunDetails {
    /// The run's inputs.
    pub inputs: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// The run whose completion started this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<String>,
    /// The newest audit log entries, oldest first.
    pub recent_events: Vec<EventSummary>,
}

/// A run's state: what `get_workflow_status` returns and `run_workflow` ends with.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RunState {
    pub run_id: String,
    pub workflow_id: String,
    /// pending, running, cancelling, compensating, succeeded, failed, cancelled, timed_out.
    pub status: String,
    /// Whether the run has ended (succeeded, failed, cancelled or timed_out).
    pub finished: bool,
    /// The step being worked on (the first running or waiting one), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_step: Option<String>,
    /// Steps in definition order.
    pub steps: Vec<StepProgress>,
    /// Approvals waiting for a decision.
    pub open_approvals: Vec<ApprovalSummary>,
    /// Agent spend so far, all steps, in USD.
    pub cost_usd: f64,
    /// ms since the Unix epoch.
    pub created_at: Millis,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    /// The run's outputs, once there are any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Map<String, Value>>,
    /// Inputs, step outputs, agent ids and recent events (`detailed: true` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<RunDetails>,
}

/// `run_workflow`'s result.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RunWorkflowResult {
    /// The stored workflow version the run pinned.
    pub workflow_version: u64,
    /// How long this call waited for the run, in seconds (0 without `wait_seconds`).
    pub waited_seconds: f64,
    /// The run as of the end of the call.
    #[serde(flatten)]
    pub run: RunState,
}

/// A run in a list.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RunListItem {
    pub run_id: String,
    pub workflow_id: String,
    pub status: String,
    /// ms since the Unix epoch.
    pub created_at: Millis,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    pub cost_usd: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
}

/// `list_recent_runs`' result.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RunPage {
    pub runs: Vec<RunListItem>,
    pub page: u32,
    pub page_size: u32,
    /// Whether a next page may have runs (ask for `page + 1`).
    pub has_more: bool,
}

/// A stored workflow definition.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct WorkflowItem {
    /// Pass as `workflow_name` to `run_workflow`.
    pub id: String,
    pub version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Number of steps.
    pub steps: usize,
}

/// One of the agent service's workflows (runnable directly as a one-step run).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct AgentWorkflowItem {
    /// Pass as `workflow_name` to `run_workflow`, with a `message`.
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
}

/// `list_workflows`' result.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct WorkflowCatalog {
    /// Flowgate's stored multi-step definitions.
    pub workflows: Vec<WorkflowItem>,
    /// The agent service's workflows.
    pub agent_workflows: Vec<AgentWorkflowItem>,
    /// Why the agent service's workflows are missing, when it could not be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_workflows_error: Option<String>,
}

/// What a run command (kill, feedback) did.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct CommandResult {
    pub run_id: String,
    /// The run's status right after the command.
    pub status: String,
    /// What was done.
    pub action: String,
}

/// One step that used a session.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct SessionUse {
    pub run_id: String,
    pub step_id: String,
    /// ms since the Unix epoch.
    pub at: Millis,
}

/// A named agent conversation.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct SessionItem {
    /// Pass as `continue_session` to `run_workflow` to go on with it.
    pub name: String,
    /// In use by an active run.
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_session_id: Option<String>,
    /// ms since the Unix epoch.
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Steps that used it.
    pub uses: usize,
    /// The run that used it last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run_id: Option<String>,
}

/// `list_sessions`' result.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct SessionListResult {
    pub sessions: Vec<SessionItem>,
}

/// `get_session_status`' result.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct SessionStatus {
    pub name: String,
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_session_id: Option<String>,
    /// ms since the Unix epoch.
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Steps that used the session, oldest first.
    pub runs: Vec<SessionUse>,
}

/// `list_pending_approvals`' result.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ApprovalListResult {
    pub approvals: Vec<ApprovalSummary>,
}

/// `decide_approval`'s result.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct DecisionResult {
    pub approval_id: String,
    /// The approval's status after the decision.
    pub approval_status: String,
    pub run_id: String,
    /// The run's status after the decision.
    pub run_status: String,
    /// Who the decision was recorded for (the API key's principal).
    pub by: String,
}

// ---------------------------------------------------------------------------------------------
// From the API's answers
// ---------------------------------------------------------------------------------------------

fn agent_progress(agent: &AgentView, detailed: bool) -> AgentProgress {
    AgentProgress {
        workflow: agent.workflow.clone(),
        turns: agent.turns,
        max_turns: agent.max_turns,
        status: agent.status.map(|s| s.as_str().to_string()),
        phase: agent.phase.clone(),
        cost_usd: agent.cost_usd,
        agent_run_id: agent.upstream_run_id.clone().filter(|_| detailed),
        agent_session_id: agent.session_id.clone().filter(|_| detailed),
    }
}

pub(crate) fn step_progress(step: &StepView, detailed: bool) -> StepProgress {
    StepProgress {
        id: step.id.clone(),
        kind: step.kind.clone(),
        status: step.status.as_str().to_string(),
        attempt: step.attempt,
        agent: step.agent.as_ref().map(|a| agent_progress(a, detailed)),
        duration_ms: step.duration_ms,
        error: step.error.clone(),
        output: step.output.clone().filter(|_| detailed),
    }
}

pub(crate) fn approval_summary(a: &ApprovalView) -> ApprovalSummary {
    ApprovalSummary {
        approval_id: a.id.clone(),
        run_id: a.run_id.clone(),
        step: a.step.clone(),
        kind: a.kind.as_str().to_string(),
        status: a.status.as_str().to_string(),
        message: a.message.clone(),
        approvers: a.approvers.clone(),
        required: a.required,
        approved: a
            .decisions
            .iter()
            .filter(|d| d.decision == ApprovalDecision::Approve)
            .count()
            .try_into()
            .unwrap_or(u32::MAX),
        requested_at: a.requested_at,
        expires_at: a.expires_at,
    }
}

pub(crate) fn event_summary(e: &EventView) -> EventSummary {
    EventSummary {
        seq: e.seq,
        at: e.at,
        actor: e.actor.clone(),
        kind: e.kind.clone(),
        step_id: e.step_id.clone(),
        message: e.message.clone(),
    }
}

/// The step being worked on: the first running, retrying or waiting one in definition order.
pub(crate) fn current_step(run: &RunDetail) -> Option<&StepView> {
    run.steps.iter().find(|s| s.status.is_active())
}

impl RunState {
    /// The run as the tools show it; `events` only matter with `detailed`.
    pub fn from_detail(run: &RunDetail, detailed: bool, events: &[EventView]) -> Self {
        let s = &run.summary;
        RunState {
            run_id: s.id.clone(),
            workflow_id: s.workflow_id.clone(),
            status: s.status.as_str().to_string(),
            finished: s.status.is_terminal(),
            current_step: current_step(run).map(|step| step.id.clone()),
            steps: run
                .steps
                .iter()
                .map(|step| step_progress(step, detailed))
                .collect(),
            open_approvals: run.open_approvals.iter().map(approval_summary).collect(),
            cost_usd: s.cost_usd,
            created_at: s.created_at,
            duration_ms: s.duration_ms,
            error: s.error.clone(),
            started_by: s.started_by.clone(),
            outputs: (!run.outputs.is_empty()).then(|| run.outputs.clone()),
            details: detailed.then(|| RunDetails {
                inputs: run.inputs.clone(),
                session_name: run.session_name.clone(),
                max_turns: run.max_turns,
                parent_run_id: run.parent_run_id.clone(),
                recent_events: events.iter().map(event_summary).collect(),
            }),
        }
    }
}

impl From<&RunSummary> for RunListItem {
    fn from(s: &RunSummary) -> Self {
        RunListItem {
            run_id: s.id.clone(),
            workflow_id: s.workflow_id.clone(),
            status: s.status.as_str().to_string(),
            created_at: s.created_at,
            duration_ms: s.duration_ms,
            cost_usd: s.cost_usd,
            error: s.error.clone(),
            started_by: s.started_by.clone(),
        }
    }
}

impl From<&WorkflowSummary> for WorkflowItem {
    fn from(w: &WorkflowSummary) -> Self {
        WorkflowItem {
            id: w.id.clone(),
            version: w.version,
            name: w.name.clone(),
            description: w.description.clone(),
            steps: w.steps,
        }
    }
}

impl From<&AgentWorkflowView> for AgentWorkflowItem {
    fn from(w: &AgentWorkflowView) -> Self {
        AgentWorkflowItem {
            name: w.name.clone(),
            display_name: w.display_name.clone(),
            description: w.description.clone(),
            max_turns: w.max_turns,
        }
    }
}

impl From<&SessionView> for SessionItem {
    fn from(s: &SessionView) -> Self {
        SessionItem {
            name: s.name.clone(),
            active: s.active,
            agent_session_id: s.agent_session_id.clone(),
            created_at: s.created_at,
            updated_at: s.updated_at,
            uses: s.runs.len(),
            last_run_id: s.runs.last().map(|r| r.run_id.clone()),
        }
    }
}

impl From<&SessionView> for SessionStatus {
    fn from(s: &SessionView) -> Self {
        SessionStatus {
            name: s.name.clone(),
            active: s.active,
            agent_session_id: s.agent_session_id.clone(),
            created_at: s.created_at,
            updated_at: s.updated_at,
            runs: s
                .runs
                .iter()
                .map(|r| SessionUse {
                    run_id: r.run_id.clone(),
                    step_id: r.step_id.clone(),
                    at: r.at,
                })
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Readable text
// ---------------------------------------------------------------------------------------------

/// `turn 3/10`, `turn 3`, or nothing for a step that is not an agent step.
pub(crate) fn turns_text(agent: &AgentProgress) -> String {
    match agent.max_turns {
        Some(max) => format!("turn {}/{max}", agent.turns),
        None => format!("turn {}", agent.turns),
    }
}

fn step_line(step: &StepProgress) -> String {
    let mut line = format!("- {} ({}): {}", step.id, step.kind, step.status);
    if let Some(agent) = &step.agent {
        let _ = write!(line, ", {}", turns_text(agent));
        if agent.cost_usd > 0.0 {
            let _ = write!(line, ", ${:.2}", agent.cost_usd);
        }
    }
    if step.attempt > 1 {
        let _ = write!(line, ", attempt {}", step.attempt);
    }
    if let Some(error) = &step.error {
        let _ = write!(line, ": {}", clip(error, 200));
    }
    line
}

/// `is running`, `succeeded`, `was cancelled`, ...: a run status as a verb phrase.
pub(crate) fn status_phrase(status: &str) -> String {
    match status {
        "succeeded" | "failed" => status.to_string(),
        "cancelled" => "was cancelled".to_string(),
        "timed_out" => "timed out".to_string(),
        other => format!("is {other}"),
    }
}

/// At most `max` characters, with an ellipsis when cut.
pub(crate) fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

fn approval_line(a: &ApprovalSummary) -> String {
    format!(
        "- approval {} ({} of run {}): {} ({}/{} approvals) {:?}",
        a.approval_id,
        a.step,
        a.run_id,
        a.status,
        a.approved,
        a.required,
        clip(&a.message, 160)
    )
}

impl Summary for RunState {
    fn summary(&self) -> String {
        let mut text = format!(
            "Run {} ({}) {}",
            self.run_id,
            self.workflow_id,
            status_phrase(&self.status)
        );
        match (&self.current_step, self.finished) {
            (Some(step), false) => {
                let _ = write!(text, "; current step: {step}");
            }
            (_, true) => {
                if let Some(ms) = self.duration_ms {
                    let _ = write!(text, " after {:.1} s", ms as f64 / 1000.0);
                }
            }
            _ => {}
        }
        if self.cost_usd > 0.0 {
            let _ = write!(text, "; cost ${:.2}", self.cost_usd);
        }
        text.push('.');
        if let Some(error) = &self.error {
            let _ = write!(text, "\nError: {}", clip(error, 400));
        }
        for step in &self.steps {
            let _ = write!(text, "\n{}", step_line(step));
        }
        for approval in &self.open_approvals {
            let _ = write!(text, "\nWaiting for {}", approval_line(approval));
        }
        if let Some(outputs) = &self.outputs {
            let _ = write!(
                text,
                "\nOutputs: {}",
                clip(&Value::Object(outputs.clone()).to_string(), 600)
            );
        }
        if let Some(details) = &self.details {
            for event in &details.recent_events {
                let _ = write!(
                    text,
                    "\n  #{} {} by {}: {}",
                    event.seq,
                    event.kind,
                    event.actor,
                    clip(&event.message, 160)
                );
            }
        }
        text
    }
}

impl Summary for RunWorkflowResult {
    fn summary(&self) -> String {
        let mut text = self.run.summary();
        if !self.run.finished {
            let waited = if self.waited_seconds > 0.0 {
                format!("after waiting {:.0} s ", self.waited_seconds)
            } else {
                String::new()
            };
            let _ = write!(
                text,
                "\nThe run is still going {waited}(run id {}); follow it with get_workflow_status.",
                self.run.run_id
            );
        }
        text
    }
}

impl Summary for RunPage {
    fn summary(&self) -> String {
        if self.runs.is_empty() {
            return format!(
                "No runs on page {} (page size {}).",
                self.page, self.page_size
            );
        }
        let mut text = format!(
            "{} run(s), page {} (page size {}){}:",
            self.runs.len(),
            self.page,
            self.page_size,
            if self.has_more {
                "; more on the next page"
            } else {
                ""
            }
        );
        for r in &self.runs {
            let _ = write!(
                text,
                "\n- {} {} {} created_at={}",
                r.run_id, r.workflow_id, r.status, r.created_at
            );
            if r.cost_usd > 0.0 {
                let _ = write!(text, " ${:.2}", r.cost_usd);
            }
            if let Some(e) = &r.error {
                let _ = write!(text, ": {}", clip(e, 120));
            }
        }
        text
    }
}

impl Summary for WorkflowCatalog {
    fn summary(&self) -> String {
        let mut text = format!(
            "{} stored workflow(s), {} agent service workflow(s). Start one with run_workflow.",
            self.workflows.len(),
            self.agent_workflows.len()
        );
        for w in &self.workflows {
            let _ = write!(text, "\n- {} (v{}, {} steps)", w.id, w.version, w.steps);
            if let Some(d) = w.description.as_deref().or(w.name.as_deref()) {
                let _ = write!(text, ": {}", clip(d, 160));
            }
        }
        for w in &self.agent_workflows {
            let _ = write!(text, "\n- {} (agent, one step; needs a message)", w.name);
            if let Some(d) = w.description.as_deref().or(w.display_name.as_deref()) {
                let _ = write!(text, ": {}", clip(d, 160));
            }
        }
        if let Some(e) = &self.agent_workflows_error {
            let _ = write!(text, "\nThe agent service's workflows are missing: {e}");
        }
        text
    }
}

impl Summary for CommandResult {
    fn summary(&self) -> String {
        format!(
            "{} Run {} is now {}.",
            self.action, self.run_id, self.status
        )
    }
}

impl Summary for SessionListResult {
    fn summary(&self) -> String {
        if self.sessions.is_empty() {
            return "No sessions.".to_string();
        }
        let mut text = format!("{} session(s):", self.sessions.len());
        for s in &self.sessions {
            let _ = write!(
                text,
                "\n- {} ({}, used by {} step(s){})",
                s.name,
                if s.active { "active" } else { "idle" },
                s.uses,
                s.last_run_id
                    .as_deref()
                    .map(|r| format!(", last run {r}"))
                    .unwrap_or_default()
            );
        }
        text
    }
}

impl Summary for SessionStatus {
    fn summary(&self) -> String {
        let mut text = format!(
            "Session {} is {}; used by {} step(s).",
            self.name,
            if self.active { "active" } else { "idle" },
            self.runs.len()
        );
        for r in &self.runs {
            let _ = write!(text, "\n- run {} step {} at {}", r.run_id, r.step_id, r.at);
        }
        text
    }
}

impl Summary for ApprovalListResult {
    fn summary(&self) -> String {
        if self.approvals.is_empty() {
            return "No approvals are waiting for a decision.".to_string();
        }
        let mut text = format!("{} approval(s) waiting:", self.approvals.len());
        for a in &self.approvals {
            let _ = write!(text, "\n{}", approval_line(a));
        }
        text
    }
}

impl Summary for DecisionResult {
    fn summary(&self) -> String {
        format!(
            "Recorded for {}: approval {} is {}; run {} is {}.",
            self.by, self.approval_id, self.approval_status, self.run_id, self.run_status
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_cuts_on_characters() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("ééééé", 3), "éé…");
    }
}
