//! The embedded run and workflow store: one redb database file in a data directory.
//!
//! Same semantics as the DynamoDB store, proven by the same contract suite. Every write is one
//! redb write transaction; redb runs write transactions one at a time, so "check the version,
//! then write" inside a transaction is the conditional write DynamoDB does server-side. Values
//! are JSON. Listing runs scans the runs table and sorts in memory, which is fine for the run
//! counts of one laptop; due wake-ups and audit entries have ordered keys of their own, and so
//! do records (by collection and id, plus an expiry table for their lazy deletion).
//!
//! redb is synchronous, so each call runs on tokio's blocking pool.

use std::ops::Bound;
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
    CreateOutcome, RecordStore, RunPage, RunQuery, RunStore, SessionRecord, StoreError,
    WorkflowStore, check_audit, check_put, check_record_key, check_record_list, check_record_value,
    page_in_memory, record_expired, record_now,
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
/// (collection, id) → record ([`StoredRecord`] JSON); tuple keys order by collection, then id
/// in byte order, which is the listing order.
const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");
/// (expires_at, collection, id) of records with an expiry, oldest first: lets each record write
/// delete a few expired records without scanning (the lazy deletion DynamoDB's TTL does).
const RECORD_EXPIRY: TableDefinition<(i64, &str, &str), ()> = TableDefinition::new("record_expiry");

/// Most expired records one record write deletes, so cleanup never makes a write slow.
const RECORD_PURGE_PER_WRITE: usize = 16;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "flowgate.redb";

#[derive(Debug, Serialize, Deserialize)]
struct Latest {
    version: u64,
    deleted: bool,
}

/// A record as stored: its value and expiry (`V` borrows the value when writing).
#[derive(Debug, Serialize, Deserialize)]
struct StoredRecord<V> {
    value: V,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<Millis>,
}

/// Just the expiry of a stored record (the value is skipped, not decoded).
#[derive(Debug, Deserialize)]
struct StoredExpiry {
    #[serde(default)]
    expires_at: Option<Millis>,
}

/// Run and workflow store in one redb file. Cheap to clone. Writes are group-committed (see
/// [`group_commit`](super::group_commit)): each returns once it is durable, and concurrent
/// writes share the `fsync`.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
    /// The durability waiter of a file store; `None` in memory, where there is no disk to wait
    /// for and every call runs inline on the caller's task (see [`EmbeddedStore::in_memory`]).
    sync: Option<Arc<GroupCommit>>,
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
        Self::from_database(db, path, true)
    }

    /// A store held in memory only (redb's in-memory backend): the same tables, transactions
    /// and conditional writes as [`EmbeddedStore::open`] without a file, for the seeded
    /// simulation, which opens thousands of stores and must replay exactly from a seed. Calls
    /// run inline on the caller's task (memory never blocks for long, and no thread pool means
    /// no scheduling the seed does not decide) and commits need no `fsync`. Everything is lost
    /// when the store is dropped.
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| StoreError::Backend {
                message: format!("cannot create an in-memory database: {e}"),
            })?;
        Self::from_database(db, PathBuf::from(":memory:"), false)
    }

    fn from_database(db: Database, path: PathBuf, on_disk: bool) -> Result<Self, StoreError> {
        // Create every table up front so read transactions never meet a missing table.
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(RUNS).map_err(db_err)?;
        txn.open_table(AUDIT).map_err(db_err)?;
        txn.open_table(IDEMPOTENCY).map_err(db_err)?;
        txn.open_table(DUE).map_err(db_err)?;
        txn.open_table(SESSIONS).map_err(db_err)?;
        txn.open_table(WORKFLOW_VERSIONS).map_err(db_err)?;
        txn.open_table(WORKFLOW_LATEST).map_err(db_err)?;
        txn.open_table(RECORDS).map_err(db_err)?;
        txn.open_table(RECORD_EXPIRY).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        tracing::debug!(path = %path.display(), "embedded store opened");
        let db = Arc::new(db);
        let sync = if on_disk {
            Some(Arc::new(GroupCommit::start(Arc::clone(&db))?))
        } else {
            None
        };
        Ok(Self { db, path, sync })
    }

    /// Durable commits made so far (each covers every write before it).
    pub fn sync_count(&self) -> u64 {
        self.sync.as_ref().map_or(0, |s| s.syncs())
    }

    /// Where the database file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` on the blocking pool (redb calls block on disk I/O and on other writers), or
    /// inline for an in-memory store.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        if self.sync.is_none() {
            return f(&self.db);
        }
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
        let sync = self.sync.clone();
        let (value, seq) = self
            .blocking(move |db| {
                let mut txn = db.begin_write().map_err(db_err)?;
                // On disk the group commit makes it durable; in memory an immediate commit
                // costs nothing (no fsync) and lets redb reuse the pages it frees.
                let durability = if sync.is_some() {
                    Durability::None
                } else {
                    Durability::Immediate
                };
                txn.set_durability(durability)
                    .map_err(|e| StoreError::Backend {
                        message: format!("embedded database: {e}"),
                    })?;
                let value = f(&txn)?;
                txn.commit().map_err(db_err)?;
                Ok((value, sync.map(|s| s.committed())))
            })
            .await?;
        if let (Some(sync), Some(seq)) = (&self.sync, seq) {
            sync.durable(seq).await?;
        }
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

