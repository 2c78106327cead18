//! Request and response shapes of the agent service (automagik Claude Code workflow API), as
//! its route code builds them (see `docs/upstream-agent-api.md`).
//!
//! Responses tolerate unknown fields and fill absent or `null` fields with defaults: the service
//! has changed shapes before, and a poller that fails to parse a status it does not need all of
//! is worse than one that reads what is there.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::engine::AgentObservation;
use crate::model::AgentRunStatus;

/// The input format Flowgate always asks for. Without it the run fails after an accepted start
/// (quirk 1), and it is the only format in which `add-message` is delivered.
pub const INPUT_FORMAT_STREAM_JSON: &str = "stream-json";
/// The lowest `timeout` (seconds) the service accepts.
pub const MIN_TIMEOUT_SECS: u64 = 60;
/// The highest `timeout` (seconds) a run survives: the route accepts up to 14400, but the run
/// then fails in validation (quirk 2).
pub const MAX_TIMEOUT_SECS: u64 = 7200;
/// The service's default `timeout` (seconds).
pub const DEFAULT_TIMEOUT_SECS: u64 = 7200;
/// The `max_turns` range the service accepts (null means unlimited).
pub const MAX_TURNS_RANGE: std::ops::RangeInclusive<u32> = 1..=200;

/// Deserializes `null` as the type's default, so `"cost_usd": null` reads as `0.0`.
fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + DeserializeOwned,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Body of `POST /run/{workflow_name}` (`ClaudeWorkflowRequest`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartRunRequest {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// Sent only when it is a UUID: the service silently drops anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_url: Option<String>,
    pub timeout: u64,
    pub input_format: String,
}

/// Answer of `POST /run/{workflow_name}` (`ClaudeWorkflowResponse`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StartRunResponse {
    pub run_id: String,
    /// `"pending"`, or `"failed"` when setup threw inside the route (quirk 9).
    pub status: String,
    pub message: String,
    /// The request's `session_id`, else a fresh uuid that is never stored: not the run's Claude
    /// session (quirk 3).
    pub session_id: Option<String>,
    pub workflow_name: String,
    pub started_at: Option<String>,
    pub auto_commit_sha: Option<String>,
}

