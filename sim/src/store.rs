//! The embedded store (redb, in memory) as one process sees it: behind that process's fuse,
//! with calls that fail before taking effect, crashes right after a call took effect, and
//! races: before a conditional run write, another process may handle a message of the same
//! run, so the write meets the version that process wrote and the executor must re-read and
//! decide again, exactly as two Lambda instances racing on one run would.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use flowgate_shared::adapters::embedded::EmbeddedStore;
use flowgate_shared::definition::{StoredWorkflow, WorkflowDefinition};
use flowgate_shared::model::{AuditEntry, Millis, Run};
use flowgate_shared::ports::{
    CreateOutcome, RecordStore, RunPage, RunQuery, RunStore, SessionRecord, StoreError,
    WorkflowStore,
};
use serde_json::Value;

use crate::chaos::{Chaos, FaultCounts, Fuse};

/// Another process that can be made to handle one message of a run right now.
#[async_trait]
pub trait Interloper: Send + Sync {
    /// Handle one visible message of `run_id`, if there is one. Whatever happens to it is
    /// that process's business (it has its own fuse).
    async fn interfere(&self, run_id: &str);
}

/// The embedded store behind a process's fuse and the seed's faults.
pub struct FaultStore {
    pub inner: Arc<EmbeddedStore>,
    pub fuse: Arc<Fuse>,
    pub chaos: Arc<Chaos>,
    /// Set for the processes whose writes may be raced (not for the interloper itself, so
    /// interference never nests).
    pub interloper: OnceLock<Arc<dyn Interloper>>,
}

impl std::fmt::Debug for FaultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultStore").finish_non_exhaustive()
    }
}

fn crashed() -> StoreError {
    StoreError::Unavailable {
        message: "simulated crash: the process died".into(),
    }
}

impl FaultStore {
    pub fn new(inner: Arc<EmbeddedStore>, fuse: Arc<Fuse>, chaos: Arc<Chaos>) -> Self {
        FaultStore {
            inner,
            fuse,
            chaos,
            interloper: OnceLock::new(),
        }
    }

    /// Before a call: refuse if dead; maybe fail without effect.
    fn enter(&self) -> Result<(), StoreError> {
        if self.fuse.is_dead() {
            return Err(crashed());
        }
        if self.chaos.chance(self.chaos.faults.store_unavailable) {
            FaultCounts::bump(&self.chaos.counts.store_errors);
            return Err(StoreError::Unavailable {
                message: "simulated: the store throttled the request".into(),
            });
        }
        Ok(())
    }

    /// After a call took effect: maybe die (the caller gets an error, the effect stands).
    fn leave(&self) -> Result<(), StoreError> {
        if self.chaos.chance(self.chaos.faults.crash_after_call) {
            FaultCounts::bump(&self.chaos.counts.crashes);
            self.fuse.kill();
            return Err(crashed());
        }
        Ok(())
    }

    async fn maybe_race(&self, run_id: &str) {
        if let Some(other) = self.interloper.get()
            && self.chaos.chance(self.chaos.faults.race_before_write)
        {
            FaultCounts::bump(&self.chaos.counts.races);
            other.interfere(run_id).await;
        }
    }
}

macro_rules! guarded {
    ($self:ident, $call:expr) => {{
        $self.enter()?;
        let out = $call.await;
        $self.leave()?;
        out
    }};
}

#[async_trait]
impl RunStore for FaultStore {
    async fn create_run(
        &self,
        run: &Run,
        audit: &[AuditEntry],
    ) -> Result<CreateOutcome, StoreError> {
        guarded!(self, self.inner.create_run(run, audit))
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<Run>, StoreError> {
        guarded!(self, self.inner.get_run(run_id))
    }

    async fn put_run(
        &self,
        run: &Run,
        expected_version: u64,
        audit: &[AuditEntry],
    ) -> Result<(), StoreError> {
        self.enter()?;
        self.maybe_race(&run.id).await;
        if self.fuse.is_dead() {
            return Err(crashed());
        }
        let out = self.inner.put_run(run, expected_version, audit).await;
        self.leave()?;
        out
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<RunPage, StoreError> {
        guarded!(self, self.inner.list_runs(query))
    }

    async fn due_runs(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<(String, Millis)>, StoreError> {
        guarded!(self, self.inner.due_runs(now, limit))
    }

    async fn audit(
        &self,
        run_id: &str,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        guarded!(self, self.inner.audit(run_id, after_seq, limit))
    }

    async fn find_idempotency_key(&self, key: &str) -> Result<Option<String>, StoreError> {
        guarded!(self, self.inner.find_idempotency_key(key))
    }

    async fn put_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        guarded!(self, self.inner.put_session(session))
    }

    async fn get_session(&self, name: &str) -> Result<Option<SessionRecord>, StoreError> {
        guarded!(self, self.inner.get_session(name))
    }

    async fn list_sessions(&self, active_only: bool) -> Result<Vec<SessionRecord>, StoreError> {
        guarded!(self, self.inner.list_sessions(active_only))
    }
}

#[async_trait]
impl WorkflowStore for FaultStore {
    async fn put_workflow(
        &self,
        definition: &WorkflowDefinition,
        now: Millis,
    ) -> Result<StoredWorkflow, StoreError> {
        guarded!(self, self.inner.put_workflow(definition, now))
    }

    async fn get_workflow(
        &self,
        id: &str,
        version: Option<u64>,
    ) -> Result<Option<StoredWorkflow>, StoreError> {
        guarded!(self, self.inner.get_workflow(id, version))
    }

    async fn list_workflows(&self) -> Result<Vec<StoredWorkflow>, StoreError> {
        guarded!(self, self.inner.list_workflows())
    }

    async fn delete_workflow(&self, id: &str) -> Result<bool, StoreError> {
        guarded!(self, self.inner.delete_workflow(id))
    }
}

#[async_trait]
impl RecordStore for FaultStore {
    async fn create_record(
        &self,
        collection: &str,
        id: &str,
        value: &Value,
        expires_at: Option<Millis>,
    ) -> Result<bool, StoreError> {
        guarded!(
            self,
            self.inner.create_record(collection, id, value, expires_at)
        )
    }

    async fn put_record(
        &self,
        collection: &str,
        id: &str,
        value: &Value,
        expires_at: Option<Millis>,
    ) -> Result<(), StoreError> {
        guarded!(
            self,
            self.inner.put_record(collection, id, value, expires_at)
        )
    }

    async fn get_record(&self, collection: &str, id: &str) -> Result<Option<Value>, StoreError> {
        guarded!(self, self.inner.get_record(collection, id))
    }

    async fn list_records(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Value)>, StoreError> {
        guarded!(self, self.inner.list_records(collection, after, limit))
    }

    async fn delete_record(&self, collection: &str, id: &str) -> Result<bool, StoreError> {
        guarded!(self, self.inner.delete_record(collection, id))
    }
}
