//! The simulator's runs: a lazily evaluated lifecycle on tokio's clock.
//!
//! A run's future is planned when it is created (when it starts running, when it ends, how);
//! every request first brings the runs up to "now" and then renders them. Nothing runs in the
//! background, so a test with a paused tokio clock sees exactly the state its clock implies.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::SimulatorConfig;
use crate::agent::timestamp::format_naive_utc;
use crate::model::AgentRunStatus;

/// Tokens a run has used the moment it starts running.
const BASE_TOKENS: u64 = 500;
/// Tokens per turn of a finished run.
const TOKENS_PER_TURN: u64 = 9_000;
/// Share of input tokens in a finished run's total, in percent.
const INPUT_SHARE_PERCENT: u64 = 77;
/// Tools a finished run reports, in order (as many as it had turns, at most all).
const TOOLS: [&str; 4] = ["TodoWrite", "LS", "Read", "Bash"];

/// What the task message asks of the simulated run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    /// `[fail]`: fail at the end with an error message.
    pub fail: bool,
    /// `[slow]`: run `slow_factor` times longer.
    pub slow: bool,
    /// `[timeout]`: never finish on its own.
    pub never: bool,
    /// `[turns=N]`: N turns at the end.
    pub turns: Option<u32>,
}

impl Script {
    pub fn parse(message: &str) -> Script {
        let lower = message.to_ascii_lowercase();
        let turns = lower.find("[turns=").and_then(|at| {
            let rest = &lower[at + "[turns=".len()..];
            let end = rest.find(']')?;
            rest[..end].trim().parse().ok()
        });
        Script {
            fail: lower.contains("[fail]"),
            slow: lower.contains("[slow]"),
            never: lower.contains("[timeout]"),
            turns,
        }
    }
}

/// How a run will end, decided at creation.
#[derive(Debug, Clone, PartialEq)]
enum Plan {
    /// The executor rejects the request when the run starts (quirks 1 and 2).
    RejectedAtStart(String),
    /// Runs until `end` (never, when `None`), then completes or fails.
    Run {
        end: Option<Instant>,
        fail: Option<String>,
    },
}

/// One message received through add-message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_type: String,
    pub content: String,
}

/// A message in the run's queue (the content is kept in `SimRun::messages`).
#[derive(Debug, Clone)]
struct Queued {
    added_at: Instant,
}

/// A kill request the simulator received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillCall {
    pub run_id: String,
    pub force: bool,
    /// The run's status when the kill arrived (kill has no guard, so it may be a finished run).
    pub status_before: AgentRunStatus,
}

/// What the start request carried, after validation.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub workflow: String,
    pub message: String,
    pub max_turns: Option<u32>,
    pub session_id: Option<String>,
    pub session_name: Option<String>,
    pub user_id: Option<String>,
    pub git_branch: Option<String>,
    pub repository_url: Option<String>,
    pub timeout: i64,
    pub input_format: Option<String>,
    pub persistent: bool,
    /// The body as received (stored in the run's metadata as `request`).
    pub body: Value,
}

#[derive(Debug, Clone)]
pub struct SimRun {
    seq: u64,
    pub run_id: String,
    row_id: String,
    pub workflow: String,
    message: String,
    max_turns: Option<u32>,
    timeout: i64,
    input_format: Option<String>,
    pub session_name: String,
    /// Stored only when the request's was a UUID.
    session_id: Option<String>,
    claude_session_id: String,
    user_id: Option<String>,
    git_branch: Option<String>,
    repository_url: Option<String>,
    persistent: bool,
    pub body: Value,
    turns: u32,
    /// How long one turn takes while running.
    turn_every: Duration,
    created: Instant,
    start_at: Instant,
    plan: Plan,
    // What has happened so far.
    pub status: AgentRunStatus,
    finished_at: Option<Instant>,
    error_message: Option<String>,
    result: Option<String>,
    final_tokens: Option<(u64, u64, u64)>,
    cost: Option<f64>,
    total_turns: Option<u32>,
    tools_used: Vec<String>,
    kill_meta: Option<Map<String, Value>>,
    queue: Option<Vec<Queued>>,
    pub messages: Vec<ReceivedMessage>,
    /// Set once the run got as far as running (a workspace exists).
    has_workspace: bool,
    workspace_cleaned_up: bool,
}