/// Answer of `GET /run/{run_id}/status` (`EnhancedStatusResponse`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusResponse {
    pub run_id: String,
    pub workflow_name: String,
    pub status: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub execution_time_seconds: Option<f64>,
    #[serde(deserialize_with = "null_default")]
    pub progress: Progress,
    #[serde(deserialize_with = "null_default")]
    pub metrics: Metrics,
    #[serde(deserialize_with = "null_default")]
    pub result: RunResult,
    /// Present with `?debug=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<DebugInfo>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    /// `metadata.total_turns`: 0 while running (quirk 4), the real count at completion.
    #[serde(deserialize_with = "null_default")]
    pub turns: u32,
    /// `null` after completion (the metadata is overwritten without it).
    pub max_turns: Option<u32>,
    /// `"completed"` or `"running"` (also for pending, failed and killed: quirk 11).
    pub current_phase: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub phases_completed: Vec<Value>,
    #[serde(deserialize_with = "null_default")]
    pub is_running: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Metrics {
    /// Only set at completion.
    #[serde(deserialize_with = "null_default")]
    pub cost_usd: f64,
    #[serde(deserialize_with = "null_default")]
    pub tokens: Tokens,
    #[serde(deserialize_with = "null_default")]
    pub tools_used: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub api_duration_ms: f64,
    #[serde(deserialize_with = "null_default")]
    pub performance_score: f64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Tokens {
    /// Grows while running: the live progress signal.
    #[serde(deserialize_with = "null_default")]
    pub total: u64,
    /// Only set at completion.
    #[serde(deserialize_with = "null_default")]
    pub input: u64,
    /// Only set at completion.
    #[serde(deserialize_with = "null_default")]
    pub output: u64,
    #[serde(deserialize_with = "null_default")]
    pub cache_created: u64,
    #[serde(deserialize_with = "null_default")]
    pub cache_read: u64,
    #[serde(deserialize_with = "null_default")]
    pub cache_efficiency: f64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunResult {
    #[serde(deserialize_with = "null_default")]
    pub success: bool,
    /// The status string again.
    pub completion_type: Option<String>,
    pub message: Option<String>,
    /// The final Claude text, when the run wrote one.
    pub final_output: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub files_created: Vec<Value>,
    #[serde(deserialize_with = "null_default")]
    pub git_commits: Vec<Value>,
    #[serde(deserialize_with = "null_default")]
    pub files_changed: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DebugInfo {
    pub workflow_run_id: Option<String>,
    /// The raw DB metadata: `current_turns` and `claude_session_id` while running.
    #[serde(deserialize_with = "null_default")]
    pub metadata: Map<String, Value>,
}

impl StatusResponse {
    /// The run's status, or `None` for a value the service is not known to send.
    pub fn run_status(&self) -> Option<AgentRunStatus> {
        self.status.parse().ok()
    }

    /// `debug.metadata.current_turns`, present while running with `?debug=true`.
    pub fn current_turns(&self) -> Option<u32> {
        let value = self.debug.as_ref()?.metadata.get("current_turns")?;
        value
            .as_u64()
            .or_else(|| value.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// The run's real Claude session (`debug.metadata.claude_session_id`), shown only while
    /// running with `?debug=true` (quirk 3): capture it while polling.
    pub fn claude_session_id(&self) -> Option<String> {
        self.debug
            .as_ref()?
            .metadata
            .get("claude_session_id")?
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    /// Maps the status to what the engine consumes.
    ///
    /// The status comes from `status` only (`current_phase` says "running" for pending, failed
    /// and killed runs: quirk 11). Turns come from `progress.turns`, except while running when
    /// `debug.metadata.current_turns` is the only live count (quirk 4). `error` stays `None`:
    /// the failure reason is only in the run list (quirk 5, see
    /// [`super::AgentClient::failure_reason`]).
    pub fn observation(&self) -> AgentObservation {
        let status = self.run_status();
        let turns = match (status, self.current_turns()) {
            (Some(AgentRunStatus::Running), Some(current)) => current.max(self.progress.turns),
            _ => self.progress.turns,
        };
        AgentObservation {
            status,
            turns,
            max_turns: self.progress.max_turns,
            tokens: self.metrics.tokens.total,
            cost_usd: self.metrics.cost_usd,
            phase: self.progress.current_phase.clone(),
            output: self.result.final_output.clone(),
            error: None,
            session_id: self.claude_session_id(),
        }
    }
}

/// Sort field of `GET /runs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunSortBy {
    #[default]
    StartedAt,
    CompletedAt,
    ExecutionTime,
    TotalCost,
}

impl RunSortBy {
    pub fn as_str(self) -> &'static str {
        match self {
            RunSortBy::StartedAt => "started_at",
            RunSortBy::CompletedAt => "completed_at",
            RunSortBy::ExecutionTime => "execution_time",
            RunSortBy::TotalCost => "total_cost",
        }
    }
}

/// Sort order of `GET /runs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    Asc,
    #[default]
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

/// Query of `GET /runs`. `status: Killed` is refused client-side: the service answers 400.
#[derive(Debug, Clone, PartialEq)]
pub struct RunListQuery {
    /// 1-based.
    pub page: u32,
    /// 1..=100.
    pub page_size: u32,
    pub status: Option<AgentRunStatus>,
    pub workflow_name: Option<String>,
    pub user_id: Option<String>,
    pub sort_by: RunSortBy,
    pub sort_order: SortOrder,
}

impl Default for RunListQuery {
    fn default() -> Self {
        RunListQuery {
            page: 1,
            page_size: 20,
            status: None,
            workflow_name: None,
            user_id: None,
            sort_by: RunSortBy::StartedAt,
            sort_order: SortOrder::Desc,
        }
    }
}

/// Answer of `GET /runs`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunList {
    #[serde(deserialize_with = "null_default")]
    pub runs: Vec<RunSummary>,
    #[serde(deserialize_with = "null_default")]
    pub total_count: u64,
    #[serde(deserialize_with = "null_default")]
    pub page: u32,
    #[serde(deserialize_with = "null_default")]
    pub page_size: u32,
    #[serde(deserialize_with = "null_default")]
    pub has_next: bool,
}

/// One `/runs` item (`ClaudeCodeRunSummary`): the only place with `error_message` and
/// `session_name`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunSummary {
    pub run_id: String,
    pub status: String,
    pub workflow_name: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub execution_time: Option<f64>,
    pub total_tokens: Option<u64>,
    pub total_cost: Option<f64>,
    pub turns: Option<u32>,
    pub tool_calls: Option<u32>,
    pub result: Option<String>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub ai_model: Option<String>,
    pub session_name: Option<String>,
    pub git_repo: Option<String>,
    pub git_branch: Option<String>,
    pub git_diff_summary: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub tools_used: Vec<String>,
    pub workspace_path: Option<String>,
    pub workspace_persistent: Option<bool>,
    pub workspace_cleaned_up: Option<bool>,
    pub error_message: Option<String>,
    pub final_commit_hash: Option<String>,
    pub execution_time_seconds: Option<f64>,
}

impl RunSummary {
    pub fn run_status(&self) -> Option<AgentRunStatus> {
        self.status.parse().ok()
    }
}

/// Answer of `POST /run/{run_id}/kill`. It has no `status`: the run is `killed` afterwards
/// whatever `success` says.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct KillResponse {
    /// Whether a live process was cancelled.
    #[serde(deserialize_with = "null_default")]
    pub success: bool,
    pub run_id: String,
    pub workflow_name: Option<String>,
    pub killed_at: Option<String>,
    pub kill_method: Option<String>,
    pub kill_duration_ms: Option<u64>,
    #[serde(deserialize_with = "null_default")]
    pub cleanup_status: Map<String, Value>,
    pub message: Option<String>,
}

/// What [`super::AgentClient::kill_if_active`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct KillOutcome {
    /// The status read before deciding: record it, because killing rewrites it (quirk 6).
    pub last_status: Option<AgentRunStatus>,
    /// The kill answer, when the run was pending or running and a kill was sent.
    pub kill: Option<KillResponse>,
}

