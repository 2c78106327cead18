//! `flowgate run --wait`: poll a run until it ends and show each step's progress.
//!
//! On a terminal the display is redrawn in place (one line per step: status, turns of
//! max_turns, cost, time); anywhere else (CI logs, pipes) a line is printed only when a step's
//! status or turn count changes, so a log of a long run stays readable and diffable.

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::Duration;

use flowgate_shared::api::client::FlowgateClient;
use flowgate_shared::api::{RunDetail, StepView};
use flowgate_shared::model::{ApprovalDecision, Millis, RunStatus, StepStatus};

use crate::commands::CliError;
use crate::output::{Table, clip, cost, duration};

/// Longest error text shown inside the progress display (the full text is in `flowgate status`).
const ERROR_WIDTH: usize = 60;

/// How `--wait` polls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitConfig {
    /// Pause between polls.
    pub interval: Duration,
    /// Give up (the run goes on) after this long; `None` waits for as long as the run takes.
    pub timeout: Option<Duration>,
    /// Transient failures in a row (server restarting, a timeout) tolerated before giving up:
    /// a blip should not end a wait of many minutes.
    pub max_consecutive_errors: u32,
}

impl Default for WaitConfig {
    fn default() -> Self {
        WaitConfig {
            interval: Duration::from_millis(500),
            timeout: None,
            max_consecutive_errors: 10,
        }
    }
}

/// What a step looked like at the last poll, for the "print only changes" mode.
type Seen = (StepStatus, u32);

/// The live display of one run.
#[derive(Debug)]
pub struct Progress {
    redraw: bool,
    /// Lines of the last frame still on screen (redraw mode).
    drawn: usize,
    /// Per step, what was last printed (line mode).
    seen: HashMap<String, Seen>,
    run_status: Option<RunStatus>,
}

impl Progress {
    /// `redraw`: stdout is a terminal, so frames are redrawn in place.
    pub fn new(redraw: bool) -> Self {
        Progress {
            redraw,
            drawn: 0,
            seen: HashMap::new(),
            run_status: None,
        }
    }

    /// Shows the run as of this poll.
    pub fn update(&mut self, run: &RunDetail, now: Millis, out: &mut dyn Write) -> io::Result<()> {
        if self.redraw {
            let lines = frame(run, now);
            if self.drawn > 0 {
                // Back to the first line of the previous frame, then clear everything below.
                write!(out, "\x1b[{}F\x1b[J", self.drawn)?;
            }
            for line in &lines {
                writeln!(out, "{line}")?;
            }
            self.drawn = lines.len();
        } else {
            for line in self.changes(run, now) {
                writeln!(out, "{line}")?;
            }
        }
        out.flush()
    }

    /// Something else was printed on the terminal (a warning): the next frame starts below it
    /// instead of overwriting it.
    pub fn interrupt(&mut self) {
        self.drawn = 0;
    }

    /// Line mode: the lines for what changed since the last poll. The first poll prints the
    /// run's header; steps count as pending with no turns until seen otherwise.
    fn changes(&mut self, run: &RunDetail, now: Millis) -> Vec<String> {
        let mut lines = Vec::new();
        let status = run.summary.status;
        match self.run_status {
            None => lines.push(header(run, now)),
            Some(previous) if previous != status && !status.is_terminal() => {
                lines.push(format!("run {}: {status}", run.summary.id));
            }
            _ => {}
        }
        self.run_status = Some(status);
        for step in &run.steps {
            let now_seen = (step.status, turns(step));
            let before = self
                .seen
                .get(&step.id)
                .copied()
                .unwrap_or((StepStatus::Pending, 0));
            if before != now_seen {
                lines.push(step_line(step, now));
                self.seen.insert(step.id.clone(), now_seen);
            }
        }
        lines
    }
}

/// The whole display of a run (redraw mode): a header, then one row per step.
pub fn frame(run: &RunDetail, now: Millis) -> Vec<String> {
    let mut lines = vec![header(run, now)];
    let mut table = Table::headless();
    for step in &run.steps {
        table.row(step_cells(step, now));
    }
    lines.extend(table.lines("  "));
    lines
}

/// `run r-1 · feature v3 · running · 1m 12s · $0.42`.
pub fn header(run: &RunDetail, now: Millis) -> String {
    let s = &run.summary;
    let mut parts = vec![
        format!("run {}", s.id),
        format!("{} v{}", s.workflow_id, s.workflow_version),
        s.status.to_string(),
    ];
    if let Some(elapsed) = run_elapsed(run, now) {
        parts.push(duration(elapsed));
    }
    parts.push(cost(s.cost_usd));
    parts.join(" · ")
}

/// The last line once a run has ended: `run r-1 succeeded in 3m 05s · $0.42`.
pub fn summary(run: &RunDetail, now: Millis) -> String {
    let s = &run.summary;
    let mut line = format!("run {} {}", s.id, s.status);
    if let Some(elapsed) = run_elapsed(run, now) {
        let word = if s.status == RunStatus::Succeeded {
            "in"
        } else {
            "after"
        };
        line.push_str(&format!(" {word} {}", duration(elapsed)));
    }
    line.push_str(&format!(" · {}", cost(s.cost_usd)));
    line
}