/// Everything the simulator knows.
#[derive(Debug)]
pub struct SimState {
    pub config: SimulatorConfig,
    /// Workflows that can be started, by name.
    pub workflows: BTreeMap<String, super::WorkflowEntry>,
    epoch: SystemTime,
    origin: Instant,
    next_seq: u64,
    pub runs: BTreeMap<String, SimRun>,
    pub kill_calls: Vec<KillCall>,
    pub start_requests: usize,
    pub requests: usize,
    pub health_status: String,
    /// Injected faults, consumed one per API request.
    pub faults: std::collections::VecDeque<super::Fault>,
    /// Starts to answer with HTTP 200 `status: "failed"` (quirk 9).
    pub failed_starts: u32,
}

impl SimState {
    pub fn new(config: SimulatorConfig) -> SimState {
        SimState {
            health_status: config.health_status.clone(),
            config,
            workflows: BTreeMap::new(),
            epoch: SystemTime::now(),
            origin: Instant::now(),
            next_seq: 0,
            runs: BTreeMap::new(),
            kill_calls: Vec::new(),
            start_requests: 0,
            requests: 0,
            faults: Default::default(),
            failed_starts: 0,
        }
    }

    /// A tokio instant as the service would print it.
    pub fn wall(&self, at: Instant) -> String {
        let offset = at.saturating_duration_since(self.origin);
        format_naive_utc(self.epoch + offset)
    }

    /// Brings every run up to `now`.
    pub fn refresh_all(&mut self, now: Instant) {
        let tick = self.config.tick;
        for run in self.runs.values_mut() {
            run.refresh(now, tick);
        }
    }

    pub fn refresh(&mut self, run_id: &str, now: Instant) -> Option<&mut SimRun> {
        let tick = self.config.tick;
        let run = self.runs.get_mut(run_id)?;
        run.refresh(now, tick);
        Some(run)
    }

    pub fn create(&mut self, new: NewRun, now: Instant) -> &SimRun {
        let run_id = uuid::Uuid::new_v4().to_string();
        let script = Script::parse(&new.message);
        let config = &self.config;
        let turns = script.turns.unwrap_or(config.default_turns);
        let turns = new.max_turns.map_or(turns, |max| turns.min(max));
        let start_at = now + config.pending_for;
        let mut turn_every = config.run_duration / turns.max(1);
        let plan = if let Some(reason) = executor_rejection(&new) {
            Plan::RejectedAtStart(reason)
        } else {
            let duration = if script.slow {
                config
                    .run_duration
                    .saturating_mul(config.slow_factor.max(1))
            } else {
                config.run_duration
            };
            turn_every = duration / turns.max(1);
            Plan::Run {
                end: (!script.never).then(|| start_at + duration),
                fail: script.fail.then(|| {
                    "Claude CLI exited with code 1: simulated failure requested by [fail] in the \
                     task message"
                        .to_string()
                }),
            }
        };
        let session_id = new
            .session_id
            .as_deref()
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            .map(|u| u.to_string());
        let claude_session_id = session_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let session_name = new
            .session_name
            .clone()
            .unwrap_or_else(|| format!("claude-code-{}-{}", new.workflow, run_id));
        self.next_seq += 1;
        let run = SimRun {
            seq: self.next_seq,
            run_id: run_id.clone(),
            row_id: uuid::Uuid::new_v4().to_string(),
            workflow: new.workflow,
            message: new.message,
            max_turns: new.max_turns,
            timeout: new.timeout,
            input_format: new.input_format,
            session_name,
            session_id,
            claude_session_id,
            user_id: new.user_id,
            git_branch: new.git_branch,
            repository_url: new.repository_url,
            persistent: new.persistent,
            body: new.body,
            turns,
            turn_every,
            created: now,
            start_at,
            plan,
            status: AgentRunStatus::Pending,
            finished_at: None,
            error_message: None,
            result: None,
            final_tokens: None,
            cost: None,
            total_turns: None,
            tools_used: Vec::new(),
            kill_meta: None,
            queue: None,
            messages: Vec::new(),
            has_workspace: false,
            workspace_cleaned_up: false,
        };
        self.runs.entry(run_id).or_insert(run)
    }

