//! The invariants, checked on what a seed left behind: the store (runs and their audit logs),
//! the agent service's runs, and what the simulated people were told.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use flowgate_shared::model::{AuditEntry, Millis, Run, RunStatus};

use crate::agent::AgentRun;
use crate::scenario::{RUN_TIMEOUT_MS, WorkflowSpec};

/// How late after its timeout a run may still end: the sweeper's period plus its grace, a
/// visibility timeout, and the retries a faulty store and queue add on top.
pub const FINISH_GRACE_MS: Millis = 30 * 60_000;

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

/// An approval click as the person saw it answered.
#[derive(Debug, Clone)]
pub struct Click {
    pub approval_id: String,
    pub by: String,
    /// The engine recorded it (or found the same person's decision already recorded).
    pub accepted: bool,
}

/// Everything the checks look at.
#[derive(Debug)]
pub struct Evidence<'a> {
    pub runs: Vec<Run>,
    pub audits: BTreeMap<String, Vec<AuditEntry>>,
    pub agent_runs: Vec<AgentRun>,
    /// The virtual time at the end.
    pub now: Millis,
    /// Run ids the API answered start requests with, by idempotency key (every answer).
    pub started: BTreeMap<String, Vec<String>>,
    pub clicks: Vec<Click>,
    pub workflows: &'a BTreeMap<String, WorkflowSpec>,
}

/// Check every invariant; an empty list means the seed passed.
pub fn check(e: &Evidence<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut fail = |invariant: &'static str, detail: String| {
        out.push(Violation { invariant, detail });
    };
    let by_id: BTreeMap<&str, &Run> = e.runs.iter().map(|r| (r.id.as_str(), r)).collect();

    // No run lost: every run the API handed out exists, and one key named one run.
    for (key, ids) in &e.started {
        let distinct: BTreeSet<&String> = ids.iter().collect();
        if distinct.len() > 1 {
            fail(
                "one run per idempotency key",
                format!("start requests with key {key} were answered with runs {distinct:?}"),
            );
        }
        for id in distinct {
            if !by_id.contains_key(id.as_str()) {
                fail(
                    "no run lost",
                    format!("run {id} (key {key}) was accepted but is not in the store"),
                );
            }
        }
    }
    let mut keys: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for run in &e.runs {
        if let Some(key) = &run.idempotency_key {
            keys.entry(key).or_default().push(&run.id);
        }
    }
    for (key, ids) in keys {
        if ids.len() > 1 {
            fail(
                "one run per idempotency key",
                format!("runs {ids:?} share the key {key}"),
            );
        }
    }

    // Every run finished, and in time.
    for run in &e.runs {
        if !run.status.is_terminal() {
            fail(
                "every run finishes",
                format!(
                    "run {} ({}) is still {} with wake_at {:?}, {} min after it was created",
                    run.id,
                    run.workflow_id,
                    run.status,
                    run.wake_at,
                    (e.now - run.created_at) / 60_000
                ),
            );
            continue;
        }
        let retried = e
            .audits
            .get(&run.id)
            .is_some_and(|a| a.iter().any(|x| x.kind == "run.retried"));
        let queued_for = run.started_at.unwrap_or(run.created_at) - run.created_at;
        if let Some(done) = run.completed_at
            && !retried
            && done > run.created_at + queued_for + RUN_TIMEOUT_MS + FINISH_GRACE_MS
        {
            fail(
                "runs end by their timeout",
                format!(
                    "run {} ended {} min after it started; its timeout is {} min",
                    run.id,
                    (done - run.created_at - queued_for) / 60_000,
                    RUN_TIMEOUT_MS / 60_000
                ),
            );
        }
    }

    // At most one agent run per step attempt, and none left running.
    let mut per_session: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for agent in &e.agent_runs {
        per_session
            .entry(&agent.session_name)
            .or_default()
            .push(&agent.id);
        if !agent.status(e.now).is_terminal() {
            fail(
                "no agent run left running",
                format!(
                    "agent run {} ({}) is still {} after every run finished",
                    agent.id,
                    agent.session_name,
                    agent.status(e.now)
                ),
            );
        }
    }
    for (session, ids) in per_session {
        if ids.len() > 1 {
            fail(
                "at most one agent run per step attempt",
                format!("step attempt {session} has agent runs {ids:?}"),
            );
        }
    }

    // Approval decisions: only by allowed approvers, each applied once, none lost.
    let mut decided: BTreeMap<(String, String), usize> = BTreeMap::new();
    for run in &e.runs {
        let Some(audit) = e.audits.get(&run.id) else {
            continue;
        };
        let spec = e.workflows.get(&run.workflow_id);
        for entry in audit.iter().filter(|x| x.kind == "approval.decided") {
            let approval_id = entry.data["approval_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let step = entry.step_id.clone().unwrap_or_default();
            let allowed = spec
                .and_then(|s| s.approvers.get(&step))
                .is_some_and(|who| who.contains(&entry.actor));
            if !allowed || run.started_by.as_deref() == Some(entry.actor.as_str()) {
                fail(
                    "approvals decided only by allowed approvers",
                    format!(
                        "{} decided {approval_id} (step {step} of run {})",
                        entry.actor, run.id
                    ),
                );
            }
            *decided
                .entry((approval_id, entry.actor.clone()))
                .or_default() += 1;
        }
    }
    for ((approval_id, by), n) in &decided {
        if *n > 1 {
            fail(
                "each approval decision applied once",
                format!("{by}'s decision on {approval_id} is in the audit log {n} times"),
            );
        }
    }
    for click in e.clicks.iter().filter(|c| c.accepted) {
        if !decided.contains_key(&(click.approval_id.clone(), click.by.clone())) {
            fail(
                "an accepted approval decision is recorded",
                format!(
                    "{} was told their decision on {} was recorded, but the audit log has none",
                    click.by, click.approval_id
                ),
            );
        }
    }

    // The audit log accounts for every transition.
    for run in &e.runs {
        let audit = e.audits.get(&run.id).map(Vec::as_slice).unwrap_or(&[]);
        audit_accounts(run, audit, &mut fail);
    }
    out
}

