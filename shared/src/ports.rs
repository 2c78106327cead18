//! Ports: the three capabilities the handlers need from the outside world, as small object-safe
//! async traits (used as `Arc<dyn RunStore>` and so on).
//!
//! | port | AWS adapter | embedded adapter |
//! |---|---|---|
//! | [`RunStore`] | [`DynamoStore`](crate::adapters) (one table) | `EmbeddedStore` (redb file) |
//! | [`WorkflowStore`] | the same `DynamoStore` | the same `EmbeddedStore` |
//! | [`WorkQueue`] | `SqsQueue` | `MemQueue` (in-process delay queue) |
//!
//! Every adapter passes the same contract suite (`tests/src/contract.rs`), so code written
//! against these traits behaves the same on Lambda, in `flowgate serve` and in tests. The
//! semantics that suite pins down are written on each method below.

// The paging and validation helpers serve the store adapters; a build without any store
// adapter (no `aws`, no `embedded`) still gets the traits and types.
#![cfg_attr(not(any(feature = "aws", feature = "embedded")), allow(dead_code))]

use std::cmp::Ordering;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::definition::{StoredWorkflow, WorkflowDefinition};
use crate::engine::Event;
use crate::model::{AuditEntry, Millis, Run, RunStatus};

/// Largest page [`RunStore::list_runs`] returns; larger requests are refused, not clamped, so a
/// caller learns about the limit instead of silently getting fewer runs than asked for.
pub const MAX_PAGE_SIZE: u32 = 100;

/// Longest delay a [`WorkQueue`] message may carry (SQS's `DelaySeconds` limit).
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// Most audit entries one [`RunStore::put_run`] or [`RunStore::create_run`] may write: a DynamoDB
/// transaction holds at most 100 items and the run (plus an idempotency record) takes two.
pub const MAX_AUDIT_PER_WRITE: usize = 98;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why a store call failed; each message says what the caller should do next.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A create found the key taken.
    #[error("{what} already exists; read it instead of creating it, or choose another id")]
    AlreadyExists { what: String },
    /// A conditional write lost: someone else wrote since the caller read.
    #[error(
        "{what} changed after version {expected} was read; re-read it and decide again \
         (retrying the same write cannot succeed)"
    )]
    Conflict { what: String, expected: u64 },
    /// The thing to update does not exist.
    #[error("{what} does not exist; create it first or check the id")]
    NotFound { what: String },
    /// A list cursor that this store did not hand out for this query.
    #[error("bad cursor: {reason}; start the listing again without a cursor")]
    BadCursor { reason: String },
    /// The request itself is wrong (a caller bug or bad user input).
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The store could not be reached or is throttling.
    #[error("store unavailable: {message}; retry with backoff")]
    Unavailable { message: String },
    /// The store refused the request for a reason retrying will not fix.
    #[error(
        "store refused the request: {message}; check the table/database configuration and \
         permissions (not retryable)"
    )]
    Backend { message: String },
    /// Stored data that does not decode into our types (a schema drift or a manual edit).
    #[error("stored {what} cannot be decoded: {reason}; inspect or repair the stored item")]
    Corrupt { what: String, reason: String },
}

impl StoreError {
    /// Whether repeating the same call later may succeed (only for transient unavailability).
    /// A [`StoreError::Conflict`] is not retryable as is: re-read and decide again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    /// Whether a conditional write lost a race; the caller re-reads and re-decides.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        StoreError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt(what: impl Into<String>, reason: impl fmt::Display) -> Self {
        StoreError::Corrupt {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// Why a queue call failed; each message says what the caller should do next.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(
        "delay of {requested:?} exceeds the queue's maximum of 900 s; chain shorter delays \
         (re-enqueue when the message arrives) or use the scheduler for longer waits"
    )]
    DelayTooLong { requested: Duration },
    #[error(
        "hand-back of {requested:?} exceeds the 11 h a received message may stay hidden (SQS \
         allows 12 h from the receive); hand it back for less, and again when it comes"
    )]
    HandBackTooLong { requested: Duration },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("queue unavailable: {message}; retry with backoff")]
    Unavailable { message: String },
    #[error(
        "queue refused the request: {message}; check the queue URL and permissions \
         (not retryable)"
    )]
    Backend { message: String },
}