    /// Runs in list order for `sort_by`/`sort_order`: runs without the sort value last, ties in
    /// creation order (reversed for `desc`).
    pub fn sorted_runs(&self, filter: &ListFilter<'_>) -> Vec<&SimRun> {
        let mut runs: Vec<&SimRun> = self
            .runs
            .values()
            .filter(|r| filter.workflow.is_none_or(|w| r.workflow == w))
            .filter(|r| filter.status.is_none_or(|s| r.status.as_str() == s))
            .filter(|r| {
                filter
                    .user_id
                    .is_none_or(|u| r.user_id.as_deref() == Some(u))
            })
            .collect();
        let origin = self.origin;
        let key = |r: &SimRun| -> Option<f64> {
            match filter.sort_by {
                "completed_at" => r
                    .finished_at
                    .map(|f| f.saturating_duration_since(origin).as_secs_f64()),
                "execution_time" => r.duration_secs(),
                "total_cost" => r.cost,
                _ => Some(r.created.saturating_duration_since(origin).as_secs_f64()),
            }
        };
        runs.sort_by(|a, b| {
            let (ka, kb) = (key(a), key(b));
            match (ka, kb) {
                (Some(_), None) => return std::cmp::Ordering::Less,
                (None, Some(_)) => return std::cmp::Ordering::Greater,
                _ => {}
            }
            let ordering = match (ka, kb) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                _ => std::cmp::Ordering::Equal,
            }
            .then(a.seq.cmp(&b.seq));
            if filter.desc {
                ordering.reverse()
            } else {
                ordering
            }
        });
        runs
    }
}

/// Which runs `GET /runs` lists, in which order.
#[derive(Debug, Clone, Copy)]
pub struct ListFilter<'a> {
    pub workflow: Option<&'a str>,
    /// A stored status (`timeout` already mapped to `failed`).
    pub status: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub sort_by: &'a str,
    pub desc: bool,
}

/// What the executor's `ClaudeCodeRunRequest` would reject once the run starts: no (or an
/// unknown) `input_format` (quirk 1) and a `timeout` above 7200 (quirk 2). The text follows
/// pydantic 2.13's `ValidationError` format.
fn executor_rejection(new: &NewRun) -> Option<String> {
    let mut errors = Vec::new();
    match new.input_format.as_deref() {
        Some("text" | "stream-json") => {}
        other => {
            let (value, kind) = match other {
                None => ("None".to_string(), "NoneType"),
                Some(s) => (format!("'{s}'"), "str"),
            };
            errors.push(format!(
                "input_format\n  Value error, Input format must be either \"text\" or \
                 \"stream-json\" [type=value_error, input_value={value}, input_type={kind}]\n    \
                 For further information visit https://errors.pydantic.dev/2.13/v/value_error"
            ));
        }
    }
    if new.timeout > 7200 {
        errors.push(format!(
            "timeout\n  Input should be less than or equal to 7200 [type=less_than_equal, \
             input_value={}, input_type=int]\n    For further information visit \
             https://errors.pydantic.dev/2.13/v/less_than_equal",
            new.timeout
        ));
    }
    if errors.is_empty() {
        return None;
    }
    let count = errors.len();
    let plural = if count == 1 { "error" } else { "errors" };
    Some(format!(
        "{count} validation {plural} for ClaudeCodeRunRequest\n{}",
        errors.join("\n")
    ))
}

impl SimRun {
    fn final_total_tokens(&self) -> u64 {
        BASE_TOKENS + u64::from(self.turns) * TOKENS_PER_TURN + 1_500
    }

    /// Tokens used by `at`, growing once per tick while running.
    fn live_tokens(&self, at: Instant, tick: Duration) -> u64 {
        if at < self.start_at {
            return 0;
        }
        let tick_ns = tick.as_nanos().max(1);
        let elapsed_ticks = (at.duration_since(self.start_at).as_nanos() / tick_ns) as u64;
        let planned_ticks = match &self.plan {
            Plan::Run { end: Some(end), .. } => {
                (end.duration_since(self.start_at).as_nanos() / tick_ns).max(1) as u64
            }
            _ => 20,
        };
        let per_tick = ((self.final_total_tokens() - BASE_TOKENS) / planned_ticks).max(1);
        BASE_TOKENS + elapsed_ticks.saturating_mul(per_tick)
    }

