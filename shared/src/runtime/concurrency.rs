//! Concurrency limits: at most `limit` active runs per workflow (or per value of its key).
//!
//! Everything lives in the [`RecordStore`], so the same code holds the limit on DynamoDB and in
//! `flowgate serve` without a new table or port:
//!
//! - **Slots** (`concurrency-slots.<group>`, ids `000` … `limit-1`): a run holds a slot from
//!   admission until it finishes. Taking one is a create-if-absent of a free id, so two starts
//!   racing for the last slot cannot both win: the number of runs holding a slot never exceeds
//!   the limit, which is the invariant that matters.
//! - **The queue** (`concurrency-queue.<group>`, ids `<created ms>-<seq>-<run id>`): runs waiting
//!   for a slot, listed oldest first. A queued run is created `pending` with
//!   [`Run::queued`](crate::model::Run::queued) set, so neither its `Start` nor a sweeper tick
//!   starts it; the pump takes a slot for the oldest entry and sends
//!   [`Event::Admit`](crate::engine::Event::Admit).
//! - **The registry** (`concurrency-groups`, id = group): the groups in use and their limits, so
//!   the sweeper can find every group (keyed groups are only known from their runs).
//!
//! The pump runs after every start in a group and after every run of the group finishes (from
//! its lifecycle delivery, with that delivery's retries); the sweeper runs [`repair`] every
//! minute. Every step is safe to repeat, so a crash anywhere leaves work the next pump finishes:
//!
//! - an entry written for a run that was never created (the start stopped half way) is skipped
//!   for [`ORPHAN_AFTER_MS`], then removed;
//! - a run that holds a slot but still has its queue entry (admission sent, entry not yet
//!   removed) is admitted again (harmless) and its entry removed;
//! - a slot whose run finished without releasing it (the release delivery gave up, or the run
//!   was cancelled while being admitted) is freed by [`repair`].
//!
//! Order: entries are admitted strictly oldest first, except that an entry whose run is still
//! being created is passed over rather than blocking the queue.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tracing::{debug, error, info, warn};

use super::deliver::MAX_DELIVERY_ATTEMPTS;
use super::error::ExecError;
use super::executor::Executor;
use crate::definition::{ConcurrencyLimit, WorkflowDefinition};
use crate::engine::Event;
use crate::model::{Millis, Run};
use crate::notify::Outcome;
use crate::ports::{RecordStore, RunStore, StoreError, WorkMessage, WorkQueue};
use crate::template::{self, TemplateContext};

/// Collection listing the groups in use (id = group, value = `{workflow_id, limit}`).
pub const GROUPS: &str = "concurrency-groups";

/// A queue entry or slot naming a run that does not exist is left alone this long: the start
/// that wrote it may still be creating the run. After that it belongs to a start that stopped
/// half way, and is removed.
pub const ORPHAN_AFTER_MS: i64 = 5 * 60_000;

/// A group nobody started a run in for this long drops out of the registry (its queue is
/// empty by then: queued runs are pumped whenever a run of the group finishes).
const GROUP_TTL_MS: i64 = 7 * 24 * 3_600_000;

/// Queue entries looked at per listing.
const PAGE: usize = 50;

/// Listings per pump: bounds the work one call does (the next pump continues).
const MAX_PUMP_ROUNDS: usize = 20;

/// Key values longer than this are replaced by their hash in the group name (record keys are
/// bounded, see [`MAX_RECORD_KEY_BYTES`](crate::ports::MAX_RECORD_KEY_BYTES)).
const MAX_KEY_IN_NAME: usize = 128;

/// Breaks ties between queue entries written in the same millisecond by this process.
static SEQ: AtomicU64 = AtomicU64::new(0);

/// The group a run of `def` with these inputs counts against, and its limit; `None` when the
/// workflow has no limit.
pub fn group_of<'d>(
    def: &'d WorkflowDefinition,
    run_id: &str,
    inputs: &Map<String, Value>,
) -> Option<(String, &'d ConcurrencyLimit)> {
    let limit = def.concurrency.as_ref()?;
    let Some(key) = &limit.key else {
        return Some((def.id.clone(), limit));
    };
    let steps = BTreeMap::new();
    let ctx = TemplateContext {
        run_id,
        workflow_id: &def.id,
        inputs,
        steps: &steps,
    };
    // Validation allows only input references, so rendering cannot fail; an error would mean
    // a definition stored before that rule, which then shares one group.
    let value = template::render(key, &ctx).unwrap_or_default();
    Some((format!("{}/{}", def.id, key_in_name(&value)), limit))
}

/// A key value as it appears in a group name (`<workflow>/<value>`): itself when short and
/// printable, else a hash (record collections refuse control characters and `#`).
fn key_in_name(value: &str) -> String {
    if value.len() <= MAX_KEY_IN_NAME && !value.chars().any(|c| c.is_control() || c == '#') {
        value.to_string()
    } else {
        format!("sha256:{}", hex::encode(Sha256::digest(value.as_bytes())))
    }
}

fn slots_collection(group: &str) -> String {
    format!("concurrency-slots.{group}")
}

fn queue_collection(group: &str) -> String {
    format!("concurrency-queue.{group}")
}