fn run_elapsed(run: &RunDetail, now: Millis) -> Option<i64> {
    let s = &run.summary;
    s.duration_ms.or_else(|| {
        let started = s.started_at?;
        let end = s.completed_at.unwrap_or(now);
        Some(end - started)
    })
}

fn step_elapsed(step: &StepView, now: Millis) -> Option<i64> {
    step.duration_ms.or_else(|| {
        let started = step.started_at?;
        Some(step.completed_at.unwrap_or(now) - started)
    })
}

fn turns(step: &StepView) -> u32 {
    step.agent.as_ref().map_or(0, |a| a.turns)
}

/// A marker that reads at a glance which steps are done, going, or broken.
pub fn marker(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Succeeded => "✓",
        StepStatus::Failed | StepStatus::TimedOut => "✗",
        StepStatus::Running => "▶",
        StepStatus::Waiting => "…",
        StepStatus::Retrying => "↻",
        StepStatus::Pending => "·",
        StepStatus::Skipped | StepStatus::Cancelled => "-",
    }
}

/// What a step has done so far: `turns 3/40` for agents, `approvals 1/2` for approvals, with
/// the attempt once it is a retry.
pub fn step_progress(step: &StepView) -> String {
    let mut parts = Vec::new();
    if let Some(agent) = &step.agent {
        parts.push(match agent.max_turns {
            Some(max) => format!("turns {}/{max}", agent.turns),
            None => format!("turns {}", agent.turns),
        });
    }
    if let Some(approval) = &step.approval {
        let approvals = approval
            .decisions
            .iter()
            .filter(|d| d.decision == ApprovalDecision::Approve)
            .count();
        parts.push(format!("approvals {approvals}/{}", approval.required));
    }
    if step.attempt > 1 {
        parts.push(format!("attempt {}", step.attempt));
    }
    parts.join(", ")
}

/// One step as table cells: marker, id, kind, status, progress, cost, time, error (clipped).
pub fn step_cells(step: &StepView, now: Millis) -> Vec<String> {
    vec![
        marker(step.status).to_string(),
        step.id.clone(),
        step.kind.clone(),
        step.status.to_string(),
        step_progress(step),
        step.agent
            .as_ref()
            .map(|a| cost(a.cost_usd))
            .unwrap_or_default(),
        step_elapsed(step, now).map(duration).unwrap_or_default(),
        step.error
            .as_deref()
            .map(|e| clip(e, ERROR_WIDTH))
            .unwrap_or_default(),
    ]
}

/// Line mode: `implement: running (turns 3/40, $0.21)`, or `test: failed after 12s: <error>`.
fn step_line(step: &StepView, now: Millis) -> String {
    let mut details = Vec::new();
    let progress = step_progress(step);
    if !progress.is_empty() {
        details.push(progress);
    }
    if let Some(agent) = &step.agent {
        details.push(cost(agent.cost_usd));
    }
    if step.status.is_terminal()
        && let Some(elapsed) = step_elapsed(step, now)
    {
        details.push(duration(elapsed));
    }
    let mut line = format!("{} {}: {}", marker(step.status), step.id, step.status);
    if !details.is_empty() {
        line.push_str(&format!(" ({})", details.join(", ")));
    }
    if let Some(error) = &step.error {
        line.push_str(&format!(": {}", clip(error, 200)));
    }
    line
}