    /// Turns done by `at` while running (what `current_turns` says): one per `turn_every`,
    /// never more than the run will end with (or than `max_turns`, for a run that never ends).
    fn live_turns(&self, at: Instant) -> u32 {
        if at <= self.start_at {
            return 0;
        }
        let every = self.turn_every.as_nanos().max(1);
        let done = at.duration_since(self.start_at).as_nanos() / every;
        let cap = match &self.plan {
            Plan::Run { end: None, .. } => self.max_turns.unwrap_or(u32::MAX),
            _ => self.turns,
        };
        u32::try_from(done).unwrap_or(u32::MAX).min(cap)
    }

    fn refresh(&mut self, now: Instant, tick: Duration) {
        if self.status.is_terminal() || now < self.start_at {
            return;
        }
        match self.plan.clone() {
            Plan::RejectedAtStart(reason) => {
                self.finish(AgentRunStatus::Failed, self.start_at);
                self.error_message = Some(reason);
            }
            Plan::Run { end, fail } => {
                self.has_workspace = true;
                match end {
                    Some(end) if now >= end => {
                        if let Some(reason) = fail {
                            let tokens = self.live_tokens(end, tick);
                            self.final_tokens = Some((tokens, 0, 0));
                            self.finish(AgentRunStatus::Failed, end);
                            self.error_message = Some(reason);
                        } else {
                            let total = self.final_total_tokens();
                            let input = total * INPUT_SHARE_PERCENT / 100;
                            let output = total - input;
                            self.final_tokens = Some((total, input, output));
                            let cost = (input as f64 * 3.0 + output as f64 * 15.0) / 1_000_000.0;
                            self.cost = Some((cost * 10_000.0).round() / 10_000.0);
                            self.total_turns = Some(self.turns);
                            let tools = (self.turns as usize).clamp(1, TOOLS.len());
                            self.tools_used =
                                TOOLS[..tools].iter().map(|t| t.to_string()).collect();
                            self.result = Some(format!(
                                "Simulated {} run finished in {} turn(s): {}",
                                self.workflow,
                                self.turns,
                                first_line(&self.message, 200)
                            ));
                            self.finish(AgentRunStatus::Completed, end);
                        }
                    }
                    _ => self.status = AgentRunStatus::Running,
                }
            }
        }
    }

    fn finish(&mut self, status: AgentRunStatus, at: Instant) {
        self.status = status;
        self.finished_at = Some(at);
        if self.is_stream_json() {
            // The queue of a stream-json run is removed when the run ends.
            self.queue = None;
        }
    }

    fn is_stream_json(&self) -> bool {
        self.input_format.as_deref() == Some("stream-json")
    }

    fn duration_secs(&self) -> Option<f64> {
        if self.kill_meta.is_some() {
            return None;
        }
        self.finished_at
            .map(|f| f.saturating_duration_since(self.created).as_secs_f64())
    }

    fn workspace_path(&self) -> Option<String> {
        self.has_workspace.then(|| {
            format!(
                "/tmp/flowgate-simulator/worktrees/{}_{}",
                self.workflow,
                &self.run_id[..8.min(self.run_id.len())]
            )
        })
    }

    /// When queued message `i` is written to the run's stdin (stream-json only, while running).
    fn consumed_at(&self, queued: &Queued, tick: Duration) -> Option<Instant> {
        if !self.is_stream_json() {
            return None;
        }
        let at = queued.added_at.max(self.start_at) + tick;
        match self.finished_at {
            Some(end) if at > end => None,
            _ => Some(at),
        }
    }

    pub fn has_queue(&self) -> bool {
        self.queue.is_some()
    }

    pub fn queue_stats(&self, now: Instant, tick: Duration) -> Value {
        let queue = self.queue.as_deref().unwrap_or(&[]);
        let consumed: Vec<bool> = queue
            .iter()
            .map(|q| self.consumed_at(q, tick).is_some_and(|at| at <= now))
            .collect();
        let total_consumed = consumed.iter().filter(|c| **c).count();
        let oldest = queue
            .iter()
            .zip(&consumed)
            .find(|(_, c)| !**c)
            .map(|(q, _)| now.saturating_duration_since(q.added_at).as_secs_f64());
        json!({
            "run_id": self.run_id,
            "current_size": queue.len() - total_consumed,
            "total_added": queue.len(),
            "total_consumed": total_consumed,
            "oldest_message_age": oldest,
        })
    }

