//! The embedded run and workflow store: one redb database file in a data directory.
//!
//! Same semantics as the DynamoDB store, proven by the same contract suite. Every write is one
//! redb write transaction; redb runs write transactions one at a time, so "check the version,
//! then write" inside a transaction is the conditional write DynamoDB does server-side. Values
//! are JSON. Listing runs scans the runs table and sorts in memory, which is fine for the run
//! counts of one laptop; due wake-ups and audit entries have ordered keys of their own.
//!
//! redb is synchronous, so each call runs on tokio's blocking pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::group_commit::GroupCommit;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::definition::{StoredWorkflow, WorkflowDefinition};
use crate::model::{AuditEntry, Millis, Run};
use crate::ports::{
    CreateOutcome, RunPage, RunQuery, RunStore, SessionRecord, StoreError, WorkflowStore,
    check_audit, check_put, page_in_memory,
};

/// Run id → run (JSON).
const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
/// (run id, seq) → audit entry (JSON).
const AUDIT: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("audit");
/// Idempotency key → run id.
const IDEMPOTENCY: TableDefinition<&str, &str> = TableDefinition::new("idempotency");
/// (wake_at, run id) of non-terminal runs: the sweeper's index.
const DUE: TableDefinition<(i64, &str), ()> = TableDefinition::new("due");
/// Session name → session record (JSON).
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// (workflow id, version) → stored workflow (JSON).
const WORKFLOW_VERSIONS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("workflow_versions");
/// Workflow id → latest version pointer (JSON).
const WORKFLOW_LATEST: TableDefinition<&str, &[u8]> = TableDefinition::new("workflow_latest");

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "flowgate.redb";

#[derive(Debug, Serialize, Deserialize)]
struct Latest {
    version: u64,
    deleted: bool,
}

/// Run and workflow store in one redb file. Cheap to clone. Writes are group-committed (see
/// [`group_commit`](super::group_commit)): each returns once it is durable, and concurrent
/// writes share the `fsync`.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
    sync: Arc<GroupCommit>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish()
    }
}

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Io(e) => StoreError::Unavailable {
            message: format!("embedded database I/O error: {e}"),
        },
        other => StoreError::Backend {
            message: format!("embedded database: {other}"),
        },
    }
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::invalid("value", format!("{what}: {e}")))
}

fn decode<T: DeserializeOwned>(
    what: impl FnOnce() -> String,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt(what(), e))
}

impl EmbeddedStore {
    /// Open (or create) `data_dir/flowgate.redb`, creating the directory if needed. One process
    /// at a time may hold the file open.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = data_dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend {
            message: format!("cannot create data directory {}: {e}", dir.display()),
        })?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).map_err(|e| StoreError::Backend {
            message: format!(
                "cannot open {}: {e} (is another flowgate process using this data directory?)",
                path.display()
            ),
        })?;
        // Create every table up front so read transactions never meet a missing table.
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(RUNS).map_err(db_err)?;
        txn.open_table(AUDIT).map_err(db_err)?;
        txn.open_table(IDEMPOTENCY).map_err(db_err)?;
        txn.open_table(DUE).map_err(db_err)?;
        txn.open_table(SESSIONS).map_err(db_err)?;
        txn.open_table(WORKFLOW_VERSIONS).map_err(db_err)?;
        txn.open_table(WORKFLOW_LATEST).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        tracing::debug!(path = %path.display(), "embedded store opened");
        let db = Arc::new(db);
        let sync = Arc::new(GroupCommit::start(Arc::clone(&db))?);
        Ok(Self { db, path, sync })
    }

    /// Durable commits made so far (each covers every write before it).
    pub fn sync_count(&self) -> u64 {
        self.sync.syncs()
    }

    /// Where the database file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` on the blocking pool (redb calls block on disk I/O and on other writers).
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Backend {
                message: format!("embedded store task failed: {e}"),
            })?
    }

    /// Run `f` in a write transaction committed without waiting for the disk, then wait until
    /// a durable commit covers it. `f` returning an error aborts the transaction (nothing is
    /// written).
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let sync = Arc::clone(&self.sync);
        let (value, seq) = self
            .blocking(move |db| {
                let mut txn = db.begin_write().map_err(db_err)?;
                txn.set_durability(Durability::None)
                    .map_err(|e| StoreError::Backend {
                        message: format!("embedded database: {e}"),
                    })?;
                let value = f(&txn)?;
                txn.commit().map_err(db_err)?;
                Ok((value, sync.committed()))
            })
            .await?;
        self.sync.durable(seq).await?;
        Ok(value)
    }

    /// One JSON value by string key (`what` names it in errors).
    async fn get_json<T: DeserializeOwned + Send + 'static>(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        key: &str,
        what: &'static str,
    ) -> Result<Option<T>, StoreError> {
        let key = key.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let table = txn.open_table(table).map_err(db_err)?;
            let Some(bytes) = table.get(key.as_str()).map_err(db_err)? else {
                return Ok(None);
            };
            decode(|| format!("{what} {key}"), bytes.value()).map(Some)
        })
        .await
    }
}