/// Who holds a slot, or who waits in the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Holder {
    run_id: String,
    at: Millis,
}

/// Registry value of a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct GroupInfo {
    workflow_id: String,
    limit: u32,
}

/// A group's state as stored: who holds its slots and who waits, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GroupState {
    pub active: Vec<String>,
    pub queued: Vec<String>,
}

/// The admission bookkeeping over the ports it needs.
#[derive(Clone, Copy)]
pub struct Admission<'a> {
    pub store: &'a dyn RunStore,
    pub records: &'a dyn RecordStore,
    pub queue: &'a dyn WorkQueue,
}

impl std::fmt::Debug for Admission<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").finish_non_exhaustive()
    }
}

impl<'a> Admission<'a> {
    /// Remember the group (for the sweeper) with the limit of the version being started.
    async fn register(
        &self,
        group: &str,
        workflow_id: &str,
        limit: u32,
        now: Millis,
    ) -> Result<(), StoreError> {
        let info = GroupInfo {
            workflow_id: workflow_id.to_string(),
            limit,
        };
        self.records
            .put_record(GROUPS, group, &json!(info), Some(now + GROUP_TTL_MS))
            .await
    }

    /// Take a slot for `run_id` now if one is free (a start that refuses instead of queueing).
    /// `Ok(false)`: the group is full.
    pub async fn try_take(
        &self,
        group: &str,
        workflow_id: &str,
        limit: u32,
        run_id: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        self.register(group, workflow_id, limit, now).await?;
        let mut slots = self.slots(group).await?;
        self.take_slot(group, limit, run_id, now, &mut slots).await
    }

    /// Put `run_id` at the back of the group's queue (before the run is created: see the module
    /// docs for why an entry without its run is harmless).
    pub async fn enqueue(
        &self,
        group: &str,
        workflow_id: &str,
        limit: u32,
        run_id: &str,
        now: Millis,
    ) -> Result<String, StoreError> {
        self.register(group, workflow_id, limit, now).await?;
        let seq = SEQ.fetch_add(1, Ordering::Relaxed) % 1_000_000;
        let id = format!("{:015}-{seq:06}-{run_id}", now.max(0));
        let entry = Holder {
            run_id: run_id.to_string(),
            at: now,
        };
        self.records
            .create_record(&queue_collection(group), &id, &json!(entry), None)
            .await?;
        Ok(id)
    }

    /// Remove a queue entry (its run will not be created: the start found an existing run).
    pub async fn dequeue(&self, group: &str, entry_id: &str) -> Result<(), StoreError> {
        self.records
            .delete_record(&queue_collection(group), entry_id)
            .await
            .map(|_| ())
    }

    /// Free every slot `run_id` holds in the group (a run that finished, or a start that found
    /// an existing run). Returns how many were freed.
    pub async fn free(&self, group: &str, run_id: &str) -> Result<usize, StoreError> {
        let mut freed = 0;
        for (id, holder) in self.slots(group).await? {
            if holder.run_id == run_id
                && self
                    .records
                    .delete_record(&slots_collection(group), &id)
                    .await?
            {
                freed += 1;
            }
        }
        Ok(freed)
    }

