//! Run state: what the store keeps and the engine transforms.
//!
//! Times are milliseconds since the Unix epoch (`Millis`); the engine never reads a clock, it is
//! handed `now`. Statuses serialize as snake_case strings and parse back with `FromStr`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        // A string schema listing the values, so the OpenAPI document names every status.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl FromStr for $name {
            type Err = UnknownStatus;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownStatus {
                        kind: stringify!($name),
                        value: other.to_string(),
                        expected: &[$($text),+],
                    }),
                }
            }
        }
    };
}

/// A status string that names no known status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}; expected one of {expected:?}")]
pub struct UnknownStatus {
    pub kind: &'static str,
    pub value: String,
    pub expected: &'static [&'static str],
}

string_enum!(
    /// Where a run is in its life.
    RunStatus {
        Pending => "pending",
        Running => "running",
        Cancelling => "cancelling",
        Compensating => "compensating",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
        TimedOut => "timed_out",
    }
);

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::TimedOut
        )
    }
}

string_enum!(
    /// Where a step is in its life.
    StepStatus {
        Pending => "pending",
        Running => "running",
        Waiting => "waiting",
        Retrying => "retrying",
        Succeeded => "succeeded",
        Failed => "failed",
        TimedOut => "timed_out",
        Skipped => "skipped",
        Cancelled => "cancelled",
    }
);

impl StepStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::TimedOut | Self::Skipped | Self::Cancelled
        )
    }

    /// Ended badly (for `when: failure` and for failing the run).
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::TimedOut)
    }

    /// Started and not finished: work may be under way somewhere.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Running | Self::Waiting)
    }
}

string_enum!(
    /// An approval gate's state.
    ApprovalStatus {
        Pending => "pending",
        Approved => "approved",
        Rejected => "rejected",
        Expired => "expired",
        Cancelled => "cancelled",
        /// Someone asked for the agent step before it to run again with their feedback.
        Retried => "retried",
        /// Someone chose to skip the gate (and the steps that need it).
        Skipped => "skipped",
    }
);

string_enum!(
    /// A decision a person can make on an approval.
    ApprovalDecision {
        Approve => "approve",
        /// Fail the step (and so the run, unless the step may fail), with a reason.
        Reject => "reject",
        /// Run the agent step before the gate again with the feedback added to its message,
        /// in the same agent conversation; the gate is asked again afterwards.
        Retry => "retry",
        /// Skip the gate and the steps that depend on it; the run carries on.
        Skip => "skip",
        /// Cancel the whole run.
        Cancel => "cancel",
    }
);

string_enum!(
    /// What an approval gate is for.
    ApprovalKind {
        /// An `approval` step of the workflow.
        Step => "step",
        /// A budget with `on_exceed: ask` was crossed: "continue past the budget?".
        Budget => "budget",
    }
);

#[allow(clippy::derivable_impls)] // the enum is declared by a macro
impl Default for ApprovalKind {
    fn default() -> Self {
        ApprovalKind::Step
    }
}

string_enum!(
    /// Progress of a step's compensation.
    CompensationStatus {
        Pending => "pending",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
    }
);

string_enum!(
    /// The agent service's stored run statuses (see the upstream agent API page).
    AgentRunStatus {
        Pending => "pending",
        Running => "running",
        Completed => "completed",
        Failed => "failed",
        Killed => "killed",
    }
);

impl AgentRunStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Killed)
    }
}

/// One workflow run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub workflow_id: String,
    /// The definition version this run is pinned to.
    pub workflow_version: u64,
    pub status: RunStatus,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub inputs: Map<String, Value>,
    /// Step id → state, one entry per step of the pinned definition.
    pub steps: BTreeMap<String, StepState>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub outputs: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Millis>,
    /// Whole-run timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Millis>,
    /// When this run next needs attention; the sweeper re-enqueues runs past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<Millis>,
    /// Principal that started the run (no self-approval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<CancelInfo>,
    /// Set when the run is compensating because of a rollback request (not a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackInfo>,
    /// The status the run ends with once compensation finishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_status: Option<RunStatus>,
    /// Store version; every write is conditional on it and increments it.
    pub version: u64,
    /// Audit entries written so far (the next entry's sequence number).
    pub audit_seq: u64,
    /// Counter giving each finished step its completion order.
    pub completion_seq: u64,
    /// Depth in a chain of runs started by other runs finishing.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chain_depth: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<String>,
    /// User-facing name of the agent conversation this run's agent steps belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    /// Agent session id to continue (resolved from an earlier run's session when the run was
    /// started with `continue_session`); the first agent step without an earlier step in its
    /// session continues it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_session_id: Option<String>,
    /// Caps every agent step of this run at this many turns (the `max_turns` of a start
    /// request); a step's own lower `max_turns` still applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// Open (or last) "continue past the budget?" question; while it is pending no step starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_gate: Option<BudgetGate>,
    /// Times someone allowed the run to continue past its budget (each grants one more
    /// budget's worth).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub budget_grants: u32,
    /// The concurrency group the run counts against (its workflow's `concurrency`, with the
    /// key's value when the limit is per key); `None` when the workflow has no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_group: Option<String>,
    /// Waiting for a slot in its concurrency group: a `Start` or `Tick` leaves it pending
    /// and only [`Event::Admit`](crate::engine::Event::Admit) starts it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub queued: bool,
    /// Agent runs Flowgate asked to stop whose stop is not confirmed yet. A kill lost to a
    /// crash or an agent-service error is issued again from here (the run stays due for the
    /// sweeper meanwhile, even after it finished), so no agent run is left working for a
    /// step that ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_kills: Vec<PendingKill>,
}

