//! Completion chaining: a run that finished starts the workflows whose `workflow_completed`
//! trigger names its workflow (and, when the trigger lists statuses, one of them), with inputs
//! rendered from the finished run (`${{ run.outputs.x }}`, see
//! [`render_completion`](crate::template::render_completion)).
//!
//! It runs from the finished run's lifecycle delivery (`run.completed`, `run.failed`,
//! `run.cancelled`), so it inherits that delivery's retries: a store that is briefly away
//! delays the chain instead of losing it. Redeliveries are harmless because every step is
//! idempotent:
//!
//! - the started run carries the idempotency key `chain:<finished run>:<workflow>`, so a
//!   second delivery gets the first run back instead of a second one;
//! - what happened is written to the finished run's audit log once per (run, workflow):
//!   `chain.started` (naming the run started), `chain.stopped` (the depth limit tripped) or
//!   `chain.failed` (the inputs could not be mapped or were refused), and a workflow that
//!   already has one of these entries is not looked at again. So a run chains each workflow at
//!   most once, also when a manual retry makes it finish a second time.
//!
//! Loops (X starts Y, Y starts X) end at [`MAX_CHAIN_DEPTH`]: every chained run is one deeper
//! than the run that started it, and the run that would go past the limit is not started.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tracing::{debug, error, info, warn};

use super::deliver::MAX_DELIVERY_ATTEMPTS;
use super::error::ExecError;
use super::executor::{Executor, MAX_WRITE_ATTEMPTS};
use super::start::{NewRun, StartError, check_run, create_run};
use crate::definition::{StoredWorkflow, TriggerDef};
use crate::model::{AuditEntry, Millis, Run, RunStatus};
use crate::notify::Outcome;
use crate::template;

/// How many runs deep a chain may go: a run started by a run started by an API call has
/// depth 2, and a run at this depth starts no further runs. Five covers real pipelines
/// (build → test → deploy → verify → report) while ending a loop of workflows that trigger each
/// other after a handful of runs instead of never.
pub const MAX_CHAIN_DEPTH: u32 = 5;

/// The lifecycle events of a run that finished.
pub(super) const FINISHED_EVENTS: [&str; 3] = ["run.completed", "run.failed", "run.cancelled"];

/// How long the list of workflows that others chain on is reused before it is read again. A
/// run that finishes queues its lifecycle delivery (a message and an invocation) only when
/// something needs it; whether another workflow chains on it comes from this list, so a
/// `workflow_completed` trigger added to a workflow applies to runs that finish up to this
/// long after it was stored (as a new webhook subscription gets events within
/// [`SUBSCRIPTIONS_CACHE_TTL`](crate::notify::webhooks::SUBSCRIPTIONS_CACHE_TTL)).
pub const CHAIN_SOURCES_TTL_MS: Millis = 30_000;

/// Audit entries read per call when looking for earlier chain entries.
const AUDIT_PAGE: usize = 100;

/// Audit kinds that record what chaining did for one (run, workflow).
const CHAIN_KINDS: [&str; 3] = ["chain.started", "chain.stopped", "chain.failed"];

/// One audit entry to write to the finished run.
#[derive(Debug, Clone)]
struct Note {
    kind: &'static str,
    message: String,
    data: Value,
}

impl Executor {
    /// Start the workflows chained to `run` finishing (`event` is its lifecycle event; other
    /// events do nothing). `Some` asks the delivery to be retried later (the store was away);
    /// on the last delivery attempt the failure is logged instead, so Slack and webhooks still
    /// get the event.
    pub(super) async fn chain(&self, run: &Run, event: &str, attempt: u32) -> Option<Outcome> {
        if !FINISHED_EVENTS.contains(&event) || !run.status.is_terminal() {
            return None;
        }
        match self.try_chain(run).await {
            Ok(()) => None,
            Err(e) if e.is_retryable() && attempt < MAX_DELIVERY_ATTEMPTS => Some(Outcome::Retry {
                after: Duration::from_secs(5u64 << attempt.min(6)),
                error: format!("completion chaining of run {}: {e}", run.id),
            }),
            Err(e) => {
                error!(run_id = %run.id, attempt, error = %e, "completion chaining failed; the workflows chained to this run were not started (start them through the API)");
                None
            }
        }
    }

