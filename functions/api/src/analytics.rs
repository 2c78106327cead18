//! `GET /v1/analytics`: per-workflow figures over a window of time, computed from the stored
//! runs.
//!
//! There is no separate metrics store: the runs are the record (every run keeps its status,
//! timings, agent turns and cost, and its approvals with who decided when), so the figures are
//! computed on request from [`RunStore::list_runs`](flowgate_shared::ports::RunStore::list_runs)
//! and cannot disagree with what the run pages show. The computation is a pure function of the
//! runs read ([`compute`]), which is what the tests check.
//!
//! Definitions, so the numbers can be checked by hand:
//!
//! - a run is in the window when it was *created* in it (`from <= created_at`); the window
//!   ends now;
//! - **success rate** is succeeded / finished (succeeded, failed, timed out, cancelled); runs
//!   still active do not count either way, and with none finished there is no rate (`null`,
//!   not 0);
//! - **duration** is [`Run::duration_ms`] of finished runs (creation or start to completion);
//! - **percentiles** use the nearest-rank method: p50 of `n` sorted values is the value at
//!   rank `ceil(0.50 n)`, p95 at `ceil(0.95 n)` (always a value that occurred, never an
//!   interpolation);
//! - **agent turns** and **cost** add every agent step's turns and cost, earlier attempts
//!   included, of every run in the window (an active run counts what it spent so far);
//! - **approval wait** is, for each approval a person decided, the time from its request to the
//!   decision that closed it (the latest decision: an N-of-M gate closes on its N-th). Expired
//!   approvals and ones closed without a decision (the run was cancelled) are counted but are
//!   not waits anyone ended; pending ones report the oldest wait so far. A run keeps the latest
//!   approval of each gate, so a gate asked again after a "retry" decision counts its latest
//!   request.

use flowgate_shared::model::{ApprovalStatus, Millis, Run, RunStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most runs one answer reads (newest first). Each page is one store query, so this bounds the
/// work of one request (a Lambda invocation behind API Gateway has 29 s); the answer says when
/// it stopped short (`truncated`).
pub const MAX_RUNS: usize = 5_000;

/// Shortest window: anything shorter says nothing a run list would not.
pub const MIN_WINDOW_MS: Millis = 60_000;

/// Longest window (90 days): a bound on what one request reads.
pub const MAX_WINDOW_MS: Millis = 90 * 24 * 3_600_000;

/// Bucket sizes for the series, smallest first; the smallest giving at most [`MAX_BUCKETS`]
/// buckets is used, so a chart has enough bars to show a trend and few enough to read.
const BUCKET_SIZES_MS: [Millis; 9] = [
    60_000,         // 1 minute
    300_000,        // 5 minutes
    900_000,        // 15 minutes
    3_600_000,      // 1 hour
    3 * 3_600_000,  // 3 hours
    6 * 3_600_000,  // 6 hours
    12 * 3_600_000, // 12 hours
    24 * 3_600_000, // 1 day
    7 * 24 * 3_600_000,
];

/// Most buckets a series has.
const MAX_BUCKETS: i64 = 48;

/// The answer of `GET /v1/analytics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Analytics {
    /// The window as asked for (e.g. `24h`, `7d`).
    pub window: String,
    /// Start of the window (ms since the epoch): runs created at or after it count.
    pub from: Millis,
    /// End of the window: when the figures were computed.
    pub to: Millis,
    /// The workflow filter, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// How many runs the figures are computed from.
    pub runs_read: usize,
    /// More runs were created in the window than one answer reads (5,000); the figures cover
    /// the newest ones. Narrow the window or filter by workflow.
    pub truncated: bool,
    /// Every workflow together.
    pub totals: Stats,
    /// One entry per workflow with runs in the window, most runs first.
    pub workflows: Vec<WorkflowStats>,
    /// Runs over time, by creation, in equal buckets from `from`.
    pub series: Series,
}

/// The figures of one workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowStats {
    pub workflow_id: String,
    #[serde(flatten)]
    pub stats: Stats,
}

