//! Schedules at run time: keeping the scheduler equal to the definitions, and starting a run
//! when a schedule fires (the same logic for EventBridge's deliveries to the triggers function
//! and for `flowgate serve`'s ticker).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};

use super::start::{NewRun, StartError, check_run, create_run};
use crate::definition::OverlapPolicy;
use crate::engine::Event;
use crate::model::Millis;
use crate::ports::{
    RecordStore, RunStore, Scheduler, StoreError, WorkMessage, WorkQueue, WorkflowStore,
};
use crate::schedule::{
    Expression, ScheduleEntry, ScheduledStart, format_time, parse_time, schedule_prefix,
    schedules_of,
};

/// Record collection: schedule name → the last run it started (for the overlap policy).
pub const SCHEDULE_LAST_RUN: &str = "schedule-last-run";

/// What a sync changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub deleted: Vec<String>,
    pub unchanged: usize,
}

impl SyncReport {
    fn merge(&mut self, other: SyncReport) {
        self.created.extend(other.created);
        self.updated.extend(other.updated);
        self.deleted.extend(other.deleted);
        self.unchanged += other.unchanged;
    }
}

/// Make the scheduler hold exactly the schedules the latest version of `workflow_id` asks for
/// (none when it was deleted). Reads the definition from the store rather than taking it from
/// the caller, so two writers syncing out of order still leave the latest version's schedules.
pub async fn sync_schedules(
    scheduler: &dyn Scheduler,
    workflows: &dyn WorkflowStore,
    workflow_id: &str,
) -> Result<SyncReport, StoreError> {
    let desired = match workflows.get_workflow(workflow_id, None).await? {
        Some(stored) => schedules_of(&stored),
        None => Vec::new(),
    };
    let present = scheduler
        .list_schedules(&schedule_prefix(workflow_id))
        .await?;
    let mut report = SyncReport::default();
    for entry in &desired {
        match scheduler.get_schedule(&entry.name).await? {
            Some(existing) if existing == *entry => report.unchanged += 1,
            Some(_) => {
                scheduler.put_schedule(entry).await?;
                report.updated.push(entry.name.clone());
            }
            None => {
                scheduler.put_schedule(entry).await?;
                report.created.push(entry.name.clone());
            }
        }
    }
    let wanted: BTreeSet<&str> = desired.iter().map(|e| e.name.as_str()).collect();
    for name in present {
        if !wanted.contains(name.as_str()) && scheduler.delete_schedule(&name).await? {
            report.deleted.push(name);
        }
    }
    if !(report.created.is_empty() && report.updated.is_empty() && report.deleted.is_empty()) {
        info!(workflow_id, created = ?report.created, updated = ?report.updated, deleted = ?report.deleted, "schedules synced");
    }
    Ok(report)
}

/// The sweeper's check: compare the schedule names present with the ones the stored workflows
/// ask for, and sync every workflow where they differ (a sync that failed after a store, a
/// schedule deleted by hand). One listing of each; content changes are synced when a workflow
/// is stored.
pub async fn reconcile_schedules(
    scheduler: &dyn Scheduler,
    workflows: &dyn WorkflowStore,
) -> Result<SyncReport, StoreError> {
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    for stored in workflows.list_workflows().await? {
        for entry in schedules_of(&stored) {
            wanted.insert(entry.name, stored.definition.id.clone());
        }
    }
    let present: BTreeSet<String> = scheduler.list_schedules("").await?.into_iter().collect();
    let mut stale: BTreeSet<String> = BTreeSet::new();
    for (name, workflow_id) in &wanted {
        if !present.contains(name) {
            stale.insert(workflow_id.clone());
        }
    }
    let mut orphans = Vec::new();
    for name in &present {
        if !wanted.contains_key(name) {
            orphans.push(name.clone());
        }
    }
    let mut report = SyncReport::default();
    for workflow_id in stale {
        report.merge(sync_schedules(scheduler, workflows, &workflow_id).await?);
    }
    for name in orphans {
        if scheduler.delete_schedule(&name).await? {
            report.deleted.push(name);
        }
    }
    Ok(report)
}

/// Why a scheduled start did nothing or failed.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "scheduled start of {schedule} carries no scheduled_time (RFC 3339); the schedule's input must hold \"<aws.scheduler.scheduled-time>\"; re-sync the workflow's schedules"
    )]
    NoTime { schedule: String },
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("run store: {0}")]
    Store(#[from] StoreError),
}

impl ScheduleError {
    /// Whether delivering the same event again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ScheduleError::NoTime { .. } => false,
            ScheduleError::Start(e) => e.is_retryable(),
            ScheduleError::Store(e) => e.is_retryable(),
        }
    }
}