/// Answer of `POST /run/{run_id}/cleanup`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CleanupResponse {
    #[serde(deserialize_with = "null_default")]
    pub success: bool,
    pub run_id: String,
    pub workflow_name: Option<String>,
    pub cleanup_time: Option<String>,
    pub cleanup_duration_ms: Option<u64>,
    #[serde(deserialize_with = "null_default")]
    pub cleanup_details: CleanupDetails,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CleanupDetails {
    #[serde(deserialize_with = "null_default")]
    pub workspace_removed: bool,
    #[serde(deserialize_with = "null_default")]
    pub temp_files_removed: bool,
    #[serde(deserialize_with = "null_default")]
    pub git_worktree_removed: bool,
    #[serde(deserialize_with = "null_default")]
    pub process_cleaned: bool,
    pub workspace_path: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub errors: Vec<String>,
}

/// Who a queued message speaks as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageType {
    #[default]
    User,
    System,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::User => "user",
            MessageType::System => "system",
        }
    }
}

impl std::str::FromStr for MessageType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(MessageType::User),
            "system" => Ok(MessageType::System),
            other => Err(format!(
                "message_type must be 'user' or 'system', not {other:?}"
            )),
        }
    }
}

/// Body of `POST /run/{run_id}/add-message`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddMessageRequest {
    pub message_type: MessageType,
    pub content: String,
}

