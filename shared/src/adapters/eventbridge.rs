//! Schedules on EventBridge Scheduler: one schedule per `schedule` trigger, in one schedule
//! group, each targeting the triggers function with its [`ScheduledStart`] as input (the
//! scheduled time filled in by EventBridge from
//! [`SCHEDULED_TIME_PLACEHOLDER`](crate::schedule::SCHEDULED_TIME_PLACEHOLDER)).
//!
//! Flexible time windows are off: a schedule fires at its time, and the run's idempotency key
//! (schedule + scheduled time) absorbs EventBridge's at-least-once delivery.

use async_trait::async_trait;
use aws_sdk_scheduler::Client;
use aws_sdk_scheduler::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_scheduler::types::{FlexibleTimeWindow, FlexibleTimeWindowMode, Target};

use crate::ports::{Scheduler, StoreError};
use crate::schedule::{ScheduleEntry, ScheduledStart};

/// Schedules in one EventBridge Scheduler group. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBridgeScheduler {
    client: Client,
    group: String,
    /// The triggers function's ARN.
    target_arn: String,
    /// The role EventBridge Scheduler assumes to invoke it.
    role_arn: String,
}

fn sdk_err<E, R>(op: &str, err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let code = err.code().unwrap_or_default().to_string();
    let message = format!("EventBridge Scheduler {op}: {}", DisplayErrorContext(&err));
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StoreError::Unavailable { message }
        }
        SdkError::ServiceError(_) => match code.as_str() {
            "ThrottlingException" | "InternalServerException" | "ServiceQuotaExceededException" => {
                StoreError::Unavailable { message }
            }
            "ValidationException" => StoreError::Invalid {
                field: "schedule",
                reason: message,
            },
            _ => StoreError::Backend { message },
        },
        _ => StoreError::Backend { message },
    }
}

fn is_code<E, R>(err: &SdkError<E, R>, code: &str) -> bool
where
    E: ProvideErrorMetadata,
{
    err.code() == Some(code)
}

impl EventBridgeScheduler {
    pub fn new(
        client: Client,
        group: impl Into<String>,
        target_arn: impl Into<String>,
        role_arn: impl Into<String>,
    ) -> Self {
        Self {
            client,
            group: group.into(),
            target_arn: target_arn.into(),
            role_arn: role_arn.into(),
        }
    }

    /// A scheduler with a client built from an already loaded configuration (a function loads
    /// it once for all of its clients).
    pub fn from_sdk_config(
        config: &super::SdkConfig,
        group: impl Into<String>,
        target_arn: impl Into<String>,
        role_arn: impl Into<String>,
    ) -> Self {
        Self::new(Client::new(config), group, target_arn, role_arn)
    }

    /// Open a connection to EventBridge Scheduler (DNS, TCP, TLS) with a read that changes
    /// nothing: one page of at most one schedule of the group. The triggers function calls it
    /// during INIT (its sweep lists the group every minute).
    pub async fn warm_up(&self) -> Result<(), StoreError> {
        self.client
            .list_schedules()
            .group_name(&self.group)
            .max_results(1)
            .send()
            .await
            .map_err(|e| sdk_err("ListSchedules (warm-up)", e))?;
        Ok(())
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// Create the schedule group unless it exists (tests, `flowgate serve --aws`; deployed
    /// groups come from the SAM template).
    pub async fn ensure_group(&self) -> Result<(), StoreError> {
        match self
            .client
            .create_schedule_group()
            .name(&self.group)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, "ConflictException") => Ok(()),
            Err(e) => Err(sdk_err("CreateScheduleGroup", e)),
        }
    }

    fn target(&self, entry: &ScheduleEntry) -> Result<Target, StoreError> {
        Target::builder()
            .arn(&self.target_arn)
            .role_arn(&self.role_arn)
            .input(entry.target.to_event().to_string())
            .build()
            .map_err(|e| StoreError::invalid("schedule", e.to_string()))
    }
}

fn window() -> Result<FlexibleTimeWindow, StoreError> {
    FlexibleTimeWindow::builder()
        .mode(FlexibleTimeWindowMode::Off)
        .build()
        .map_err(|e| StoreError::invalid("schedule", e.to_string()))
}

#[async_trait]
impl Scheduler for EventBridgeScheduler {
    async fn list_schedules(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut request = self.client.list_schedules().group_name(&self.group);
            if !prefix.is_empty() {
                request = request.name_prefix(prefix);
            }
            let out = request
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_err("ListSchedules", e))?;
            names.extend(
                out.schedules()
                    .iter()
                    .filter_map(|s| s.name().map(str::to_string))
                    .filter(|n| n.starts_with(prefix)),
            );
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(names),
            }
        }
    }

    async fn get_schedule(&self, name: &str) -> Result<Option<ScheduleEntry>, StoreError> {
        let out = match self
            .client
            .get_schedule()
            .group_name(&self.group)
            .name(name)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if is_code(&e, "ResourceNotFoundException") => return Ok(None),
            Err(e) => return Err(sdk_err("GetSchedule", e)),
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            what: format!("schedule {name} in group {}", self.group),
            reason,
        };
        let input = out
            .target()
            .and_then(|t| t.input())
            .ok_or_else(|| corrupt("its target has no input".into()))?;
        let event: serde_json::Value =
            serde_json::from_str(input).map_err(|e| corrupt(e.to_string()))?;
        let target = ScheduledStart::from_event(&event).map_err(|e| corrupt(e.to_string()))?;
        Ok(Some(ScheduleEntry {
            name: name.to_string(),
            expression: out.schedule_expression().unwrap_or_default().to_string(),
            timezone: out
                .schedule_expression_timezone()
                .unwrap_or(crate::schedule::DEFAULT_TIMEZONE)
                .to_string(),
            target,
        }))
    }

    async fn put_schedule(&self, entry: &ScheduleEntry) -> Result<(), StoreError> {
        // CreateSchedule and UpdateSchedule take the same fields through distinct builder types.
        macro_rules! with_entry {
            ($request:expr) => {
                $request
                    .group_name(&self.group)
                    .name(&entry.name)
                    .schedule_expression(&entry.expression)
                    .schedule_expression_timezone(&entry.timezone)
                    .flexible_time_window(window()?)
                    .target(self.target(entry)?)
                    .send()
                    .await
            };
        }
        match with_entry!(self.client.create_schedule()) {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, "ConflictException") => {
                with_entry!(self.client.update_schedule())
                    .map_err(|e| sdk_err("UpdateSchedule", e))?;
                Ok(())
            }
            Err(e) => Err(sdk_err("CreateSchedule", e)),
        }
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool, StoreError> {
        match self
            .client
            .delete_schedule()
            .group_name(&self.group)
            .name(name)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, "ResourceNotFoundException") => Ok(false),
            Err(e) => Err(sdk_err("DeleteSchedule", e)),
        }
    }
}