/// What a scheduled start did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Fired {
    /// A run was started (or, for a repeated delivery, had been: `existing`).
    Started {
        run_id: String,
        existing: bool,
        /// A run of the schedule still active was asked to cancel (`overlap: cancel_previous`).
        #[serde(skip_serializing_if = "Option::is_none")]
        cancelled_previous: Option<String>,
    },
    /// Nothing was started, and why.
    Skipped { reason: String },
}

/// The ports a scheduled start uses.
#[derive(Clone, Copy)]
pub struct SchedulePorts<'a> {
    pub store: &'a dyn RunStore,
    pub workflows: &'a dyn WorkflowStore,
    pub queue: &'a dyn WorkQueue,
    pub records: &'a dyn RecordStore,
}

impl std::fmt::Debug for SchedulePorts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulePorts").finish_non_exhaustive()
    }
}

/// Start the run a schedule's firing asks for.
///
/// The run's idempotency key is `schedule:<name>:<scheduled time>`, so a repeated delivery of
/// one firing finds the run it started and does nothing else. The overlap policy looks at the
/// last run the schedule started: `skip` starts nothing while it is active, `cancel_previous`
/// asks it to cancel (through the queue) and starts the new one, `allow` just starts.
/// A workflow deleted since the schedule was written starts nothing.
pub async fn fire_schedule(
    ports: SchedulePorts<'_>,
    start: &ScheduledStart,
    now: Millis,
) -> Result<Fired, ScheduleError> {
    let time = start
        .scheduled_time
        .as_deref()
        .and_then(parse_time)
        .ok_or_else(|| ScheduleError::NoTime {
            schedule: start.schedule.clone(),
        })?;
    let key = format!("schedule:{}:{}", start.schedule, format_time(time));
    if let Some(run_id) = ports.store.find_idempotency_key(&key).await? {
        info!(schedule = %start.schedule, run_id = %run_id, "repeated delivery of a scheduled start; nothing new");
        return Ok(Fired::Started {
            run_id,
            existing: true,
            cancelled_previous: None,
        });
    }
    let Some(latest) = ports
        .workflows
        .get_workflow(&start.workflow_id, None)
        .await?
    else {
        warn!(schedule = %start.schedule, workflow_id = %start.workflow_id, "schedule of a deleted workflow fired; nothing started (the sweeper removes the schedule)");
        return Ok(Fired::Skipped {
            reason: format!("workflow {} was deleted", start.workflow_id),
        });
    };
    // The version the schedule names (one read more only when a newer version was stored
    // since the schedule was written), else the latest.
    let stored = if latest.version == start.workflow_version {
        latest
    } else {
        ports
            .workflows
            .get_workflow(&start.workflow_id, Some(start.workflow_version))
            .await?
            .unwrap_or(latest)
    };
    let mut cancelled_previous = None;
    if start.overlap != OverlapPolicy::Allow
        && let Some(previous) = ports
            .records
            .get_record(SCHEDULE_LAST_RUN, &start.schedule)
            .await?
            .and_then(|v| v.get("run_id").and_then(|r| r.as_str()).map(str::to_string))
        && let Some(run) = ports.store.get_run(&previous).await?
        && !run.status.is_terminal()
    {
        if start.overlap == OverlapPolicy::Skip {
            info!(schedule = %start.schedule, previous_run_id = %previous, "previous run still active; this firing is skipped (overlap: skip)");
            return Ok(Fired::Skipped {
                reason: format!("run {previous} of this schedule is still active (overlap: skip)"),
            });
        }
        let cancel = WorkMessage::Event {
            run_id: previous.clone(),
            event: Event::CancelRequested {
                by: format!("schedule:{}", start.schedule),
                reason: Some(format!(
                    "the schedule fired again at {} (overlap: cancel_previous)",
                    format_time(time)
                )),
                force: false,
            },
        };
        ports
            .queue
            .send(&cancel, std::time::Duration::ZERO)
            .await
            .map_err(|e| StoreError::Unavailable {
                message: format!("could not queue the cancel of run {previous}: {e}"),
            })?;
        cancelled_previous = Some(previous);
    }
    let new = NewRun {
        workflow_id: start.workflow_id.clone(),
        inputs: start.inputs.clone(),
        idempotency_key: Some(key),
        started_by: Some(format!("schedule:{}", start.schedule)),
        ..NewRun::default()
    };
    let checked = check_run(ports.store, &stored.definition, new).await?;
    let started = create_run(
        ports.store,
        ports.queue,
        ports.records,
        now,
        &stored,
        checked,
    )
    .await?;
    ports
        .records
        .put_record(
            SCHEDULE_LAST_RUN,
            &start.schedule,
            &json!({"run_id": started.run_id, "scheduled_time": format_time(time)}),
            None,
        )
        .await?;
    info!(schedule = %start.schedule, run_id = %started.run_id, scheduled_time = %format_time(time), "scheduled run started");
    Ok(Fired::Started {
        run_id: started.run_id,
        existing: started.existing,
        cancelled_previous,
    })
}