/// Figures over a set of runs (see the module documentation for the definitions).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    /// Runs created in the window.
    pub runs: u64,
    /// Of those, not finished yet (pending, running, cancelling, compensating).
    pub active: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub cancelled: u64,
    /// succeeded / finished, 0..=1; `null` when no run finished.
    pub success_rate: Option<f64>,
    /// Duration of finished runs.
    pub duration_ms: Percentiles,
    /// Agent turns, every agent step and attempt.
    pub agent_turns: u64,
    /// Agent cost in USD, every agent step and attempt.
    pub cost_usd: f64,
    /// `cost_usd / runs`; `null` without runs.
    pub cost_per_run_usd: Option<f64>,
    pub approvals: ApprovalStats,
}

/// The 50th and 95th percentile (nearest rank) of a set of durations, and the largest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Percentiles {
    /// How many values there are; the others are `null` when 0.
    pub count: u64,
    pub p50: Option<i64>,
    pub p95: Option<i64>,
    pub max: Option<i64>,
}

/// How long approvals waited for people.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApprovalStats {
    /// Approvals a person decided (approved, rejected, sent back for a retry, skipped, or
    /// cancelled the run from).
    pub decided: u64,
    /// Still waiting.
    pub pending: u64,
    /// Nobody decided in time.
    pub expired: u64,
    /// From the request to the decision that closed it, over the decided ones.
    pub wait_ms: Percentiles,
    /// How long the oldest pending approval has waited so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_pending_ms: Option<i64>,
}

/// Runs over time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Series {
    /// Width of each bucket (ms).
    pub bucket_ms: i64,
    pub buckets: Vec<Bucket>,
}

/// The runs created in `[start, start + bucket_ms)`, by what became of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Bucket {
    pub start: Millis,
    pub runs: u64,
    pub succeeded: u64,
    /// Failed or timed out.
    pub failed: u64,
    pub cancelled: u64,
    pub active: u64,
}

/// The value at nearest rank `ceil(p/100 * n)` of `sorted` (ascending); `None` when empty.
pub fn percentile(sorted: &[i64], p: u32) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = (p as usize * n).div_ceil(100).clamp(1, n);
    sorted.get(rank - 1).copied()
}

impl Percentiles {
    fn of(mut values: Vec<i64>) -> Self {
        values.sort_unstable();
        Percentiles {
            count: values.len() as u64,
            p50: percentile(&values, 50),
            p95: percentile(&values, 95),
            max: values.last().copied(),
        }
    }
}

/// Adds runs up; [`Accumulator::finish`] turns the sums into [`Stats`].
#[derive(Default)]
struct Accumulator {
    stats: Stats,
    durations: Vec<i64>,
    waits: Vec<i64>,
}

impl Accumulator {
    fn add(&mut self, run: &Run, now: Millis) {
        let s = &mut self.stats;
        s.runs += 1;
        match run.status {
            RunStatus::Succeeded => s.succeeded += 1,
            RunStatus::Failed => s.failed += 1,
            RunStatus::TimedOut => s.timed_out += 1,
            RunStatus::Cancelled => s.cancelled += 1,
            RunStatus::Pending
            | RunStatus::Running
            | RunStatus::Cancelling
            | RunStatus::Compensating => s.active += 1,
        }
        if run.status.is_terminal()
            && let Some(d) = run.duration_ms()
        {
            self.durations.push(d.max(0));
        }
        for agent in run.steps.values().filter_map(|step| step.agent.as_ref()) {
            s.agent_turns += u64::from(agent.turns) + u64::from(agent.previous_attempts_turns);
        }
        s.cost_usd += run.cost_usd();
        for (_, approval) in run.approvals() {
            match approval.status {
                ApprovalStatus::Pending => {
                    s.approvals.pending += 1;
                    let waited = (now - approval.requested_at).max(0);
                    let oldest = s.approvals.oldest_pending_ms.get_or_insert(waited);
                    *oldest = (*oldest).max(waited);
                }
                ApprovalStatus::Expired => s.approvals.expired += 1,
                ApprovalStatus::Approved
                | ApprovalStatus::Rejected
                | ApprovalStatus::Retried
                | ApprovalStatus::Skipped
                | ApprovalStatus::Cancelled => {
                    // Closed by the latest decision; none: closed with the run, not by a person.
                    if let Some(closed_at) = approval.decisions.iter().map(|d| d.at).max() {
                        s.approvals.decided += 1;
                        self.waits.push((closed_at - approval.requested_at).max(0));
                    }
                }
            }
        }
    }

