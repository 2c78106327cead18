//! The HTTP client of the agent service.
//!
//! Every call is one span (`agent_api`, with `call` and `run_id`/`workflow` fields); the API key
//! travels only in the `x-api-key` header (marked sensitive) and never appears in logs, URLs or
//! `Debug` output.

use std::fmt;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Url};
use serde::de::DeserializeOwned;
use tracing::{Instrument, Span, debug, field, info_span, warn};

use super::error::{AgentCall, AgentError, render_detail, snippet};
use super::models::{
    AddMessageRequest, AddMessageResponse, CleanupResponse, DEFAULT_TIMEOUT_SECS, HealthResponse,
    INPUT_FORMAT_STREAM_JSON, KillOutcome, KillResponse, MAX_TIMEOUT_SECS, MIN_TIMEOUT_SECS,
    MessageQueueResponse, MessageType, RunList, RunListQuery, RunSortBy, RunSummary, SortOrder,
    StartRunRequest, StartRunResponse, StatusResponse, WorkflowInfo,
};
use super::retry::RetryPolicy;
use super::timestamp::parse_to_millis;
use crate::engine::{AgentObservation, AgentStartSpec};
use crate::model::{AgentRunStatus, Millis};

/// The API's base path under the service root.
pub const API_PATH: &str = "api/v1/workflows/claude-code";
/// The header carrying the key. The service also reads a query parameter, which Flowgate never
/// uses because query strings end up in access logs.
pub const API_KEY_HEADER: &str = "x-api-key";
/// Largest page `/runs` serves.
const MAX_PAGE_SIZE: u32 = 100;

/// Tuning of [`AgentClient`].
#[derive(Debug, Clone, PartialEq)]
pub struct AgentClientConfig {
    /// Retries of connect errors, timeouts, 429 and 5xx (never other 4xx).
    pub retry: RetryPolicy,
    /// Budget of one HTTP attempt, from sending to the last byte of the answer.
    pub request_timeout: Duration,
    /// Budget of establishing a connection.
    pub connect_timeout: Duration,
    /// How far the service's clock may be from ours when [`AgentClient::find_run_by_session_name`]
    /// stops paging at runs that started before the one it looks for.
    pub clock_skew: Duration,
    /// Upper bound on `/runs` pages read by one search (100 runs per page).
    pub max_search_pages: u32,
}

impl Default for AgentClientConfig {
    fn default() -> Self {
        AgentClientConfig {
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            clock_skew: Duration::from_secs(300),
            max_search_pages: 50,
        }
    }
}

/// Client of the automagik Claude Code workflow API (`/api/v1/workflows/claude-code`).
#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    base_url: Url,
    config: AgentClientConfig,
}

impl fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key lives in the reqwest client's default headers; say it is there, never what.
        f.debug_struct("AgentClient")
            .field("base_url", &self.base_url.as_str())
            .field("api_key", &"<redacted>")
            .field("config", &self.config)
            .finish()
    }
}

/// One failed attempt, with the server's `Retry-After` when it sent one.
struct Failure {
    error: AgentError,
    retry_after: Option<Duration>,
}

impl From<AgentError> for Failure {
    fn from(error: AgentError) -> Self {
        Failure {
            error,
            retry_after: None,
        }
    }
}

