//! The run and workflow store on one DynamoDB table (single-table design).
//!
//! Key schema, indexes, TTL and access patterns are described in `DYNAMODB.md` next to this
//! file; [`DynamoStore::create_table`] creates exactly that schema (the SAM template declares
//! the same). Every run write is one conditional write on the stored `version`, so a lost race
//! changes nothing; the newest decision's audit entries ride in the run item (its audit tail)
//! and are copied to their own item by the next decision that writes entries (see
//! `DYNAMODB.md`, "Runs and their audit log").

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, KeysAndAttributes, Projection, ProjectionType, Put, ReturnValue, ScalarAttributeType,
    TimeToLiveSpecification, TransactWriteItem,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_dynamo::aws_sdk_dynamodb_1 as dynamo;

use crate::definition::{StoredWorkflow, WorkflowDefinition};
use crate::model::{AuditEntry, Millis, Run};
use crate::ports::{
    CreateOutcome, Cursor, RecordStore, RunPage, RunQuery, RunSort, RunStore, SessionRecord,
    SortOrder, StoreError, WorkflowStore, check_audit, check_put, check_record_key,
    check_record_list, check_record_value, page_in_memory, record_expired, record_now, started_key,
};

/// Attribute names of the table (the CloudFormation template must use the same).
pub mod attr {
    /// Partition key (S): `RUN#{id}`, `IDEM#{key}`, `SESSIONS`, `WF#{id}`,
    /// `REC#{collection}`.
    pub const PK: &str = "pk";
    /// Sort key (S): `RUN`, `AUDIT#{seq:020}`, `IDEM`, `SESSION#{name}`, `V#{version:020}`,
    /// `LATEST`, or a record's id.
    pub const SK: &str = "sk";
    /// Entity kind for listing (S): `RUN`, `WORKFLOW`; hash key of `by_kind`.
    pub const KIND: &str = "kind";
    /// Listing order (N): a run's started key, a workflow's `created_at`;
    /// range key of `by_kind` and `by_workflow`.
    pub const KIND_SK: &str = "kind_sk";
    /// A run's workflow id (S); hash key of `by_workflow` (only run items carry it).
    pub const RUN_WORKFLOW: &str = "run_wf";
    /// `DUE` (S) on non-terminal runs with a wake-up; hash key of the sparse `due` index.
    pub const DUE: &str = "due";
    /// A non-terminal run's `wake_at` (N); range key of `due`.
    pub const WAKE_AT: &str = "wake_at";
    /// Epoch seconds (N) after which DynamoDB's TTL deletes the item.
    pub const EXPIRES_AT: &str = "expires_at";
    /// A record's exact expiry in epoch millis (N): TTL deletes lazily and only to the second,
    /// so reads filter on this.
    pub const EXPIRES_AT_MS: &str = "expires_at_ms";
    /// The stored version of a run or of a workflow's latest pointer (N).
    pub const VERSION: &str = "version";
    /// A run's status (S) and creation time (N), top level for filters.
    pub const STATUS: &str = "status";
    pub const CREATED_AT: &str = "created_at";
    /// The run as deflated JSON (B). Compressed because every run write is billed per KB and
    /// a run's JSON is mostly repeated field names: a finished five-step run is about 1.4 KB as
    /// a map and under 0.6 KB deflated, so its writes stay at one unit.
    pub const RUN_Z: &str = "run_z";
    /// The audit entries of the run's newest decision that wrote any, as deflated JSON (B) of
    /// a list; copied to an audit group item before a later decision replaces them.
    pub const AUDIT_TAIL: &str = "audit_tail";
    /// An audit group's entries, deflated JSON (B) of a list in seq order.
    pub const ENTRIES_Z: &str = "entries_z";
    /// Written by earlier versions and still read: the run as a native map (M) and a single
    /// audit entry (M).
    pub const RUN: &str = "run";
    pub const ENTRY: &str = "entry";
    /// Native maps of the other stored values.
    pub const SESSION: &str = "session";
    pub const WORKFLOW: &str = "workflow";
    pub const RECORD: &str = "record";
    /// `BOOL` on sessions (filter) and on a workflow's latest pointer (deleted).
    pub const ACTIVE: &str = "active";
    pub const DELETED: &str = "deleted";
    /// Run id an idempotency record points to (S).
    pub const RUN_ID: &str = "run_id";
}

/// Index names.
pub mod index {
    /// `kind` + `kind_sk`, projecting [`LISTING_PROJECTION`]: every run and workflow in
    /// listing order (sessions were listed here until they became one item collection).
    pub const BY_KIND: &str = "by_kind";
    /// `run_wf` + `kind_sk`, projecting [`LISTING_PROJECTION`]: one workflow's runs in started
    /// order.
    pub const BY_WORKFLOW: &str = "by_workflow";
    /// `due` + `wake_at`, keys only, sparse: non-terminal runs by wake-up time.
    pub const DUE: &str = "due";

    /// What the listing indexes hold besides the keys: only the attributes their filters read.
    /// Not the whole item: DynamoDB writes an index entry whenever what it projects changes,
    /// and a run item changes on every recorded poll; projecting it all made each run write
    /// cost three times its units. Listings read the index, then the items (`BatchGetItem`).
    /// (`active` is what a session listing filtered on when sessions were in `by_kind`; it
    /// stays projected because changing a projection means replacing the index.)
    pub const LISTING_PROJECTION: [&str; 3] = [
        super::attr::STATUS,
        super::attr::CREATED_AT,
        super::attr::ACTIVE,
    ];
}

const KIND_RUN: &str = "RUN";
const KIND_WORKFLOW: &str = "WORKFLOW";
const SK_RUN: &str = "RUN";
const SK_LATEST: &str = "LATEST";
const DUE_VALUE: &str = "DUE";

/// How long finished runs, audit entries and idempotency records are kept by default.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Most runs collected for a sort the indexes do not provide (see `DYNAMODB.md`).
pub const DEFAULT_SORT_SCAN_LIMIT: usize = 5_000;
/// Attempts of `put_workflow` when concurrent puts race for the next version.
const WORKFLOW_PUT_ATTEMPTS: u32 = 16;
/// Items read per query page.
const QUERY_PAGE: i32 = 100;
/// Most keys in one `BatchGetItem`.
const BATCH_GET_MAX: usize = 100;
/// Rounds of `BatchGetItem` for one batch's unprocessed keys before giving up (retryable).
const BATCH_GET_ATTEMPTS: u32 = 8;
/// A run write's condition: the run exists and still has the version the writer read.
const RUN_VERSION_CONDITION: &str = "attribute_exists(#pk) AND #v = :expected";
/// Runs whose audit tail a store remembers (see [`TailCache`]); past this it starts over.
const TAIL_CACHE_RUNS: usize = 4_096;
/// A decision's audit entries ride in the run item only up to this many bytes deflated (one
/// write unit): the tail stays in the item until the next decision with entries, and every
/// write of the run until then pays for its size. Bigger ones go to audit group items in a
/// transaction with the run instead.
const TAIL_MAX_BYTES: usize = 1_024;
/// Most bytes of one audit group item written that way (items stop at 400 KB).
const GROUP_MAX_BYTES: usize = 300 * 1_024;

fn run_pk(id: &str) -> String {
    format!("RUN#{id}")
}
fn audit_sk(seq: u64) -> String {
    format!("AUDIT#{seq:020}")
}
fn idem_pk(key: &str) -> String {
    format!("IDEM#{key}")
}
/// The partition of every session item (see `put_session`).
const SESSIONS_PK: &str = "SESSIONS";
fn session_sk(name: &str) -> String {
    format!("SESSION#{name}")
}
fn workflow_pk(id: &str) -> String {
    format!("WF#{id}")
}
fn version_sk(version: u64) -> String {
    format!("V#{version:020}")
}
fn record_pk(collection: &str) -> String {
    format!("REC#{collection}")
}