impl QueueError {
    /// Whether repeating the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, QueueError::Unavailable { .. })
    }
}

/// Refuse delays SQS cannot carry; every [`WorkQueue`] applies the same limit so local runs
/// find the bug a deployment would.
pub fn check_delay(delay: Duration) -> Result<(), QueueError> {
    if delay > MAX_DELAY {
        return Err(QueueError::DelayTooLong { requested: delay });
    }
    Ok(())
}

/// The longest a received message may be handed back for ([`WorkQueue::redeliver`]): SQS
/// keeps a received message hidden at most 12 hours from the receive, and an hour is left for
/// the handling.
pub const MAX_HAND_BACK: Duration = Duration::from_secs(11 * 3_600);

/// Refuse hand-backs SQS cannot carry (see [`MAX_HAND_BACK`]); every [`WorkQueue`] applies it.
pub fn check_hand_back(delay: Duration) -> Result<(), QueueError> {
    if delay > MAX_HAND_BACK {
        return Err(QueueError::HandBackTooLong { requested: delay });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Run store
// ---------------------------------------------------------------------------------------------

/// What [`RunStore::create_run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The run, its idempotency record and its audit entries were written.
    Created,
    /// The run's idempotency key already maps to this run id; nothing was written.
    Existing(String),
}

/// How [`RunStore::list_runs`] orders runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunSort {
    /// `started_at`, or `created_at` for a run not started yet. The value is never earlier than
    /// `created_at` (runs start after they are created), which lets the DynamoDB adapter bound
    /// a created-at range with the index key.
    #[default]
    StartedAt,
    /// `completed_at`; unfinished runs come last in either direction.
    CompletedAt,
    /// [`Run::duration_ms`]; unfinished runs come last in either direction.
    Duration,
    /// [`Run::cost_usd`].
    Cost,
}

impl RunSort {
    pub fn as_str(self) -> &'static str {
        match self {
            RunSort::StartedAt => "started_at",
            RunSort::CompletedAt => "completed_at",
            RunSort::Duration => "duration",
            RunSort::Cost => "cost",
        }
    }

    /// The value a run is ordered by; `None` sorts after every value in both directions.
    pub fn value(self, run: &Run) -> Option<f64> {
        match self {
            RunSort::StartedAt => Some(started_key(run) as f64),
            RunSort::CompletedAt => run.completed_at.map(|t| t as f64),
            RunSort::Duration => run.duration_ms().map(|d| d as f64),
            RunSort::Cost => Some(run.cost_usd()),
        }
    }
}

/// The `started_at` sort value: `started_at`, or `created_at` when absent, never earlier than
/// `created_at`.
pub fn started_key(run: &Run) -> Millis {
    run.started_at.unwrap_or(run.created_at).max(run.created_at)
}

/// Ascending or descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    Asc,
    /// Newest / largest first, what a dashboard wants.
    #[default]
    Desc,
}

/// A filter, an order and a page of [`RunStore::list_runs`].
#[derive(Debug, Clone, PartialEq)]
pub struct RunQuery {
    pub workflow_id: Option<String>,
    /// Any of these statuses; empty means every status.
    pub statuses: Vec<RunStatus>,
    /// `created_at >= created_from`.
    pub created_from: Option<Millis>,
    /// `created_at < created_to` (half-open, so consecutive windows do not overlap).
    pub created_to: Option<Millis>,
    pub sort: RunSort,
    pub order: SortOrder,
    /// Page size, 1..=[`MAX_PAGE_SIZE`]; anything else is [`StoreError::Invalid`].
    pub limit: u32,
    /// `next_cursor` of the previous page of the same query.
    pub cursor: Option<String>,
}