    pub fn add_message(&mut self, message: ReceivedMessage, now: Instant) {
        self.messages.push(message);
        self.queue
            .get_or_insert_with(Vec::new)
            .push(Queued { added_at: now });
    }

    /// Kill, with no state guard (quirk 6). Returns whether a live process was cancelled.
    pub fn kill(&mut self, force: bool, now: Instant, killed_at: String, duration_ms: u64) -> bool {
        let was_active = !self.status.is_terminal();
        self.finish(AgentRunStatus::Killed, now);
        self.error_message = Some(
            if force {
                "Workflow force killed"
            } else {
                "Workflow gracefully terminated"
            }
            .to_string(),
        );
        let mut meta = Map::new();
        meta.insert("kill_method".into(), json!(kill_method(force)));
        meta.insert("killed_at".into(), json!(killed_at));
        meta.insert("kill_duration_ms".into(), json!(duration_ms));
        meta.insert("kill_success".into(), json!(was_active));
        self.kill_meta = Some(meta);
        was_active
    }

    /// Removes the workspace; returns what was removed.
    pub fn cleanup(&mut self) -> (bool, Option<String>) {
        let path = self.workspace_path();
        let removed = path.is_some() && !self.workspace_cleaned_up;
        self.workspace_cleaned_up = true;
        (removed, path)
    }

    /// The raw DB metadata as the service would hold it now.
    fn metadata(&self, state: &SimState, now: Instant) -> Map<String, Value> {
        let mut meta = Map::new();
        if self.status == AgentRunStatus::Completed {
            // Completion overwrites the metadata: total_turns without max_turns (quirk 4) and
            // without the live claude_session_id (quirk 3).
            meta.insert("total_turns".into(), json!(self.total_turns.unwrap_or(0)));
            meta.insert("tools_used".into(), json!(self.tools_used));
            meta.insert("run_status".into(), json!("completed"));
        } else {
            meta.insert("max_turns".into(), json!(self.max_turns));
            meta.insert("timeout".into(), json!(self.timeout));
            meta.insert("created_at".into(), json!(state.wall(self.created)));
            meta.insert("request".into(), self.body.clone());
            if self.status == AgentRunStatus::Running {
                meta.insert("claude_session_id".into(), json!(self.claude_session_id));
                meta.insert("current_turns".into(), json!(self.live_turns(now)));
            }
            if !self.messages.is_empty() {
                // Not in the real service: lets tests see what add-message delivered.
                let messages: Vec<Value> = self
                    .messages
                    .iter()
                    .map(|m| json!({"type": m.message_type, "message": m.content}))
                    .collect();
                meta.insert("simulator_messages".into(), Value::Array(messages));
            }
        }
        if let Some(kill) = &self.kill_meta {
            meta.extend(kill.clone());
        }
        meta
    }

    fn tokens(&self, now: Instant, tick: Duration) -> (u64, u64, u64) {
        match (self.final_tokens, self.status) {
            (Some(tokens), _) => tokens,
            (None, AgentRunStatus::Pending) => (0, 0, 0),
            (None, _) => (
                self.live_tokens(self.finished_at.unwrap_or(now), tick),
                0,
                0,
            ),
        }
    }

    /// `GET /run/{id}/status`, shaped as the route fills `EnhancedStatusResponse`.
    pub fn status_json(&self, state: &SimState, now: Instant, debug: bool) -> Value {
        let status = self.status.as_str();
        let completed = self.status == AgentRunStatus::Completed;
        let metadata = self.metadata(state, now);
        let (total, input, output) = self.tokens(now, state.config.tick);
        let mut body = json!({
            "run_id": self.run_id,
            "workflow_name": self.workflow,
            "status": status,
            "started_at": state.wall(self.created),
            "completed_at": self.finished_at.map(|f| state.wall(f)),
            "execution_time_seconds": self.duration_secs(),
            "progress": {
                "turns": metadata.get("total_turns").cloned().unwrap_or(json!(0)),
                "max_turns": metadata.get("max_turns").cloned().unwrap_or(Value::Null),
                "current_phase": if completed { "completed" } else { "running" },
                "phases_completed": [],
                "is_running": self.status == AgentRunStatus::Running,
            },
            "metrics": {
                "cost_usd": self.cost.unwrap_or(0.0),
                "tokens": {
                    "total": total,
                    "input": input,
                    "output": output,
                    "cache_created": 0,
                    "cache_read": 0,
                    "cache_efficiency": 0.0,
                },
                "tools_used": metadata.get("tools_used").cloned().unwrap_or(json!([])),
                "api_duration_ms": 0,
                "performance_score": if completed { 85.0 } else { 60.0 },
            },
            "result": {
                "success": completed,
                "completion_type": status,
                "message": self.result.clone().unwrap_or_else(|| format!("Workflow {status}")),
                "final_output": self.result,
                "files_created": [],
                "git_commits": [],
                "files_changed": [],
            },
        });
        if debug && let Some(obj) = body.as_object_mut() {
            obj.insert(
                "debug".into(),
                json!({"workflow_run_id": self.row_id, "metadata": metadata}),
            );
        }
        body
    }