type RecordsTable<'t> = redb::Table<'t, (&'static str, &'static str), &'static [u8]>;
type RecordExpiryTable<'t> = redb::Table<'t, (i64, &'static str, &'static str), ()>;

/// The expiry of the record stored under (collection, id), `None` inside when it has none;
/// `None` outside when there is no record.
fn stored_expiry(
    records: &RecordsTable<'_>,
    collection: &str,
    id: &str,
) -> Result<Option<Option<Millis>>, StoreError> {
    match records.get((collection, id)).map_err(db_err)? {
        Some(bytes) => {
            let stored: StoredExpiry =
                decode(|| format!("record {collection}/{id}"), bytes.value())?;
            Ok(Some(stored.expires_at))
        }
        None => Ok(None),
    }
}

/// Write (collection, id) → `bytes`, replacing a record that had expiry `old`, and keep the
/// expiry index in step.
fn insert_record(
    records: &mut RecordsTable<'_>,
    expiry: &mut RecordExpiryTable<'_>,
    (collection, id): (&str, &str),
    bytes: &[u8],
    old: Option<Millis>,
    new: Option<Millis>,
) -> Result<(), StoreError> {
    if let Some(at) = old {
        expiry.remove((at, collection, id)).map_err(db_err)?;
    }
    records.insert((collection, id), bytes).map_err(db_err)?;
    if let Some(at) = new {
        expiry.insert((at, collection, id), ()).map_err(db_err)?;
    }
    Ok(())
}

/// Delete up to [`RECORD_PURGE_PER_WRITE`] records that expired by `now`, oldest first.
fn purge_expired_records(
    records: &mut RecordsTable<'_>,
    expiry: &mut RecordExpiryTable<'_>,
    now: Millis,
) -> Result<(), StoreError> {
    let mut due = Vec::new();
    for row in expiry.iter().map_err(db_err)? {
        let (key, _) = row.map_err(db_err)?;
        let (at, collection, id) = key.value();
        if !record_expired(Some(at), now) || due.len() >= RECORD_PURGE_PER_WRITE {
            break;
        }
        due.push((at, collection.to_string(), id.to_string()));
    }
    for (at, collection, id) in due {
        expiry
            .remove((at, collection.as_str(), id.as_str()))
            .map_err(db_err)?;
        // The index follows every write, but only delete the record it actually describes.
        if stored_expiry(records, &collection, &id)? == Some(Some(at)) {
            records
                .remove((collection.as_str(), id.as_str()))
                .map_err(db_err)?;
        }
    }
    Ok(())
}

impl EmbeddedStore {
    /// Store a record, replacing a live one only when `replace` (an expired one always);
    /// `false` when a live record was kept.
    async fn write_record(
        &self,
        collection: &str,
        id: &str,
        value: &serde_json::Value,
        expires_at: Option<Millis>,
        replace: bool,
    ) -> Result<bool, StoreError> {
        check_record_key(collection, id)?;
        check_record_value(value)?;
        let bytes = encode("record", &StoredRecord { value, expires_at })?;
        let (collection, id) = (collection.to_string(), id.to_string());
        self.write(move |txn| {
            let now = record_now();
            let mut records = txn.open_table(RECORDS).map_err(db_err)?;
            let mut expiry = txn.open_table(RECORD_EXPIRY).map_err(db_err)?;
            let old = stored_expiry(&records, &collection, &id)?;
            if !replace && old.is_some_and(|at| !record_expired(at, now)) {
                // Dropping the transaction uncommitted writes nothing.
                return Ok(false);
            }
            insert_record(
                &mut records,
                &mut expiry,
                (&collection, &id),
                &bytes,
                old.flatten(),
                expires_at,
            )?;
            purge_expired_records(&mut records, &mut expiry, now)?;
            Ok(true)
        })
        .await
    }
}

#[async_trait]
impl RecordStore for EmbeddedStore {
    async fn create_record(
        &self,
        collection: &str,
        id: &str,
        value: &serde_json::Value,
        expires_at: Option<Millis>,
    ) -> Result<bool, StoreError> {
        self.write_record(collection, id, value, expires_at, false)
            .await
    }

    async fn put_record(
        &self,
        collection: &str,
        id: &str,
        value: &serde_json::Value,
        expires_at: Option<Millis>,
    ) -> Result<(), StoreError> {
        self.write_record(collection, id, value, expires_at, true)
            .await
            .map(drop)
    }