    async fn try_chain(&self, run: &Run) -> Result<(), ExecError> {
        let targets = self.chain_targets(run).await?;
        if targets.is_empty() {
            return Ok(());
        }
        let mut handled = self.chained_workflows(&run.id).await?;
        let mut notes = Vec::new();
        for (stored, inputs) in &targets {
            if handled.insert(stored.definition.id.clone()) {
                notes.push(self.chain_one(run, stored, inputs).await?);
            }
        }
        self.append_notes(&run.id, notes).await
    }

    /// Whether some stored workflow has a `workflow_completed` trigger naming `workflow_id`,
    /// from a list at most [`CHAIN_SOURCES_TTL_MS`] old (by the executor's clock). A store
    /// error answers `true`: when in doubt, deliver and let chaining read the workflows itself.
    pub(super) async fn chained_from(&self, workflow_id: &str) -> bool {
        let now = self.clock.now_ms();
        let cached = self
            .chain_sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some((at, sources)) = cached
            && (0..CHAIN_SOURCES_TTL_MS).contains(&(now - at))
        {
            return sources.contains(workflow_id);
        }
        match self.workflows.list_workflows().await {
            Ok(list) => {
                let sources: std::collections::HashSet<String> = list
                    .iter()
                    .flat_map(|stored| &stored.definition.triggers)
                    .filter_map(|t| match t {
                        TriggerDef::WorkflowCompleted { workflow, .. } => Some(workflow.clone()),
                        _ => None,
                    })
                    .collect();
                let chained = sources.contains(workflow_id);
                *self
                    .chain_sources
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((now, std::sync::Arc::new(sources)));
                chained
            }
            Err(e) => {
                debug!(error = %e, "could not list workflows; delivering the run's end anyway");
                true
            }
        }
    }

    /// The stored workflows (latest versions) with a `workflow_completed` trigger matching how
    /// `run` ended, each with the input templates of its first matching trigger.
    async fn chain_targets(
        &self,
        run: &Run,
    ) -> Result<Vec<(StoredWorkflow, BTreeMap<String, String>)>, ExecError> {
        let mut targets = Vec::new();
        for stored in self.workflows.list_workflows().await? {
            let matching = stored.definition.triggers.iter().find_map(|t| match t {
                TriggerDef::WorkflowCompleted {
                    workflow,
                    statuses,
                    inputs,
                } if *workflow == run.workflow_id && status_matches(statuses, run.status) => {
                    Some(inputs.clone())
                }
                _ => None,
            });
            if let Some(inputs) = matching {
                targets.push((stored, inputs));
            }
        }
        Ok(targets)
    }

    /// Workflows that already have a chain entry in the run's audit log.
    async fn chained_workflows(&self, run_id: &str) -> Result<BTreeSet<String>, ExecError> {
        let mut found = BTreeSet::new();
        let mut after = None;
        loop {
            let page = self.store.audit(run_id, after, AUDIT_PAGE).await?;
            for entry in &page {
                if CHAIN_KINDS.contains(&entry.kind.as_str())
                    && let Some(workflow) = entry.data.get("workflow").and_then(Value::as_str)
                {
                    found.insert(workflow.to_string());
                }
            }
            match page.last() {
                Some(last) if page.len() == AUDIT_PAGE => after = Some(last.seq),
                _ => return Ok(found),
            }
        }
    }

