//! Outbound webhooks: subscriptions, fan-out of lifecycle events, signed deliveries.
//!
//! A subscription names a URL, the lifecycle events it wants (or `*`), optionally one workflow,
//! and a Standard Webhooks secret. When a run emits an event the executor asks [`Webhooks::fan_out`]
//! for one [`Delivery::Webhook`] per matching subscription and queues each on its own, so one
//! slow or failing receiver never delays another. [`Webhooks::send`] then makes one attempt:
//! it signs the body per Standard Webhooks v1 (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`), POSTs it, writes a line to the subscription's delivery log, and says
//! whether and when to try again.
//!
//! Delivery rules (Standard Webhooks "Operational considerations"):
//! - any 2xx is success; a 3xx is a failure and is not followed (a redirect could point a
//!   signed message somewhere the subscriber never chose);
//! - 410 Gone disables the subscription: the receiver said it will never want more;
//! - everything else (other statuses, timeouts, refused connections) is retried on a backoff
//!   schedule ([`DEFAULT_BACKOFF`], configurable), honouring a longer `Retry-After` on
//!   throttling answers (429, 502, 503, 504), until the schedule runs out.
//!
//! The `webhook-id` is derived from the event, not drawn at random, so a repeated fan-out (the
//! queue delivers at least once) sends the same id and receivers drop the duplicate. The
//! signature timestamp is new on every attempt, as the spec requires, while the body (with the
//! event's own `timestamp`) stays byte-identical.
//!
//! Storage (the [`RecordStore`]): subscriptions in [`SUBSCRIPTIONS`] keyed by `wh_<uuid>`, with
//! the secret as its `whsec_…` text because signing needs it back (it is never part of an API
//! view); each subscription's delivery log in `webhook-deliveries.{id}`, keyed newest first and
//! expiring after [`DELIVERY_LOG_TTL`].

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tracing::{info, warn};
use utoipa::ToSchema;

use super::{Delivery, Outcome};
use crate::definition::LIFECYCLE_EVENTS;
use crate::model::{Millis, Run};
use crate::ports::{MAX_RECORD_PAGE, RecordStore, StoreError};
use crate::signing::{self, WebhookSecret};

/// Record collection of subscriptions, by subscription id.
pub const SUBSCRIPTIONS: &str = "webhook-subscriptions";
/// Prefix of a subscription's delivery-log collection (`webhook-deliveries.{id}`).
pub const DELIVERIES_PREFIX: &str = "webhook-deliveries.";
/// How long delivery-log entries are kept (the store drops them afterwards).
pub const DELIVERY_LOG_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Per-attempt request timeout (the spec asks for 15 to 30 s): long enough for a slow receiver,
/// short enough that a hung one does not hold a worker.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Matches every lifecycle event in a subscription's `events`.
pub const ALL_EVENTS: &str = "*";
/// The longest `Retry-After` honoured: a receiver cannot park a message for longer than a day.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Longest accepted subscription URL.
pub const MAX_URL_CHARS: usize = 2048;
/// Longest accepted description.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
/// Longest accepted workflow filter.
pub const MAX_WORKFLOW_CHARS: usize = 200;

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;

/// How long the executor trusts its list of subscriptions when deciding whether a lifecycle
/// event needs a delivery at all.
pub const SUBSCRIPTIONS_CACHE_TTL: Duration = Duration::from_secs(30);

/// The wait before each retry: attempt 1 goes out at once, attempt `n + 1` waits
/// `DEFAULT_BACKOFF[n - 1]` after attempt `n` failed (the spec's example schedule: 5 s, 5 min,
/// 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h), so a message is tried 10 times over about three
/// days before it is given up.
pub const DEFAULT_BACKOFF: [Duration; 9] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * MINUTE),
    Duration::from_secs(30 * MINUTE),
    Duration::from_secs(2 * HOUR),
    Duration::from_secs(5 * HOUR),
    Duration::from_secs(10 * HOUR),
    Duration::from_secs(14 * HOUR),
    Duration::from_secs(20 * HOUR),
    Duration::from_secs(24 * HOUR),
];

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/// A webhook subscription as the API shows it. The secret is deliberately not a field: it is
/// shown once, when the subscription is created, and never again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Subscription {
    /// `wh_` + 32 hex characters.
    pub id: String,
    /// Where deliveries are POSTed (absolute `http` or `https` URL).
    pub url: String,
    /// Lifecycle events delivered (`run.started`, `step.completed`, ...), or `*` for all.
    pub events: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Only runs of this workflow id; every workflow when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// False once the receiver answered 410 Gone; disabled subscriptions get no deliveries.
    pub enabled: bool,
    pub created_at: Millis,
    /// Why the subscription was disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
}

