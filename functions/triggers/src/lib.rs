//! Lambda function `flowgate-triggers`: what starts runs besides the API.
//!
//! One function, three kinds of event (the handler lives here, not in `main.rs`, so tests call
//! it directly):
//!
//! - **Scheduled starts** from EventBridge Scheduler (`{"flowgate": "schedule", ...}`, a
//!   [`ScheduledStart`] written by the schedule sync): start the run, idempotent per schedule
//!   and scheduled time, with the schedule's overlap policy ([`fire_schedule`]).
//! - **The sweep** every minute (`{"flowgate": "sweep"}` from the sweeper schedule, or an
//!   EventBridge `Scheduled Event`): re-wake overdue runs, free concurrency slots nobody
//!   released, fix schedules that differ from the definitions ([`sweep_all`]).
//! - **Inbound webhooks** (`POST /hooks/{trigger_id}` through API Gateway): the router
//!   `flowgate_api` builds, so this function, the api function and `flowgate serve` answer a
//!   delivery the same way.

use flowgate_api::Services;
use flowgate_shared::runtime::{Fired, SchedulePorts, SweepPorts, fire_schedule, sweep_all};
use flowgate_shared::schedule::{SCHEDULE_EVENT, ScheduledStart};
use lambda_http::request::LambdaRequest;
use lambda_runtime::{Error, LambdaEvent};
use serde_json::{Value, json};
use tower::Service as _;
use tracing::{error, info, warn};

/// Overdue runs one sweep re-wakes; the rest wait for the next minute, so a backlog cannot
/// flood the queue at once.
pub const SWEEP_LIMIT: usize = 1_000;

/// The `flowgate` field of the sweeper schedule's input.
pub const SWEEP_EVENT: &str = "sweep";

/// The HTTP side of this function: `POST /hooks/{trigger_id}`.
pub fn hooks_app(services: Services) -> axum::Router {
    flowgate_api::hooks_app(services)
}

/// What one event is.
#[derive(Debug)]
enum Kind {
    Schedule,
    Sweep,
    Http,
}

fn kind(event: &Value) -> Option<Kind> {
    match event.get("flowgate").and_then(Value::as_str) {
        Some(SCHEDULE_EVENT) => return Some(Kind::Schedule),
        Some(SWEEP_EVENT) => return Some(Kind::Sweep),
        Some(_) => return None,
        None => {}
    }
    if event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event") {
        return Some(Kind::Sweep);
    }
    if event.get("requestContext").is_some() && event.get("routeKey").is_some()
        || event.get("httpMethod").is_some()
    {
        return Some(Kind::Http);
    }
    None
}

/// The function: its services and the hooks router, built once per container.
#[derive(Clone)]
pub struct Triggers {
    services: Services,
    router: axum::Router,
}

impl std::fmt::Debug for Triggers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Triggers").finish_non_exhaustive()
    }
}

impl Triggers {
    pub fn new(services: Services) -> Self {
        let router = hooks_app(services.clone());
        Self { services, router }
    }

    /// Handle one invocation. A scheduled start that failed in a way that may pass returns an
    /// error, so EventBridge Scheduler retries it (the idempotency key makes that safe); one
    /// that can never succeed is logged and answered, so it is not retried forever.
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, Error> {
        let (payload, context) = (event.payload, event.context);
        match kind(&payload) {
            Some(Kind::Schedule) => self.schedule(&payload).await,
            Some(Kind::Sweep) => self.sweep().await,
            Some(Kind::Http) => self.http(payload, context).await,
            None => {
                warn!(request_id = %context.request_id, "unrecognised event; nothing was done");
                Err("flowgate-triggers: unrecognised event: expected a scheduled start ({\"flowgate\": \"schedule\", ...}), a sweep ({\"flowgate\": \"sweep\"} or an EventBridge Scheduled Event) or an API Gateway request; nothing was done, do not retry".into())
            }
        }
    }

    async fn schedule(&self, payload: &Value) -> Result<Value, Error> {
        let start = match ScheduledStart::from_event(payload) {
            Ok(start) => start,
            Err(e) => {
                error!(error = %e, "malformed scheduled start; nothing was done");
                return Ok(
                    json!({"outcome": "refused", "error": format!("malformed scheduled start: {e}")}),
                );
            }
        };
        let s = &self.services;
        let records = s.notifier.webhooks().records();
        let ports = SchedulePorts {
            store: &*s.store,
            workflows: &*s.workflows,
            queue: &*s.queue,
            records: records.as_ref(),
        };
        match fire_schedule(ports, &start, s.clock.now_ms()).await {
            Ok(fired) => {
                if let Fired::Skipped { reason } = &fired {
                    info!(schedule = %start.schedule, %reason, "scheduled start skipped");
                }
                Ok(serde_json::to_value(fired)?)
            }
            Err(e) if e.is_retryable() => {
                warn!(schedule = %start.schedule, error = %e, "scheduled start failed; EventBridge retries it");
                Err(e.to_string().into())
            }
            Err(e) => {
                error!(schedule = %start.schedule, error = %e, "scheduled start refused");
                Ok(json!({"outcome": "refused", "error": e.to_string()}))
            }
        }
    }

    async fn sweep(&self) -> Result<Value, Error> {
        let s = &self.services;
        let records = s.notifier.webhooks().records();
        let ports = SweepPorts {
            store: &*s.store,
            workflows: &*s.workflows,
            queue: &*s.queue,
            records: records.as_ref(),
            scheduler: s.scheduler.as_deref(),
        };
        let report = sweep_all(ports, s.clock.now_ms(), SWEEP_LIMIT).await?;
        info!(
            woken = report.woken,
            admitted = report.admitted,
            schedules_fixed = report.schedules_fixed,
            "sweep done"
        );
        Ok(serde_json::to_value(report)?)
    }

    async fn http(&self, payload: Value, context: lambda_runtime::Context) -> Result<Value, Error> {
        let request: LambdaRequest = serde_json::from_value(payload)?;
        // lambda_http's own adapter: the same request/response conversion `lambda_http::run`
        // uses, for one event among others.
        let mut adapter = lambda_http::Adapter::from(self.router.clone());
        let response = adapter.call(LambdaEvent::new(request, context)).await?;
        Ok(serde_json::to_value(response)?)
    }
}
