//! Workflow definitions: one schema, written in YAML or JSON.
//!
//! The typed structs here are what the engine runs. Text from users goes through
//! [`parse_definition`](crate::definition::parse_definition), which validates the raw document first
//! so that every problem is reported at once with a path, and only then builds these types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::duration::DurationSpec;

mod validate;
pub use validate::*;

/// Most steps a definition may hold.
pub const MAX_STEPS: usize = 100;
/// The agent service accepts 1..=200 turns.
pub const MAX_AGENT_TURNS: u32 = 200;

/// A workflow definition as written by a user (without the version the store assigns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowDefinition {
    /// Stable identifier: lowercase letters, digits, `-` and `_`.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Typed inputs a run is started with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, InputSpec>,
    pub steps: Vec<StepDef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<TriggerDef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<NotificationDef>,
    /// Whole-run timeout: when it passes, running steps are stopped and the run fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationSpec>,
    /// Run outputs: name → template over inputs and step outputs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
    /// How agent runs are polled (adaptive by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polling: Option<PollingPolicy>,
    /// Caps on the whole run's agent spend, turns and wall-clock time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// At most this many runs active at once (per key value, when a key is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyLimit>,
}

/// How many runs of a workflow may be active at once. Agent runs are expensive and often
/// touch one repository, so two runs fighting over the same branch is worse than one waiting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyLimit {
    /// Active runs allowed at once (1..=[`ConcurrencyLimit::MAX`]).
    pub limit: u32,
    /// Template over the run's inputs (`${{ inputs.repository }}`): runs whose key renders
    /// differently count separately, so the limit holds per repository, per customer, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// What a start does when the limit is reached.
    #[serde(default)]
    pub when_full: WhenFull,
}

impl ConcurrencyLimit {
    /// Largest limit: slots are records listed in one page.
    pub const MAX: u32 = 100;
}

/// What a start does when its concurrency group is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Create the run as `pending` (queued); it starts when a slot frees, oldest first.
    #[default]
    Queue,
    /// Refuse the start (HTTP 429); nothing is created.
    Reject,
}

/// Adaptive polling of agent runs: the first poll comes after `initial`, each poll that sees no
/// progress multiplies the interval by `factor` up to `max`, and any progress drops it back to
/// `initial`. `factor: 1` with `initial == max` is fixed-interval polling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollingPolicy {
    #[serde(default = "default_poll_initial")]
    pub initial: DurationSpec,
    #[serde(default = "default_poll_factor")]
    pub factor: f64,
    #[serde(default = "default_poll_max")]
    pub max: DurationSpec,
    /// Record an agent's progress (turns, tokens, cost) seen by a poll at most this often; a
    /// change of status, and progress that crosses a budget, are always recorded at once.
    /// Unset: every 5 minutes (the poll heartbeat). Reading one run (`GET /v1/runs/{id}`)
    /// shows progress live from the agent service whatever this says; what waits for the
    /// record is the run lists' cost and the audit of progress. Shorter (down to `initial`):
    /// more writes (on AWS a write per minute is a sixth of a 10-minute run's cost), records
    /// closer to live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_every: Option<DurationSpec>,
}

impl Default for PollingPolicy {
    fn default() -> Self {
        Self {
            initial: default_poll_initial(),
            factor: default_poll_factor(),
            max: default_poll_max(),
            progress_every: None,
        }
    }
}

fn default_poll_initial() -> DurationSpec {
    DurationSpec::from_secs(2)
}
fn default_poll_factor() -> f64 {
    1.5
}
fn default_poll_max() -> DurationSpec {
    DurationSpec::from_secs(60)
}

impl PollingPolicy {
    /// SQS delays a message at most 15 minutes; a longer poll interval is refused.
    pub const MAX_INTERVAL_MS: u64 = 900_000;

    /// The interval after one more poll without progress.
    pub fn next_interval(&self, current_ms: u64) -> u64 {
        let (base, initial, max) = self.bounds(current_ms);
        ((base as f64 * self.factor.max(1.0)) as u64).clamp(initial, max)
    }

    /// `current_ms` (the first interval when 0), the first interval and the longest.
    fn bounds(&self, current_ms: u64) -> (u64, u64, u64) {
        let initial = self.initial.as_millis().max(1);
        let max = self.max.as_millis().max(initial);
        let base = if current_ms == 0 { initial } else { current_ms };
        (base, initial, max)
    }