impl Subscription {
    /// Whether this subscription wants `event` of a run of `workflow_id`.
    pub fn wants(&self, event: &str, workflow_id: &str) -> bool {
        self.enabled
            && self.events.iter().any(|e| e == event || e == ALL_EVENTS)
            && self.workflow.as_deref().is_none_or(|w| w == workflow_id)
    }
}

/// What is stored: the view plus the secret signing needs. Not `Debug`, so the secret cannot
/// end up in a log line.
#[derive(Serialize, Deserialize)]
struct StoredSubscription {
    #[serde(flatten)]
    subscription: Subscription,
    /// `whsec_…`.
    secret: String,
}

/// What to subscribe: the input of [`Webhooks::create`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NewSubscription {
    pub url: String,
    pub events: Vec<String>,
    /// A `whsec_…` secret to sign with; one is generated when absent.
    pub secret: Option<String>,
    pub description: Option<String>,
    pub workflow: Option<String>,
}

impl std::fmt::Debug for NewSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSubscription")
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("description", &self.description)
            .field("workflow", &self.workflow)
            .finish()
    }
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptResult {
    /// The receiver answered 2xx.
    Delivered,
    /// Failed; another attempt is scheduled at `next_retry_at`.
    Retrying,
    /// Failed, and the retry schedule is exhausted: the message is dropped.
    GaveUp,
    /// The receiver answered 410 Gone: the subscription is now disabled.
    Disabled,
}

/// One line of a subscription's delivery log: one attempt to send one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryLogEntry {
    /// The `webhook-id` sent (the same on every attempt of one message).
    pub message_id: String,
    pub event: String,
    /// 1 for the first try.
    pub attempt: u32,
    /// When the attempt was made.
    pub at: Millis,
    /// The receiver's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why the attempt failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the request took.
    pub duration_ms: u64,
    pub result: AttemptResult,
    /// When the next attempt is due (only with `result: retrying`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_at: Option<Millis>,
}