/// The TTL value (epoch seconds) for a record expiring at `ms`, rounded up so DynamoDB never
/// deletes a record before its exact expiry.
fn ttl_seconds(ms: Millis) -> i64 {
    ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) != 0)
}

/// A record item's exact expiry, if it has one.
fn record_expiry(item: &Item, what: &str) -> Result<Option<Millis>, StoreError> {
    if item.contains_key(attr::EXPIRES_AT_MS) {
        number_attr(item, attr::EXPIRES_AT_MS, what).map(Some)
    } else {
        Ok(None)
    }
}

/// A record item's value, or `None` once it has expired: TTL deletes lazily (within days), so
/// an expired item may still be in the table.
fn live_record(
    item: &Item,
    now: Millis,
    what: &str,
) -> Result<Option<serde_json::Value>, StoreError> {
    if record_expired(record_expiry(item, what)?, now) {
        return Ok(None);
    }
    from_attr(item, attr::RECORD, what).map(Some)
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

type Item = HashMap<String, AttributeValue>;

fn key(pk: String, sk: &str) -> Item {
    HashMap::from([(attr::PK.to_string(), s(pk)), (attr::SK.to_string(), s(sk))])
}

fn to_av<T: Serialize>(what: &str, value: &T) -> Result<AttributeValue, StoreError> {
    dynamo::to_attribute_value(value)
        .map_err(|e| StoreError::invalid("value", format!("{what} cannot be stored: {e}")))
}

fn from_attr<T: DeserializeOwned>(item: &Item, name: &str, what: &str) -> Result<T, StoreError> {
    let value = item
        .get(name)
        .ok_or_else(|| StoreError::corrupt(what, format!("attribute {name:?} is missing")))?;
    dynamo::from_attribute_value(value.clone()).map_err(|e| StoreError::corrupt(what, e))
}

/// Deflated JSON of `value`.
fn deflate<T: Serialize + ?Sized>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(value)
        .map_err(|e| StoreError::invalid("value", format!("{what} cannot be stored: {e}")))?;
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::with_capacity(json.len() / 2), Default::default());
    encoder
        .write_all(&json)
        .and_then(|()| encoder.finish())
        .map_err(|e| StoreError::Backend {
            message: format!("compressing {what}: {e}"),
        })
}

fn binary(bytes: Vec<u8>) -> AttributeValue {
    AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(bytes))
}

/// The value [`deflate`] made `bytes` from.
fn unpack<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    let mut json = Vec::with_capacity(bytes.len() * 3);
    flate2::read::DeflateDecoder::new(bytes)
        .read_to_end(&mut json)
        .map_err(|e| StoreError::corrupt(what, format!("cannot inflate: {e}")))?;
    serde_json::from_slice(&json).map_err(|e| StoreError::corrupt(what, e))
}

/// The bytes of a binary attribute, if the item has it.
fn blob<'a>(item: &'a Item, name: &str, what: &str) -> Result<Option<&'a [u8]>, StoreError> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::B(b)) => Ok(Some(b.as_ref())),
        Some(_) => Err(StoreError::corrupt(
            what,
            format!("attribute {name:?} is not binary"),
        )),
    }
}

/// The run of a run item: deflated (`run_z`), or a native map written by an earlier version.
fn run_of(item: &Item, what: &str) -> Result<Run, StoreError> {
    match blob(item, attr::RUN_Z, what)? {
        Some(bytes) => unpack(bytes, what),
        None => from_attr(item, attr::RUN, what),
    }
}

/// The audit entries an item holds: a group's (`entries_z`), a run item's tail
/// (`audit_tail`), or a single entry written by an earlier version (`entry`).
fn entries_of(item: &Item, what: &str) -> Result<Vec<AuditEntry>, StoreError> {
    if let Some(bytes) = blob(item, attr::ENTRIES_Z, what)? {
        return unpack(bytes, what);
    }
    if let Some(bytes) = blob(item, attr::AUDIT_TAIL, what)? {
        return unpack(bytes, what);
    }
    if item.contains_key(attr::ENTRY) {
        return Ok(vec![from_attr(item, attr::ENTRY, what)?]);
    }
    Ok(Vec::new())
}

/// One decision's audit entries as stored, in a run item's tail or an audit group item:
/// deflated JSON of the list in seq order. Copying a tail to its group item keeps the bytes.
#[derive(Debug, Clone, PartialEq)]
struct Tail(Vec<u8>);

impl Tail {
    /// `entries`, in seq order.
    fn pack(entries: &[AuditEntry]) -> Result<Tail, StoreError> {
        deflate("audit entries", entries).map(Tail)
    }

    /// The tail a run item carries, not decoded: reading a run (every poll does) needs only
    /// the bytes, to copy them out if its next write is a decision with entries.
    fn of(item: &Item, what: &str) -> Result<Option<Tail>, StoreError> {
        Ok(blob(item, attr::AUDIT_TAIL, what)?.map(|bytes| Tail(bytes.to_vec())))
    }

    fn attribute(&self) -> AttributeValue {
        binary(self.0.clone())
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// The seq and time of the last entry: its group item's key and expiry.
    fn last(&self) -> Result<(u64, Millis), StoreError> {
        let entries: Vec<AuditEntry> = unpack(&self.0, "run audit tail")?;
        entries
            .last()
            .map(|e| (e.seq, e.at))
            .ok_or_else(|| StoreError::corrupt("run audit tail", "it holds no entry"))
    }
}

/// Audit entries in seq order (the order tails and groups hold them in).
fn in_seq_order(audit: &[AuditEntry]) -> Vec<AuditEntry> {
    let mut entries = audit.to_vec();
    entries.sort_by_key(|e| e.seq);
    entries
}

/// The audit tail of the run versions this store last read or wrote, so a decision that
/// writes audit entries need not read the item again to copy the tail it replaces. A run
/// version's item never changes once written (every write is conditional on the version), so
/// an entry is either exact or for an older version, which the lookup tells apart.
#[derive(Debug, Default)]
struct TailCache {
    runs: HashMap<String, (u64, Option<Tail>)>,
}

impl TailCache {
    fn remember(&mut self, run_id: &str, version: u64, tail: Option<Tail>) {
        if self.runs.len() >= TAIL_CACHE_RUNS && !self.runs.contains_key(run_id) {
            self.runs.clear();
        }
        self.runs.insert(run_id.to_string(), (version, tail));
    }

    /// A write from `from` to `to` that left the tail as it was: carry a known tail over, and
    /// forget one that was for another version.
    fn advance(&mut self, run_id: &str, from: u64, to: u64) {
        match self.runs.get_mut(run_id) {
            Some((version, _)) if *version == from => *version = to,
            Some(_) => {
                self.runs.remove(run_id);
            }
            None => {}
        }
    }
}

/// What a writer knows about the tail of the version it expects to replace.
enum Before {
    /// The version is current as far as anyone can tell, with this tail.
    Tail(Option<Tail>),
    /// A later version exists: the write would lose.
    Stale,
    /// No such run.
    Missing,
}

fn number_attr(item: &Item, name: &str, what: &str) -> Result<i64, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(text)) => text
            .parse()
            .map_err(|e| StoreError::corrupt(what, format!("{name}: {e}"))),
        _ => Err(StoreError::corrupt(
            what,
            format!("attribute {name:?} is missing or not a number"),
        )),
    }
}

/// Map an SDK error to what the caller should do about it.
fn sdk_err<E, R>(op: &str, err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let code = err.code().unwrap_or_default().to_string();
    let message = format!("DynamoDB {op}: {}", DisplayErrorContext(&err));
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StoreError::Unavailable { message }
        }
        SdkError::ServiceError(_) => match code.as_str() {
            "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "InternalServerError"
            | "ServiceUnavailable"
            | "TransactionInProgressException"
            | "LimitExceededException" => StoreError::Unavailable { message },
            "ValidationException" => StoreError::Invalid {
                field: "item",
                reason: message,
            },
            _ => StoreError::Backend { message },
        },
        _ => StoreError::Backend { message },
    }
}