    /// The interval after a poll `elapsed_ms` after the chain's last recorded poll, which chose
    /// `recorded_ms`: the backoff continued from the record, as if every poll in between had
    /// multiplied the interval by `factor`. A geometric chain's interval grows by `factor - 1`
    /// times the time it has run, so polls that were not written need not carry their interval
    /// (a poll chain's message is handed back to the queue unchanged).
    pub fn interval_since(&self, recorded_ms: u64, elapsed_ms: i64) -> u64 {
        let (base, initial, max) = self.bounds(recorded_ms);
        let grown = base as f64 + elapsed_ms.max(0) as f64 * (self.factor.max(1.0) - 1.0);
        (grown as u64).clamp(initial, max)
    }
}

/// Caps on agent spend. Crossing one stops the agent run (killed on the agent service) and
/// fails the step (or, for a run budget, the run) with a reason naming the cap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// Wall-clock time from the first start (all attempts together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<DurationSpec>,
    #[serde(default)]
    pub on_exceed: OnExceed,
    /// Who may answer the "continue past the budget?" question (`on_exceed: ask`); anyone
    /// with access when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
}

/// What happens when a budget is crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExceed {
    /// Stop the agent run and fail the step (or the run).
    #[default]
    Fail,
    /// Stop the agent run and pause the run with an approval "continue past the budget?"
    /// carrying the spend so far. Approving allows one more budget's worth and continues the
    /// agent conversation; rejecting fails as `fail` would.
    Ask,
}

impl WorkflowDefinition {
    pub fn step(&self, id: &str) -> Option<&StepDef> {
        self.steps.iter().find(|s| s.id == id)
    }

    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

/// A definition as stored: the text's meaning plus the version the store gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredWorkflow {
    pub version: u64,
    pub created_at: i64,
    pub definition: WorkflowDefinition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputType {
    String,
    Number,
    Integer,
    Boolean,
    Object,
    Array,
}

impl InputType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Integer => "integer",
            Self::Boolean => "boolean",
            Self::Object => "object",
            Self::Array => "array",
        }
    }

    /// Whether a JSON value has this type.
    pub fn accepts(self, v: &Value) -> bool {
        match self {
            Self::String => v.is_string(),
            Self::Number => v.is_number(),
            Self::Integer => v.is_i64() || v.is_u64(),
            Self::Boolean => v.is_boolean(),
            Self::Object => v.is_object(),
            Self::Array => v.is_array(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    #[serde(rename = "type")]
    pub kind: InputType,
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDef {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the step does, tagged by `kind`.
    #[serde(flatten)]
    pub action: StepAction,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// When the step runs, given how its dependencies ended.
    #[serde(default, skip_serializing_if = "When::is_default")]
    pub when: When,
    /// Per-attempt timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// A failure of this step does not fail the run; dependents see it as failed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continue_on_failure: bool,
    /// Undo action, run in reverse completion order when the run fails or is rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensate: Option<StepAction>,
}

impl StepDef {
    pub fn kind(&self) -> StepKind {
        self.action.kind()
    }
}

/// Condition on the dependencies' outcome (as in CI systems).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Every dependency succeeded (a skipped or failed dependency skips this step).
    #[default]
    Success,
    /// At least one dependency failed (possible when it has `continue_on_failure`).
    Failure,
    /// Once every dependency is finished, however it ended.
    Always,
}

impl When {
    pub fn is_default(&self) -> bool {
        *self == When::Success
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Agent,
    Approval,
    Notify,
    Http,
    Wait,
}

impl StepKind {
    pub const ALL: [StepKind; 5] = [
        StepKind::Agent,
        StepKind::Approval,
        StepKind::Notify,
        StepKind::Http,
        StepKind::Wait,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Approval => "approval",
            Self::Notify => "notify",
            Self::Http => "http",
            Self::Wait => "wait",
        }
    }
}

/// What a step does. Serialized with a `kind` tag next to the step's common fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepAction {
    Agent(AgentAction),
    Approval(ApprovalAction),
    Notify(NotifyAction),
    Http(HttpAction),
    Wait(WaitAction),
}

impl StepAction {
    pub fn kind(&self) -> StepKind {
        match self {
            Self::Agent(_) => StepKind::Agent,
            Self::Approval(_) => StepKind::Approval,
            Self::Notify(_) => StepKind::Notify,
            Self::Http(_) => StepKind::Http,
            Self::Wait(_) => StepKind::Wait,
        }
    }
}

/// Start a Claude Code agent run on the agent service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentAction {
    /// The agent service's workflow name (`architect`, `builder`, ...).
    pub workflow: String,
    /// The task prompt; a template.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// Steps naming the same session continue one agent conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_branch: Option<String>,
    /// Caps on this step's agent spend (all attempts together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExpiry {
    #[default]
    Reject,
    Approve,
    Escalate,
}