    /// Start `stored` for `run` (or say why not). `Err` only for trouble that may pass.
    async fn chain_one(
        &self,
        run: &Run,
        stored: &StoredWorkflow,
        templates: &BTreeMap<String, String>,
    ) -> Result<Note, ExecError> {
        let target = stored.definition.id.as_str();
        let depth = run.chain_depth.saturating_add(1);
        if depth > MAX_CHAIN_DEPTH {
            warn!(run_id = %run.id, workflow_id = %target, depth, "chain-depth limit reached; not starting the chained workflow");
            return Ok(Note {
                kind: "chain.stopped",
                message: format!(
                    "would start {target} at chain depth {depth}; the chain-depth limit is {MAX_CHAIN_DEPTH}, so it was not started (workflows that trigger each other loop: end the loop with trigger statuses, or start {target} through the API)"
                ),
                data: json!({"workflow": target, "chain_depth": depth, "limit": MAX_CHAIN_DEPTH}),
            });
        }
        let failed = |reason: String| Note {
            kind: "chain.failed",
            message: format!("could not start {target}: {reason}"),
            data: json!({"workflow": target, "error": reason}),
        };
        let mut inputs = Map::new();
        for (name, template) in templates {
            match template::render_completion(template, run) {
                Ok(value) => {
                    inputs.insert(name.clone(), value);
                }
                Err(e) => {
                    return Ok(failed(format!(
                        "input {name} of its workflow_completed trigger: {e}; fix the trigger in workflow {target}"
                    )));
                }
            }
        }
        let new = NewRun {
            workflow_id: target.to_string(),
            inputs,
            idempotency_key: Some(format!("chain:{}:{target}", run.id)),
            started_by: Some(format!("chain:{}", run.id)),
            parent_run_id: Some(run.id.clone()),
            chain_depth: depth,
            ..NewRun::default()
        };
        let Some(records) = self.records() else {
            return Err(ExecError::Config(
                "completion chaining needs a record store (configure a notifier)".into(),
            ));
        };
        let started = match check_run(&*self.store, &stored.definition, new).await {
            Ok(checked) => {
                create_run(
                    &*self.store,
                    &*self.queue,
                    &*records,
                    self.clock.now_ms(),
                    stored,
                    checked,
                )
                .await
            }
            Err(e) => Err(e),
        };
        match started {
            Ok(started) => {
                info!(run_id = %run.id, workflow_id = %target, chained_run_id = %started.run_id, depth, existing = started.existing, "chained run started");
                Ok(Note {
                    kind: "chain.started",
                    message: format!(
                        "started {target} as run {} (chain depth {depth})",
                        started.run_id
                    ),
                    data: json!({"workflow": target, "run_id": started.run_id, "chain_depth": depth}),
                })
            }
            Err(StartError::Store(e)) if e.is_retryable() => Err(e.into()),
            Err(StartError::InvalidInputs { problems, .. }) => {
                let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
                let reason = format!(
                    "its inputs do not fit: {}; map them from this run in the workflow_completed trigger of workflow {target}, or give those inputs defaults",
                    problems.join("; ")
                );
                warn!(run_id = %run.id, workflow_id = %target, error = %reason, "chained run refused");
                Ok(failed(reason))
            }
            Err(e) => {
                warn!(run_id = %run.id, workflow_id = %target, error = %e, "chained run not started");
                Ok(failed(e.to_string()))
            }
        }
    }

    /// Append `notes` to the run's audit log, conditionally on the run's version; after a lost
    /// race the log is read again and notes another writer (a concurrent redelivery) already
    /// wrote are dropped.
    async fn append_notes(&self, run_id: &str, mut notes: Vec<Note>) -> Result<(), ExecError> {
        for attempt in 1..=MAX_WRITE_ATTEMPTS {
            if attempt > 1 {
                let handled = self.chained_workflows(run_id).await?;
                notes.retain(|n| {
                    n.data
                        .get("workflow")
                        .and_then(Value::as_str)
                        .is_none_or(|w| !handled.contains(w))
                });
            }
            if notes.is_empty() {
                return Ok(());
            }
            let Some(mut run) = self.store.get_run(run_id).await? else {
                debug!("the run no longer exists; its chain entries are not written");
                return Ok(());
            };
            let expected = run.version;
            let now = self.clock.now_ms();
            let entries: Vec<AuditEntry> = notes
                .iter()
                .zip(run.audit_seq..)
                .map(|(note, seq)| AuditEntry {
                    run_id: run_id.to_string(),
                    seq,
                    at: now,
                    actor: "system".to_string(),
                    kind: note.kind.to_string(),
                    step_id: None,
                    attempt: None,
                    message: note.message.clone(),
                    data: note.data.clone(),
                })
                .collect();
            run.audit_seq += entries.len() as u64;
            run.version = expected + 1;
            run.updated_at = now;
            match self.store.put_run(&run, expected, &entries).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_conflict() => {
                    debug!(
                        attempt,
                        "the run changed while writing chain entries; reading it again"
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ExecError::Contention {
            run_id: run_id.to_string(),
            attempts: MAX_WRITE_ATTEMPTS,
        })
    }
}

/// Whether a trigger's `statuses` (none = any way of finishing) include `status`.
fn status_matches(statuses: &[String], status: RunStatus) -> bool {
    statuses.is_empty()
        || statuses
            .iter()
            .any(|s| s.parse::<RunStatus>().ok() == Some(status))
}
