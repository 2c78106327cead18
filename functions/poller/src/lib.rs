//! Lambda function `flowgate-poller`: the SQS consumer that advances runs and polls agent runs
//! on delayed messages.
//!
//! Each SQS record is one [`WorkMessage`](flowgate_shared::ports::WorkMessage), handled by the
//! shared [`Executor`]. The event source mapping must enable `ReportBatchItemFailures`: the
//! handler answers with the ids of the records to deliver again, so one failing record does
//! not send the whole batch back.
//!
//! The handler lives here (not in `main.rs`) so tests drive it with real SQS messages.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use flowgate_shared::adapters::SdkConfig;
use flowgate_shared::adapters::dynamodb::DynamoStore;
use flowgate_shared::adapters::sqs::{SqsQueue, decode_body};
use flowgate_shared::agent::{AgentClient, AgentClientConfig, AgentError};
use flowgate_shared::notify::Notifier;
use flowgate_shared::notify::config::{NotifyConfig, NotifyConfigError};
use flowgate_shared::runtime::{ExecError, Executor, Handled, Receipt, SystemClock, message_step};
use futures::StreamExt;
use tracing::{Instrument, error, field, info_span, warn};

/// Records handled at once within one batch. Records of the same run may race; the executor's
/// conditional writes make that safe, and a handful in parallel keeps a batch of 10 short.
pub const MAX_CONCURRENCY: usize = 8;

/// Characters of an undecodable body quoted in the log.
const BODY_SNIPPET_CHARS: usize = 200;

/// The environment variables the function reads once at cold start.
pub const ENV_TABLE: &str = "FLOWGATE_TABLE";
pub const ENV_QUEUE_URL: &str = "FLOWGATE_QUEUE_URL";
pub const ENV_AGENT_URL: &str = "FLOWGATE_AGENT_URL";
pub const ENV_AGENT_API_KEY: &str = "FLOWGATE_AGENT_API_KEY";

/// The poller's configuration, read once from the environment.
#[derive(Clone, PartialEq, Eq)]
pub struct PollerConfig {
    /// DynamoDB table holding runs, workflows and sessions.
    pub table: String,
    /// URL of the work queue (this function's event source).
    pub queue_url: String,
    /// Root URL of the agent service.
    pub agent_url: String,
    pub agent_api_key: String,
    /// Slack, links, public URL (all optional).
    pub notify: NotifyConfig,
}

impl fmt::Debug for PollerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PollerConfig")
            .field("table", &self.table)
            .field("queue_url", &self.queue_url)
            .field("agent_url", &self.agent_url)
            .field("agent_api_key", &"<redacted>")
            .field("notify", &self.notify)
            .finish()
    }
}

/// Why the function cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "missing environment variable(s) {}: set them on the function (the SAM template \
         does); the poller cannot start without them",
        .0.join(", ")
    )]
    Missing(Vec<&'static str>),
    #[error("the agent client cannot be built from {ENV_AGENT_URL}/{ENV_AGENT_API_KEY}: {0}")]
    Agent(#[from] AgentError),
    #[error("{0}")]
    Executor(#[from] ExecError),
    #[error("{0}")]
    Notify(#[from] NotifyConfigError),
}

impl PollerConfig {
    /// Read the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Read the configuration through `get` (tests pass a map). Every missing or blank value
    /// is reported at once.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut missing = Vec::new();
        let mut read = |name: &'static str| {
            let value = get(name).map(|v| v.trim().to_string()).unwrap_or_default();
            if value.is_empty() {
                missing.push(name);
            }
            value
        };
        let config = PollerConfig {
            table: read(ENV_TABLE),
            queue_url: read(ENV_QUEUE_URL),
            agent_url: read(ENV_AGENT_URL),
            agent_api_key: read(ENV_AGENT_API_KEY),
            notify: NotifyConfig::from_lookup(&get),
        };
        if missing.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Missing(missing))
        }
    }
}

/// The AWS adapters a function uses for its whole life: DynamoDB store, SQS queue, agent
/// client. The api function builds the same set (it applies run commands with an executor).
#[derive(Debug, Clone)]
pub struct AwsPorts {
    pub store: Arc<DynamoStore>,
    pub queue: Arc<SqsQueue>,
    pub agent: Arc<AgentClient>,
    /// Slack and outbound webhooks over the same table.
    pub notifier: Arc<Notifier>,
}

/// Build the [`AwsPorts`] on an already loaded SDK configuration (shared with any other AWS
/// client the function has, so region and credentials are resolved once per cold start).
pub fn aws_ports_from(config: &PollerConfig, sdk: &SdkConfig) -> Result<AwsPorts, ConfigError> {
    let store = Arc::new(DynamoStore::from_sdk_config(sdk, config.table.clone()));
    let queue = Arc::new(SqsQueue::from_sdk_config(sdk, config.queue_url.clone()));
    let agent = Arc::new(AgentClient::new(
        &config.agent_url,
        &config.agent_api_key,
        AgentClientConfig::default(),
    )?);
    let notifier = Arc::new(config.notify.build(store.clone())?);
    Ok(AwsPorts {
        store,
        queue,
        agent,
        notifier,
    })
}

