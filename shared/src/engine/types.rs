//! Inputs and outputs of the engine.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::definition::{HttpMethod, StepAction};
use crate::model::{AgentRunStatus, ApprovalDecision, ApprovalStatus, AuditEntry, Millis, Run};

/// Who caused an event: `system` or a principal.
pub type Actor = String;

/// One thing that happened to a run. Step-scoped events carry the attempt they belong to so a
/// late or duplicated delivery for an earlier attempt is recognised and ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Start the run (first delivery) or re-evaluate it (later deliveries are harmless).
    Start,
    /// A slot in the run's concurrency group was taken for it: start a queued run (for any
    /// other run the same as `Start`).
    Admit,
    /// Time passed: fire due timers (retries, timeouts, waits, expiries, polls) and re-issue any
    /// effect whose outcome was never recorded (e.g. after a crash).
    Tick,
    /// The agent service accepted a start request.
    AgentStarted {
        step: String,
        attempt: u32,
        upstream_run_id: String,
    },
    /// The agent service refused or failed a start request.
    AgentStartFailed {
        step: String,
        attempt: u32,
        error: String,
    },
    /// A status poll answered. `poll` is the poll number the message was sent for.
    AgentObserved {
        step: String,
        attempt: u32,
        poll: u32,
        observation: AgentObservation,
    },
    /// A kill request reached the agent service.
    AgentKilled { step: String, attempt: u32 },
    /// A non-agent step's side effect (HTTP call, notification) succeeded.
    StepSucceeded {
        step: String,
        attempt: u32,
        #[serde(default)]
        output: Value,
    },
    /// A non-agent step's side effect failed.
    StepFailed {
        step: String,
        attempt: u32,
        error: String,
    },
    /// A person decided on an approval.
    ApprovalDecided {
        approval_id: String,
        by: Actor,
        decision: ApprovalDecision,
        /// The reason (reject), the feedback (retry) or a note.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
        /// Approver groups `by` belongs to, as resolved by the adapter that took the decision
        /// (e.g. Slack user groups among the approval's approvers).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        groups: Vec<String>,
    },
    /// Stop the run: kill running agent steps, close open approvals.
    CancelRequested {
        by: Actor,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default)]
        force: bool,
    },
    /// Feedback for a running agent step (the step is found when not named).
    FeedbackSent {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        by: Actor,
        content: String,
        #[serde(default = "user")]
        message_type: String,
    },
    /// Resume a failed run from its failed steps, or from a named step, keeping finished steps.
    RetryRequested {
        by: Actor,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_step: Option<String>,
    },
    /// Run the compensations of finished steps, newest first.
    RollbackRequested {
        by: Actor,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A compensation action finished.
    CompensationFinished {
        step: String,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

fn user() -> String {
    "user".to_string()
}

impl Event {
    /// Short name for logs and audit entries.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Start => "start",
            Event::Tick => "tick",
            Event::Admit => "admit",
            Event::AgentStarted { .. } => "agent_started",
            Event::AgentStartFailed { .. } => "agent_start_failed",
            Event::AgentObserved { .. } => "agent_observed",
            Event::AgentKilled { .. } => "agent_killed",
            Event::StepSucceeded { .. } => "step_succeeded",
            Event::StepFailed { .. } => "step_failed",
            Event::ApprovalDecided { .. } => "approval_decided",
            Event::CancelRequested { .. } => "cancel_requested",
            Event::FeedbackSent { .. } => "feedback_sent",
            Event::RetryRequested { .. } => "retry_requested",
            Event::RollbackRequested { .. } => "rollback_requested",
            Event::CompensationFinished { .. } => "compensation_finished",
        }
    }
}