/// `flowgate serve`'s schedule clock: which schedules are due. It remembers each schedule's
/// next firing from when it first saw it (no catch-up for time the process was down, like
/// EventBridge with its flexible window off); a changed expression starts over.
#[derive(Debug, Default)]
pub struct Ticker {
    armed: HashMap<String, Armed>,
}

/// One schedule as the ticker last saw it, parsed once.
#[derive(Debug)]
struct Armed {
    expression: String,
    timezone: String,
    /// `None`: it cannot be evaluated (warned once, never fires).
    parsed: Option<Expression>,
    /// When the ticker first saw it (a rate counts from here).
    anchor: Millis,
    next: Option<Millis>,
}

impl Armed {
    fn new(entry: &ScheduleEntry, now: Millis) -> Self {
        let parsed = Expression::parse(&entry.expression, &entry.timezone)
            .inspect_err(|e| warn!(schedule = %entry.name, error = %e, "schedule cannot be evaluated; it never fires"))
            .ok();
        Armed {
            expression: entry.expression.clone(),
            timezone: entry.timezone.clone(),
            next: parsed.as_ref().and_then(|p| p.next_after(now, now)),
            parsed,
            anchor: now,
        }
    }

    fn is_for(&self, entry: &ScheduleEntry) -> bool {
        self.expression == entry.expression && self.timezone == entry.timezone
    }
}

impl Ticker {
    /// The starts due at `now` among `entries`, each with its scheduled time filled in.
    pub fn due(&mut self, entries: &[ScheduleEntry], now: Millis) -> Vec<ScheduledStart> {
        self.armed
            .retain(|name, _| entries.iter().any(|e| e.name == *name));
        let mut out = Vec::new();
        for entry in entries {
            match self.armed.get_mut(&entry.name) {
                Some(armed) if armed.is_for(entry) => {
                    if let (Some(at), Some(parsed)) = (armed.next, &armed.parsed)
                        && at <= now
                    {
                        let mut start = entry.target.clone();
                        start.scheduled_time = Some(format_time(at));
                        out.push(start);
                        // One firing per tick even if several were missed (a suspended laptop).
                        armed.next = parsed.next_after(now.max(at), armed.anchor);
                    }
                }
                // New or changed: arm it from now.
                _ => {
                    self.armed
                        .insert(entry.name.clone(), Armed::new(entry, now));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn entry(expression: &str) -> ScheduleEntry {
        ScheduleEntry {
            name: "w.0".into(),
            expression: expression.into(),
            timezone: "UTC".into(),
            target: ScheduledStart {
                schedule: "w.0".into(),
                workflow_id: "w".into(),
                workflow_version: 1,
                inputs: Map::new(),
                overlap: OverlapPolicy::Skip,
                scheduled_time: None,
            },
        }
    }

    #[test]
    fn the_ticker_fires_each_due_time_once_and_restarts_on_a_new_expression() {
        let t0 = parse_time("2026-11-21T12:00:30Z").expect("time");
        let mut ticker = Ticker::default();
        let entries = vec![entry("rate(1 minute)")];
        assert!(
            ticker.due(&entries, t0).is_empty(),
            "first sight only arms it"
        );
        assert!(ticker.due(&entries, t0 + 59_999).is_empty());
        let fired = ticker.due(&entries, t0 + 60_000);
        assert_eq!(fired.len(), 1);
        assert_eq!(
            fired[0].scheduled_time.as_deref(),
            Some("2026-11-21T12:01:30Z")
        );
        assert!(
            ticker.due(&entries, t0 + 60_500).is_empty(),
            "once per time"
        );
        // Asleep for five minutes: one firing, not five.
        assert_eq!(ticker.due(&entries, t0 + 6 * 60_000).len(), 1);

        let cron = vec![entry("cron(0 13 * * ? *)")];
        assert!(ticker.due(&cron, t0 + 6 * 60_000).is_empty(), "re-armed");
        let at_13 = parse_time("2026-11-21T13:00:00Z").expect("time");
        let fired = ticker.due(&cron, at_13);
        assert_eq!(fired.len(), 1);
        assert_eq!(
            fired[0].scheduled_time.as_deref(),
            Some("2026-11-21T13:00:00Z")
        );
        assert!(
            ticker.due(&[], at_13 + 1).is_empty(),
            "a removed schedule is forgotten"
        );
    }
}