impl AgentClient {
    /// Builds a client for the service at `base_url` (e.g. `http://127.0.0.1:28881`; the API
    /// path is appended).
    pub fn new(
        base_url: &str,
        api_key: &str,
        config: AgentClientConfig,
    ) -> Result<Self, AgentError> {
        let mut base_url = Url::parse(base_url.trim()).map_err(|e| {
            AgentError::Config(format!(
                "agent service URL {base_url:?} is not a URL ({e}); expected e.g. http://127.0.0.1:28881"
            ))
        })?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(AgentError::Config(format!(
                "agent service URL {base_url} must be http or https"
            )));
        }
        if base_url.query().is_some() || base_url.fragment().is_some() {
            return Err(AgentError::Config(format!(
                "agent service URL {base_url} must not carry a query or fragment (the key goes in \
                 a header)"
            )));
        }
        if !base_url.path().ends_with('/') {
            let path = format!("{}/", base_url.path());
            base_url.set_path(&path);
        }
        if api_key.trim().is_empty() {
            return Err(AgentError::Config(
                "the agent API key is empty; the service refuses every call without one".into(),
            ));
        }
        let mut key = HeaderValue::from_str(api_key.trim()).map_err(|_| {
            AgentError::Config("the agent API key contains characters a header cannot carry".into())
        })?;
        key.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(API_KEY_HEADER, key);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("flowgate/", env!("CARGO_PKG_VERSION")))
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| AgentError::Config(format!("HTTP client set-up failed: {e}")))?;
        Ok(AgentClient {
            http,
            base_url,
            config,
        })
    }

    pub fn config(&self) -> &AgentClientConfig {
        &self.config
    }

    /// The service root this client talks to.
    pub fn base_url(&self) -> &str {
        self.base_url.as_str()
    }

    /// `{base}/api/v1/workflows/claude-code/{segments...}`, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(API_PATH.split('/'));
            path.extend(segments);
        }
        url
    }

    /// Starts a run of `spec.workflow`.
    ///
    /// Always sends `input_format: "stream-json"` (quirk 1), clamps `timeout` to 60..=7200
    /// (quirk 2) and drops a `session_id` that is not a UUID (the service would, silently).
    /// A 200 with `status: "failed"` is returned as [`AgentError::StartFailed`] (quirk 9).
    ///
    /// The POST is resent only after a connect error (it never left). After a timeout or a 5xx
    /// the run may exist: the error says so ([`AgentError::outcome_unknown`]) and the caller
    /// must look for `spec.session_name` with [`AgentClient::find_run_by_session_name`] before
    /// starting again (quirk 10: there is no idempotency key).
    pub async fn start_run(&self, spec: &AgentStartSpec) -> Result<StartRunResponse, AgentError> {
        let span = call_span(AgentCall::StartRun, None, Some(&spec.workflow));
        async {
            let body = start_request(spec);
            if spec.session_id.is_some() && body.session_id.is_none() {
                debug!("session_id is not a UUID; not sent (the service would drop it)");
            }
            let url = self.url(&["run", &spec.workflow]);
            let response: StartRunResponse = self
                .execute(AgentCall::StartRun, || {
                    self.http.request(Method::POST, url.clone()).json(&body)
                })
                .await?;
            Span::current().record("run_id", response.run_id.as_str());
            if response.status == AgentRunStatus::Failed.as_str() {
                warn!(message = %response.message, "agent service answered the start with status failed");
                return Err(AgentError::StartFailed {
                    workflow: spec.workflow.clone(),
                    run_id: Some(response.run_id).filter(|id| !id.is_empty()),
                    message: response.message,
                });
            }
            Ok(response)
        }
        .instrument(span)
        .await
    }

    /// Reads a run's status. `debug` adds the raw metadata that carries the live turn count and
    /// the Claude session id; pollers should pass `true`.
    pub async fn status(&self, run_id: &str, debug: bool) -> Result<StatusResponse, AgentError> {
        let span = call_span(AgentCall::Status, Some(run_id), None);
        let url = self.url(&["run", run_id, "status"]);
        let query = [("debug", bool_str(debug))];
        self.execute(AgentCall::Status, || {
            self.http.get(url.clone()).query(&query)
        })
        .instrument(span)
        .await
    }

    /// Polls a run and maps it for the engine, adding the failure reason from the run list
    /// when the run failed or was killed (status has none: quirk 5).
    ///
    /// If the run list cannot be read, the observation still carries the terminal status, with
    /// an `error` that says the reason could not be read.
    pub async fn observe(
        &self,
        workflow: &str,
        run_id: &str,
    ) -> Result<AgentObservation, AgentError> {
        let status = self.status(run_id, true).await?;
        let mut observation = status.observation();
        if matches!(
            observation.status,
            Some(AgentRunStatus::Failed | AgentRunStatus::Killed)
        ) {
            let started = status.started_at.as_deref().and_then(parse_to_millis);
            observation.error = match self.failure_reason_since(workflow, run_id, started).await {
                Ok(Some(reason)) => Some(reason),
                Ok(None) => None,
                Err(e) => {
                    warn!(run_id, error = %e, "could not read the failure reason from the run list");
                    Some(format!(
                        "the agent run {} but its failure reason could not be read: {e}",
                        status.status
                    ))
                }
            };
        }
        Ok(observation)
    }

    /// The `error_message` of a run, which only `GET /runs` carries (quirk 5). `Ok(None)` when
    /// the run has none or is not in the list.
    pub async fn failure_reason(
        &self,
        workflow: &str,
        run_id: &str,
    ) -> Result<Option<String>, AgentError> {
        self.failure_reason_since(workflow, run_id, None).await
    }

    /// [`AgentClient::failure_reason`], paging only down to runs started around `started_at`
    /// (the run's own start time, from its status) instead of through the whole history.
    pub async fn failure_reason_since(
        &self,
        workflow: &str,
        run_id: &str,
        started_at: Option<Millis>,
    ) -> Result<Option<String>, AgentError> {
        let found = self
            .search_runs(workflow, started_at, |item| item.run_id == run_id)
            .await?;
        Ok(found.and_then(|item| item.error_message))
    }

    /// Finds the run started with `session_name`, newest first.
    ///
    /// The service has no idempotency key and `/runs` no `run_id` or `session_name` filter, so
    /// this pages `workflow_name={workflow}&sort_by=started_at&sort_order=desc` until the item is
    /// found, items start before `not_before` (minus the configured clock skew), or the pages
    /// run out. Call it before (re)starting a step attempt whose earlier start may have landed.
    pub async fn find_run_by_session_name(
        &self,
        workflow: &str,
        session_name: &str,
        not_before: Option<Millis>,
    ) -> Result<Option<RunSummary>, AgentError> {
        self.search_runs(workflow, not_before, |item| {
            item.session_name.as_deref() == Some(session_name)
        })
        .await
    }

    async fn search_runs(
        &self,
        workflow: &str,
        not_before: Option<Millis>,
        matches: impl Fn(&RunSummary) -> bool,
    ) -> Result<Option<RunSummary>, AgentError> {
        let skew = i64::try_from(self.config.clock_skew.as_millis()).unwrap_or(i64::MAX);
        let bound = not_before.map(|t| t.saturating_sub(skew));
        let pages = self.config.max_search_pages.max(1);
        for page in 1..=pages {
            let query = RunListQuery {
                page,
                page_size: MAX_PAGE_SIZE,
                workflow_name: Some(workflow.to_string()),
                sort_by: RunSortBy::StartedAt,
                sort_order: SortOrder::Desc,
                ..RunListQuery::default()
            };
            let list = self.list_runs(&query).await?;
            for item in list.runs {
                if matches(&item) {
                    return Ok(Some(item));
                }
                let started = item.started_at.as_deref().and_then(parse_to_millis);
                if let (Some(bound), Some(started)) = (bound, started)
                    && started < bound
                {
                    debug!(page, "reached runs older than the bound; not found");
                    return Ok(None);
                }
            }
            if !list.has_next {
                return Ok(None);
            }
        }
        Err(AgentError::SearchExhausted {
            workflow: workflow.to_string(),
            pages,
        })
    }

    /// One page of `GET /runs`. Refuses client-side what the service would 400: `page < 1`,
    /// `page_size` outside 1..=100 and a `killed` status filter.
    pub async fn list_runs(&self, query: &RunListQuery) -> Result<RunList, AgentError> {
        let call = AgentCall::ListRuns;
        let refuse = |reason: String| Err(AgentError::InvalidRequest { call, reason });
        if query.page < 1 {
            return refuse("page must be >= 1".into());
        }
        if !(1..=MAX_PAGE_SIZE).contains(&query.page_size) {
            return refuse(format!(
                "page_size must be between 1 and 100, not {}",
                query.page_size
            ));
        }
        if query.status == Some(AgentRunStatus::Killed) {
            return refuse(
                "the service cannot filter runs by status killed (it answers 400 \"Invalid \
                 status filter\"); list without a status filter and pick killed runs locally"
                    .into(),
            );
        }
        let mut params: Vec<(&str, String)> = vec![
            ("page", query.page.to_string()),
            ("page_size", query.page_size.to_string()),
            ("sort_by", query.sort_by.as_str().to_string()),
            ("sort_order", query.sort_order.as_str().to_string()),
        ];
        if let Some(status) = query.status {
            params.push(("status", status.as_str().to_string()));
        }
        if let Some(workflow) = &query.workflow_name {
            params.push(("workflow_name", workflow.clone()));
        }
        if let Some(user) = &query.user_id {
            params.push(("user_id", user.clone()));
        }
        let span = call_span(call, None, query.workflow_name.as_deref());
        let url = self.url(&["runs"]);
        self.execute(call, || self.http.get(url.clone()).query(&params))
            .instrument(span)
            .await
    }

    /// Kills a run, whatever its state: the service has no guard (quirk 6) and rewrites even a
    /// completed run to `killed`. Prefer [`AgentClient::kill_if_active`].
    pub async fn kill(&self, run_id: &str, force: bool) -> Result<KillResponse, AgentError> {
        let span = call_span(AgentCall::Kill, Some(run_id), None);
        let url = self.url(&["run", run_id, "kill"]);
        let query = [("force", bool_str(force))];
        self.execute(AgentCall::Kill, || {
            self.http.post(url.clone()).query(&query)
        })
        .instrument(span)
        .await
    }

    /// Reads the status and kills the run only if it is pending or running, so a finished
    /// run's outcome is not overwritten (quirk 6). Returns the status read before deciding.
    pub async fn kill_if_active(
        &self,
        run_id: &str,
        force: bool,
    ) -> Result<KillOutcome, AgentError> {
        let status = self.status(run_id, false).await?;
        let last_status = status.run_status();
        let kill = match last_status {
            Some(AgentRunStatus::Pending | AgentRunStatus::Running) => {
                Some(self.kill(run_id, force).await?)
            }
            other => {
                debug!(run_id, status = ?other, "run is not active; not killing it");
                None
            }
        };
        Ok(KillOutcome { last_status, kill })
    }

    /// Removes a run's workspace. A pending or running run answers 400 unless `force`.
    pub async fn cleanup(&self, run_id: &str, force: bool) -> Result<CleanupResponse, AgentError> {
        let span = call_span(AgentCall::Cleanup, Some(run_id), None);
        let url = self.url(&["run", run_id, "cleanup"]);
        let query = [("force", bool_str(force))];
        self.execute(AgentCall::Cleanup, || {
            self.http.post(url.clone()).query(&query)
        })
        .instrument(span)
        .await
    }

    /// Queues a message for a pending or running run (delivered to stream-json runs only).
    /// Resent only after a connect error: a second POST would queue it twice.
    pub async fn add_message(
        &self,
        run_id: &str,
        message_type: MessageType,
        content: &str,
    ) -> Result<AddMessageResponse, AgentError> {
        let span = call_span(AgentCall::AddMessage, Some(run_id), None);
        let url = self.url(&["run", run_id, "add-message"]);
        let body = AddMessageRequest {
            message_type,
            content: content.to_string(),
        };
        self.execute(AgentCall::AddMessage, || {
            self.http.post(url.clone()).json(&body)
        })
        .instrument(span)
        .await
    }

    /// Queue statistics of a run; 404 once a stream-json run has ended (its queue is removed).
    pub async fn message_queue(&self, run_id: &str) -> Result<MessageQueueResponse, AgentError> {
        let span = call_span(AgentCall::MessageQueue, Some(run_id), None);
        let url = self.url(&["run", run_id, "message-queue"]);
        self.execute(AgentCall::MessageQueue, || self.http.get(url.clone()))
            .instrument(span)
            .await
    }

    /// The agent's health. Always HTTP 200: check [`HealthResponse::is_healthy`].
    pub async fn health(&self) -> Result<HealthResponse, AgentError> {
        let span = call_span(AgentCall::Health, None, None);
        let url = self.url(&["health"]);
        self.execute(AgentCall::Health, || self.http.get(url.clone()))
            .instrument(span)
            .await
    }

    /// The workflows the service can run (`GET /manage`; `GET /workflows` is gone).
    pub async fn list_workflows(&self) -> Result<Vec<WorkflowInfo>, AgentError> {
        let span = call_span(AgentCall::ListWorkflows, None, None);
        let url = self.url(&["manage"]);
        self.execute(AgentCall::ListWorkflows, || self.http.get(url.clone()))
            .instrument(span)
            .await
    }

    /// Sends a request built by `make` until it succeeds, fails for good, or the retry policy
    /// runs out. Non-idempotent calls are resent only after connect errors.
    async fn execute<T: DeserializeOwned>(
        &self,
        call: AgentCall,
        make: impl Fn() -> RequestBuilder,
    ) -> Result<T, AgentError> {
        let policy = &self.config.retry;
        let max_attempts = policy.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let failure = match self.attempt::<T>(call, make()).await {
                Ok(value) => {
                    debug!(
                        attempt,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "agent API call succeeded"
                    );
                    return Ok(value);
                }
                Err(failure) => failure,
            };
            let error = with_attempts(failure.error, attempt);
            let resendable = call.is_idempotent() || matches!(error, AgentError::Connect { .. });
            if !(error.is_retryable() && resendable && attempt < max_attempts) {
                debug!(attempt, status = ?error.status(), error = %error, "agent API call failed");
                return Err(error);
            }
            let delay = policy.delay_with_hint(attempt, failure.retry_after);
            warn!(
                attempt,
                max_attempts,
                delay_ms = delay.as_millis() as u64,
                status = ?error.status(),
                error = %error,
                "agent API call failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        call: AgentCall,
        request: RequestBuilder,
    ) -> Result<T, Failure> {
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(call, e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(call, e))?;
        if (200..300).contains(&status) {
            return serde_json::from_slice::<T>(&body).map_err(|e| {
                Failure::from(AgentError::MalformedResponse {
                    call,
                    status,
                    reason: e.to_string(),
                    snippet: snippet(&body, 200),
                })
            });
        }
        let detail = render_detail(&body);
        let error = if status == 401 {
            AgentError::Unauthorized { call, detail }
        } else {
            AgentError::Http {
                call,
                status,
                detail,
                attempts: 1,
            }
        };
        Err(Failure { error, retry_after })
    }

    fn transport_error(&self, call: AgentCall, error: reqwest::Error) -> Failure {
        let url = error
            .url()
            .map(|u| {
                let mut u = u.clone();
                u.set_query(None);
                u.to_string()
            })
            .unwrap_or_else(|| self.base_url.to_string());
        let message = error_chain(&error);
        let error = if error.is_connect() {
            AgentError::Connect {
                call,
                url,
                message,
                attempts: 1,
            }
        } else if error.is_timeout() {
            AgentError::Timeout {
                call,
                timeout: self.config.request_timeout,
                attempts: 1,
            }
        } else {
            AgentError::Transport {
                call,
                message,
                attempts: 1,
            }
        };
        Failure::from(error)
    }
}