impl Default for RunQuery {
    fn default() -> Self {
        Self {
            workflow_id: None,
            statuses: Vec::new(),
            created_from: None,
            created_to: None,
            sort: RunSort::default(),
            order: SortOrder::default(),
            limit: 20,
            cursor: None,
        }
    }
}

impl RunQuery {
    /// Whether a run passes the filters (not the cursor).
    pub fn matches(&self, run: &Run) -> bool {
        self.workflow_id
            .as_deref()
            .is_none_or(|w| run.workflow_id == w)
            && (self.statuses.is_empty() || self.statuses.contains(&run.status))
            && self.created_from.is_none_or(|from| run.created_at >= from)
            && self.created_to.is_none_or(|to| run.created_at < to)
    }

    /// Check the page size and decode the cursor (if any) against this query.
    pub(crate) fn validate(&self) -> Result<Option<Cursor>, StoreError> {
        if self.limit == 0 || self.limit > MAX_PAGE_SIZE {
            return Err(StoreError::invalid(
                "limit",
                format!("page size must be 1..={MAX_PAGE_SIZE}, got {}", self.limit),
            ));
        }
        if let (Some(from), Some(to)) = (self.created_from, self.created_to)
            && from > to
        {
            return Err(StoreError::invalid(
                "created_from",
                format!("created_from ({from}) is after created_to ({to})"),
            ));
        }
        self.cursor
            .as_deref()
            .map(|c| Cursor::decode(c, self.fingerprint()))
            .transpose()
    }

    /// A stable hash of everything but the page size and cursor: a cursor only continues the
    /// query it was made for (FNV-1a, so it survives restarts and deployments).
    pub(crate) fn fingerprint(&self) -> u64 {
        let mut statuses: Vec<&str> = self.statuses.iter().map(|s| s.as_str()).collect();
        statuses.sort_unstable();
        statuses.dedup();
        let text = format!(
            "{}|{}|{:?}|{:?}|{}|{:?}",
            self.workflow_id.as_deref().unwrap_or(""),
            statuses.join(","),
            self.created_from,
            self.created_to,
            self.sort.as_str(),
            self.order,
        );
        fnv1a(&text)
    }
}

/// FNV-1a: a stable (across builds and restarts) 64-bit hash, for fingerprints and checksums.
fn fnv1a(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// One page of runs.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPage {
    pub runs: Vec<Run>,
    /// Present when more runs match; pass it back in [`RunQuery::cursor`]. It never leads to an
    /// empty page unless runs were deleted in between.
    pub next_cursor: Option<String>,
}

/// Position after the last run of a page: its sort value and id (keyset paging, so pages stay
/// correct while runs are added). Encoded as base64url of a small JSON document with a
/// checksum, so an edited cursor is refused instead of silently skipping or repeating runs.
/// (It is not a secret: a cursor only positions the caller's own query.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    /// Fingerprint of the query the cursor belongs to.
    pub q: u64,
    /// Sort value of the last run returned.
    pub v: Option<f64>,
    /// Id of the last run returned.
    pub id: String,
    /// Checksum of the fields above.
    #[serde(default)]
    pub c: u64,
}

impl Cursor {
    pub(crate) fn after(query: &RunQuery, run: &Run) -> Self {
        let mut cursor = Self {
            q: query.fingerprint(),
            v: query.sort.value(run),
            id: run.id.clone(),
            c: 0,
        };
        cursor.c = cursor.checksum();
        cursor
    }

    fn checksum(&self) -> u64 {
        fnv1a(&format!(
            "{}|{:?}|{}",
            self.q,
            self.v.map(f64::to_bits),
            self.id
        ))
    }