/// How a transaction failed: cancelled with one reason code per item ("None" for items that
/// were fine), or something else.
enum TxError {
    Cancelled(Vec<String>),
    Other(StoreError),
}

impl TxError {
    fn code(&self, index: usize) -> Option<&str> {
        match self {
            TxError::Cancelled(codes) => codes.get(index).map(String::as_str),
            TxError::Other(_) => None,
        }
    }

    fn failed(&self, index: usize) -> bool {
        matches!(
            self.code(index),
            Some("ConditionalCheckFailed" | "TransactionConflict")
        )
    }

    /// The error to report when no specific reason applies.
    fn into_store_error(self, op: &str) -> StoreError {
        match self {
            TxError::Other(e) => e,
            TxError::Cancelled(codes) => {
                if codes
                    .iter()
                    .any(|c| c == "TransactionConflict" || c == "ThrottlingError")
                {
                    StoreError::Unavailable {
                        message: format!("DynamoDB {op}: transaction cancelled ({codes:?})"),
                    }
                } else {
                    StoreError::Backend {
                        message: format!("DynamoDB {op}: transaction cancelled ({codes:?})"),
                    }
                }
            }
        }
    }
}

/// One query: an index (or the table), the key condition, an optional filter and the names
/// and values they use.
#[derive(Debug, Clone)]
struct QuerySpec {
    index: Option<&'static str>,
    key_condition: String,
    filter: Option<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
    forward: bool,
}

/// Run and workflow store on one DynamoDB table. Cheap to clone (the client is shared).
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    retention: Duration,
    sort_scan_limit: usize,
    tails: Arc<Mutex<TailCache>>,
}