/// Why a subscription could not be created. Each input variant names the request field at
/// fault ([`WebhookError::field`]).
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("url: {0}")]
    Url(String),
    #[error("events: {0}")]
    Events(String),
    /// An event that is not a lifecycle event, at this index of `events`.
    #[error("events[{index}]: unknown event {event:?}; use one of {known} or \"*\" for all")]
    UnknownEvent {
        index: usize,
        event: String,
        known: String,
    },
    #[error("secret: {0}")]
    Secret(String),
    #[error("description: {0}")]
    Description(String),
    #[error("workflow: {0}")]
    Workflow(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl WebhookError {
    /// The request field at fault (a JSON path), `None` for store failures.
    pub fn field(&self) -> Option<String> {
        match self {
            WebhookError::Url(_) => Some("url".to_string()),
            WebhookError::Events(_) => Some("events".to_string()),
            WebhookError::UnknownEvent { index, .. } => Some(format!("events[{index}]")),
            WebhookError::Secret(_) => Some("secret".to_string()),
            WebhookError::Description(_) => Some("description".to_string()),
            WebhookError::Workflow(_) => Some("workflow".to_string()),
            WebhookError::Store(_) => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------------------------

/// The subscriptions as listed at an instant.
type CachedList = (std::time::Instant, Vec<Subscription>);

/// Subscriptions and deliveries over the record store.
#[derive(Clone)]
pub struct Webhooks {
    records: Arc<dyn RecordStore>,
    /// The subscriptions as last listed, and when: lets the executor skip queueing an event
    /// nobody subscribed to without a read per event (see [`Webhooks::anyone_wants`]).
    cached: Arc<std::sync::Mutex<Option<CachedList>>>,
    /// Built on first send (most processes never send a webhook, and a client costs a read of
    /// the root certificates); `None` inside when it could not be built (no TLS backend):
    /// every send gives up, saying so.
    http: Arc<OnceLock<Option<reqwest::Client>>>,
    backoff: Vec<Duration>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// The default client: redirects are not followed (a 3xx is a failed delivery) and each request
/// gives up after [`REQUEST_TIMEOUT`].
fn default_http() -> Option<reqwest::Client> {
    match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("flowgate/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => Some(client),
        Err(e) => {
            warn!(error = %e, "the webhook HTTP client cannot be built; webhook deliveries will be dropped");
            None
        }
    }
}

impl Webhooks {
    pub fn new(records: Arc<dyn RecordStore>) -> Self {
        Webhooks {
            records,
            http: Arc::new(OnceLock::new()),
            cached: Arc::default(),
            backoff: DEFAULT_BACKOFF.to_vec(),
        }
    }

    /// The record store subscriptions and delivery logs live in (inbound webhook triggers keep
    /// the delivery ids they have seen there too).
    pub fn records(&self) -> &Arc<dyn RecordStore> {
        &self.records
    }

    /// Replace the retry schedule: entry `n - 1` is the wait after failed attempt `n`; once it
    /// is exhausted the message is given up (tests use milliseconds).
    pub fn with_backoff(mut self, schedule: Vec<Duration>) -> Self {
        self.backoff = schedule;
        self
    }

    /// Replace the HTTP client (a proxy, other timeouts). Build it with
    /// `redirect::Policy::none()`, or redirects will be followed.
    pub fn with_http(mut self, client: reqwest::Client) -> Self {
        self.http = Arc::new(OnceLock::from(Some(client)));
        self
    }

    /// The retry schedule in use.
    pub fn backoff(&self) -> &[Duration] {
        &self.backoff
    }

    // -----------------------------------------------------------------------------------------
    // Subscriptions
    // -----------------------------------------------------------------------------------------

    /// Validate and store a subscription. Returns it with its secret (`whsec_…`), which the
    /// caller shows once: no later read returns it.
    pub async fn create(
        &self,
        new: NewSubscription,
        now: Millis,
    ) -> Result<(Subscription, String), WebhookError> {
        let url = check_url(&new.url)?;
        let events = check_events(&new.events)?;
        let secret = match new.secret.as_deref() {
            Some(text) => WebhookSecret::parse(text).map_err(|e| {
                WebhookError::Secret(format!(
                    "{e}; leave it out to have one generated, or send `whsec_` + base64 of 24 to \
                     512 random bytes"
                ))
            })?,
            None => WebhookSecret::generate(),
        };
        let description = check_text(
            new.description,
            MAX_DESCRIPTION_CHARS,
            WebhookError::Description,
        )?;
        let workflow = check_text(new.workflow, MAX_WORKFLOW_CHARS, WebhookError::Workflow)?;
        let secret = secret.expose();
        // A uuid v4 collision is not going to happen; the loop only keeps `create_record`'s
        // "taken" answer from being silently ignored.
        for _ in 0..3 {
            let subscription = Subscription {
                id: format!("wh_{}", uuid::Uuid::new_v4().simple()),
                url: url.clone(),
                events: events.clone(),
                description: description.clone(),
                workflow: workflow.clone(),
                enabled: true,
                created_at: now,
                disabled_reason: None,
            };
            let stored = StoredSubscription {
                subscription,
                secret: secret.clone(),
            };
            let value = to_value(&stored)?;
            if self
                .records
                .create_record(SUBSCRIPTIONS, &stored.subscription.id, &value, None)
                .await?
            {
                return Ok((stored.subscription, secret));
            }
        }
        Err(StoreError::AlreadyExists {
            what: "a webhook subscription with a freshly generated id".to_string(),
        }
        .into())
    }

    /// Every subscription, oldest first.
    pub async fn list(&self) -> Result<Vec<Subscription>, StoreError> {
        let mut out: Vec<Subscription> = self
            .list_stored()
            .await?
            .into_iter()
            .map(|s| s.subscription)
            .collect();
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Whether any enabled subscription wants `event` of a run of `workflow_id`, from a list
    /// at most [`SUBSCRIPTIONS_CACHE_TTL`] old (a new subscription gets events within that
    /// long). A store error answers `true`: when in doubt, queue the delivery.
    pub async fn anyone_wants(&self, event: &str, workflow_id: &str) -> bool {
        let wants = |list: &[Subscription]| list.iter().any(|s| s.wants(event, workflow_id));
        let cached = || {
            self.cached
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some((at, list)) = cached().as_ref()
            && at.elapsed() < SUBSCRIPTIONS_CACHE_TTL
        {
            return wants(list);
        }
        match self.list().await {
            Ok(list) => {
                let wanted = wants(&list);
                *cached() = Some((std::time::Instant::now(), list));
                wanted
            }
            Err(_) => true,
        }
    }

    /// One subscription; `None` when there is none with this id.
    pub async fn get(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        Ok(self.get_stored(id).await?.map(|s| s.subscription))
    }

    /// Delete a subscription (its delivery log expires on its own); `false` when there was
    /// none. Deliveries already queued for it find it gone and are dropped.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        if !is_subscription_id(id) {
            return Ok(false);
        }
        self.records.delete_record(SUBSCRIPTIONS, id).await
    }

    /// The newest `limit` (clamped to 1..=100) delivery-log entries of a subscription, newest
    /// first. Empty for an unknown id.
    pub async fn deliveries(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Vec<DeliveryLogEntry>, StoreError> {
        if !is_subscription_id(id) {
            return Ok(Vec::new());
        }
        let limit = limit.clamp(1, MAX_RECORD_PAGE);
        let rows = self
            .records
            .list_records(&log_collection(id), None, limit)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(key, value)| match serde_json::from_value(value) {
                Ok(entry) => Some(entry),
                Err(e) => {
                    warn!(webhook_id = %id, entry = %key, error = %e, "unreadable delivery-log entry skipped");
                    None
                }
            })
            .collect())
    }

    async fn get_stored(&self, id: &str) -> Result<Option<StoredSubscription>, StoreError> {
        if !is_subscription_id(id) {
            return Ok(None);
        }
        match self.records.get_record(SUBSCRIPTIONS, id).await? {
            Some(value) => serde_json::from_value(value)
                .map(Some)
                .map_err(|e| StoreError::corrupt(format!("webhook subscription {id}"), e)),
            None => Ok(None),
        }
    }

    async fn list_stored(&self) -> Result<Vec<StoredSubscription>, StoreError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .records
                .list_records(SUBSCRIPTIONS, after.as_deref(), MAX_RECORD_PAGE)
                .await?;
            let full = page.len() == MAX_RECORD_PAGE;
            after = page.last().map(|(id, _)| id.clone());
            for (id, value) in page {
                match serde_json::from_value::<StoredSubscription>(value) {
                    Ok(s) => out.push(s),
                    // One bad record must not stop every other subscription's deliveries.
                    Err(e) => {
                        warn!(webhook_id = %id, error = %e, "unreadable webhook subscription skipped; repair or delete it")
                    }
                }
            }
            if !full {
                return Ok(out);
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Fan-out and delivery
    // -----------------------------------------------------------------------------------------

    /// The deliveries (one per matching subscription) for a lifecycle event of `run`.
    ///
    /// A subscription matches when it is enabled, lists `event` (or `*`), and has no workflow
    /// filter or one equal to the run's workflow. The same event fanned out again yields the
    /// same deliveries, message ids included.
    pub async fn fan_out(
        &self,
        run: &Run,
        event: &str,
        step: Option<&str>,
        data: &Value,
        at: Millis,
    ) -> Result<Vec<Delivery>, StoreError> {
        let subscriptions = self.list_stored().await?;
        let matching: Vec<&Subscription> = subscriptions
            .iter()
            .map(|s| &s.subscription)
            .filter(|s| s.wants(event, &run.workflow_id))
            .collect();
        if matching.is_empty() {
            return Ok(Vec::new());
        }
        let payload = payload(run, event, step, data, at);
        let event_digest = event_digest(&run.id, event, step, data, at);
        Ok(matching
            .into_iter()
            .map(|s| Delivery::Webhook {
                subscription_id: s.id.clone(),
                message_id: message_id(&event_digest, &s.id),
                event: event.to_string(),
                payload: payload.clone(),
            })
            .collect())
    }

    /// Send one message to one subscription (attempt 1, 2, ...), log it, and say whether and
    /// when to try again.
    pub async fn send(
        &self,
        subscription_id: &str,
        message_id: &str,
        event: &str,
        payload: &Value,
        attempt: u32,
        now: Millis,
    ) -> Outcome {
        let stored = match self.get_stored(subscription_id).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                info!(webhook_id = %subscription_id, message_id, event, "the webhook subscription was deleted; delivery dropped");
                return Outcome::Done;
            }
            // The store, not the receiver, failed: try again soon.
            Err(e) if e.is_retryable() => {
                return Outcome::Retry {
                    after: Duration::from_secs(5),
                    error: format!("could not read webhook subscription {subscription_id}: {e}"),
                };
            }
            Err(e) => {
                return Outcome::GiveUp(format!(
                    "could not read webhook subscription {subscription_id}: {e}"
                ));
            }
        };
        let sub = &stored.subscription;
        if !sub.enabled {
            info!(webhook_id = %sub.id, message_id, event, reason = sub.disabled_reason.as_deref().unwrap_or(""), "the webhook subscription is disabled; delivery dropped");
            return Outcome::Done;
        }
        let secret = match WebhookSecret::parse(&stored.secret) {
            Ok(s) => s,
            Err(e) => {
                return Outcome::GiveUp(format!(
                    "the stored secret of webhook subscription {} is unusable ({e}); delete and \
                     recreate the subscription",
                    sub.id
                ));
            }
        };
        let Some(http) = self.http.get_or_init(default_http).as_ref() else {
            return Outcome::GiveUp(
                "the webhook HTTP client could not be built at startup; see the earlier error"
                    .to_string(),
            );
        };
        let body = match serde_json::to_vec(payload) {
            Ok(b) => b,
            Err(e) => {
                return Outcome::GiveUp(format!("the webhook payload cannot be encoded: {e}"));
            }
        };
        let timestamp = now.div_euclid(1000);
        let signature = signing::sign_standard(&[secret], message_id, timestamp, &body);

        let started = Instant::now();
        let answer = http
            .post(&sub.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signing::WEBHOOK_ID, message_id)
            .header(signing::WEBHOOK_TIMESTAMP, timestamp.to_string())
            .header(signing::WEBHOOK_SIGNATURE, signature)
            .body(body)
            .send()
            .await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);

        let mut entry = DeliveryLogEntry {
            message_id: message_id.to_string(),
            event: event.to_string(),
            attempt,
            at: now,
            status: None,
            error: None,
            duration_ms,
            result: AttemptResult::Delivered,
            next_retry_at: None,
        };
        let (error, retry_after) = match answer {
            Ok(response) => {
                let status = response.status();
                entry.status = Some(status.as_u16());
                if status.is_success() {
                    self.log(&sub.id, &entry).await;
                    info!(webhook_id = %sub.id, message_id, event, attempt, status = status.as_u16(), "webhook delivered");
                    return Outcome::Done;
                }
                if status == reqwest::StatusCode::GONE {
                    entry.result = AttemptResult::Disabled;
                    entry.error = Some("the receiver answered 410 Gone".to_string());
                    self.log(&sub.id, &entry).await;
                    self.disable(&sub.id, now).await;
                    return Outcome::Done;
                }
                let retry_after = match status.as_u16() {
                    429 | 502 | 503 | 504 => retry_after(response.headers()),
                    _ => None,
                };
                let error = if status.is_redirection() {
                    format!(
                        "the receiver answered {status} (redirects are not followed; subscribe \
                         the final URL)"
                    )
                } else {
                    format!("the receiver answered {status}")
                };
                (error, retry_after)
            }
            Err(e) => (request_error(&e), None),
        };
        entry.error = Some(error.clone());
        let index = usize::try_from(attempt.max(1) - 1).unwrap_or(usize::MAX);
        let Some(wait) = self.backoff.get(index).copied() else {
            entry.result = AttemptResult::GaveUp;
            self.log(&sub.id, &entry).await;
            return Outcome::GiveUp(format!(
                "webhook {message_id} to subscription {}: {error}; giving up after {attempt} \
                 attempt(s)",
                sub.id
            ));
        };
        let after = retry_after.map_or(wait, |r| r.max(wait));
        entry.result = AttemptResult::Retrying;
        entry.next_retry_at =
            Some(now.saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX / 2)));
        self.log(&sub.id, &entry).await;
        Outcome::Retry {
            after,
            error: format!("webhook to subscription {}: {error}", sub.id),
        }
    }

    /// Append one attempt to the subscription's delivery log. A failure to log does not fail
    /// the delivery (the message was or was not delivered either way); it is reported.
    async fn log(&self, subscription_id: &str, entry: &DeliveryLogEntry) {
        let expires = entry
            .at
            .saturating_add(i64::try_from(DELIVERY_LOG_TTL.as_millis()).unwrap_or(i64::MAX / 2));
        let value = match serde_json::to_value(entry) {
            Ok(v) => v,
            Err(e) => {
                warn!(webhook_id = %subscription_id, error = %e, "delivery-log entry not written");
                return;
            }
        };
        let key = log_key(entry.at, entry.attempt, &entry.message_id);
        if let Err(e) = self
            .records
            .put_record(
                &log_collection(subscription_id),
                &key,
                &value,
                Some(expires),
            )
            .await
        {
            warn!(webhook_id = %subscription_id, error = %e, "delivery-log entry not written");
        }
    }

    /// Mark a subscription disabled after its receiver answered 410 Gone.
    async fn disable(&self, id: &str, now: Millis) {
        // Re-read right before writing, so a subscription deleted meanwhile is not recreated.
        let mut stored = match self.get_stored(id).await {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                warn!(webhook_id = %id, error = %e, "the receiver answered 410 Gone but the subscription could not be disabled; it will be tried again on the next event");
                return;
            }
        };
        stored.subscription.enabled = false;
        stored.subscription.disabled_reason = Some(format!(
            "the receiver answered 410 Gone at {}; create a new subscription to resume deliveries",
            rfc3339(now)
        ));
        let result = match to_value(&stored) {
            Ok(value) => {
                self.records
                    .put_record(SUBSCRIPTIONS, id, &value, None)
                    .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                warn!(webhook_id = %id, url = %stored.subscription.url, "the receiver answered 410 Gone; webhook subscription disabled")
            }
            Err(e) => {
                warn!(webhook_id = %id, error = %e, "the receiver answered 410 Gone but the subscription could not be disabled")
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `wh_` + 32 lowercase hex characters: anything else is not one of ours, and never reaches the
/// store (so a stray `#` or control character in a URL is a plain "not found").
pub fn is_subscription_id(id: &str) -> bool {
    id.strip_prefix("wh_").is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn log_collection(subscription_id: &str) -> String {
    format!("{DELIVERIES_PREFIX}{subscription_id}")
}

/// Delivery-log key: ids sort ascending, so the time is stored inverted (newest first), then
/// the attempt, also inverted (a later attempt in the same millisecond still lists first).
fn log_key(at: Millis, attempt: u32, message_id: &str) -> String {
    format!(
        "{:020}-{:010}-{message_id}",
        i64::MAX - at.max(0),
        u32::MAX - attempt
    )
}

fn to_value(stored: &StoredSubscription) -> Result<Value, StoreError> {
    serde_json::to_value(stored)
        .map_err(|e| StoreError::invalid("subscription", format!("cannot be serialized: {e}")))
}

fn check_url(text: &str) -> Result<String, WebhookError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(WebhookError::Url(
            "must not be empty; give the absolute http(s) URL deliveries are POSTed to".to_string(),
        ));
    }
    if text.chars().count() > MAX_URL_CHARS {
        return Err(WebhookError::Url(format!(
            "is longer than {MAX_URL_CHARS} characters"
        )));
    }
    let url = reqwest::Url::parse(text).map_err(|e| {
        WebhookError::Url(format!(
            "{text:?} is not an absolute URL ({e}); give one such as https://example.com/hooks"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(WebhookError::Url(format!(
            "scheme {:?} is not supported; use https (or http)",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(WebhookError::Url(format!("{text:?} has no host")));
    }
    Ok(url.to_string())
}

/// Non-empty, each a lifecycle event or `*`; duplicates dropped (first occurrence kept).
fn check_events(events: &[String]) -> Result<Vec<String>, WebhookError> {
    if events.is_empty() {
        return Err(WebhookError::Events(format!(
            "must list at least one event: {} or \"*\" for all",
            LIFECYCLE_EVENTS.join(", ")
        )));
    }
    let mut out: Vec<String> = Vec::new();
    for (index, event) in events.iter().enumerate() {
        if event != ALL_EVENTS && !LIFECYCLE_EVENTS.contains(&event.as_str()) {
            return Err(WebhookError::UnknownEvent {
                index,
                event: event.clone(),
                known: LIFECYCLE_EVENTS.join(", "),
            });
        }
        if !out.contains(event) {
            out.push(event.clone());
        }
    }
    Ok(out)
}

/// An optional text field: trimmed, blank = absent, no control characters, at most `max`
/// characters.
fn check_text(
    text: Option<String>,
    max: usize,
    error: fn(String) -> WebhookError,
) -> Result<Option<String>, WebhookError> {
    let Some(text) = text.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if text.chars().count() > max {
        return Err(error(format!("is longer than {max} characters")));
    }
    if text.chars().any(char::is_control) {
        return Err(error(
            "contains a control character (a newline or tab); send one line".to_string(),
        ));
    }
    Ok(Some(text))
}

/// The body every subscriber of the event gets: `{"type", "timestamp", "data": {"run_id",
/// "workflow_id", "step"?, ...}}`. The event's fields come first; `run_id`, `workflow_id` and
/// `step` are always the run's own.
fn payload(run: &Run, event: &str, step: Option<&str>, data: &Value, at: Millis) -> Value {
    let mut fields = match data {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        other => {
            let mut map = Map::new();
            map.insert("value".to_string(), other.clone());
            map
        }
    };
    fields.insert("run_id".to_string(), Value::from(run.id.as_str()));
    fields.insert(
        "workflow_id".to_string(),
        Value::from(run.workflow_id.as_str()),
    );
    if let Some(step) = step {
        fields.insert("step".to_string(), Value::from(step));
    }
    json!({
        "type": event,
        "timestamp": rfc3339(at),
        "data": Value::Object(fields),
    })
}

/// Identifies one event: run, event, step, time, and the data without `links`.
///
/// The event time is included so that two real events with equal content (a step that fails
/// the same way again after a retry) get different ids and neither is dropped as a duplicate;
/// a re-delivered queue message carries the same time, so it still gets the same id. `links`
/// is left out because approval links are signed afresh (new nonce) each time the event is
/// rendered, and must not make a repeated fan-out look like a new message.
fn event_digest(run_id: &str, event: &str, step: Option<&str>, data: &Value, at: Millis) -> Sha256 {
    let mut data = data.clone();
    if let Value::Object(map) = &mut data {
        map.remove("links");
    }
    let canonical = canonical(&data).to_string();
    let mut hasher = Sha256::new();
    for part in [
        run_id,
        event,
        step.unwrap_or(""),
        &at.to_string(),
        canonical.as_str(),
    ] {
        // Length-prefixed, so no two different part lists hash the same bytes.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher
}

/// `msg_` + the first 32 hex characters of SHA-256 over the event and the subscription id.
fn message_id(event_digest: &Sha256, subscription_id: &str) -> String {
    let mut hasher = event_digest.clone();
    hasher.update((subscription_id.len() as u64).to_be_bytes());
    hasher.update(subscription_id.as_bytes());
    let digest = hex::encode(hasher.finalize());
    format!("msg_{}", &digest[..32])
}

/// `value` with every object's keys in sorted order, whatever map type serde_json was built
/// with, so the same data always serializes to the same text.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for key in keys {
                out.insert(key.clone(), canonical(&map[key]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// RFC 3339 (UTC, milliseconds) of epoch millis.
fn rfc3339(at: Millis) -> String {
    let since = Duration::from_millis(u64::try_from(at).unwrap_or(0));
    humantime::format_rfc3339_millis(UNIX_EPOCH + since).to_string()
}

/// `Retry-After` in seconds, capped at [`MAX_RETRY_AFTER`]. The HTTP-date form is ignored (the
/// schedule's own delay applies).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: u64 = text.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// A transport failure in a few words, without reqwest's nested sources repeated.
fn request_error(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "the receiver did not answer in time".to_string()
    } else if e.is_connect() {
        "could not connect to the receiver".to_string()
    } else {
        "the request failed".to_string()
    };
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = format!("{detail}: {s}");
        source = s.source();
    }
    format!("{what} ({detail})")
}