    /// Who holds the group's slots and who waits, oldest first (the first page of waiters).
    pub async fn state(&self, group: &str) -> Result<GroupState, StoreError> {
        let active = self
            .slots(group)
            .await?
            .into_iter()
            .map(|(_, h)| h.run_id)
            .collect();
        let queued = self
            .records
            .list_records(&queue_collection(group), None, PAGE)
            .await?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_value::<Holder>(v).ok())
            .map(|h| h.run_id)
            .collect();
        Ok(GroupState { active, queued })
    }

    /// Admit queued runs of the group, oldest first, while slots are free. Returns the runs
    /// admitted.
    pub async fn pump(
        &self,
        group: &str,
        limit: u32,
        now: Millis,
    ) -> Result<Vec<String>, ExecError> {
        let queue_col = queue_collection(group);
        let mut admitted = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PUMP_ROUNDS {
            let entries = self
                .records
                .list_records(&queue_col, after.as_deref(), PAGE)
                .await?;
            if entries.is_empty() {
                break;
            }
            let mut slots = self.slots(group).await?;
            for (entry_id, value) in entries {
                let Ok(entry) = serde_json::from_value::<Holder>(value) else {
                    warn!(
                        group,
                        entry_id, "unreadable concurrency queue entry; removed"
                    );
                    self.records.delete_record(&queue_col, &entry_id).await?;
                    continue;
                };
                let holds = slots.iter().any(|(_, h)| h.run_id == entry.run_id);
                if !holds {
                    match self.store.get_run(&entry.run_id).await? {
                        None if now - entry.at < ORPHAN_AFTER_MS => {
                            // Still being created, probably: pass it over for now.
                            after = Some(entry_id);
                            continue;
                        }
                        None => {
                            info!(group, run_id = %entry.run_id, "queue entry of a run that was never created; removed");
                            self.records.delete_record(&queue_col, &entry_id).await?;
                            continue;
                        }
                        Some(run) if !run.queued || run.status.is_terminal() => {
                            self.records.delete_record(&queue_col, &entry_id).await?;
                            continue;
                        }
                        Some(_) => {}
                    }
                    if !self
                        .take_slot(group, limit, &entry.run_id, now, &mut slots)
                        .await?
                    {
                        return Ok(admitted);
                    }
                }
                self.admit(&entry.run_id).await?;
                self.records.delete_record(&queue_col, &entry_id).await?;
                info!(group, run_id = %entry.run_id, "run admitted");
                admitted.push(entry.run_id);
            }
        }
        Ok(admitted)
    }

    /// The sweeper's pass: in every registered group free the slots of runs that finished (or
    /// never existed), then pump. Returns how many runs were admitted.
    pub async fn repair(&self, now: Millis) -> Result<usize, ExecError> {
        let mut admitted = 0;
        let mut after: Option<String> = None;
        loop {
            let groups = self
                .records
                .list_records(GROUPS, after.as_deref(), crate::ports::MAX_RECORD_PAGE)
                .await?;
            let Some((last, _)) = groups.last() else {
                break;
            };
            after = Some(last.clone());
            for (group, value) in groups {
                let Ok(info) = serde_json::from_value::<GroupInfo>(value) else {
                    continue;
                };
                for (id, holder) in self.slots(&group).await? {
                    let stale = match self.store.get_run(&holder.run_id).await? {
                        None => now - holder.at >= ORPHAN_AFTER_MS,
                        Some(run) => run.status.is_terminal(),
                    };
                    if stale {
                        info!(group, run_id = %holder.run_id, "freed the slot of a run that finished without releasing it");
                        self.records
                            .delete_record(&slots_collection(&group), &id)
                            .await?;
                    }
                }
                admitted += self.pump(&group, info.limit, now).await?.len();
            }
        }
        Ok(admitted)
    }

    async fn slots(&self, group: &str) -> Result<Vec<(String, Holder)>, StoreError> {
        Ok(self
            .records
            .list_records(
                &slots_collection(group),
                None,
                crate::ports::MAX_RECORD_PAGE,
            )
            .await?
            .into_iter()
            .filter_map(|(id, v)| serde_json::from_value(v).ok().map(|h| (id, h)))
            .collect())
    }

    /// Take the lowest free slot for `run_id`; `slots` is what the caller last listed and is
    /// kept current. `Ok(false)`: full (or lost to other pumps three times; they admit).
    async fn take_slot(
        &self,
        group: &str,
        limit: u32,
        run_id: &str,
        now: Millis,
        slots: &mut Vec<(String, Holder)>,
    ) -> Result<bool, StoreError> {
        for _ in 0..3 {
            if slots.len() >= limit as usize {
                return Ok(false);
            }
            let Some(free) = (0..limit)
                .map(|i| format!("{i:03}"))
                .find(|id| !slots.iter().any(|(s, _)| s == id))
            else {
                return Ok(false);
            };
            let holder = Holder {
                run_id: run_id.to_string(),
                at: now,
            };
            if self
                .records
                .create_record(&slots_collection(group), &free, &json!(holder), None)
                .await?
            {
                slots.push((free, holder));
                return Ok(true);
            }
            *slots = self.slots(group).await?;
        }
        Ok(false)
    }

    async fn admit(&self, run_id: &str) -> Result<(), ExecError> {
        let message = WorkMessage::Event {
            run_id: run_id.to_string(),
            event: Event::Admit,
        };
        self.queue.send(&message, Duration::ZERO).await?;
        Ok(())
    }
}

impl Executor {
    /// When a run with a concurrency group finishes, free its slot and admit the next queued
    /// run. `Some` asks the lifecycle delivery to be retried (the store was away); the sweeper
    /// frees what a delivery that gave up left behind.
    pub(super) async fn release_slot(
        &self,
        run: &Run,
        event: &str,
        attempt: u32,
    ) -> Option<Outcome> {
        let group = run.concurrency_group.as_deref()?;
        if !run.status.is_terminal() || !super::chain::FINISHED_EVENTS.contains(&event) {
            return None;
        }
        let records = self.records()?;
        let admission = Admission {
            store: &*self.store,
            records: &*records,
            queue: &*self.queue,
        };
        let result = async {
            let freed = admission.free(group, &run.id).await?;
            let def = self.definition(run).await?;
            let limit = def.concurrency.as_ref().map_or(1, |c| c.limit);
            let admitted = admission.pump(group, limit, self.clock.now_ms()).await?;
            debug!(run_id = %run.id, group, freed, admitted = admitted.len(), "concurrency slot released");
            Ok::<_, ExecError>(())
        }
        .await;
        match result {
            Ok(()) => None,
            Err(e) if e.is_retryable() && attempt < MAX_DELIVERY_ATTEMPTS => Some(Outcome::Retry {
                after: Duration::from_secs(2u64 << attempt.min(6)),
                error: format!("releasing the concurrency slot of run {}: {e}", run.id),
            }),
            Err(e) => {
                error!(run_id = %run.id, group, error = %e, "could not release the run's concurrency slot; the sweeper frees it within a minute");
                None
            }
        }
    }
}