/// How long the warm-up may hold up a cold start. Lambda bills INIT and caps it at 10 s; a
/// dependency that is slow now is left to the first invocation rather than failing init.
pub const WARM_UP_TIMEOUT: Duration = Duration::from_secs(2);

/// One warm-up request, bounded by [`WARM_UP_TIMEOUT`]: `name` and how it went.
pub async fn warm_one<E: fmt::Display>(
    name: &'static str,
    call: impl Future<Output = Result<(), E>>,
) -> (&'static str, Result<(), String>) {
    let outcome = match tokio::time::timeout(WARM_UP_TIMEOUT, call).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {WARM_UP_TIMEOUT:?}")),
    };
    (name, outcome)
}

/// What [`AwsPorts::warm_up`] managed, for the cold-start log line. Failures are logged as
/// they happen (the function starts anyway).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WarmUp {
    /// Endpoints with an open connection now (`dynamodb`, `sqs`, `agent`, `scheduler`).
    pub warmed: Vec<&'static str>,
}

impl WarmUp {
    /// Record one [`warm_one`] outcome (a failure is logged: the function still starts).
    pub fn add(&mut self, (name, outcome): (&'static str, Result<(), String>)) {
        match outcome {
            Ok(()) => self.warmed.push(name),
            Err(reason) => {
                warn!(endpoint = name, %reason, "warm-up request failed; the first invocation will connect")
            }
        }
    }
}

/// Where a cold start's time went, logged once in the function's `ready` line (CloudWatch
/// then has the split of every Init Duration).
#[derive(Debug, Clone, Copy)]
pub struct InitClock {
    started: Instant,
    sdk_loaded: Duration,
    built: Duration,
}

impl InitClock {
    pub fn start() -> Self {
        InitClock {
            started: Instant::now(),
            sdk_loaded: Duration::ZERO,
            built: Duration::ZERO,
        }
    }

    /// The SDK configuration is loaded.
    pub fn sdk_loaded(&mut self) {
        self.sdk_loaded = self.started.elapsed();
    }

    /// Every client is built.
    pub fn built(&mut self) {
        self.built = self.started.elapsed();
    }

    /// Log the `ready` line (`function`: which function started).
    pub fn ready(&self, function: &str, warm: &WarmUp) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let total = self.started.elapsed();
        tracing::info!(
            function,
            init_ms = ms(total),
            sdk_config_ms = ms(self.sdk_loaded),
            clients_ms = ms(self.built.saturating_sub(self.sdk_loaded)),
            warm_up_ms = ms(total.saturating_sub(self.built)),
            warmed = ?warm.warmed,
            "function ready"
        );
    }
}

impl AwsPorts {
    /// Open the connections the first invocation would otherwise open itself (DNS, TCP and
    /// the TLS handshake, which costs hundreds of milliseconds at 128 MB): one cheap request to
    /// DynamoDB, SQS and the agent service, concurrently, bounded by [`WARM_UP_TIMEOUT`]. Called
    /// in `main` before the runtime loop, so the work lands in Lambda's INIT phase. Never
    /// fails: a dependency that is down now is retried by the invocations that need it.
    pub async fn warm_up(&self) -> WarmUp {
        let (store, queue, agent) = tokio::join!(
            warm_one("dynamodb", self.store.warm_up()),
            warm_one("sqs", self.queue.warm_up()),
            warm_one("agent", async { self.agent.health().await.map(|_| ()) }),
        );
        let mut report = WarmUp::default();
        for outcome in [store, queue, agent] {
            report.add(outcome);
        }
        report
    }

    /// An executor over these ports and the system clock.
    pub fn executor(&self) -> Result<Executor, ConfigError> {
        Ok(Executor::new(
            self.store.clone(),
            self.store.clone(),
            self.queue.clone(),
            self.agent.clone(),
            Arc::new(SystemClock),
        )?
        .with_notifier(self.notifier.clone()))
    }
}

/// Everything `main` does before the runtime loop: read the environment, build the ports on
/// one SDK configuration, warm their connections, build the executor. All of it happens in
/// Lambda's INIT phase.
pub async fn init_from_env() -> Result<Executor, ConfigError> {
    let mut clock = InitClock::start();
    let config = PollerConfig::from_env()?;
    let sdk = flowgate_shared::adapters::aws_config(None).await;
    clock.sdk_loaded();
    let ports = aws_ports_from(&config, &sdk)?;
    let executor = ports.executor()?;
    clock.built();
    let warm = ports.warm_up().await;
    clock.ready("poller", &warm);
    Ok(executor)
}