impl DynamoStore {
    /// A store on `table` (which must have the schema [`DynamoStore::create_table`] makes).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            retention: DEFAULT_RETENTION,
            sort_scan_limit: DEFAULT_SORT_SCAN_LIMIT,
            tails: Arc::default(),
        }
    }

    /// A store on `table` with a client built from an already loaded configuration (a
    /// function loads it once for all of its clients).
    pub fn from_sdk_config(config: &super::SdkConfig, table: impl Into<String>) -> Self {
        Self::new(Client::new(config), table)
    }

    /// Open a connection to DynamoDB (DNS, TCP, TLS) with the cheapest request there is: an
    /// eventually consistent read of a key no item has (half a read unit). Functions call it
    /// during Lambda's INIT phase so the first invocation does not pay for the handshake.
    pub async fn warm_up(&self) -> Result<(), StoreError> {
        self.client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, AttributeValue::S("WARMUP".to_string()))
            .key(attr::SK, AttributeValue::S("WARMUP".to_string()))
            .projection_expression(attr::PK)
            .send()
            .await
            .map_err(|e| sdk_err("GetItem (warm-up)", e))?;
        Ok(())
    }

    /// How long finished runs, audit entries and idempotency records are kept (DynamoDB TTL).
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Most runs a listing sorted by completed_at, duration or cost may collect before it is
    /// refused (those sorts read every matching run; see `DYNAMODB.md`).
    pub fn with_sort_scan_limit(mut self, limit: usize) -> Self {
        self.sort_scan_limit = limit;
        self
    }

    pub fn table_name(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Create the table with its indexes and TTL, and wait until it is active. An existing
    /// table is left as it is.
    pub async fn create_table(client: &Client, name: &str) -> Result<(), StoreError> {
        let defs = [
            (attr::PK, ScalarAttributeType::S),
            (attr::SK, ScalarAttributeType::S),
            (attr::KIND, ScalarAttributeType::S),
            (attr::KIND_SK, ScalarAttributeType::N),
            (attr::RUN_WORKFLOW, ScalarAttributeType::S),
            (attr::DUE, ScalarAttributeType::S),
            (attr::WAKE_AT, ScalarAttributeType::N),
        ];
        let build_err = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Backend {
            message: format!("building the table definition: {e}"),
        };
        let key_schema = |hash: &str, range: &str| -> Result<Vec<KeySchemaElement>, StoreError> {
            Ok(vec![
                KeySchemaElement::builder()
                    .attribute_name(hash)
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(build_err)?,
                KeySchemaElement::builder()
                    .attribute_name(range)
                    .key_type(KeyType::Range)
                    .build()
                    .map_err(build_err)?,
            ])
        };
        let gsi = |name: &str, hash: &str, range: &str, projection: ProjectionType| {
            let listing = projection == ProjectionType::Include;
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .set_key_schema(Some(key_schema(hash, range)?))
                .projection(
                    Projection::builder()
                        .projection_type(projection)
                        .set_non_key_attributes(
                            listing.then(|| index::LISTING_PROJECTION.map(str::to_string).to_vec()),
                        )
                        .build(),
                )
                .build()
                .map_err(build_err)
        };
        let mut request = client
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .set_key_schema(Some(key_schema(attr::PK, attr::SK)?))
            .global_secondary_indexes(gsi(
                index::BY_KIND,
                attr::KIND,
                attr::KIND_SK,
                ProjectionType::Include,
            )?)
            .global_secondary_indexes(gsi(
                index::BY_WORKFLOW,
                attr::RUN_WORKFLOW,
                attr::KIND_SK,
                ProjectionType::Include,
            )?)
            .global_secondary_indexes(gsi(
                index::DUE,
                attr::DUE,
                attr::WAKE_AT,
                ProjectionType::KeysOnly,
            )?);
        for (attribute, kind) in defs {
            request = request.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(attribute)
                    .attribute_type(kind)
                    .build()
                    .map_err(build_err)?,
            );
        }
        match request.send().await {
            Ok(_) => {}
            Err(e) if e.code() == Some("ResourceInUseException") => {
                tracing::info!(table = name, "table already exists; leaving it as it is");
                return Ok(());
            }
            Err(e) => return Err(sdk_err("CreateTable", e)),
        }
        client
            .wait_until_table_exists()
            .table_name(name)
            .wait(Duration::from_secs(300))
            .await
            .map_err(|e| StoreError::Unavailable {
                message: format!(
                    "table {name} did not become active: {}",
                    DisplayErrorContext(&e)
                ),
            })?;
        client
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(attr::EXPIRES_AT)
                    .build()
                    .map_err(build_err)?,
            )
            .send()
            .await
            .map_err(|e| sdk_err("UpdateTimeToLive", e))?;
        tracing::info!(table = name, "table created");
        Ok(())
    }

    fn expiry(&self, from: Millis) -> AttributeValue {
        let retention_ms = i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        n(from.saturating_add(retention_ms) / 1000)
    }

    /// The whole run item: the run deflated, its audit tail (when given), and the top-level
    /// attributes the condition, the indexes, the filters and TTL need.
    fn run_item(&self, run: &Run, tail: Option<&Tail>) -> Result<Item, StoreError> {
        let mut item = key(run_pk(&run.id), SK_RUN);
        item.insert(attr::RUN_Z.into(), binary(deflate("run", run)?));
        if let Some(tail) = tail {
            item.insert(attr::AUDIT_TAIL.into(), tail.attribute());
        }
        item.insert(attr::VERSION.into(), n(run.version));
        item.insert(attr::KIND.into(), s(KIND_RUN));
        item.insert(attr::KIND_SK.into(), n(started_key(run)));
        item.insert(attr::RUN_WORKFLOW.into(), s(&run.workflow_id));
        item.insert(attr::STATUS.into(), s(run.status.as_str()));
        item.insert(attr::CREATED_AT.into(), n(run.created_at));
        if run.status.is_terminal() {
            let finished = run.completed_at.unwrap_or(run.updated_at);
            item.insert(attr::EXPIRES_AT.into(), self.expiry(finished));
        }
        if let Some(due_at) = run.due_at() {
            item.insert(attr::DUE.into(), s(DUE_VALUE));
            item.insert(attr::WAKE_AT.into(), n(due_at));
        }
        Ok(item)
    }

    /// The audit group item holding `tail`, whose last entry has `last` (seq, time).
    fn group_item(&self, run_id: &str, tail: &Tail, last: (u64, Millis)) -> Item {
        let mut item = key(run_pk(run_id), &audit_sk(last.0));
        item.insert(attr::ENTRIES_Z.into(), tail.attribute());
        item.insert(attr::EXPIRES_AT.into(), self.expiry(last.1));
        item
    }

    /// Audit group items holding `entries` (in seq order, `packed` = [`Tail::pack`] of them),
    /// split so each stays under [`GROUP_MAX_BYTES`]: for decisions too big to keep in the
    /// run item.
    fn group_items(
        &self,
        run_id: &str,
        entries: &[AuditEntry],
        packed: Tail,
    ) -> Result<Vec<Item>, StoreError> {
        let Some(last) = entries.last() else {
            return Ok(Vec::new());
        };
        if packed.len() > GROUP_MAX_BYTES && entries.len() > 1 {
            let (a, b) = entries.split_at(entries.len() / 2);
            let mut items = self.group_items(run_id, a, Tail::pack(a)?)?;
            items.extend(self.group_items(run_id, b, Tail::pack(b)?)?);
            return Ok(items);
        }
        Ok(vec![self.group_item(run_id, &packed, (last.seq, last.at))])
    }

    fn remember_tail(&self, run_id: &str, version: u64, tail: Option<Tail>) {
        self.tails
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remember(run_id, version, tail);
    }

    /// What a conditional run write that failed its condition means: the run is gone, or
    /// someone wrote a newer version.
    async fn lost_race(&self, run_id: &str, expected_version: u64) -> Result<(), StoreError> {
        if self.get_run(run_id).await?.is_none() {
            return Err(StoreError::NotFound {
                what: format!("run {run_id}"),
            });
        }
        tracing::debug!(run_id, expected_version, "version conflict");
        Err(StoreError::Conflict {
            what: format!("run {run_id}"),
            expected: expected_version,
        })
    }

    /// The names and values of [`RUN_VERSION_CONDITION`].
    fn version_condition(expected_version: u64) -> (Item, HashMap<String, String>) {
        let names = HashMap::from([
            ("#pk".to_string(), attr::PK.to_string()),
            ("#v".to_string(), attr::VERSION.to_string()),
        ]);
        let values = HashMap::from([(":expected".to_string(), n(expected_version))]);
        (values, names)
    }

    /// A run write without audit entries: one conditional `UpdateItem` that sets every
    /// attribute of the new item but the keys, removes the optional ones it does not have (and
    /// the map an earlier version stored the run in), and leaves the audit tail alone.
    async fn put_progress(&self, run: &Run, expected_version: u64) -> Result<(), StoreError> {
        let (mut values, mut names) = Self::version_condition(expected_version);
        let mut item = self.run_item(run, None)?;
        item.remove(attr::PK);
        item.remove(attr::SK);
        let removes: Vec<&str> = [attr::EXPIRES_AT, attr::DUE, attr::WAKE_AT, attr::RUN]
            .into_iter()
            .filter(|name| !item.contains_key(*name))
            .collect();
        let mut sets = Vec::new();
        for (i, (name, value)) in item.into_iter().enumerate() {
            names.insert(format!("#a{i}"), name);
            values.insert(format!(":a{i}"), value);
            sets.push(format!("#a{i} = :a{i}"));
        }
        let mut expression = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            let mut list = Vec::new();
            for (i, name) in removes.into_iter().enumerate() {
                names.insert(format!("#r{i}"), name.to_string());
                list.push(format!("#r{i}"));
            }
            expression.push_str(&format!(" REMOVE {}", list.join(", ")));
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(run_pk(&run.id), SK_RUN)))
            .update_expression(expression)
            .condition_expression(RUN_VERSION_CONDITION)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match result {
            Ok(_) => {
                self.tails
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .advance(&run.id, expected_version, run.version);
                Ok(())
            }
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                self.lost_race(&run.id, expected_version).await
            }
            Err(e) => Err(sdk_err("UpdateItem(put run)", e)),
        }
    }

    /// A run write with audit entries: copy the tail it replaces, then put the run item with
    /// the new entries as its tail (or, for entries too big to carry, in group items of one
    /// transaction with the run). Two plain writes at one unit per KB each, where a
    /// transaction of the run and an item per entry cost two units per KB per item; a crash
    /// between the two leaves a copy of a committed tail, which readers merge by seq.
    async fn put_decision(
        &self,
        run: &Run,
        expected_version: u64,
        audit: &[AuditEntry],
    ) -> Result<(), StoreError> {
        let (values, names) = Self::version_condition(expected_version);
        let entries = in_seq_order(audit);
        let first = entries.first().map_or(0, |e| e.seq);
        let duplicate = |seq: u64| {
            Err(StoreError::invalid(
                "audit",
                format!("audit entry {seq} of run {} already exists", run.id),
            ))
        };
        match self.tail_before(&run.id, expected_version).await? {
            Before::Missing => {
                return Err(StoreError::NotFound {
                    what: format!("run {}", run.id),
                });
            }
            Before::Stale => return self.lost_race(&run.id, expected_version).await,
            Before::Tail(Some(tail)) => {
                let last = tail.last()?;
                if first <= last.0 {
                    return duplicate(first);
                }
                self.flush_tail(&run.id, &tail, last).await?;
            }
            Before::Tail(None) => {
                if self.audit_stored_from(&run.id, first).await? {
                    return duplicate(first);
                }
            }
        }
        let tail = Tail::pack(&entries)?;
        if tail.len() > TAIL_MAX_BYTES {
            // Too big to carry in the run item until the next decision: the run (without a
            // tail; the previous one was copied above) and the entries' group items, atomically.
            let mut items = vec![self.put(
                self.run_item(run, None)?,
                RUN_VERSION_CONDITION,
                Some(values),
            )?];
            for group in self.group_items(&run.id, &entries, tail)? {
                items.push(self.put(group, "attribute_not_exists(#pk)", None)?);
            }
            let count = items.len();
            return match self.transact(items, "TransactWriteItems(put run)").await {
                Ok(()) => {
                    self.remember_tail(&run.id, run.version, None);
                    Ok(())
                }
                Err(e) if e.failed(0) => self.lost_race(&run.id, expected_version).await,
                Err(e) if (1..count).any(|i| e.failed(i)) => duplicate(first),
                Err(e) => Err(e.into_store_error("put run")),
            };
        }
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.run_item(run, Some(&tail))?))
            .condition_expression(RUN_VERSION_CONDITION)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match result {
            Ok(_) => {
                self.remember_tail(&run.id, run.version, Some(tail));
                Ok(())
            }
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                self.lost_race(&run.id, expected_version).await
            }
            Err(e) => Err(sdk_err("PutItem(put run)", e)),
        }
    }

    /// The run item's version and audit tail only (strongly consistent), if the run exists.
    async fn run_head(&self, run_id: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(run_pk(run_id), SK_RUN)))
            .consistent_read(true)
            .projection_expression("#v, #t")
            .expression_attribute_names("#v", attr::VERSION)
            .expression_attribute_names("#t", attr::AUDIT_TAIL)
            .send()
            .await
            .map_err(|e| sdk_err("GetItem(run version and audit tail)", e))?;
        Ok(out.item)
    }

    /// The tail of the run version `expected` (from the cache, else one strongly consistent
    /// read of the version and tail), or that the write would lose.
    async fn tail_before(&self, run_id: &str, expected: u64) -> Result<Before, StoreError> {
        let cached = self
            .tails
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .runs
            .get(run_id)
            .cloned();
        match cached {
            Some((version, tail)) if version == expected => return Ok(Before::Tail(tail)),
            Some((version, _)) if version > expected => return Ok(Before::Stale),
            _ => {}
        }
        let Some(item) = self.run_head(run_id).await? else {
            return Ok(Before::Missing);
        };
        let what = format!("run {run_id}");
        let version = u64::try_from(number_attr(&item, attr::VERSION, &what)?)
            .map_err(|e| StoreError::corrupt(&what, e))?;
        let tail = Tail::of(&item, &what)?;
        self.remember_tail(run_id, version, tail.clone());
        Ok(if version == expected {
            Before::Tail(tail)
        } else {
            Before::Stale
        })
    }

    /// Whether the run has an audit entry at `seq` or later outside its tail (a run written
    /// before audit tails existed, or created without entries).
    async fn audit_stored_from(&self, run_id: &str, seq: u64) -> Result<bool, StoreError> {
        let spec = self.audit_spec(run_id, seq);
        let (items, _) = self.query_page(&spec, 1, None).await?;
        Ok(!items.is_empty())
    }

    /// The query for a run's audit items (groups, keyed by their last seq, and single entries
    /// of earlier versions) that may hold entries from `first` on.
    fn audit_spec(&self, run_id: &str, first: u64) -> QuerySpec {
        QuerySpec {
            index: None,
            key_condition: "#pk = :pk AND #sk BETWEEN :lo AND :hi".into(),
            filter: None,
            names: HashMap::from([
                ("#pk".into(), attr::PK.into()),
                ("#sk".into(), attr::SK.into()),
            ]),
            values: HashMap::from([
                (":pk".into(), s(run_pk(run_id))),
                (":lo".into(), s(audit_sk(first))),
                (":hi".into(), s(audit_sk(u64::MAX))),
            ]),
            forward: true,
        }
    }

    /// Copy a tail to its own audit item before the write that replaces it. The item's key
    /// and contents follow from the committed tail alone, so a writer that then loses its race
    /// (or a second writer copying the same tail) writes exactly what is there already.
    async fn flush_tail(
        &self,
        run_id: &str,
        tail: &Tail,
        last: (u64, Millis),
    ) -> Result<(), StoreError> {
        self.put_unconditional(self.group_item(run_id, tail, last), "PutItem(audit group)")
            .await
    }

    /// Put `item` whatever is there (`op` names the request in errors).
    async fn put_unconditional(&self, item: Item, op: &str) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| sdk_err(op, e))?;
        Ok(())
    }

    /// A record's item. No `kind`: records are listed by their partition, not through an index,
    /// so they cost no index writes.
    fn record_item(
        collection: &str,
        id: &str,
        value: &serde_json::Value,
        expires_at: Option<Millis>,
    ) -> Result<Item, StoreError> {
        check_record_key(collection, id)?;
        check_record_value(value)?;
        let mut item = key(record_pk(collection), id);
        item.insert(attr::RECORD.into(), to_av("record", value)?);
        if let Some(at) = expires_at {
            item.insert(attr::EXPIRES_AT.into(), n(ttl_seconds(at)));
            item.insert(attr::EXPIRES_AT_MS.into(), n(at));
        }
        Ok(item)
    }

    fn put(
        &self,
        item: Item,
        condition: &str,
        values: Option<Item>,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut names = HashMap::new();
        if condition.contains("#pk") {
            names.insert("#pk".to_string(), attr::PK.to_string());
        }
        if condition.contains("#v") {
            names.insert("#v".to_string(), attr::VERSION.to_string());
        }
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_names((!names.is_empty()).then_some(names))
            .set_expression_attribute_values(values)
            .build()
            .map_err(|e| StoreError::Backend {
                message: format!("building a transaction item: {e}"),
            })?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    async fn transact(&self, items: Vec<TransactWriteItem>, op: &str) -> Result<(), TxError> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(ctx)) => match ctx.into_err() {
                TransactWriteItemsError::TransactionCanceledException(e) => {
                    Err(TxError::Cancelled(
                        e.cancellation_reasons()
                            .iter()
                            .map(|r| r.code().unwrap_or("None").to_string())
                            .collect(),
                    ))
                }
                other => Err(TxError::Other(reclassify(
                    StoreError::Backend {
                        message: format!("DynamoDB {op}: {}", DisplayErrorContext(&other)),
                    },
                    other.code(),
                ))),
            },
            Err(e) => Err(TxError::Other(sdk_err(op, e))),
        }
    }

    /// The run item, read strongly consistent or not. Either way an item is read whole, so
    /// the tail remembered is that of the version read (a version's item never changes).
    async fn read_run(&self, run_id: &str, consistent: bool) -> Result<Option<Run>, StoreError> {
        let Some(item) = self
            .read_item(run_pk(run_id), SK_RUN, "GetItem(run)", consistent)
            .await?
        else {
            return Ok(None);
        };
        let what = format!("run {run_id}");
        let run = run_of(&item, &what)?;
        self.remember_tail(run_id, run.version, Tail::of(&item, &what)?);
        Ok(Some(run))
    }

    async fn get_item(&self, pk: String, sk: &str, op: &str) -> Result<Option<Item>, StoreError> {
        self.read_item(pk, sk, op, true).await
    }

    /// `GetItem`, strongly consistent or not (half the read units).
    async fn read_item(
        &self,
        pk: String,
        sk: &str,
        op: &str,
        consistent: bool,
    ) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(|e| sdk_err(op, e))?;
        Ok(out.item)
    }

    /// The items behind listing-index entries, in the entries' order, read in batches of 100
    /// (eventually consistent, like the index itself). An item gone since the index was read
    /// (expired, deleted) is left out.
    async fn items_of(&self, entries: &[Item], op: &str) -> Result<Vec<Item>, StoreError> {
        let table_key = |item: &Item| -> Option<(String, String)> {
            match (item.get(attr::PK), item.get(attr::SK)) {
                (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) => {
                    Some((pk.clone(), sk.clone()))
                }
                _ => None,
            }
        };
        let mut found: HashMap<(String, String), Item> = HashMap::new();
        let keys: Vec<(String, String)> = entries.iter().filter_map(table_key).collect();
        for chunk in keys.chunks(BATCH_GET_MAX) {
            let mut wanted: Vec<Item> = chunk.iter().map(|(pk, sk)| key(pk.clone(), sk)).collect();
            let mut attempt = 0u32;
            while !wanted.is_empty() {
                if attempt > 0 {
                    // Unprocessed keys mean throttling: back off before asking again.
                    let backoff = 25u64 << attempt.min(6);
                    tokio::time::sleep(Duration::from_millis(backoff)).await;
                }
                if attempt == BATCH_GET_ATTEMPTS {
                    return Err(StoreError::Unavailable {
                        message: format!(
                            "{op}: {} items still unprocessed after {attempt} attempts; retry",
                            wanted.len()
                        ),
                    });
                }
                attempt += 1;
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut wanted)))
                    .build()
                    .map_err(|e| StoreError::Backend {
                        message: format!("building a {op} request: {e}"),
                    })?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| sdk_err(op, e))?;
                for item in out
                    .responses
                    .unwrap_or_default()
                    .remove(&self.table)
                    .unwrap_or_default()
                {
                    if let Some(k) = table_key(&item) {
                        found.insert(k, item);
                    }
                }
                wanted = out
                    .unprocessed_keys
                    .unwrap_or_default()
                    .remove(&self.table)
                    .map(|k| k.keys)
                    .unwrap_or_default();
            }
        }
        Ok(keys.iter().filter_map(|k| found.remove(k)).collect())
    }

    /// Up to `limit` items of a query, in key order, each mapped by `map`; pages as needed.
    async fn query_limited<T>(
        &self,
        spec: &QuerySpec,
        limit: usize,
        map: impl Fn(&Item) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        while out.len() < limit {
            let page = i32::try_from(limit - out.len())
                .unwrap_or(QUERY_PAGE)
                .min(QUERY_PAGE);
            let (items, next) = self.query_page(spec, page, start).await?;
            for item in &items {
                out.push(map(item)?);
            }
            match next {
                Some(next) => start = Some(next),
                None => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// One page of a query, from `start`.
    async fn query_page(
        &self,
        spec: &QuerySpec,
        limit: i32,
        start: Option<Item>,
    ) -> Result<(Vec<Item>, Option<Item>), StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .set_index_name(spec.index.map(str::to_string))
            .key_condition_expression(&spec.key_condition)
            .set_filter_expression(spec.filter.clone())
            .set_expression_attribute_names(Some(spec.names.clone()))
            .set_expression_attribute_values(Some(spec.values.clone()))
            .scan_index_forward(spec.forward)
            // Index reads cannot be strongly consistent; table reads are.
            .consistent_read(spec.index.is_none())
            .limit(limit)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| sdk_err("Query", e))?;
        Ok((out.items.unwrap_or_default(), out.last_evaluated_key))
    }

    /// Every item a query yields, up to `max` (more is an error naming `what`).
    async fn query_all(
        &self,
        spec: &QuerySpec,
        max: usize,
        too_many: impl FnOnce() -> StoreError,
    ) -> Result<Vec<Item>, StoreError> {
        let mut all = Vec::new();
        let mut start = None;
        loop {
            let (items, next) = self.query_page(spec, QUERY_PAGE, start).await?;
            all.extend(items);
            if all.len() > max {
                return Err(too_many());
            }
            match next {
                Some(next) => start = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// The index query for a run listing: the workflow's runs or all runs, in started order,
    /// bounded below by `created_from` (a run's started key is never earlier than its
    /// creation), with status and the exact created-at range as filters.
    fn run_query_spec(&self, query: &RunQuery, forward: bool) -> QuerySpec {
        let mut names = HashMap::new();
        let mut values = HashMap::new();
        let (index, hash_attr, hash_value) = match &query.workflow_id {
            Some(w) => (index::BY_WORKFLOW, attr::RUN_WORKFLOW, w.as_str()),
            None => (index::BY_KIND, attr::KIND, KIND_RUN),
        };
        names.insert("#hk".into(), hash_attr.into());
        values.insert(":hk".into(), s(hash_value));
        let mut key_condition = "#hk = :hk".to_string();
        let mut filters = Vec::new();
        if let Some(from) = query.created_from {
            key_condition.push_str(" AND #sk >= :from");
            names.insert("#sk".into(), attr::KIND_SK.into());
            values.insert(":from".into(), n(from));
            filters.push("#ca >= :from".to_string());
        }
        if let Some(to) = query.created_to {
            values.insert(":to".into(), n(to));
            filters.push("#ca < :to".to_string());
        }
        if filters.iter().any(|f| f.contains("#ca")) {
            names.insert("#ca".into(), attr::CREATED_AT.into());
        }
        if !query.statuses.is_empty() {
            let placeholders: Vec<String> = query
                .statuses
                .iter()
                .enumerate()
                .map(|(i, status)| {
                    let p = format!(":st{i}");
                    values.insert(p.clone(), s(status.as_str()));
                    p
                })
                .collect();
            names.insert("#st".into(), attr::STATUS.into());
            filters.push(format!("#st IN ({})", placeholders.join(", ")));
        }
        QuerySpec {
            index: Some(index),
            key_condition,
            filter: (!filters.is_empty()).then(|| filters.join(" AND ")),
            names,
            values,
            forward,
        }
    }

    /// Started-order listing straight from the index: DynamoDB pages in index order and the
    /// cursor becomes the exclusive start key.
    async fn list_by_started(
        &self,
        query: &RunQuery,
        cursor: Option<&Cursor>,
    ) -> Result<RunPage, StoreError> {
        let spec = self.run_query_spec(query, query.order == SortOrder::Asc);
        let mut start = match cursor {
            Some(c) => {
                let value =
                    c.v.filter(|v| v.is_finite())
                        .ok_or_else(|| StoreError::BadCursor {
                            reason: "it carries no start time".into(),
                        })?;
                let mut item = key(run_pk(&c.id), SK_RUN);
                item.insert(attr::KIND_SK.into(), n(value as i64));
                let (hash_attr, hash_value) = match &query.workflow_id {
                    Some(w) => (attr::RUN_WORKFLOW, w.as_str()),
                    None => (attr::KIND, KIND_RUN),
                };
                item.insert(hash_attr.into(), s(hash_value));
                Some(item)
            }
            None => None,
        };
        let wanted = query.limit as usize + 1;
        let mut entries = Vec::new();
        loop {
            // Without a filter every item read is a match: read just what the page needs (one
            // more tells whether there is a next page). With a filter, read in bulk.
            let page = match spec.filter {
                None => i32::try_from(wanted - entries.len())
                    .unwrap_or(QUERY_PAGE)
                    .min(QUERY_PAGE),
                Some(_) => QUERY_PAGE,
            };
            let (items, next) = self.query_page(&spec, page, start).await?;
            entries.extend(items);
            if entries.len() >= wanted {
                break;
            }
            match next {
                Some(next) => start = Some(next),
                None => break,
            }
        }
        entries.truncate(wanted);
        let mut runs = self
            .items_of(&entries, "BatchGetItem(runs)")
            .await?
            .iter()
            .map(|item| run_of(item, "run"))
            .collect::<Result<Vec<_>, _>>()?;
        let more = runs.len() > query.limit as usize;
        runs.truncate(query.limit as usize);
        let next_cursor = match runs.last() {
            Some(last) if more => Some(Cursor::after(query, last).encode()),
            _ => None,
        };
        Ok(RunPage { runs, next_cursor })
    }
}

/// Refine a `Backend` error from a service error code (throttling is retryable).
fn reclassify(error: StoreError, code: Option<&str>) -> StoreError {
    match (error, code) {
        (
            StoreError::Backend { message },
            Some(
                "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "InternalServerError"
                | "TransactionInProgressException",
            ),
        ) => StoreError::Unavailable { message },
        (StoreError::Backend { message }, Some("ValidationException")) => StoreError::Invalid {
            field: "item",
            reason: message,
        },
        (other, _) => other,
    }
}

#[async_trait]
impl RunStore for DynamoStore {
    #[tracing::instrument(level = "debug", skip_all, fields(run_id = %run.id, table = %self.table))]
    async fn create_run(
        &self,
        run: &Run,
        audit: &[AuditEntry],
    ) -> Result<CreateOutcome, StoreError> {
        check_audit(run, audit)?;
        if let Some(k) = run.idempotency_key.as_deref()
            && let Some(existing) = self.find_idempotency_key(k).await?
        {
            return Ok(CreateOutcome::Existing(existing));
        }
        let entries = in_seq_order(audit);
        let tail = (!entries.is_empty())
            .then(|| Tail::pack(&entries))
            .transpose()?;
        // Entries too big to keep in the run item go to their own items, in one transaction.
        let (tail, groups) = match tail {
            Some(t) if t.len() > TAIL_MAX_BYTES => (None, self.group_items(&run.id, &entries, t)?),
            other => (other, Vec::new()),
        };
        let item = self.run_item(run, tail.as_ref())?;
        let taken = || StoreError::AlreadyExists {
            what: format!("run {}", run.id),
        };
        let key_text = run.idempotency_key.as_deref();
        if key_text.is_none() && groups.is_empty() {
            // Nothing to keep in step with the run: one conditional put.
            match self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", attr::PK)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                    return Err(taken());
                }
                Err(e) => return Err(sdk_err("PutItem(create run)", e)),
            }
            self.remember_tail(&run.id, run.version, tail);
            return Ok(CreateOutcome::Created);
        }
        let mut items = vec![self.put(item, "attribute_not_exists(#pk)", None)?];
        if let Some(k) = key_text {
            let mut idem = key(idem_pk(k), "IDEM");
            idem.insert(attr::RUN_ID.into(), s(&run.id));
            idem.insert(attr::EXPIRES_AT.into(), self.expiry(run.created_at));
            items.push(self.put(idem, "attribute_not_exists(#pk)", None)?);
        }
        for group in groups {
            items.push(self.put(group, "attribute_not_exists(#pk)", None)?);
        }
        match self.transact(items, "TransactWriteItems(create run)").await {
            Ok(()) => {
                self.remember_tail(&run.id, run.version, tail);
                Ok(CreateOutcome::Created)
            }
            Err(e) => {
                if let Some(k) = key_text
                    && e.failed(1)
                {
                    // Someone created a run with this key in the meantime.
                    if let Some(existing) = self.find_idempotency_key(k).await? {
                        return Ok(CreateOutcome::Existing(existing));
                    }
                }
                if e.code(0) == Some("ConditionalCheckFailed") {
                    return Err(taken());
                }
                Err(e.into_store_error("create run"))
            }
        }
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<Run>, StoreError> {
        self.read_run(run_id, true).await
    }

    async fn get_run_relaxed(&self, run_id: &str) -> Result<Option<Run>, StoreError> {
        self.read_run(run_id, false).await
    }

    /// Progress without audit entries is one conditional `UpdateItem` that leaves the audit
    /// tail as it is ([`DynamoStore::put_progress`]); a decision with entries copies the tail
    /// it replaces to its own item first, then puts the run item with its own entries as the
    /// new tail, conditional on the version ([`DynamoStore::put_decision`]).
    #[tracing::instrument(
        level = "debug",
        skip_all,
        fields(run_id = %run.id, expected_version, table = %self.table)
    )]
    async fn put_run(
        &self,
        run: &Run,
        expected_version: u64,
        audit: &[AuditEntry],
    ) -> Result<(), StoreError> {
        check_put(run, expected_version)?;
        check_audit(run, audit)?;
        if audit.is_empty() {
            self.put_progress(run, expected_version).await
        } else {
            self.put_decision(run, expected_version, audit).await
        }
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<RunPage, StoreError> {
        let cursor = query.validate()?;
        if query.sort == RunSort::StartedAt {
            return self.list_by_started(query, cursor.as_ref()).await;
        }
        // No index orders runs by completion, duration or cost (they change as runs progress
        // and cost is a float over steps): collect the filtered runs and sort in memory.
        let spec = self.run_query_spec(query, true);
        let limit = self.sort_scan_limit;
        let items = self
            .query_all(&spec, limit, || {
                StoreError::invalid(
                    "sort",
                    format!(
                        "more than {limit} runs match; sorting by {} reads them all, so narrow \
                         the listing by workflow or created-at range, or sort by started_at",
                        query.sort.as_str()
                    ),
                )
            })
            .await?;
        let runs = self
            .items_of(&items, "BatchGetItem(runs)")
            .await?
            .iter()
            .map(|item| run_of(item, "run"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page_in_memory(runs, query, cursor.as_ref()))
    }

    async fn due_runs(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<(String, Millis)>, StoreError> {
        let spec = QuerySpec {
            index: Some(index::DUE),
            key_condition: "#due = :due AND #wake <= :now".into(),
            filter: None,
            names: HashMap::from([
                ("#due".into(), attr::DUE.into()),
                ("#wake".into(), attr::WAKE_AT.into()),
            ]),
            values: HashMap::from([(":due".into(), s(DUE_VALUE)), (":now".into(), n(now))]),
            forward: true,
        };
        self.query_limited(&spec, limit, |item| {
            let pk: String = from_attr(item, attr::PK, "due run key")?;
            let id = pk.strip_prefix("RUN#").unwrap_or(&pk).to_string();
            Ok((id, number_attr(item, attr::WAKE_AT, "due run")?))
        })
        .await
    }

    /// The tail first (strongly consistent), then the audit items from `first` on: a tail is
    /// copied to its item before the write that replaces it, so whatever the item query misses
    /// is in the tail read before it. Entries are merged by seq (a copied tail is in both).
    async fn audit(
        &self,
        run_id: &str,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let Some(first) = after_seq.map_or(Some(0), |s| s.checked_add(1)) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let tail = self.run_head(run_id).await?;
        let mut found: BTreeMap<u64, AuditEntry> = BTreeMap::new();
        let mut keep = |entries: Vec<AuditEntry>| {
            for entry in entries.into_iter().filter(|e| e.seq >= first) {
                found.entry(entry.seq).or_insert(entry);
            }
        };
        if let Some(item) = &tail {
            keep(entries_of(item, "run audit tail")?);
        }
        // Items come in seq order; stop once `limit` entries precede everything unread.
        let spec = self.audit_spec(run_id, first);
        let mut start = None;
        let mut from_items = 0usize;
        loop {
            let (items, next) = self.query_page(&spec, QUERY_PAGE, start).await?;
            for item in &items {
                let entries = entries_of(item, "audit entry")?;
                from_items += entries.iter().filter(|e| e.seq >= first).count();
                keep(entries);
            }
            match next {
                Some(next) if from_items < limit => start = Some(next),
                _ => break,
            }
        }
        Ok(found.into_values().take(limit).collect())
    }

    async fn find_idempotency_key(&self, key_text: &str) -> Result<Option<String>, StoreError> {
        match self
            .get_item(idem_pk(key_text), "IDEM", "GetItem(idempotency)")
            .await?
        {
            Some(item) => from_attr(&item, attr::RUN_ID, "idempotency record").map(Some),
            None => Ok(None),
        }
    }

    /// Sessions are one item collection (`SESSIONS`, a session per sort key) rather than
    /// entries of the `by_kind` index: a listing is one query of whole items, and a session
    /// write is one write unit, not two (the index entry was the second).
    async fn put_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let mut item = key(SESSIONS_PK.to_string(), &session_sk(&session.name));
        item.insert(attr::SESSION.into(), to_av("session", session)?);
        item.insert(attr::ACTIVE.into(), AttributeValue::Bool(session.active));
        self.put_unconditional(item, "PutItem(session)").await
    }

    async fn get_session(&self, name: &str) -> Result<Option<SessionRecord>, StoreError> {
        match self
            .get_item(
                SESSIONS_PK.to_string(),
                &session_sk(name),
                "GetItem(session)",
            )
            .await?
        {
            Some(item) => from_attr(&item, attr::SESSION, &format!("session {name}")).map(Some),
            None => Ok(None),
        }
    }

    async fn list_sessions(&self, active_only: bool) -> Result<Vec<SessionRecord>, StoreError> {
        let mut names = HashMap::from([("#pk".to_string(), attr::PK.to_string())]);
        let mut values = HashMap::from([(":pk".to_string(), s(SESSIONS_PK))]);
        if active_only {
            names.insert("#a".into(), attr::ACTIVE.into());
            values.insert(":t".into(), AttributeValue::Bool(true));
        }
        let spec = QuerySpec {
            index: None,
            key_condition: "#pk = :pk".into(),
            filter: active_only.then(|| "#a = :t".to_string()),
            names,
            values,
            forward: true,
        };
        let items = self.query_all(&spec, usize::MAX, unreachable_limit).await?;
        let mut out = items
            .iter()
            .map(|item| from_attr::<SessionRecord>(item, attr::SESSION, "session"))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| {
            b.updated_at
                .cmp(&a.updated_at)
                .then_with(|| a.name.cmp(&b.name))
        });
        Ok(out)
    }
}

fn unreachable_limit() -> StoreError {
    StoreError::Backend {
        message: "listing exceeded usize::MAX items".into(),
    }
}

#[async_trait]
impl WorkflowStore for DynamoStore {
    #[tracing::instrument(level = "debug", skip_all, fields(workflow_id = %definition.id))]
    async fn put_workflow(
        &self,
        definition: &WorkflowDefinition,
        now: Millis,
    ) -> Result<StoredWorkflow, StoreError> {
        let id = &definition.id;
        for attempt in 0..WORKFLOW_PUT_ATTEMPTS {
            let latest = self
                .get_item(workflow_pk(id), SK_LATEST, "GetItem(workflow pointer)")
                .await?;
            let previous = match &latest {
                Some(item) => u64::try_from(number_attr(item, attr::VERSION, "workflow pointer")?)
                    .map_err(|e| StoreError::corrupt("workflow pointer", e))?,
                None => 0,
            };
            let stored = StoredWorkflow {
                version: previous + 1,
                created_at: now,
                definition: definition.clone(),
            };
            let stored_av = to_av("workflow", &stored)?;
            let mut version_item = key(workflow_pk(id), &version_sk(stored.version));
            version_item.insert(attr::WORKFLOW.into(), stored_av.clone());
            let mut pointer = key(workflow_pk(id), SK_LATEST);
            pointer.insert(attr::WORKFLOW.into(), stored_av);
            pointer.insert(attr::VERSION.into(), n(stored.version));
            pointer.insert(attr::DELETED.into(), AttributeValue::Bool(false));
            pointer.insert(attr::KIND.into(), s(KIND_WORKFLOW));
            pointer.insert(attr::KIND_SK.into(), n(now));
            let pointer_put = if latest.is_some() {
                self.put(
                    pointer,
                    "#v = :previous",
                    Some(HashMap::from([(":previous".to_string(), n(previous))])),
                )?
            } else {
                self.put(pointer, "attribute_not_exists(#pk)", None)?
            };
            let items = vec![
                self.put(version_item, "attribute_not_exists(#pk)", None)?,
                pointer_put,
            ];
            match self
                .transact(items, "TransactWriteItems(put workflow)")
                .await
            {
                Ok(()) => return Ok(stored),
                Err(e) if e.failed(0) || e.failed(1) => {
                    // Another put took this version: read the new latest and try the next one.
                    tracing::debug!(workflow_id = %id, attempt, "workflow version race; retrying");
                    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 20;
                    tokio::time::sleep(Duration::from_millis(5 + jitter * u64::from(attempt + 1)))
                        .await;
                }
                Err(e) => return Err(e.into_store_error("put workflow")),
            }
        }
        Err(StoreError::Conflict {
            what: format!("workflow {id} (too many concurrent versions)"),
            expected: 0,
        })
    }

    async fn get_workflow(
        &self,
        id: &str,
        version: Option<u64>,
    ) -> Result<Option<StoredWorkflow>, StoreError> {
        let what = format!("workflow {id}");
        match version {
            Some(v) => match self
                .get_item(workflow_pk(id), &version_sk(v), "GetItem(workflow version)")
                .await?
            {
                Some(item) => from_attr(&item, attr::WORKFLOW, &what).map(Some),
                None => Ok(None),
            },
            None => match self
                .get_item(workflow_pk(id), SK_LATEST, "GetItem(workflow pointer)")
                .await?
            {
                Some(item) if item.get(attr::DELETED) != Some(&AttributeValue::Bool(true)) => {
                    from_attr(&item, attr::WORKFLOW, &what).map(Some)
                }
                _ => Ok(None),
            },
        }
    }

    async fn list_workflows(&self) -> Result<Vec<StoredWorkflow>, StoreError> {
        let spec = QuerySpec {
            index: Some(index::BY_KIND),
            key_condition: "#k = :k".into(),
            filter: None,
            names: HashMap::from([("#k".into(), attr::KIND.into())]),
            values: HashMap::from([(":k".into(), s(KIND_WORKFLOW))]),
            forward: true,
        };
        let entries = self.query_all(&spec, usize::MAX, unreachable_limit).await?;
        let items = self.items_of(&entries, "BatchGetItem(workflows)").await?;
        let mut out = items
            .iter()
            .map(|item| from_attr::<StoredWorkflow>(item, attr::WORKFLOW, "workflow"))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| a.definition.id.cmp(&b.definition.id));
        Ok(out)
    }

    async fn delete_workflow(&self, id: &str) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(workflow_pk(id), SK_LATEST)))
            // Dropping `kind` takes the pointer out of the listing index.
            .update_expression("SET #d = :t REMOVE #k, #ksk")
            .condition_expression("attribute_exists(#pk) AND #d = :f")
            .expression_attribute_names("#d", attr::DELETED)
            .expression_attribute_names("#k", attr::KIND)
            .expression_attribute_names("#ksk", attr::KIND_SK)
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .expression_attribute_values(":f", AttributeValue::Bool(false))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(sdk_err("UpdateItem(delete workflow)", e)),
        }
    }
}