/// The body of a start: the spec plus the fixes the service needs.
pub fn start_request(spec: &AgentStartSpec) -> StartRunRequest {
    StartRunRequest {
        message: spec.message.clone(),
        max_turns: spec.max_turns,
        session_id: spec
            .session_id
            .as_deref()
            .filter(|id| uuid::Uuid::parse_str(id.trim()).is_ok())
            .map(|id| id.trim().to_string()),
        session_name: Some(spec.session_name.clone()).filter(|s| !s.is_empty()),
        user_id: None,
        git_branch: spec.git_branch.clone(),
        repository_url: spec.repository_url.clone(),
        timeout: clamp_timeout(spec.timeout_secs),
        input_format: INPUT_FORMAT_STREAM_JSON.to_string(),
    }
}

/// A run timeout the service both accepts and honours: 60..=7200 s, 7200 when unset.
pub fn clamp_timeout(timeout_secs: Option<u64>) -> u64 {
    timeout_secs
        .unwrap_or(DEFAULT_TIMEOUT_SECS)
        .clamp(MIN_TIMEOUT_SECS, MAX_TIMEOUT_SECS)
}

fn bool_str(value: bool) -> &'static str {
    if value { "true" } else { "false" }
}

fn call_span(call: AgentCall, run_id: Option<&str>, workflow: Option<&str>) -> Span {
    let span = info_span!(
        "agent_api",
        call = call.as_str(),
        run_id = field::Empty,
        workflow = field::Empty
    );
    if let Some(run_id) = run_id {
        span.record("run_id", run_id);
    }
    if let Some(workflow) = workflow {
        span.record("workflow", workflow);
    }
    span
}

fn with_attempts(error: AgentError, n: u32) -> AgentError {
    match error {
        AgentError::Http {
            call,
            status,
            detail,
            ..
        } => AgentError::Http {
            call,
            status,
            detail,
            attempts: n,
        },
        AgentError::Connect {
            call, url, message, ..
        } => AgentError::Connect {
            call,
            url,
            message,
            attempts: n,
        },
        AgentError::Timeout { call, timeout, .. } => AgentError::Timeout {
            call,
            timeout,
            attempts: n,
        },
        AgentError::Transport { call, message, .. } => AgentError::Transport {
            call,
            message,
            attempts: n,
        },
        other => other,
    }
}

/// `error: cause: cause` without the URL (it is reported separately).
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    text.push_str(if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "reading the answer failed"
    } else {
        "sending the request failed"
    });
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