/// What one status poll saw, already mapped from the agent service's shape.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AgentObservation {
    pub status: Option<AgentRunStatus>,
    #[serde(default)]
    pub turns: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    #[serde(default)]
    pub tokens: u64,
    #[serde(default)]
    pub cost_usd: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The final text, when completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The failure reason (from the run list), when failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The agent conversation id, captured while the run is live (later steps continue it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

#[allow(clippy::derivable_impls)] // the enum is declared by a macro
impl Default for AgentRunStatus {
    fn default() -> Self {
        AgentRunStatus::Pending
    }
}

/// What a start request to the agent service carries (rendered, ready to send).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStartSpec {
    pub workflow: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// Deterministic per attempt; used to find an already-started run after a crash.
    pub session_name: String,
    /// Agent conversation to continue, when the step shares a session with an earlier one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_branch: Option<String>,
    /// Seconds, already clamped to what the service accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

/// Something the adapters must do. Effects are intents: the run state that asked for them is
/// written first, and each is safe to perform twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Effect {
    /// Start an agent run, unless one with `spec.session_name` already exists.
    StartAgent {
        step: String,
        attempt: u32,
        spec: AgentStartSpec,
        /// A re-issue of a start whose outcome was never recorded (a crash, a lost answer): the
        /// adapter must look the attempt's run up by session name before starting one. A first
        /// issue needs no look-up when performed by the handler that just wrote it, because no
        /// one else can have performed it yet.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        reissue: bool,
    },
    /// Poll the agent run's status after `delay_ms`; feed back `AgentObserved` with `poll`.
    PollAgent {
        step: String,
        attempt: u32,
        upstream_run_id: String,
        poll: u32,
        delay_ms: u64,
    },
    /// Kill an agent run (by id, or found by session name when the id is not known yet).
    KillAgent {
        step: String,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upstream_run_id: Option<String>,
        session_name: String,
        force: bool,
    },
    /// Queue a message into a running agent run.
    SendAgentMessage {
        step: String,
        upstream_run_id: String,
        content: String,
        message_type: String,
    },
    /// Ask the approvers (Slack message, notification links).
    RequestApproval {
        step: String,
        approval_id: String,
        message: String,
        approvers: Vec<String>,
        required: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<Millis>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slack_channel: Option<String>,
        /// An escalation: `approvers` are the people newly asked.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        escalation: bool,
    },
    /// Remind the approvers of a pending approval (in the run's thread).
    RemindApproval {
        step: String,
        approval_id: String,
        /// 1 for the first reminder.
        reminder: u32,
    },
    /// The approval is decided or closed: update the request message.
    CloseApproval {
        step: String,
        approval_id: String,
        status: ApprovalStatus,
    },
    /// Make an HTTP call for an `http` step; feed back `StepSucceeded`/`StepFailed`.
    CallHttp {
        step: String,
        attempt: u32,
        method: HttpMethod,
        url: String,
        headers: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<Value>,
        expect_status: Vec<u16>,
    },
    /// Post a message for a `notify` step; feed back `StepSucceeded`/`StepFailed`.
    Notify {
        step: String,
        attempt: u32,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slack_channel: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        webhook_url: Option<String>,
    },
    /// Run a step's compensation action; feed back `CompensationFinished`.
    Compensate { step: String, action: StepAction },
    /// Enqueue a `Tick` for the run at `at` (the run's `wake_at` changed).
    ScheduleWake { at: Millis },
    /// A lifecycle event for subscribers (outbound webhooks, Slack thread, chaining).
    Emit {
        event: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        #[serde(default)]
        data: Value,
    },
}

impl Effect {
    /// Short name for logs and spans.
    pub fn name(&self) -> &'static str {
        match self {
            Effect::StartAgent { .. } => "start_agent",
            Effect::PollAgent { .. } => "poll_agent",
            Effect::KillAgent { .. } => "kill_agent",
            Effect::SendAgentMessage { .. } => "send_agent_message",
            Effect::RequestApproval { .. } => "request_approval",
            Effect::RemindApproval { .. } => "remind_approval",
            Effect::CloseApproval { .. } => "close_approval",
            Effect::CallHttp { .. } => "call_http",
            Effect::Notify { .. } => "notify",
            Effect::Compensate { .. } => "compensate",
            Effect::ScheduleWake { .. } => "schedule_wake",
            Effect::Emit { .. } => "emit",
        }
    }
}

/// The engine's answer: the next state, what to do, and what to write to the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub run: Run,
    pub effects: Vec<Effect>,
    pub audit: Vec<AuditEntry>,
}

impl Decision {
    /// Whether the event changed nothing (stale, duplicate, or nothing due).
    pub fn is_noop(&self, before: &Run) -> bool {
        self.effects.is_empty() && self.audit.is_empty() && self.run == *before
    }
}

/// A command the engine refuses, with a reason a caller can show (maps to HTTP 409/403/404).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("run {run_id} is {status}; {what} is not possible now")]
    RunNotActive {
        run_id: String,
        status: String,
        what: &'static str,
    },
    #[error("step {step:?} is {status}, not running; feedback reaches only a running agent step")]
    StepNotRunning { step: String, status: String },
    #[error("no running agent step to send feedback to")]
    NoRunningAgentStep,
    #[error("unknown step {0:?}")]
    UnknownStep(String),
    #[error("unknown approval {0:?}")]
    UnknownApproval(String),
    #[error("approval {approval_id} is {status}; it can no longer be decided")]
    ApprovalClosed { approval_id: String, status: String },
    #[error("{by} is not an approver of {approval_id}")]
    NotAnApprover { approval_id: String, by: String },
    #[error("{by} started this run and cannot approve it")]
    SelfApproval { by: String },
    #[error("a {decision} decision on {approval_id} needs a comment: {what}")]
    CommentRequired {
        approval_id: String,
        decision: ApprovalDecision,
        what: &'static str,
    },
    #[error("{decision} is not possible on {approval_id}: {why}")]
    DecisionNotOffered {
        approval_id: String,
        decision: ApprovalDecision,
        why: String,
    },
    #[error("run {run_id} is {status}; only a failed, cancelled or timed-out run can be retried")]
    NotRetryable { run_id: String, status: String },
    #[error("nothing to roll back: no finished step of run {0} has a compensation")]
    NothingToCompensate(String),
}