fn insert_audit(
    table: &mut redb::Table<'_, (&'static str, u64), &'static [u8]>,
    audit: &[AuditEntry],
) -> Result<(), StoreError> {
    for entry in audit {
        let bytes = encode("audit entry", entry)?;
        if table
            .insert((entry.run_id.as_str(), entry.seq), bytes.as_slice())
            .map_err(db_err)?
            .is_some()
        {
            return Err(StoreError::invalid(
                "audit",
                format!(
                    "audit entry {} of run {} already exists; audit seqs must be new",
                    entry.seq, entry.run_id
                ),
            ));
        }
    }
    Ok(())
}

#[async_trait]
impl RunStore for EmbeddedStore {
    async fn create_run(
        &self,
        run: &Run,
        audit: &[AuditEntry],
    ) -> Result<CreateOutcome, StoreError> {
        check_audit(run, audit)?;
        let run = run.clone();
        let audit = audit.to_vec();
        let bytes = encode("run", &run)?;
        self.write(move |txn| {
            {
                let mut idem = txn.open_table(IDEMPOTENCY).map_err(db_err)?;
                if let Some(key) = run.idempotency_key.as_deref()
                    && let Some(existing) = idem.get(key).map_err(db_err)?
                {
                    // Dropping the transaction uncommitted writes nothing.
                    return Ok(CreateOutcome::Existing(existing.value().to_string()));
                }
                let mut runs = txn.open_table(RUNS).map_err(db_err)?;
                if runs.get(run.id.as_str()).map_err(db_err)?.is_some() {
                    return Err(StoreError::AlreadyExists {
                        what: format!("run {}", run.id),
                    });
                }
                runs.insert(run.id.as_str(), bytes.as_slice())
                    .map_err(db_err)?;
                if let Some(key) = run.idempotency_key.as_deref() {
                    idem.insert(key, run.id.as_str()).map_err(db_err)?;
                }
                if let Some(at) = run.due_at() {
                    let mut due = txn.open_table(DUE).map_err(db_err)?;
                    due.insert((at, run.id.as_str()), ()).map_err(db_err)?;
                }
                let mut audit_table = txn.open_table(AUDIT).map_err(db_err)?;
                insert_audit(&mut audit_table, &audit)?;
            }

            Ok(CreateOutcome::Created)
        })
        .await
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<Run>, StoreError> {
        self.get_json(RUNS, run_id, "run").await
    }

    async fn put_run(
        &self,
        run: &Run,
        expected_version: u64,
        audit: &[AuditEntry],
    ) -> Result<(), StoreError> {
        check_put(run, expected_version)?;
        check_audit(run, audit)?;
        let run = run.clone();
        let audit = audit.to_vec();
        let bytes = encode("run", &run)?;
        self.write(move |txn| {
            {
                let mut runs = txn.open_table(RUNS).map_err(db_err)?;
                let stored: Run = match runs.get(run.id.as_str()).map_err(db_err)? {
                    Some(b) => decode(|| format!("run {}", run.id), b.value())?,
                    None => {
                        return Err(StoreError::NotFound {
                            what: format!("run {}", run.id),
                        });
                    }
                };
                if stored.version != expected_version {
                    return Err(StoreError::Conflict {
                        what: format!("run {} (now at version {})", run.id, stored.version),
                        expected: expected_version,
                    });
                }
                runs.insert(run.id.as_str(), bytes.as_slice())
                    .map_err(db_err)?;
                let mut due = txn.open_table(DUE).map_err(db_err)?;
                if let Some(at) = stored.due_at() {
                    due.remove((at, run.id.as_str())).map_err(db_err)?;
                }
                if let Some(at) = run.due_at() {
                    due.insert((at, run.id.as_str()), ()).map_err(db_err)?;
                }
                let mut audit_table = txn.open_table(AUDIT).map_err(db_err)?;
                insert_audit(&mut audit_table, &audit)?;
            }

            Ok(())
        })
        .await
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<RunPage, StoreError> {
        let cursor = query.validate()?;
        let query = query.clone();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let runs = txn.open_table(RUNS).map_err(db_err)?;
            let mut all = Vec::new();
            for row in runs.iter().map_err(db_err)? {
                let (key, value) = row.map_err(db_err)?;
                let run: Run = decode(|| format!("run {}", key.value()), value.value())?;
                if query.matches(&run) {
                    all.push(run);
                }
            }
            Ok(page_in_memory(all, &query, cursor.as_ref()))
        })
        .await
    }