/// Polls `run_id` every `config.interval` until the run is terminal, showing `progress` (none
/// with `--json`), and returns the last answer.
///
/// Transient failures (see [`flowgate_shared::api::client::ClientError::is_retryable`]) are
/// reported on `err` and tolerated up to `config.max_consecutive_errors` in a row; anything
/// else ends the wait at once.
pub async fn wait_for_run(
    client: &FlowgateClient,
    run_id: &str,
    config: &WaitConfig,
    mut progress: Option<&mut Progress>,
    out: &mut dyn Write,
    err: &mut dyn Write,
    now: &dyn Fn() -> Millis,
) -> Result<RunDetail, CliError> {
    let started = tokio::time::Instant::now();
    let mut errors = 0;
    let mut last_status = None;
    loop {
        match client.get_run(run_id).await {
            Ok(run) => {
                errors = 0;
                if let Some(progress) = progress.as_deref_mut() {
                    progress.update(&run, now(), out)?;
                }
                if run.summary.status.is_terminal() {
                    return Ok(run);
                }
                last_status = Some(run.summary.status);
            }
            Err(e) if e.is_retryable() && errors < config.max_consecutive_errors => {
                errors += 1;
                writeln!(
                    err,
                    "flowgate: {e} (still waiting; {errors} of {} failures in a row tolerated)",
                    config.max_consecutive_errors
                )?;
                if let Some(progress) = progress.as_deref_mut() {
                    progress.interrupt();
                }
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(timeout) = config.timeout
            && started.elapsed() >= timeout
        {
            return Err(CliError::WaitTimedOut {
                run_id: run_id.to_string(),
                status: last_status,
                waited: timeout,
            });
        }
        tokio::time::sleep(config.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn step(id: &str, status: &str, turns: Option<u32>, extra: Value) -> Value {
        let mut step = json!({"id": id, "kind": "agent", "depends_on": [], "status": status,
                              "attempt": 1});
        if let Some(turns) = turns {
            step["agent"] = json!({"workflow": id, "turns": turns, "max_turns": 40,
                                   "tokens": 10, "cost_usd": 0.05 * f64::from(turns)});
        } else {
            step["kind"] = json!("approval");
        }
        if let (Some(step), Value::Object(extra)) = (step.as_object_mut(), extra) {
            step.extend(extra);
        }
        step
    }

    fn run(status: &str, steps: Vec<Value>) -> RunDetail {
        serde_json::from_value(json!({
            "id": "r-1", "workflow_id": "feature", "workflow_version": 3, "status": status,
            "created_at": 1_000, "started_at": 1_000, "cost_usd": 0.5,
            "inputs": {}, "outputs": {}, "steps": steps, "open_approvals": [],
            "updated_at": 2_000,
            "links": {"self": "/v1/runs/r-1", "events": "/v1/runs/r-1/events",
                      "cancel": "/v1/runs/r-1/cancel", "messages": "/v1/runs/r-1/messages"}
        }))
        .expect("fixture is a RunDetail")
    }

    fn lines(progress: &mut Progress, run: &RunDetail, now: Millis) -> String {
        let mut out = Vec::new();
        progress.update(run, now, &mut out).expect("writes");
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn line_mode_prints_only_changes_of_status_or_turns() {
        let mut progress = Progress::new(false);
        let polls = [
            run(
                "pending",
                vec![
                    step("plan", "pending", Some(0), json!({})),
                    step("review", "pending", None, json!({})),
                ],
            ),
            run(
                "running",
                vec![
                    step("plan", "running", Some(2), json!({"started_at": 1_000})),
                    step("review", "pending", None, json!({})),
                ],
            ),
            run(
                "running",
                vec![
                    step("plan", "running", Some(2), json!({"started_at": 1_000})),
                    step("review", "pending", None, json!({})),
                ],
            ),
            run(
                "running",
                vec![
                    step(
                        "plan",
                        "succeeded",
                        Some(7),
                        json!({"started_at": 1_000, "duration_ms": 65_000}),
                    ),
                    step("review", "waiting", None, json!({})),
                ],
            ),
            run(
                "failed",
                vec![
                    step(
                        "plan",
                        "succeeded",
                        Some(7),
                        json!({"started_at": 1_000, "duration_ms": 65_000}),
                    ),
                    step(
                        "review",
                        "failed",
                        None,
                        json!({"error": "rejected by\nalice", "attempt": 2}),
                    ),
                ],
            ),
        ];
        let text: Vec<String> = polls
            .iter()
            .map(|poll| lines(&mut progress, poll, 61_000))
            .collect();
        assert_eq!(text[0], "run r-1 · feature v3 · pending · 1m 00s · $0.50\n");
        assert_eq!(
            text[1],
            "run r-1: running\n▶ plan: running (turns 2/40, $0.10)\n"
        );
        assert_eq!(text[2], "", "nothing changed, nothing printed");
        assert_eq!(
            text[3],
            "✓ plan: succeeded (turns 7/40, $0.35, 1m 05s)\n… review: waiting\n"
        );
        assert_eq!(text[4], "✗ review: failed (attempt 2): rejected by alice\n");
    }

    #[test]
    fn redraw_mode_rewrites_the_previous_frame() {
        let mut progress = Progress::new(true);
        let first = run(
            "running",
            vec![
                step("plan", "running", Some(2), json!({"started_at": 1_000})),
                step("review", "pending", None, json!({})),
            ],
        );
        let text = lines(&mut progress, &first, 31_000);
        assert_eq!(
            text,
            "run r-1 · feature v3 · running · 30s · $0.50\n\
             \x20 ▶  plan    agent     running  turns 2/40  $0.10  30s\n\
             \x20 ·  review  approval  pending\n"
        );
        let second = run(
            "succeeded",
            vec![
                step(
                    "plan",
                    "succeeded",
                    Some(3),
                    json!({"started_at": 1_000, "duration_ms": 40_000}),
                ),
                step("review", "skipped", None, json!({})),
            ],
        );
        let text = lines(&mut progress, &second, 41_000);
        assert!(text.starts_with("\x1b[3F\x1b[J"), "{text:?}");
        assert!(text.contains("✓  plan    agent     succeeded  turns 3/40  $0.15  40s"));
        progress.interrupt();
        let text = lines(&mut progress, &second, 41_000);
        assert!(
            !text.starts_with('\x1b'),
            "a warning in between is not overwritten"
        );
    }

    #[test]
    fn summary_names_the_outcome() {
        let done = run("succeeded", vec![]);
        assert_eq!(summary(&done, 11_000), "run r-1 succeeded in 10s · $0.50");
        let failed = run("failed", vec![]);
        assert_eq!(summary(&failed, 11_000), "run r-1 failed after 10s · $0.50");
    }
}