/// A kill of an agent run that is not confirmed yet (see [`Run::pending_kills`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingKill {
    pub step: String,
    pub attempt: u32,
    /// The agent run, when its id is known; else it is looked up by `session_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_run_id: Option<String>,
    pub session_name: String,
    #[serde(default)]
    pub force: bool,
    /// When to issue the kill again if it is still not confirmed.
    pub retry_at: Millis,
    /// Kills issued so far.
    pub tries: u32,
}

impl Run {
    /// A new run in `pending`, with a `pending` state for every step of the definition.
    pub fn new(
        id: impl Into<String>,
        def: &crate::definition::WorkflowDefinition,
        workflow_version: u64,
        inputs: Map<String, Value>,
        now: Millis,
    ) -> Self {
        let steps = def
            .steps
            .iter()
            .map(|s| (s.id.clone(), StepState::default()))
            .collect();
        Self {
            id: id.into(),
            workflow_id: def.id.clone(),
            workflow_version,
            status: RunStatus::Pending,
            inputs,
            steps,
            outputs: Map::new(),
            error: None,
            created_at: now,
            updated_at: now,
            started_at: None,
            completed_at: None,
            deadline: None,
            wake_at: Some(now),
            started_by: None,
            idempotency_key: None,
            cancel: None,
            rollback: None,
            final_status: None,
            version: 0,
            audit_seq: 0,
            completion_seq: 0,
            chain_depth: 0,
            parent_run_id: None,
            session_name: None,
            resume_session_id: None,
            max_turns: None,
            budget_gate: None,
            budget_grants: 0,
            concurrency_group: None,
            queued: false,
            pending_kills: Vec::new(),
        }
    }

    /// Every approval gate of the run with the step it belongs to (`None`: the run's budget
    /// gate), open or closed.
    pub fn approvals(&self) -> impl Iterator<Item = (Option<&str>, &ApprovalState)> {
        self.steps
            .iter()
            .filter_map(|(id, s)| s.approval.as_ref().map(|a| (Some(id.as_str()), a)))
            .chain(
                self.budget_gate
                    .as_ref()
                    .map(|g| (g.step.as_deref(), &g.approval)),
            )
    }

    /// The approval with this id, and the step it belongs to.
    pub fn approval(&self, approval_id: &str) -> Option<(Option<&str>, &ApprovalState)> {
        self.approvals().find(|(_, a)| a.id == approval_id)
    }

    pub fn step(&self, id: &str) -> Option<&StepState> {
        self.steps.get(id)
    }

    /// When the sweeper should wake this run: its `wake_at`, unless it is finished (a finished
    /// run is due only while a kill of one of its agent runs is unconfirmed). Stores index
    /// runs by this (only due runs are in the index).
    pub fn due_at(&self) -> Option<Millis> {
        self.wake_at
            .filter(|_| !self.status.is_terminal() || !self.pending_kills.is_empty())
    }

    /// Wall-clock duration, for sorting and display.
    pub fn duration_ms(&self) -> Option<Millis> {
        Some(self.completed_at? - self.started_at.unwrap_or(self.created_at))
    }