    /// One `GET /runs` item (`ClaudeCodeRunSummary`).
    pub fn summary_json(&self, state: &SimState, now: Instant) -> Value {
        let (total, input, output) = self.tokens(now, state.config.tick);
        let execution = self.duration_secs().unwrap_or(0.0);
        let result = self.result.clone().unwrap_or_else(|| {
            if self.message.is_empty() {
                format!("Workflow {}", self.status)
            } else if self.message.chars().count() > 100 {
                let head: String = self.message.chars().take(100).collect();
                format!("Processing: {head}...")
            } else {
                format!("Processing: {}", self.message)
            }
        });
        json!({
            "run_id": self.run_id,
            "status": self.status.as_str(),
            "workflow_name": self.workflow,
            "started_at": state.wall(self.created),
            "completed_at": self.finished_at.map(|f| state.wall(f)),
            "execution_time": execution,
            "total_tokens": total,
            "total_cost": self.cost,
            "turns": self.total_turns,
            "tool_calls": (!self.tools_used.is_empty()).then_some(self.tools_used.len()),
            "result": result,
            "input_tokens": input,
            "output_tokens": output,
            "ai_model": "sonnet",
            "session_name": self.session_name,
            "git_repo": self.repository_url,
            "git_branch": self.git_branch,
            "git_diff_summary": "No changes",
            "tools_used": self.tools_used,
            "workspace_path": self.workspace_path(),
            "workspace_persistent": self.persistent,
            "workspace_cleaned_up": self.workspace_cleaned_up,
            "error_message": self.error_message,
            "final_commit_hash": Value::Null,
            "execution_time_seconds": execution,
        })
    }

    /// The session id stored for the run (only a UUID the request carried).
    pub fn stored_session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }
}

pub fn kill_method(force: bool) -> &'static str {
    if force { "force" } else { "graceful" }
}

fn first_line(text: &str, max: usize) -> String {
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_read_from_the_message() {
        let s = Script::parse("Do it [FAIL] [slow] [turns=7]");
        assert!(s.fail && s.slow && !s.never);
        assert_eq!(s.turns, Some(7));
        assert_eq!(Script::parse("plain"), Script::default());
        assert_eq!(Script::parse("[turns=x]").turns, None);
        assert!(Script::parse("[timeout]").never);
    }

    fn new_run(input_format: Option<&str>, timeout: i64) -> NewRun {
        NewRun {
            workflow: "builder".into(),
            message: "m".into(),
            max_turns: None,
            session_id: None,
            session_name: None,
            user_id: None,
            git_branch: None,
            repository_url: None,
            timeout,
            input_format: input_format.map(str::to_string),
            persistent: true,
            body: json!({}),
        }
    }

    #[test]
    fn executor_rejects_like_pydantic() {
        let missing = executor_rejection(&new_run(None, 7200)).expect("rejected");
        assert!(missing.starts_with("1 validation error for ClaudeCodeRunRequest\ninput_format\n"));
        assert!(missing.contains("input_value=None, input_type=NoneType"));
        let both = executor_rejection(&new_run(Some("xml"), 7201)).expect("rejected");
        assert!(both.starts_with("2 validation errors for ClaudeCodeRunRequest\n"));
        assert!(both.contains("input_value='xml', input_type=str"));
        assert!(both.contains("timeout\n  Input should be less than or equal to 7200"));
        assert_eq!(
            executor_rejection(&new_run(Some("stream-json"), 7200)),
            None
        );
    }
}