#[async_trait]
impl RecordStore for DynamoStore {
    async fn create_record(
        &self,
        collection: &str,
        id: &str,
        value: &serde_json::Value,
        expires_at: Option<Millis>,
    ) -> Result<bool, StoreError> {
        let item = Self::record_item(collection, id, value, expires_at)?;
        // An expired record that TTL has not deleted yet is absent for reads, so it is for
        // creates too.
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk) OR #exp <= :now")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#exp", attr::EXPIRES_AT_MS)
            .expression_attribute_values(":now", n(record_now()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(sdk_err("PutItem(create record)", e)),
        }
    }

    async fn put_record(
        &self,
        collection: &str,
        id: &str,
        value: &serde_json::Value,
        expires_at: Option<Millis>,
    ) -> Result<(), StoreError> {
        let item = Self::record_item(collection, id, value, expires_at)?;
        self.put_unconditional(item, "PutItem(record)").await
    }

    async fn get_record(
        &self,
        collection: &str,
        id: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        check_record_key(collection, id)?;
        match self
            .get_item(record_pk(collection), id, "GetItem(record)")
            .await?
        {
            Some(item) => live_record(&item, record_now(), &format!("record {collection}/{id}")),
            None => Ok(None),
        }
    }

    async fn list_records(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let after = check_record_list(collection, after, limit)?;
        let mut names = HashMap::from([("#pk".to_string(), attr::PK.to_string())]);
        let mut values = HashMap::from([(":pk".to_string(), s(record_pk(collection)))]);
        let mut key_condition = "#pk = :pk".to_string();
        if let Some(after) = after {
            key_condition.push_str(" AND #sk > :after");
            names.insert("#sk".into(), attr::SK.into());
            values.insert(":after".into(), s(after));
        }
        let spec = QuerySpec {
            index: None,
            key_condition,
            filter: None,
            names,
            values,
            forward: true,
        };
        let now = record_now();
        let mut out = Vec::new();
        let mut start = None;
        loop {
            // Expired items still in the table are skipped here rather than with a filter
            // expression (a filter saves no read capacity), so a page reads what is still
            // missing and goes on while items were skipped.
            let page = i32::try_from(limit - out.len())
                .unwrap_or(QUERY_PAGE)
                .min(QUERY_PAGE);
            let (items, next) = self.query_page(&spec, page, start).await?;
            for item in &items {
                let id: String = from_attr(item, attr::SK, "record key")?;
                let what = format!("record {collection}/{id}");
                if let Some(value) = live_record(item, now, &what)? {
                    out.push((id, value));
                }
            }
            if out.len() >= limit {
                break;
            }
            match next {
                Some(next) => start = Some(next),
                None => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn delete_record(&self, collection: &str, id: &str) -> Result<bool, StoreError> {
        check_record_key(collection, id)?;
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(record_pk(collection), id)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| sdk_err("DeleteItem(record)", e))?;
        match out.attributes {
            // Deleting an expired record removes the item, but there was nothing to delete as
            // far as reads could tell.
            Some(old) if !old.is_empty() => Ok(!record_expired(
                record_expiry(&old, &format!("record {collection}/{id}"))?,
                record_now(),
            )),
            _ => Ok(false),
        }
    }
}