    async fn get_record(
        &self,
        collection: &str,
        id: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        check_record_key(collection, id)?;
        let (collection, id) = (collection.to_string(), id.to_string());
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let records = txn.open_table(RECORDS).map_err(db_err)?;
            let Some(bytes) = records
                .get((collection.as_str(), id.as_str()))
                .map_err(db_err)?
            else {
                return Ok(None);
            };
            let stored: StoredRecord<serde_json::Value> =
                decode(|| format!("record {collection}/{id}"), bytes.value())?;
            Ok((!record_expired(stored.expires_at, record_now())).then_some(stored.value))
        })
        .await
    }

    async fn list_records(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let after = check_record_list(collection, after, limit)?.map(str::to_string);
        let collection = collection.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let records = txn.open_table(RECORDS).map_err(db_err)?;
            let now = record_now();
            let start = match after.as_deref() {
                Some(after) => Bound::Excluded((collection.as_str(), after)),
                None => Bound::Included((collection.as_str(), "")),
            };
            let mut out = Vec::new();
            for row in records
                .range::<(&str, &str)>((start, Bound::Unbounded))
                .map_err(db_err)?
            {
                let (key, bytes) = row.map_err(db_err)?;
                let (row_collection, id) = key.value();
                if row_collection != collection || out.len() >= limit {
                    break;
                }
                let stored: StoredRecord<serde_json::Value> =
                    decode(|| format!("record {collection}/{id}"), bytes.value())?;
                if !record_expired(stored.expires_at, now) {
                    out.push((id.to_string(), stored.value));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn delete_record(&self, collection: &str, id: &str) -> Result<bool, StoreError> {
        check_record_key(collection, id)?;
        let (collection, id) = (collection.to_string(), id.to_string());
        self.write(move |txn| {
            let now = record_now();
            let mut records = txn.open_table(RECORDS).map_err(db_err)?;
            let mut expiry = txn.open_table(RECORD_EXPIRY).map_err(db_err)?;
            let Some(old) = stored_expiry(&records, &collection, &id)? else {
                return Ok(false);
            };
            records
                .remove((collection.as_str(), id.as_str()))
                .map_err(db_err)?;
            if let Some(at) = old {
                expiry
                    .remove((at, collection.as_str(), id.as_str()))
                    .map_err(db_err)?;
            }
            purge_expired_records(&mut records, &mut expiry, now)?;
            // An expired record is removed all the same, but reads already treated it as gone.
            Ok(!record_expired(old, now))
        })
        .await
    }
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

#[cfg(test)]
mod tests {
    use redb::ReadableTableMetadata;

    use super::*;

    fn rows(store: &EmbeddedStore) -> (usize, usize) {
        let txn = store.db.begin_read().unwrap();
        let records = txn.open_table(RECORDS).unwrap().len().unwrap();
        let expiry = txn.open_table(RECORD_EXPIRY).unwrap().len().unwrap();
        (
            usize::try_from(records).unwrap(),
            usize::try_from(expiry).unwrap(),
        )
    }

    /// Reads only hide expired records; later record writes delete them, a bounded number per
    /// write, and replacing or deleting a record keeps the expiry index in step.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn record_writes_delete_expired_records_lazily() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let past = record_now() - 1_000;
        let future = record_now() + 3_600_000;
        let value = serde_json::json!({"ok": true});
        let expired = RECORD_PURGE_PER_WRITE + 4;
        for i in 0..expired {
            store
                .put_record("logs", &format!("old-{i:03}"), &value, Some(past))
                .await
                .unwrap();
        }
        // A record written already expired goes with the purge of its own write.
        assert_eq!(rows(&store), (0, 0));
        // Replacing a record moves its index entry; deleting removes it.
        store
            .put_record("subs", "a", &value, Some(future))
            .await
            .unwrap();
        assert_eq!(rows(&store), (1, 1));
        store
            .put_record("subs", "a", &value, Some(future + 1))
            .await
            .unwrap();
        assert_eq!(rows(&store), (1, 1));
        assert!(store.delete_record("subs", "a").await.unwrap());
        assert_eq!(rows(&store), (0, 0));
        // Many expiring at once: a write deletes at most RECORD_PURGE_PER_WRITE of them.
        let txn = store.db.begin_write().unwrap();
        {
            let mut records = txn.open_table(RECORDS).unwrap();
            let mut expiry = txn.open_table(RECORD_EXPIRY).unwrap();
            for i in 0..expired {
                let id = format!("old-{i:03}");
                let bytes = encode(
                    "record",
                    &StoredRecord {
                        value: &value,
                        expires_at: Some(past),
                    },
                )
                .unwrap();
                insert_record(
                    &mut records,
                    &mut expiry,
                    ("logs", &id),
                    &bytes,
                    None,
                    Some(past),
                )
                .unwrap();
            }
        }
        txn.commit().unwrap();
        assert!(
            store
                .list_records("logs", None, 100)
                .await
                .unwrap()
                .is_empty()
        );
        store.put_record("subs", "b", &value, None).await.unwrap();
        assert_eq!(rows(&store), (expired - RECORD_PURGE_PER_WRITE + 1, 4));
    }
}