fn audit_accounts(run: &Run, audit: &[AuditEntry], fail: &mut impl FnMut(&'static str, String)) {
    let seqs: Vec<u64> = audit.iter().map(|a| a.seq).collect();
    let contiguous = seqs.iter().enumerate().all(|(i, s)| *s == i as u64);
    if !contiguous || seqs.len() as u64 != run.audit_seq {
        fail(
            "the audit log accounts for every transition",
            format!(
                "run {}: audit seqs are not 0..{} (got {} entries)",
                run.id,
                run.audit_seq,
                seqs.len()
            ),
        );
        return;
    }
    if run.status.is_terminal() {
        let expected = match run.status {
            RunStatus::Succeeded => "run.completed",
            RunStatus::Cancelled => "run.cancelled",
            _ => "run.failed",
        };
        let last = audit.iter().rev().find(|a| {
            matches!(
                a.kind.as_str(),
                "run.completed" | "run.cancelled" | "run.failed"
            )
        });
        if last.map(|a| a.kind.as_str()) != Some(expected) {
            fail(
                "the audit log accounts for every transition",
                format!(
                    "run {} is {} but its last run-level entry is {:?}",
                    run.id,
                    run.status,
                    last.map(|a| &a.kind)
                ),
            );
        }
    }
    for (id, step) in &run.steps {
        if !step.status.is_terminal() {
            continue;
        }
        let kind = format!("step.{}", step.status);
        if !audit
            .iter()
            .any(|a| a.kind == kind && a.step_id.as_deref() == Some(id.as_str()))
        {
            fail(
                "the audit log accounts for every transition",
                format!(
                    "step {id} of run {} is {} without a {kind} entry",
                    run.id, step.status
                ),
            );
        }
    }
}