/// Message queue statistics (`queue_stats`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueStats {
    pub run_id: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub current_size: u64,
    #[serde(deserialize_with = "null_default")]
    pub total_added: u64,
    #[serde(deserialize_with = "null_default")]
    pub total_consumed: u64,
    /// Seconds; `null` when the queue is empty.
    pub oldest_message_age: Option<f64>,
}

/// Answer of `POST /run/{run_id}/add-message`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AddMessageResponse {
    #[serde(deserialize_with = "null_default")]
    pub success: bool,
    pub message: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub queue_size: u64,
    pub run_id: String,
    #[serde(deserialize_with = "null_default")]
    pub queue_stats: QueueStats,
}

/// Answer of `GET /run/{run_id}/message-queue`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MessageQueueResponse {
    #[serde(deserialize_with = "null_default")]
    pub success: bool,
    pub run_id: String,
    #[serde(deserialize_with = "null_default")]
    pub queue_stats: QueueStats,
}

/// Answer of `GET /health`: always HTTP 200, so judge by `status`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthResponse {
    /// `healthy`, `warning`, `disabled` or `error`.
    pub status: String,
    pub timestamp: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub agent_available: bool,
    #[serde(deserialize_with = "null_default")]
    pub workflows: Map<String, Value>,
    pub container_manager: Option<Value>,
    #[serde(deserialize_with = "null_default")]
    pub feature_enabled: bool,
    pub claude_cli_path: Option<String>,
    pub message: Option<String>,
    pub error: Option<String>,
}

impl HealthResponse {
    /// Whether runs can be started: `status == "healthy"`.
    pub fn is_healthy(&self) -> bool {
        self.status == "healthy"
    }
}

/// One `GET /manage` item.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkflowInfo {
    pub name: String,
    pub description: Option<String>,
    pub path: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub valid: bool,
    pub icon: Option<String>,
    #[serde(rename = "mainColour")]
    pub main_colour: Option<String>,
    #[serde(rename = "displayName")]
    pub display_name: Option<String>,
    pub category: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub capabilities: Vec<String>,
    pub emoji: Option<String>,
    #[serde(rename = "maxTurns")]
    pub max_turns: Option<u32>,
    #[serde(rename = "suggestedTurns")]
    pub suggested_turns: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_tolerates_nulls_and_unknown_fields() {
        let status: StatusResponse = serde_json::from_value(serde_json::json!({
            "run_id": "r", "status": "running", "workflow_name": "builder",
            "progress": {"turns": null, "max_turns": 50, "new_field": 1},
            "metrics": {"cost_usd": null, "tokens": {"total": 10}},
            "result": null,
            "debug": {"metadata": {"current_turns": 3, "claude_session_id": "abc"}},
            "brand_new": {"x": 1}
        }))
        .expect("parses");
        let obs = status.observation();
        assert_eq!(obs.status, Some(AgentRunStatus::Running));
        assert_eq!(obs.turns, 3);
        assert_eq!(obs.max_turns, Some(50));
        assert_eq!(obs.tokens, 10);
        assert_eq!(obs.session_id.as_deref(), Some("abc"));
    }

    #[test]
    fn completed_runs_use_progress_turns() {
        let status: StatusResponse = serde_json::from_value(serde_json::json!({
            "status": "completed",
            "progress": {"turns": 12, "max_turns": null, "current_phase": "completed"},
            "metrics": {"cost_usd": 0.7159, "tokens": {"total": 1099100}},
            "result": {"final_output": "done"},
            "debug": {"metadata": {"current_turns": 2}}
        }))
        .expect("parses");
        let obs = status.observation();
        assert_eq!(obs.turns, 12);
        assert_eq!(obs.max_turns, None);
        assert_eq!(obs.output.as_deref(), Some("done"));
        assert!((obs.cost_usd - 0.7159).abs() < 1e-9);
    }
}
