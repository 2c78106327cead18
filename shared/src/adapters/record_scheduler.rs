//! Schedules as records, for `flowgate serve` (its ticker fires them) and tests: the same
//! [`Scheduler`] port as EventBridge Scheduler, over any [`RecordStore`].

use std::sync::Arc;

use async_trait::async_trait;

use crate::ports::{MAX_RECORD_PAGE, RecordStore, Scheduler, StoreError};
use crate::schedule::ScheduleEntry;

/// Record collection holding the schedules (id = schedule name).
pub const SCHEDULES: &str = "schedules";

/// A [`Scheduler`] over a record store.
#[derive(Clone)]
pub struct RecordScheduler {
    records: Arc<dyn RecordStore>,
}

impl std::fmt::Debug for RecordScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordScheduler").finish_non_exhaustive()
    }
}

impl RecordScheduler {
    pub fn new(records: Arc<dyn RecordStore>) -> Self {
        Self { records }
    }

    /// Every schedule, by name.
    pub async fn entries(&self) -> Result<Vec<ScheduleEntry>, StoreError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .records
                .list_records(SCHEDULES, after.as_deref(), MAX_RECORD_PAGE)
                .await?;
            let Some((last, _)) = page.last() else {
                return Ok(out);
            };
            after = Some(last.clone());
            out.extend(
                page.into_iter()
                    .filter_map(|(_, v)| serde_json::from_value(v).ok()),
            );
        }
    }
}

#[async_trait]
impl Scheduler for RecordScheduler {
    async fn list_schedules(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .entries()
            .await?
            .into_iter()
            .map(|e| e.name)
            .filter(|n| n.starts_with(prefix))
            .collect())
    }

    async fn get_schedule(&self, name: &str) -> Result<Option<ScheduleEntry>, StoreError> {
        match self.records.get_record(SCHEDULES, name).await? {
            None => Ok(None),
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    what: format!("schedule {name}"),
                    reason: e.to_string(),
                }),
        }
    }

    async fn put_schedule(&self, entry: &ScheduleEntry) -> Result<(), StoreError> {
        let value = serde_json::to_value(entry)
            .map_err(|e| StoreError::invalid("schedule", e.to_string()))?;
        self.records
            .put_record(SCHEDULES, &entry.name, &value, None)
            .await
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool, StoreError> {
        self.records.delete_record(SCHEDULES, name).await
    }
}