/// Wait for a human decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalAction {
    /// What the approver reads; a template.
    pub message: String,
    /// Slack user or group ids, or API principals, allowed to decide.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// Approvals needed (N of M).
    #[serde(default = "one")]
    pub required: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<DurationSpec>,
    #[serde(default)]
    pub on_expiry: OnExpiry,
    /// Who is asked when the approval escalates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalate_to: Vec<String>,
    /// Escalate to `escalate_to` when no decision came this long after the request (the
    /// original approvers can still decide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_after: Option<DurationSpec>,
    /// Remind the approvers in the run's thread this often while the approval is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remind_every: Option<DurationSpec>,
    /// The agent step that "retry with feedback" runs again; by default the nearest agent step
    /// this approval depends on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_channel: Option<String>,
}

fn one() -> u32 {
    1
}

/// Post a message to Slack and/or an outbound webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyAction {
    /// A template.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

/// Call an HTTP endpoint; a 2xx (or one of `expect_status`) succeeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpAction {
    #[serde(default)]
    pub method: HttpMethod,
    /// A template.
    pub url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// JSON body; string leaves are templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect_status: Vec<u16>,
}

/// Do nothing for a while.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitAction {
    pub duration: DurationSpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    Fixed,
    #[default]
    Exponential,
}

/// How a failed attempt is retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Total attempts including the first (1..=20).
    pub max_attempts: u32,
    #[serde(default)]
    pub backoff: Backoff,
    #[serde(default = "default_initial_delay")]
    pub initial_delay: DurationSpec,
    #[serde(default = "default_max_delay")]
    pub max_delay: DurationSpec,
}

fn default_initial_delay() -> DurationSpec {
    DurationSpec::from_secs(5)
}
fn default_max_delay() -> DurationSpec {
    DurationSpec::from_secs(300)
}

impl RetryPolicy {
    pub const MAX_ATTEMPTS: u32 = 20;

    /// Delay before attempt `next_attempt` (2 = the first retry), in ms.
    pub fn delay_before(&self, next_attempt: u32) -> i64 {
        let initial = self.initial_delay.millis_i64();
        let max = self.max_delay.millis_i64().max(initial);
        match self.backoff {
            Backoff::Fixed => initial,
            Backoff::Exponential => {
                let exp = next_attempt.saturating_sub(2).min(40);
                initial.saturating_mul(1i64 << exp.min(62)).min(max)
            }
        }
    }
}

/// What starts a workflow besides the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TriggerDef {
    /// EventBridge syntax: `cron(...)` or `rate(...)`.
    Schedule {
        expression: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timezone: Option<String>,
        #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
        inputs: serde_json::Map<String, Value>,
        #[serde(default)]
        overlap: OverlapPolicy,
    },
    /// `POST /hooks/{id}`.
    Webhook {
        id: String,
        #[serde(default)]
        verify: WebhookVerify,
        /// JSON pointer (or `header:<name>`, e.g. `header:x-github-event`) → expected value;
        /// all must match.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        filter: BTreeMap<String, Value>,
        /// Input name → JSON pointer into the payload (or `header:<name>`).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        inputs: BTreeMap<String, String>,
    },
    /// Start when another workflow finishes.
    WorkflowCompleted {
        workflow: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        statuses: Vec<String>,
        /// Input name → template over the finished run (`run.outputs.x`).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        inputs: BTreeMap<String, String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    #[default]
    Skip,
    Allow,
    CancelPrevious,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookVerify {
    #[default]
    Github,
    StandardWebhooks,
    SharedSecret,
}

/// Where run lifecycle events are announced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationDef {
    /// `run.started`, `step.completed`, `step.failed`, `approval.requested`, `approval.decided`,
    /// `run.completed`, `run.failed`, `run.cancelled`.
    pub events: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
}

/// Lifecycle event names a notification may subscribe to.
pub const LIFECYCLE_EVENTS: [&str; 8] = [
    "run.started",
    "step.completed",
    "step.failed",
    "approval.requested",
    "approval.decided",
    "run.completed",
    "run.failed",
    "run.cancelled",
];