/// Handle one SQS batch; the response names the records to deliver again.
///
/// - A record the executor handled, or one that was stale, is done.
/// - A poll whose chain goes on was handed back to the queue for its next poll
///   (`ChangeMessageVisibility`); it is reported so the event source mapping does not delete it
///   (with `ReportBatchItemFailures`, reported records do not slow the mapping's polling).
/// - A record that failed retryably (store or agent unavailable, a lost write race) is
///   reported, so SQS delivers it again after the visibility timeout.
/// - A record that failed for a reason retrying cannot fix is logged and counted as done; the
///   run it belongs to stays recoverable through its `wake_at` and the sweeper.
/// - A body that is not a work message is logged with its message id and counted as done: it
///   can never be handled, and reporting it would only send it around until the dead-letter
///   queue while poisoning nothing else.
///
/// A failed record without a message id (Lambda always sends one) is reported with an empty
/// id, which makes Lambda retry the whole batch: safe, because every handler is idempotent.
pub async fn handle_batch(executor: &Executor, event: SqsEvent) -> SqsBatchResponse {
    let failed: Vec<String> = futures::stream::iter(
        event
            .records
            .into_iter()
            .map(|record| handle_record(executor, record)),
    )
    .buffer_unordered(MAX_CONCURRENCY)
    .filter_map(|failed| async move { failed })
    .collect()
    .await;
    let mut response = SqsBatchResponse::default();
    response.set_failures(failed);
    response
}

/// Handle one record; `Some(message_id)` when it must be delivered again.
async fn handle_record(executor: &Executor, record: SqsMessage) -> Option<String> {
    let message_id = record.message_id.clone().unwrap_or_default();
    let span = info_span!(
        "record",
        message_id = %message_id,
        receive_count = record.attributes.get("ApproximateReceiveCount").map(String::as_str),
        run_id = field::Empty,
        step_id = field::Empty,
    );
    async {
        let body = record.body.as_deref().unwrap_or_default();
        let message = match decode_body(body) {
            Ok(message) => message,
            Err(e) => {
                let snippet: String = body.chars().take(BODY_SNIPPET_CHARS).collect();
                error!(
                    error = %e,
                    body = %snippet,
                    "record body is not a work message; dropping it (it can never be handled)"
                );
                return None;
            }
        };
        let span = tracing::Span::current();
        span.record("run_id", message.run_id());
        if let Some(step) = message_step(&message) {
            span.record("step_id", step);
        }
        // A poll chain hands its own message back for its next poll; that needs the receipt,
        // and the message id to report it with (so the event source mapping leaves it be).
        let receive_count = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        let receipt = record
            .receipt_handle
            .as_deref()
            .filter(|_| !message_id.is_empty())
            .map(|receipt| Receipt {
                receipt,
                receive_count,
            });
        match executor.handle_delivered(&message, receipt).await {
            Ok(Handled::Done) => None,
            Ok(Handled::HandedBack) => Some(message_id.clone()),
            Err(e) if e.is_retryable() => {
                warn!(error = %e, "record failed; it will be delivered again");
                if message_id.is_empty() {
                    error!("the failed record has no message id; the whole batch will be retried");
                }
                Some(message_id.clone())
            }
            Err(e) => {
                error!(
                    error = %e,
                    "record failed and retrying cannot help; dropping it (the run's wake-up \
                     timer and the sweeper keep the run recoverable)"
                );
                None
            }
        }
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn config_reports_every_missing_value_at_once() {
        let env: HashMap<&str, &str> =
            HashMap::from([(ENV_TABLE, "runs"), (ENV_AGENT_API_KEY, "  ")]);
        let err = PollerConfig::from_lookup(|k| env.get(k).map(|v| v.to_string()))
            .expect_err("values are missing");
        let text = err.to_string();
        assert!(
            text.contains(ENV_QUEUE_URL)
                && text.contains(ENV_AGENT_URL)
                && text.contains(ENV_AGENT_API_KEY),
            "{text}"
        );
        assert!(!text.contains(ENV_TABLE), "{text}");
    }

    #[test]
    fn config_reads_all_values_and_hides_the_key() {
        let env: HashMap<&str, &str> = HashMap::from([
            (ENV_TABLE, "runs"),
            (ENV_QUEUE_URL, "https://sqs.example/q"),
            (ENV_AGENT_URL, "http://agent:28881"),
            (ENV_AGENT_API_KEY, "secret-key"),
        ]);
        let config =
            PollerConfig::from_lookup(|k| env.get(k).map(|v| v.to_string())).expect("complete");
        assert_eq!(config.table, "runs");
        assert_eq!(config.agent_url, "http://agent:28881");
        assert!(!format!("{config:?}").contains("secret-key"));
    }
}
