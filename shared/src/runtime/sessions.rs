//! Session records: which agent conversation a run's steps used, so later runs can continue it.
//!
//! A record is upserted when an agent step of a run gets (or starts with) an agent session id.
//! Whether a session is active (its last run still going) is not written when that run ends:
//! [`live_sessions`] reads it from the run when someone lists or reads sessions. Writing it
//! cost every agent step a second session write and an index write on DynamoDB, for an answer
//! only a listing needs. The store keeps sessions last-writer-wins; a lost update is repaired
//! the next time a step uses the session, so a failure here is logged and never fails the
//! message.

use futures::StreamExt as _;
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
/// not. Also used by [`create_run`](super::create_run), which decides a run's start before
/// any executor sees it.
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

/// Runs whose status [`live_sessions`] reads at once.
const LIVE_SESSION_READS: usize = 16;

/// `records` with `active` as it is now: a session is active while the last run that used it
/// has not finished. Records stored inactive (by earlier versions, which wrote it) stay so;
/// a last run that is gone (expired) counts as finished. One run read per session stored
/// active, eventually consistent: this is for people and assistants listing sessions.
pub async fn live_sessions(
    store: &dyn RunStore,
    records: Vec<SessionRecord>,
) -> Result<Vec<SessionRecord>, StoreError> {
    futures::stream::iter(records)
        .map(|record| live_session(store, record))
        .buffered(LIVE_SESSION_READS)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// [`live_sessions`] of one record.
pub async fn live_session(
    store: &dyn RunStore,
    mut record: SessionRecord,
) -> Result<SessionRecord, StoreError> {
    if record.active
        && let Some(last) = record.runs.last()
    {
        let run = store.get_run_relaxed(&last.run_id).await?;
        record.active = run.is_some_and(|r| !r.status.is_terminal());
    }
    Ok(record)
}
