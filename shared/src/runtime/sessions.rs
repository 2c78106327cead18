//! Session records: which agent conversation a run's steps used, so later runs can continue it.
//!
//! A record is upserted when an agent step of a run gets (or starts with) an agent session id,
//! and marked inactive when the run that used it last finishes. The store keeps sessions
//! last-writer-wins; a lost update is repaired the next time a step uses the session, so a
//! failure here is logged and never fails the message.

use tracing::warn;

use super::executor::{Applied, Before, Executor};
use crate::model::{Millis, Run};
use crate::ports::{RunStore, SessionRecord, SessionRun, StoreError};

/// The session record name a step's agent conversation is filed under: the run's
/// `session_name` when it has one (all its steps share it), else `{run_id}.{step}`.
pub fn session_record_name(run: &Run, step: &str) -> String {
    run.session_name
        .clone()
        .unwrap_or_else(|| format!("{}.{step}", run.id))
}

impl Executor {
    pub(super) async fn record_sessions(&self, applied: &Applied) {
        record_sessions(
            self.store.as_ref(),
            &applied.before,
            &applied.run,
            self.clock.now_ms(),
        )
        .await;
    }
}

/// Upsert the session records of steps whose agent session id `run` has and `before` had
/// not, and mark the run's sessions inactive when this decision finished it. Also used by
/// [`create_run`](super::create_run), which decides a run's start before any executor sees it.
pub(super) async fn record_sessions(store: &dyn RunStore, before: &Before, run: &Run, now: Millis) {
    for (step, state) in &run.steps {
        let Some(session_id) = state.agent.as_ref().and_then(|a| a.session_id.as_ref()) else {
            continue;
        };
        let had = before.sessions.get(step).and_then(Option::as_ref);
        if had == Some(session_id) {
            continue;
        }
        let name = session_record_name(run, step);
        if let Err(e) = upsert_session(store, &name, session_id, run, step, now).await {
            warn!(session = %name, step_id = %step, error = %e, "could not record the agent session");
        }
    }
    if !before.status.is_terminal() && run.status.is_terminal() {
        let mut names: Vec<String> = run
            .steps
            .iter()
            .filter(|(_, s)| s.agent.as_ref().is_some_and(|a| a.session_id.is_some()))
            .map(|(step, _)| session_record_name(run, step))
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            if let Err(e) = close_session(store, &name, run, now).await {
                warn!(session = %name, error = %e, "could not mark the agent session inactive");
            }
        }
    }
}

async fn upsert_session(
    store: &dyn RunStore,
    name: &str,
    session_id: &str,
    run: &Run,
    step: &str,
    now: i64,
) -> Result<(), StoreError> {
    let mut record = store
        .get_session(name)
        .await?
        .unwrap_or_else(|| SessionRecord {
            name: name.to_string(),
            agent_session_id: None,
            runs: Vec::new(),
            active: true,
            created_at: now,
            updated_at: now,
        });
    record.agent_session_id = Some(session_id.to_string());
    if !record
        .runs
        .iter()
        .any(|r| r.run_id == run.id && r.step_id == step)
    {
        record.runs.push(SessionRun {
            run_id: run.id.clone(),
            step_id: step.to_string(),
            at: now,
        });
    }
    record.active = !run.status.is_terminal();
    record.updated_at = now;
    store.put_session(&record).await
}

/// Inactive, unless a later run has used the session since.
async fn close_session(
    store: &dyn RunStore,
    name: &str,
    run: &Run,
    now: i64,
) -> Result<(), StoreError> {
    let Some(mut record) = store.get_session(name).await? else {
        return Ok(());
    };
    let last_user = record.runs.last().map(|r| r.run_id.as_str());
    if !record.active || last_user.is_some_and(|id| id != run.id) {
        return Ok(());
    }
    record.active = false;
    record.updated_at = now;
    store.put_session(&record).await
}