    /// Agent cost so far across steps.
    pub fn cost_usd(&self) -> f64 {
        self.steps
            .values()
            .filter_map(|s| s.agent.as_ref())
            .map(|a| a.cost_usd + a.previous_attempts_cost_usd)
            .sum()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelInfo {
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub force: bool,
    pub requested_at: Millis,
    /// After this, agent runs not yet confirmed dead are killed with force.
    pub force_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackInfo {
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub requested_at: Millis,
}

/// One step's state within a run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StepState {
    pub status: StepStatus,
    /// Current attempt, 1-based; 0 before the first start. Never reset, so every attempt's
    /// deterministic agent session name stays unique even across manual retries.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    /// Attempts made before the last manual retry; the retry policy counts from here.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts_before: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_started_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Millis>,
    /// Timeout of the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Millis>,
    /// When the next attempt starts (status `retrying`) or a `wait` step ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Order in which the step finished successfully (compensation runs newest first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_seq: Option<u64>,
    /// The started side effect (HTTP call, notification) has not been confirmed yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub effect_pending: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentProgress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation: Option<CompensationState>,
    /// Feedback the next attempt of this agent step carries (retry with feedback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<StepFeedback>,
    /// Times someone allowed this step to continue past its budget.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub budget_grants: u32,
}

/// Zero and empty fields are left out of the stored form (they read back as their defaults):
/// a run item is rewritten on every step, and DynamoDB bills a write per started KB.
fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_no_cost(usd: &f64) -> bool {
    *usd == 0.0
}

#[allow(clippy::derivable_impls)] // the enum is declared by a macro
impl Default for StepStatus {
    fn default() -> Self {
        StepStatus::Pending
    }
}

/// What is known of a step's agent run on the agent service.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AgentProgress {
    /// Deterministic per attempt (`flowgate-{run}-{step}-{attempt}`): the intent record that lets a
    /// restarted poller find a run it may already have started.
    pub session_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_run_id: Option<String>,
    /// The agent conversation to continue (from the step's `session`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<AgentRunStatus>,
    pub turns: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    pub tokens: u64,
    pub cost_usd: f64,
    /// Spend of earlier attempts of this step.
    #[serde(default, skip_serializing_if = "is_no_cost")]
    pub previous_attempts_cost_usd: f64,
    /// Agent turns of earlier attempts of this step.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub previous_attempts_turns: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_at: Option<Millis>,
    /// Number of polls that saw a change in this attempt. It names the live poll chain: a poll
    /// message carrying another number is stale.
    pub polls: u32,
    /// Current adaptive poll interval.
    #[serde(default)]
    pub poll_interval_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_poll_at: Option<Millis>,
    /// When a poll was last written. Polls that see no progress are not written, except for a
    /// heartbeat every few minutes so a lost poll chain is noticed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polled_at: Option<Millis>,
    /// A kill was asked for and not yet confirmed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kill_requested: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalState {
    /// Deterministic: `{run}.{step}.{attempt}`.
    pub id: String,
    pub status: ApprovalStatus,
    pub message: String,
    pub approvers: Vec<String>,
    pub required: u32,
    pub requested_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Millis>,
    #[serde(default)]
    pub decisions: Vec<DecisionRecord>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub escalated: bool,
    #[serde(default, skip_serializing_if = "is_step_kind")]
    pub kind: ApprovalKind,
    /// When the next reminder goes out (`remind_every`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remind_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reminders: u32,
    /// When the approval escalates to `escalate_to` (`escalate_after`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_at: Option<Millis>,
}

fn is_step_kind(kind: &ApprovalKind) -> bool {
    *kind == ApprovalKind::Step
}

impl ApprovalState {
    /// Whether `by` may decide: listed directly (`U123` also matches `slack:U123`), or a member
    /// of a listed group the caller resolved (`groups`), or anyone when no approvers are listed.
    pub fn allows(&self, by: &str, groups: &[String]) -> bool {
        self.approvers.is_empty()
            || self.approvers.iter().any(|a| {
                a == by
                    || by.strip_prefix("slack:") == Some(a.as_str())
                    || groups.iter().any(|g| g == a)
            })
    }
}

/// Feedback from a "retry with feedback" decision, for the agent step it re-runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepFeedback {
    pub by: String,
    pub text: String,
    /// The agent conversation of the attempt being redone (continued by the next attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// A budget with `on_exceed: ask` was crossed and the run is paused until someone decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetGate {
    pub approval: ApprovalState,
    /// The step whose budget was crossed; `None` for the run's budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Agent steps stopped when the gate opened; they continue (same conversation) if approved.
    #[serde(default)]
    pub paused: Vec<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub by: String,
    pub decision: ApprovalDecision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompensationState {
    pub status: CompensationStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One line of a run's audit log: what changed, who did it, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub run_id: String,
    /// 0-based, contiguous per run.
    pub seq: u64,
    pub at: Millis,
    /// `system`, or the principal (`api:<key name>`, `slack:U123`, ...).
    pub actor: String,
    /// Dotted event name: `run.started`, `step.succeeded`, `approval.decided`, ...
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    pub message: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_as_strings() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>().unwrap(), *s);
            assert_eq!(serde_json::to_value(s).unwrap(), Value::from(s.as_str()));
        }
        for s in StepStatus::ALL {
            assert_eq!(s.to_string().parse::<StepStatus>().unwrap(), *s);
            assert_eq!(serde_json::to_value(s).unwrap(), Value::from(s.as_str()));
        }
        for s in ApprovalStatus::ALL {
            assert_eq!(s.as_str().parse::<ApprovalStatus>().unwrap(), *s);
        }
        for s in AgentRunStatus::ALL {
            assert_eq!(s.as_str().parse::<AgentRunStatus>().unwrap(), *s);
        }
        let err = "done".parse::<RunStatus>().unwrap_err();
        assert!(err.to_string().contains("succeeded"), "{err}");
    }
}