    async fn due_runs(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<(String, Millis)>, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let due = txn.open_table(DUE).map_err(db_err)?;
            let mut out = Vec::new();
            for row in due.iter().map_err(db_err)? {
                let (key, _) = row.map_err(db_err)?;
                let (at, id) = key.value();
                if at > now || out.len() >= limit {
                    break;
                }
                out.push((id.to_string(), at));
            }
            Ok(out)
        })
        .await
    }

    async fn audit(
        &self,
        run_id: &str,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let Some(start) = after_seq.map_or(Some(0), |s| s.checked_add(1)) else {
            return Ok(Vec::new());
        };
        let id = run_id.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let table = txn.open_table(AUDIT).map_err(db_err)?;
            let mut out = Vec::new();
            let range = table
                .range((id.as_str(), start)..=(id.as_str(), u64::MAX))
                .map_err(db_err)?;
            for row in range.take(limit) {
                let (key, value) = row.map_err(db_err)?;
                let seq = key.value().1;
                out.push(decode(
                    || format!("audit entry {seq} of run {id}"),
                    value.value(),
                )?);
            }
            Ok(out)
        })
        .await
    }

    async fn find_idempotency_key(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let table = txn.open_table(IDEMPOTENCY).map_err(db_err)?;
            Ok(table
                .get(key.as_str())
                .map_err(db_err)?
                .map(|v| v.value().to_string()))
        })
        .await
    }

    async fn put_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let name = session.name.clone();
        let bytes = encode("session", session)?;
        self.write(move |txn| {
            txn.open_table(SESSIONS)
                .map_err(db_err)?
                .insert(name.as_str(), bytes.as_slice())
                .map_err(db_err)?;

            Ok(())
        })
        .await
    }

    async fn get_session(&self, name: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.get_json(SESSIONS, name, "session").await
    }

    async fn list_sessions(&self, active_only: bool) -> Result<Vec<SessionRecord>, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let table = txn.open_table(SESSIONS).map_err(db_err)?;
            let mut out: Vec<SessionRecord> = Vec::new();
            for row in table.iter().map_err(db_err)? {
                let (key, value) = row.map_err(db_err)?;
                let session: SessionRecord =
                    decode(|| format!("session {}", key.value()), value.value())?;
                if session.active || !active_only {
                    out.push(session);
                }
            }
            out.sort_by(|a, b| {
                b.updated_at
                    .cmp(&a.updated_at)
                    .then_with(|| a.name.cmp(&b.name))
            });
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl WorkflowStore for EmbeddedStore {
    async fn put_workflow(
        &self,
        definition: &WorkflowDefinition,
        now: Millis,
    ) -> Result<StoredWorkflow, StoreError> {
        let definition = definition.clone();
        self.write(move |txn| {
            let id = definition.id.clone();
            let stored = {
                let mut latest_table = txn.open_table(WORKFLOW_LATEST).map_err(db_err)?;
                let previous = match latest_table.get(id.as_str()).map_err(db_err)? {
                    Some(b) => {
                        decode::<Latest>(|| format!("workflow {id} pointer"), b.value())?.version
                    }
                    None => 0,
                };
                let stored = StoredWorkflow {
                    version: previous + 1,
                    created_at: now,
                    definition,
                };
                let mut versions = txn.open_table(WORKFLOW_VERSIONS).map_err(db_err)?;
                versions
                    .insert(
                        (id.as_str(), stored.version),
                        encode("workflow", &stored)?.as_slice(),
                    )
                    .map_err(db_err)?;
                let latest = Latest {
                    version: stored.version,
                    deleted: false,
                };
                latest_table
                    .insert(id.as_str(), encode("workflow pointer", &latest)?.as_slice())
                    .map_err(db_err)?;
                stored
            };

            Ok(stored)
        })
        .await
    }

    async fn get_workflow(
        &self,
        id: &str,
        version: Option<u64>,
    ) -> Result<Option<StoredWorkflow>, StoreError> {
        let id = id.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let version = match version {
                Some(v) => v,
                None => {
                    let latest_table = txn.open_table(WORKFLOW_LATEST).map_err(db_err)?;
                    let Some(b) = latest_table.get(id.as_str()).map_err(db_err)? else {
                        return Ok(None);
                    };
                    let latest: Latest = decode(|| format!("workflow {id} pointer"), b.value())?;
                    if latest.deleted {
                        return Ok(None);
                    }
                    latest.version
                }
            };
            let versions = txn.open_table(WORKFLOW_VERSIONS).map_err(db_err)?;
            let Some(b) = versions.get((id.as_str(), version)).map_err(db_err)? else {
                return Ok(None);
            };
            decode(|| format!("workflow {id} v{version}"), b.value()).map(Some)
        })
        .await
    }

    async fn list_workflows(&self) -> Result<Vec<StoredWorkflow>, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let latest_table = txn.open_table(WORKFLOW_LATEST).map_err(db_err)?;
            let versions = txn.open_table(WORKFLOW_VERSIONS).map_err(db_err)?;
            let mut out = Vec::new();
            // The table iterates in key order, so the result is sorted by id.
            for row in latest_table.iter().map_err(db_err)? {
                let (key, value) = row.map_err(db_err)?;
                let id = key.value();
                let latest: Latest = decode(|| format!("workflow {id} pointer"), value.value())?;
                if latest.deleted {
                    continue;
                }
                if let Some(b) = versions.get((id, latest.version)).map_err(db_err)? {
                    out.push(decode(
                        || format!("workflow {id} v{}", latest.version),
                        b.value(),
                    )?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn delete_workflow(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.write(move |txn| {
            {
                let mut latest_table = txn.open_table(WORKFLOW_LATEST).map_err(db_err)?;
                let latest: Latest = match latest_table.get(id.as_str()).map_err(db_err)? {
                    Some(b) => decode(|| format!("workflow {id} pointer"), b.value())?,
                    None => return Ok(false),
                };
                if latest.deleted {
                    return Ok(false);
                }
                let deleted = Latest {
                    version: latest.version,
                    deleted: true,
                };
                latest_table
                    .insert(
                        id.as_str(),
                        encode("workflow pointer", &deleted)?.as_slice(),
                    )
                    .map_err(db_err)?;
            }

            Ok(true)
        })
        .await
    }
}