    fn finish(self) -> Stats {
        let mut stats = self.stats;
        let finished = stats.succeeded + stats.failed + stats.timed_out + stats.cancelled;
        stats.success_rate = (finished > 0).then(|| stats.succeeded as f64 / finished as f64);
        stats.cost_per_run_usd = (stats.runs > 0).then(|| stats.cost_usd / stats.runs as f64);
        stats.duration_ms = Percentiles::of(self.durations);
        stats.approvals.wait_ms = Percentiles::of(self.waits);
        stats
    }
}

/// `a / b` rounded up, for `a >= 0` and `b > 0` (`i64::div_ceil` is not stable).
fn ceil_div(a: Millis, b: Millis) -> Millis {
    (a + b - 1) / b
}

/// The bucket width for a window: the smallest of [`BUCKET_SIZES_MS`] giving at most
/// [`MAX_BUCKETS`] buckets.
pub fn bucket_ms(window_ms: Millis) -> Millis {
    BUCKET_SIZES_MS
        .iter()
        .copied()
        .find(|size| ceil_div(window_ms, *size) <= MAX_BUCKETS)
        .unwrap_or(BUCKET_SIZES_MS[BUCKET_SIZES_MS.len() - 1])
}

/// The figures for `runs` (those created in `[from, now]`; others are ignored) at time `now`:
/// totals, per workflow (most runs first, then by id), and the series.
pub fn compute(runs: &[Run], from: Millis, now: Millis) -> (Stats, Vec<WorkflowStats>, Series) {
    let width = bucket_ms(now - from);
    let count = usize::try_from(ceil_div(now - from, width).max(1)).unwrap_or(1);
    let mut buckets: Vec<Bucket> = (0..count)
        .map(|i| Bucket {
            start: from + width * i as i64,
            ..Bucket::default()
        })
        .collect();
    let mut totals = Accumulator::default();
    let mut per_workflow: std::collections::BTreeMap<&str, Accumulator> = Default::default();
    for run in runs
        .iter()
        .filter(|r| r.created_at >= from && r.created_at <= now)
    {
        totals.add(run, now);
        per_workflow
            .entry(run.workflow_id.as_str())
            .or_default()
            .add(run, now);
        let index = usize::try_from((run.created_at - from) / width).unwrap_or(0);
        if let Some(bucket) = buckets.get_mut(index.min(count - 1)) {
            bucket.runs += 1;
            match run.status {
                RunStatus::Succeeded => bucket.succeeded += 1,
                RunStatus::Failed | RunStatus::TimedOut => bucket.failed += 1,
                RunStatus::Cancelled => bucket.cancelled += 1,
                _ => bucket.active += 1,
            }
        }
    }
    let mut workflows: Vec<WorkflowStats> = per_workflow
        .into_iter()
        .map(|(id, acc)| WorkflowStats {
            workflow_id: id.to_string(),
            stats: acc.finish(),
        })
        .collect();
    // Stable: equal counts keep the id order of the map.
    workflows.sort_by_key(|w| std::cmp::Reverse(w.stats.runs));
    (
        totals.finish(),
        workflows,
        Series {
            bucket_ms: width,
            buckets,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowgate_shared::definition::parse_definition;
    use flowgate_shared::model::{
        AgentProgress, ApprovalDecision, ApprovalState, DecisionRecord, StepStatus,
    };

    const DEF: &str = r#"
id: gated
steps:
  - {id: build, kind: agent, workflow: implement, message: go, max_turns: 50}
  - {id: ok, kind: approval, depends_on: [build], message: ship it?}
"#;

    const HOUR: Millis = 3_600_000;
    const NOW: Millis = 1_000 * HOUR;

    /// A run of `gated` created at `created`, in `status`, finishing `duration` after it
    /// started (when finished), its agent step at `turns` turns and `cost` dollars.
    fn run(
        id: &str,
        status: RunStatus,
        created: Millis,
        duration: Millis,
        turns: u32,
        cost: f64,
    ) -> Run {
        let def = parse_definition(DEF).expect("valid");
        let mut run = Run::new(id, &def, 1, Default::default(), created);
        run.status = status;
        run.started_at = Some(created + 1_000);
        if status.is_terminal() {
            run.completed_at = Some(created + 1_000 + duration);
        }
        let build = run.steps.get_mut("build").expect("step");
        build.status = StepStatus::Succeeded;
        build.agent = Some(AgentProgress {
            turns,
            cost_usd: cost,
            ..AgentProgress::default()
        });
        run
    }

    fn approval(requested: Millis, status: ApprovalStatus, decided: &[Millis]) -> ApprovalState {
        ApprovalState {
            id: "a".into(),
            status,
            message: "ship it?".into(),
            approvers: vec![],
            required: decided.len().max(1) as u32,
            requested_at: requested,
            expires_at: None,
            decisions: decided
                .iter()
                .map(|at| DecisionRecord {
                    by: format!("p{at}"),
                    decision: ApprovalDecision::Approve,
                    comment: None,
                    at: *at,
                })
                .collect(),
            escalated: false,
            kind: Default::default(),
            remind_at: None,
            reminders: 0,
            escalate_at: None,
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 50), Some(7));
        assert_eq!(percentile(&[7], 95), Some(7));
        // n = 4: p50 at rank 2, p95 at rank ceil(3.8) = 4.
        assert_eq!(percentile(&[1, 2, 3, 4], 50), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4], 95), Some(4));
        let twenty: Vec<i64> = (1..=20).collect();
        // n = 20: p50 at rank 10, p95 at rank 19 (not the maximum).
        assert_eq!(percentile(&twenty, 50), Some(10));
        assert_eq!(percentile(&twenty, 95), Some(19));
        let hundred: Vec<i64> = (1..=100).map(|v| v * 10).collect();
        assert_eq!(percentile(&hundred, 50), Some(500));
        assert_eq!(percentile(&hundred, 95), Some(950));
        assert_eq!(percentile(&hundred, 100), Some(1000));
    }

    #[test]
    fn success_rate_counts_finished_runs_only() {
        let from = NOW - 24 * HOUR;
        let runs = vec![
            run("a", RunStatus::Succeeded, from + HOUR, 10_000, 3, 0.5),
            run("b", RunStatus::Succeeded, from + HOUR, 20_000, 4, 0.25),
            run("c", RunStatus::Succeeded, from + HOUR, 30_000, 5, 0.25),
            run("d", RunStatus::Failed, from + HOUR, 40_000, 1, 0.0),
            run("e", RunStatus::Running, from + HOUR, 0, 2, 1.0),
        ];
        let (totals, per, _) = compute(&runs, from, NOW);
        assert_eq!(totals.runs, 5);
        assert_eq!(totals.active, 1);
        assert_eq!((totals.succeeded, totals.failed), (3, 1));
        assert_eq!(totals.success_rate, Some(0.75), "3 of 4 finished");
        assert_eq!(totals.agent_turns, 15);
        assert!((totals.cost_usd - 2.0).abs() < 1e-9, "{}", totals.cost_usd);
        assert_eq!(totals.cost_per_run_usd, Some(totals.cost_usd / 5.0));
        // Durations of the four finished runs: 10, 20, 30, 40 s.
        assert_eq!(
            totals.duration_ms,
            Percentiles {
                count: 4,
                p50: Some(20_000),
                p95: Some(40_000),
                max: Some(40_000)
            }
        );
        assert_eq!(per.len(), 1);
        assert_eq!(per[0].workflow_id, "gated");
        assert_eq!(per[0].stats, totals);

        let only_active = vec![run("x", RunStatus::Running, from + HOUR, 0, 0, 0.0)];
        let (totals, _, _) = compute(&only_active, from, NOW);
        assert_eq!(totals.success_rate, None, "no finished run: no rate, not 0");
        assert_eq!(totals.duration_ms.count, 0);
        assert_eq!(totals.duration_ms.p50, None);
    }

    #[test]
    fn runs_outside_the_window_are_ignored_and_workflows_are_separate() {
        let from = NOW - HOUR;
        let mut other = run("o", RunStatus::Failed, from + 10, 5_000, 0, 0.0);
        other.workflow_id = "other".into();
        let runs = vec![
            run("old", RunStatus::Succeeded, from - 1, 1_000, 9, 9.0),
            run("in1", RunStatus::Succeeded, from, 1_000, 1, 0.0),
            run("in2", RunStatus::Succeeded, NOW - 1, 3_000, 1, 0.0),
            other,
        ];
        let (totals, per, _) = compute(&runs, from, NOW);
        assert_eq!(totals.runs, 3, "the run created before the window is out");
        assert_eq!(totals.agent_turns, 2);
        let ids: Vec<&str> = per.iter().map(|w| w.workflow_id.as_str()).collect();
        assert_eq!(ids, ["gated", "other"], "most runs first");
        assert_eq!(per[0].stats.success_rate, Some(1.0));
        assert_eq!(per[1].stats.success_rate, Some(0.0));
        assert_eq!(per[1].stats.duration_ms.p50, Some(5_000));
    }

    #[test]
    fn approval_wait_is_request_to_closing_decision() {
        let from = NOW - 24 * HOUR;
        let t = from + HOUR;
        let mut runs = Vec::new();
        // Waits of 1, 2, 3 and 10 minutes; the 2-of-2 gate closes on its later decision.
        for (i, (wait, status)) in [
            (60_000, ApprovalStatus::Approved),
            (180_000, ApprovalStatus::Rejected),
            (600_000, ApprovalStatus::Retried),
        ]
        .into_iter()
        .enumerate()
        {
            let mut r = run(&format!("r{i}"), RunStatus::Succeeded, t, 1, 0, 0.0);
            r.steps.get_mut("ok").expect("step").approval = Some(approval(t, status, &[t + wait]));
            runs.push(r);
        }
        let mut two = run("two", RunStatus::Succeeded, t, 1, 0, 0.0);
        two.steps.get_mut("ok").expect("step").approval = Some(approval(
            t,
            ApprovalStatus::Approved,
            &[t + 30_000, t + 120_000],
        ));
        runs.push(two);
        // Pending for 2 h and 5 h; expired; closed without a decision (run cancelled).
        for (id, requested, status) in [
            ("p1", NOW - 2 * HOUR, ApprovalStatus::Pending),
            ("p2", NOW - 5 * HOUR, ApprovalStatus::Pending),
            ("exp", t, ApprovalStatus::Expired),
            ("gone", t, ApprovalStatus::Cancelled),
        ] {
            let mut r = run(id, RunStatus::Running, t, 0, 0, 0.0);
            r.steps.get_mut("ok").expect("step").approval = Some(approval(requested, status, &[]));
            runs.push(r);
        }
        let (totals, _, _) = compute(&runs, from, NOW);
        let a = totals.approvals;
        assert_eq!((a.decided, a.pending, a.expired), (4, 2, 1));
        // Sorted waits: 60 s, 120 s, 180 s, 600 s.
        assert_eq!(
            a.wait_ms,
            Percentiles {
                count: 4,
                p50: Some(120_000),
                p95: Some(600_000),
                max: Some(600_000)
            }
        );
        assert_eq!(a.oldest_pending_ms, Some(5 * HOUR));
    }

    #[test]
    fn the_series_buckets_runs_by_creation() {
        assert_eq!(bucket_ms(HOUR), 300_000, "1 h: 12 five-minute buckets");
        assert_eq!(bucket_ms(24 * HOUR), HOUR);
        assert_eq!(bucket_ms(7 * 24 * HOUR), 6 * HOUR);
        assert_eq!(bucket_ms(30 * 24 * HOUR), 24 * HOUR);
        assert_eq!(bucket_ms(90 * 24 * HOUR), 7 * 24 * HOUR);

        let from = NOW - 24 * HOUR;
        let runs = vec![
            run("a", RunStatus::Succeeded, from, 1, 0, 0.0),
            run("b", RunStatus::Failed, from + HOUR - 1, 1, 0, 0.0),
            run("c", RunStatus::TimedOut, from + HOUR, 1, 0, 0.0),
            run("d", RunStatus::Running, NOW, 0, 0, 0.0),
        ];
        let (_, _, series) = compute(&runs, from, NOW);
        assert_eq!(series.bucket_ms, HOUR);
        assert_eq!(series.buckets.len(), 24);
        assert_eq!(series.buckets[0].start, from);
        assert_eq!(
            (
                series.buckets[0].runs,
                series.buckets[0].succeeded,
                series.buckets[0].failed
            ),
            (2, 1, 1)
        );
        assert_eq!((series.buckets[1].runs, series.buckets[1].failed), (1, 1));
        // A run created at the very end of the window lands in the last bucket.
        assert_eq!((series.buckets[23].runs, series.buckets[23].active), (1, 1));
        let total: u64 = series.buckets.iter().map(|b| b.runs).sum();
        assert_eq!(total, 4);
    }
}