    pub(crate) fn encode(&self) -> String {
        // Serializing a struct of numbers and a string cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    fn decode(text: &str, fingerprint: u64) -> Result<Self, StoreError> {
        let bad = |reason: &str| StoreError::BadCursor {
            reason: reason.to_string(),
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| bad("not base64url"))?;
        let cursor: Cursor =
            serde_json::from_slice(&bytes).map_err(|_| bad("not a cursor this store made"))?;
        if cursor.c != cursor.checksum() {
            return Err(bad("it was modified (checksum mismatch)"));
        }
        if cursor.q != fingerprint {
            return Err(bad(
                "it belongs to a different query (filters and sort must stay the same)",
            ));
        }
        Ok(cursor)
    }

    /// Whether `run` comes strictly after this cursor in the query's order.
    pub(crate) fn is_before(&self, query: &RunQuery, run: &Run) -> bool {
        compare_keys(
            query.order,
            (self.v, &self.id),
            (query.sort.value(run), &run.id),
        ) == Ordering::Less
    }
}

/// Total order of `(sort value, id)` keys: values in the requested direction, missing values
/// last in both directions, ties broken by id in the same direction.
pub(crate) fn compare_keys(
    order: SortOrder,
    a: (Option<f64>, &str),
    b: (Option<f64>, &str),
) -> Ordering {
    let directed = |o: Ordering| match order {
        SortOrder::Asc => o,
        SortOrder::Desc => o.reverse(),
    };
    let primary = match (a.0, b.0) {
        (Some(x), Some(y)) => directed(x.total_cmp(&y)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    primary.then_with(|| directed(a.1.cmp(b.1)))
}

/// Filter, sort and page runs held in memory (the embedded store, and the DynamoDB store for
/// sort keys its indexes do not cover).
pub(crate) fn page_in_memory(
    runs: impl IntoIterator<Item = Run>,
    query: &RunQuery,
    cursor: Option<&Cursor>,
) -> RunPage {
    let mut matching: Vec<(Option<f64>, Run)> = runs
        .into_iter()
        .filter(|r| query.matches(r))
        .filter(|r| cursor.is_none_or(|c| c.is_before(query, r)))
        .map(|r| (query.sort.value(&r), r))
        .collect();
    matching.sort_by(|a, b| compare_keys(query.order, (a.0, &a.1.id), (b.0, &b.1.id)));
    let limit = query.limit as usize;
    let more = matching.len() > limit;
    matching.truncate(limit);
    let runs: Vec<Run> = matching.into_iter().map(|(_, r)| r).collect();
    let next_cursor = match runs.last() {
        Some(last) if more => Some(Cursor::after(query, last).encode()),
        _ => None,
    };
    RunPage { runs, next_cursor }
}

/// Check the version convention of [`RunStore::put_run`].
pub(crate) fn check_put(run: &Run, expected_version: u64) -> Result<(), StoreError> {
    if run.version != expected_version.wrapping_add(1) {
        return Err(StoreError::invalid(
            "version",
            format!(
                "run {} carries version {} but the write expects version {expected_version}; \
                 set run.version = expected_version + 1 before put_run",
                run.id, run.version
            ),
        ));
    }
    Ok(())
}

/// Check audit entries belong to the run and fit in one atomic write.
pub(crate) fn check_audit(run: &Run, audit: &[AuditEntry]) -> Result<(), StoreError> {
    if audit.len() > MAX_AUDIT_PER_WRITE {
        return Err(StoreError::invalid(
            "audit",
            format!(
                "{} audit entries in one write; at most {MAX_AUDIT_PER_WRITE} fit in one \
                 atomic write",
                audit.len()
            ),
        ));
    }
    if let Some(e) = audit.iter().find(|e| e.run_id != run.id) {
        return Err(StoreError::invalid(
            "audit",
            format!(
                "audit entry {} names run {}, not {}",
                e.seq, e.run_id, run.id
            ),
        ));
    }
    Ok(())
}

/// A named agent conversation shared by steps (the step's `session`), so later steps and runs
/// continue it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub name: String,
    /// The agent service's conversation id, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_session_id: Option<String>,
    /// Steps that used the session, oldest first.
    #[serde(default)]
    pub runs: Vec<SessionRun>,
    /// As stored: whether the last run was going when the record was written (it is not
    /// rewritten when that run ends). [`live_sessions`](crate::runtime::live_sessions) says
    /// whether it is going now; a record stored inactive stays inactive.
    pub active: bool,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// One use of a session by a step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRun {
    pub run_id: String,
    pub step_id: String,
    pub at: Millis,
}

/// Durable run state: runs, their audit logs, idempotency keys and agent sessions.
///
/// Version convention: a run is stored exactly as passed to `create_run` (a fresh
/// [`Run::new`] carries version 0). Every later write goes through `put_run(run,
/// expected_version, ..)`, where `expected_version` is the version the caller read and
/// `run.version` must already be `expected_version + 1`; the store refuses anything else with
/// [`StoreError::Invalid`]. So what a caller holds after a successful put is exactly what is
/// stored.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Create a run if its id is free, atomically with its idempotency record and audit entries.
    ///
    /// If `run.idempotency_key` already maps to a run, nothing is written and the existing run
    /// id is returned as [`CreateOutcome::Existing`] (an API retry gets the first run back). A
    /// taken run id is [`StoreError::AlreadyExists`].
    async fn create_run(
        &self,
        run: &Run,
        audit: &[AuditEntry],
    ) -> Result<CreateOutcome, StoreError>;

    /// Read a run (strongly consistent).
    async fn get_run(&self, run_id: &str) -> Result<Option<Run>, StoreError>;

    /// Read a run for a caller that can tell a stale version and falls back to
    /// [`RunStore::get_run`] (an agent status poll): it may return an earlier version, never
    /// a torn one. On DynamoDB it is an eventually consistent read at half a strongly
    /// consistent one's read units, and every poll of every agent step reads its run; anything
    /// decided from a stale version is written conditionally on that version, so it fails and
    /// is decided again from a fresh read. Stores whose reads cost the same keep this default.
    async fn get_run_relaxed(&self, run_id: &str) -> Result<Option<Run>, StoreError> {
        self.get_run(run_id).await
    }

    /// Replace a run if its stored version is still `expected_version`, atomically with its new
    /// audit entries; `run.version` must be `expected_version + 1` (see the trait docs).
    /// [`StoreError::Conflict`] when someone else wrote first (nothing is written, not even the
    /// audit entries), [`StoreError::NotFound`] when the run does not exist.
    async fn put_run(
        &self,
        run: &Run,
        expected_version: u64,
        audit: &[AuditEntry],
    ) -> Result<(), StoreError>;

    /// One page of runs matching the query, in the query's order. Following `next_cursor` until
    /// it is `None` visits every matching run exactly once.
    async fn list_runs(&self, query: &RunQuery) -> Result<RunPage, StoreError>;

    /// Non-terminal runs whose `wake_at <= now`, most overdue first, at most `limit` (the
    /// sweeper re-enqueues them).
    async fn due_runs(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<(String, Millis)>, StoreError>;

    /// A run's audit entries with `seq > after_seq` (all when `None`), in seq order, at most
    /// `limit`.
    async fn audit(
        &self,
        run_id: &str,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError>;

    /// The run id an idempotency key maps to.
    async fn find_idempotency_key(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Create or replace a session record (last writer wins: sessions only gain runs and an
    /// agent session id, and a lost update is repaired by the next step that uses it).
    async fn put_session(&self, session: &SessionRecord) -> Result<(), StoreError>;

    async fn get_session(&self, name: &str) -> Result<Option<SessionRecord>, StoreError>;

    /// Sessions, most recently updated first; only `active` ones when `active_only`.
    async fn list_sessions(&self, active_only: bool) -> Result<Vec<SessionRecord>, StoreError>;
}

/// Versioned workflow definitions.
#[async_trait]
pub trait WorkflowStore: Send + Sync {
    /// Store `definition` as a new version (latest + 1, starting at 1; versions keep counting
    /// after a delete). Two concurrent puts never share a version.
    async fn put_workflow(
        &self,
        definition: &WorkflowDefinition,
        now: Millis,
    ) -> Result<StoredWorkflow, StoreError>;

    /// A pinned version, or the latest (`None`) unless the workflow was deleted. A pinned version
    /// stays readable after a delete so runs on it can finish.
    async fn get_workflow(
        &self,
        id: &str,
        version: Option<u64>,
    ) -> Result<Option<StoredWorkflow>, StoreError>;

    /// The latest version of every workflow that is not deleted, by id.
    async fn list_workflows(&self) -> Result<Vec<StoredWorkflow>, StoreError>;

    /// Hide a workflow's latest version; `false` when there was nothing to delete.
    async fn delete_workflow(&self, id: &str) -> Result<bool, StoreError>;
}

/// Small keyed JSON records beside runs: webhook subscriptions and their delivery logs, Slack
/// message references. Records live in named collections and list in id order.
#[async_trait]
pub trait RecordStore: Send + Sync {
    /// Store `value` under (collection, id) unless a record is there; `Ok(false)` when one was.
    /// `expires_at` (epoch millis) lets the store drop the record after that time (DynamoDB TTL;
    /// the embedded store filters expired records out of reads and may delete them lazily).
    async fn create_record(
        &self,
        collection: &str,
        id: &str,
        value: &serde_json::Value,
        expires_at: Option<Millis>,
    ) -> Result<bool, StoreError>;
    /// Store `value` under (collection, id), replacing any record.
    async fn put_record(
        &self,
        collection: &str,
        id: &str,
        value: &serde_json::Value,
        expires_at: Option<Millis>,
    ) -> Result<(), StoreError>;
    async fn get_record(
        &self,
        collection: &str,
        id: &str,
    ) -> Result<Option<serde_json::Value>, StoreError>;
    /// Up to `limit` (1..=100, else StoreError invalid) records with id > `after` (all when
    /// None), ascending by id (byte order).
    async fn list_records(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError>;
    /// `Ok(false)` when there was nothing to delete.
    async fn delete_record(&self, collection: &str, id: &str) -> Result<bool, StoreError>;
}

/// Where schedules live: EventBridge Scheduler on AWS, records in `flowgate serve` (see
/// [`crate::schedule`]). Errors are [`StoreError`]s: a scheduler is a store of schedules, and
/// callers decide on retrying the same way.
#[async_trait]
pub trait Scheduler: Send + Sync {
    /// Names of the schedules starting with `prefix` (all with `""`), in any order.
    async fn list_schedules(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    async fn get_schedule(
        &self,
        name: &str,
    ) -> Result<Option<crate::schedule::ScheduleEntry>, StoreError>;
    /// Create the schedule, or replace the one with its name.
    async fn put_schedule(&self, entry: &crate::schedule::ScheduleEntry) -> Result<(), StoreError>;
    /// `Ok(false)` when there was nothing to delete.
    async fn delete_schedule(&self, name: &str) -> Result<bool, StoreError>;
}

/// Longest record collection or id in bytes: well inside DynamoDB's 1,024-byte sort key and
/// 2,048-byte partition key (with its `REC#` prefix), and long enough for any id we mint.
pub const MAX_RECORD_KEY_BYTES: usize = 512;

/// Largest record value, serialized as JSON. Records are references and log lines; a cap far
/// below DynamoDB's 400 KB item limit means a too-large value is refused the same way on every
/// backend instead of failing only in a deployment.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Largest page [`RecordStore::list_records`] returns; larger requests are refused, not clamped
/// (as for [`MAX_PAGE_SIZE`]).
pub const MAX_RECORD_PAGE: usize = 100;

/// Check a record's collection and id, so both backends refuse the same keys. Control
/// characters are refused because ids end up in logs, URLs and Slack messages, where they are
/// invisible or break the line; `#` is refused in collections because it separates key parts
/// in DynamoDB (`REC#{collection}`).
pub(crate) fn check_record_key(collection: &str, id: &str) -> Result<(), StoreError> {
    check_record_collection(collection)?;
    check_record_part("id", id)
}

fn check_record_collection(collection: &str) -> Result<(), StoreError> {
    check_record_part("collection", collection)?;
    if collection.contains('#') {
        return Err(StoreError::invalid(
            "collection",
            format!("{collection:?} contains '#', which separates key parts"),
        ));
    }
    Ok(())
}

fn check_record_part(field: &'static str, text: &str) -> Result<(), StoreError> {
    if text.is_empty() {
        return Err(StoreError::invalid(field, "must not be empty"));
    }
    if text.len() > MAX_RECORD_KEY_BYTES {
        return Err(StoreError::invalid(
            field,
            format!(
                "{} bytes; at most {MAX_RECORD_KEY_BYTES} are allowed",
                text.len()
            ),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            field,
            format!("{text:?} contains a control character"),
        ));
    }
    Ok(())
}

/// Check a record value fits [`MAX_RECORD_BYTES`] once serialized as JSON.
pub(crate) fn check_record_value(value: &serde_json::Value) -> Result<(), StoreError> {
    let size = serde_json::to_vec(value)
        .map_err(|e| StoreError::invalid("value", format!("cannot be serialized: {e}")))?
        .len();
    if size > MAX_RECORD_BYTES {
        return Err(StoreError::invalid(
            "value",
            format!("{size} bytes of JSON; at most {MAX_RECORD_BYTES} are allowed"),
        ));
    }
    Ok(())
}

/// Check the arguments of [`RecordStore::list_records`]; returns the position to start after,
/// `None` for an empty `after` (every id is greater than the empty string, and DynamoDB refuses
/// an empty key value in a condition).
pub(crate) fn check_record_list<'a>(
    collection: &str,
    after: Option<&'a str>,
    limit: usize,
) -> Result<Option<&'a str>, StoreError> {
    check_record_collection(collection)?;
    if limit == 0 || limit > MAX_RECORD_PAGE {
        return Err(StoreError::invalid(
            "limit",
            format!("page size must be 1..={MAX_RECORD_PAGE}, got {limit}"),
        ));
    }
    let after = after.filter(|a| !a.is_empty());
    if let Some(a) = after {
        // A position is an id a previous page returned, so it obeys the same rules.
        check_record_part("after", a)?;
    }
    Ok(after)
}

/// Whether a record with this expiry is gone at `now`: it lives until `expires_at` and not at
/// that instant, so a record written with `expires_at = now` is never read back.
pub(crate) fn record_expired(expires_at: Option<Millis>, now: Millis) -> bool {
    expires_at.is_some_and(|at| at <= now)
}

/// The wall clock for record expiry. Records are the one thing a store times out on its own
/// (DynamoDB's TTL runs on the service's clock too), so stores read the clock for them instead
/// of taking `now` from the caller.
pub(crate) fn record_now() -> Millis {
    crate::runtime::SystemClock::millis()
}

// ---------------------------------------------------------------------------------------------
// Work queue
// ---------------------------------------------------------------------------------------------

/// Work for the poller. Delivered at least once, possibly late or out of order: every handler
/// re-reads the run and ignores messages that no longer apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkMessage {
    /// Feed an event to the engine.
    Event { run_id: String, event: Event },
    /// Poll an agent run's status; `poll` tells a current poll from a stale duplicate.
    Poll {
        run_id: String,
        step: String,
        attempt: u32,
        upstream_run_id: String,
        poll: u32,
    },
    /// Tick the run. `at` is the timer this wake-up is for: a wake-up sent before `at`
    /// (because SQS delays stop at 15 minutes) is re-sent until `at` passes. The sweeper's
    /// wake-ups carry no `at` and tick at once.
    Wake {
        run_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<crate::model::Millis>,
    },
    /// Perform effects of a decision already written by a caller that could not wait for them
    /// (an approval click must be answered within Slack's 3 s). Effects are safe to repeat.
    Perform {
        run_id: String,
        effects: Vec<crate::engine::Effect>,
    },
    /// Send something to people or other systems (Slack, outbound webhooks). Kept off the
    /// run's path: a slow or failing receiver is retried here with backoff and never holds up
    /// the run.
    Deliver {
        run_id: String,
        delivery: crate::notify::Delivery,
        /// 1 on the first try; retries re-send the message with the next number.
        #[serde(default = "first_try")]
        attempt: u32,
        /// Not before this time (a backoff longer than the queue's 15-minute delay is re-sent
        /// until it passes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        not_before: Option<crate::model::Millis>,
    },
}

fn first_try() -> u32 {
    1
}

impl WorkMessage {
    pub fn run_id(&self) -> &str {
        match self {
            WorkMessage::Event { run_id, .. }
            | WorkMessage::Poll { run_id, .. }
            | WorkMessage::Wake { run_id, .. }
            | WorkMessage::Perform { run_id, .. }
            | WorkMessage::Deliver { run_id, .. } => run_id,
        }
    }
}

/// A message taken from the queue; it becomes visible again unless acked in time.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// Handle for [`WorkQueue::ack`] (valid for this delivery only).
    pub receipt: String,
    pub message: WorkMessage,
    /// 1 on first delivery; more means an earlier handler did not ack (crash or timeout).
    pub receive_count: u32,
}

/// A queue of [`WorkMessage`]s with per-message delays, at-least-once delivery and redelivery of
/// unacked messages after a visibility timeout.
#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// Enqueue a message that becomes visible after `delay` (at most [`MAX_DELAY`];
    /// longer is [`QueueError::DelayTooLong`]). SQS rounds delays up to whole seconds.
    async fn send(&self, message: &WorkMessage, delay: Duration) -> Result<(), QueueError>;

    /// Enqueue many messages (any number; sent in batches of 10). All delays are checked before
    /// anything is sent. On error some messages may have been sent: resending is safe because
    /// handlers are idempotent.
    async fn send_batch(&self, messages: &[(WorkMessage, Duration)]) -> Result<(), QueueError>;

    /// Take up to `max` visible messages (SQS returns at most 10), waiting up to `wait` for the
    /// first one (SQS waits at most 20 s). Returns an empty list when nothing arrived in time.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError>;

    /// Delete a received message. Acking a receipt whose message was already redelivered or
    /// deleted is not an error.
    async fn ack(&self, receipt: &str) -> Result<(), QueueError>;

    /// Hand a received message back, to be delivered again (unchanged) after `delay` (at most
    /// [`MAX_HAND_BACK`], 11 h; longer is [`QueueError::HandBackTooLong`]): SQS's
    /// `ChangeMessageVisibility`. The caller must then not ack it. One request instead of a
    /// send and a delete, which is how a poll chain waits for its next poll and a wake-up for
    /// a timer hours away (see [`Executor::handle_delivered`](crate::runtime::Executor::handle_delivered)).
    /// A receipt superseded by a later delivery is not an error: that delivery owns the
    /// message now.
    async fn redeliver(&self, receipt: &str, delay: Duration) -> Result<(), QueueError>;
}

/// Deliveries of one message before it is given up: the work queue's redrive limit
/// (`maxReceiveCount` in the SAM template, then the dead-letter queue) and what `flowgate
/// serve`'s workers allow before dropping a message that keeps failing.
pub const MAX_RECEIVES: u32 = 20;

/// How many times a poll chain's message may have been received before it is replaced by a
/// fresh one instead of handed back ([`WorkQueue::redeliver`]). SQS counts every receive
/// towards [`MAX_RECEIVES`], so this leaves 5 deliveries for real failures before the
/// dead-letter queue.
pub const REDELIVER_MAX_RECEIVES: u32 = MAX_RECEIVES - 5;
