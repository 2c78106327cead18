//! A typed client for the Flowgate HTTP API: one method per route, the wire types of
//! [`crate::api`], and errors that say what to do next.
//!
//! The CLI and the MCP proxy both use it, so it stays general: no retries of its own (callers
//! know whether a request may be repeated; [`ClientError::is_retryable`] and
//! [`ClientError::outcome_unknown`] tell them what happened), no printing, no environment
//! reads. The API key travels only in the `x-api-key` header, marked sensitive, and never
//! appears in `Debug` output, errors or URLs.

use std::fmt;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    API_KEY_HEADER, AgentWorkflowList, ApprovalList, CancelRequest, CommandResponse,
    CreateWebhookRequest, DecisionRequest, DecisionResponse, ErrorBody, EventList, Health,
    IDEMPOTENCY_KEY_HEADER, Identity, ListRunsParams, MessageRequest, ProblemView, RetryRequest,
    RollbackRequest, RunDetail, RunList, SessionList, SessionView, StartRunRequest,
    StartRunResponse, Subscription, ValidationReport, WebhookCreated, WebhookDeliveriesParams,
    WebhookDeliveryList, WebhookList, WorkflowDetail, WorkflowList,
};
use crate::agent::error::snippet;
use crate::model::ApprovalStatus;

/// Where `flowgate serve` listens unless told otherwise.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8787";

/// Content type of a definition sent as JSON.
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// Content type of a definition sent as YAML.
pub const YAML_CONTENT_TYPE: &str = "application/yaml";

/// Tuning of [`FlowgateClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Budget of one request, from sending to the last byte of the answer. Every route answers
    /// quickly (a run is started, not awaited), so a long wait means a stuck server.
    pub request_timeout: Duration,
    /// Budget of establishing a connection; a local server connects at once, so a short one
    /// turns "nothing is listening behind a firewall" into a quick, clear error.
    pub connect_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// How a request failed to get an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// No connection could be made: the request was never sent.
    Connect,
    /// No answer within the request timeout: the server may still have acted.
    Timeout,
    /// The connection broke after sending, or the answer could not be read.
    Other,
}

/// A failed API call.
///
/// The message says what failed and what to do next; [`ClientError::is_retryable`] says
/// whether the same request may succeed later.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error status. `code`, `message` and `field` come from the
    /// [`ErrorBody`]; a body of another shape (a proxy's HTML page, plain text) gets a code
    /// derived from the status and its text as the message.
    #[error("HTTP {status} {code}: {message}{}", field_suffix(field.as_deref()))]
    Api {
        status: u16,
        code: String,
        message: String,
        field: Option<String>,
        /// Every problem found, for validation failures that have several.
        problems: Vec<ProblemView>,
    },

    /// No answer: connection refused, timed out, or broken.
    #[error("{}", transport_message(*kind, request, base_url, detail))]
    Transport {
        kind: TransportKind,
        /// The request, e.g. `GET /v1/runs/r-1` (no query string).
        request: String,
        /// The API root the client talks to.
        base_url: String,
        /// What the HTTP stack reported.
        detail: String,
    },

    /// A success status whose body is not the JSON the route defines.
    #[error(
        "{request} answered HTTP {status} with a body that is not the expected JSON ({reason}); \
         the body starts with {snippet:?}; check that {base_url} is the Flowgate API (not a proxy \
         or another service) and that the client and server versions match"
    )]
    Decode {
        request: String,
        status: u16,
        base_url: String,
        reason: String,
        snippet: String,
    },

    /// Refused before sending: the request could never succeed.
    #[error("the request was not sent: {0}")]
    InvalidRequest(String),

    /// The client could not be built (bad base URL, key not a valid header value, TLS set-up).
    #[error("the API client cannot be set up: {0}")]
    Config(String),
}

fn field_suffix(field: Option<&str>) -> String {
    field.map(|f| format!(" (field `{f}`)")).unwrap_or_default()
}

fn transport_message(kind: TransportKind, request: &str, base_url: &str, detail: &str) -> String {
    match kind {
        TransportKind::Connect => format!(
            "cannot connect to the Flowgate API at {base_url} ({detail}); is `flowgate serve` \
             running there? Start it, or point the client at the right server (FLOWGATE_URL)"
        ),
        TransportKind::Timeout => format!(
            "{request} got no answer from {base_url} in time ({detail}); the server is slow or \
             stuck. Try again; a POST may already have been applied, so check its effect first \
             (or repeat a start with the same idempotency key)"
        ),
        TransportKind::Other => format!(
            "{request} to {base_url} failed before an answer arrived ({detail}); the request may \
             or may not have been applied. Try again once the server is reachable"
        ),
    }
}

impl ClientError {
    /// Whether the same request may succeed later: no answer (connect errors, timeouts, broken
    /// connections), 408, 429 and 5xx other than 501. Any other answer is final.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport { .. } => true,
            ClientError::Api { status, .. } => {
                matches!(*status, 408 | 429) || (*status >= 500 && *status != 501)
            }
            ClientError::Decode { .. }
            | ClientError::InvalidRequest(_)
            | ClientError::Config(_) => false,
        }
    }

    /// Whether the server may have acted although the call failed (a timeout, a connection
    /// broken after sending, or a 500/502/504). A start that failed this way may have created
    /// a run: repeat it with the same idempotency key.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            ClientError::Transport { kind, .. } => *kind != TransportKind::Connect,
            ClientError::Api { status, .. } => matches!(*status, 500 | 502 | 504),
            _ => false,
        }
    }

    /// The HTTP status of the answer, when one came.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The API's error code (`run_not_found`, `unauthorized`, ...), when it answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The answer to [`FlowgateClient::put_workflow`].
#[derive(Debug, Clone, PartialEq)]
pub struct PutWorkflowResponse {
    /// The stored version.
    pub workflow: WorkflowDetail,
    /// `true` for 201 (a new workflow), `false` for 200 (a new version of an existing one).
    pub created: bool,
}

/// Which approvals [`FlowgateClient::list_approvals`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalFilter {
    /// Only approvals in this state (`pending` is what the API lists when no filter is sent).
    Status(ApprovalStatus),
    /// Open and decided approvals alike.
    All,
}

impl ApprovalFilter {
    /// The `status` query value: a status name, or `all`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalFilter::Status(status) => status.as_str(),
            ApprovalFilter::All => "all",
        }
    }
}

impl fmt::Display for ApprovalFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Query of [`FlowgateClient::list_approvals`]; every field left `None` takes the API's
/// default (pending approvals of every workflow, at most 50).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListApprovalsParams {
    pub status: Option<ApprovalFilter>,
    /// Only approvals of this workflow's runs.
    pub workflow: Option<String>,
    /// At most this many (the API takes 1 to 100).
    pub limit: Option<u32>,
}

/// Client of the Flowgate HTTP API (`/v1/...`).
#[derive(Clone)]
pub struct FlowgateClient {
    http: reqwest::Client,
    base_url: Url,
    has_key: bool,
    config: ClientConfig,
}

impl fmt::Debug for FlowgateClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key lives in the reqwest client's default headers; say whether it is there,
        // never what it is.
        let key = if self.has_key { "<redacted>" } else { "<none>" };
        f.debug_struct("FlowgateClient")
            .field("base_url", &self.base_url.as_str())
            .field("api_key", &key)
            .field("config", &self.config)
            .finish()
    }
}

/// Which body a definition is sent as: text starting with `{` is JSON, anything else YAML (the
/// same rule [`crate::definition::parse_definition`] reads it with).
pub fn definition_content_type(text: &str) -> &'static str {
    if text.trim_start().starts_with('{') {
        JSON_CONTENT_TYPE
    } else {
        YAML_CONTENT_TYPE
    }
}

impl FlowgateClient {
    /// A client for the API at `base_url` (e.g. `http://127.0.0.1:8787`, or an API Gateway
    /// stage URL: its path is kept as the prefix of every route), sending `api_key` on every
    /// request when given.
    pub fn new(base_url: &str, api_key: Option<String>) -> Result<Self, ClientError> {
        Self::with_config(base_url, api_key, ClientConfig::default())
    }

    /// [`FlowgateClient::new`] with explicit timeouts.
    pub fn with_config(
        base_url: &str,
        api_key: Option<String>,
        config: ClientConfig,
    ) -> Result<Self, ClientError> {
        let base_url = parse_base_url(base_url)?;
        let mut headers = HeaderMap::new();
        let key = api_key
            .as_deref()
            .map(str::trim)
            .filter(|key| !key.is_empty());
        if let Some(key) = key {
            let mut value = HeaderValue::from_str(key).map_err(|_| {
                ClientError::Config(
                    "the API key contains characters an HTTP header cannot carry; copy it again \
                     without line breaks or control characters"
                        .into(),
                )
            })?;
            value.set_sensitive(true);
            headers.insert(API_KEY_HEADER, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("flowgate/", env!("CARGO_PKG_VERSION")))
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| ClientError::Config(format!("HTTP client set-up failed: {e}")))?;
        Ok(FlowgateClient {
            http,
            base_url,
            has_key: key.is_some(),
            config,
        })
    }

    /// The API root this client talks to.
    pub fn base_url(&self) -> &str {
        self.base_url.as_str()
    }

    /// Whether requests carry an API key.
    pub fn has_api_key(&self) -> bool {
        self.has_key
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    // -----------------------------------------------------------------------------------------
    // Health and schema
    // -----------------------------------------------------------------------------------------

    /// `GET /healthz` (no auth needed).
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.get(&["healthz"], &()).await
    }

    /// `GET /openapi.json`: the API's OpenAPI document (no auth needed).
    pub async fn openapi(&self) -> Result<Value, ClientError> {
        self.get(&["openapi.json"], &()).await
    }

    /// `GET /v1/me`: the key's principal and whether it may decide approvals.
    pub async fn me(&self) -> Result<Identity, ClientError> {
        self.get(&["v1", "me"], &()).await
    }

    // -----------------------------------------------------------------------------------------
    // Runs
    // -----------------------------------------------------------------------------------------

    /// `POST /v1/runs`. With an `idempotency_key`, repeating the call (after a timeout, say)
    /// answers the run the first call started, with `existing: true`, instead of starting
    /// another.
    pub async fn start_run(
        &self,
        request: &StartRunRequest,
        idempotency_key: Option<&str>,
    ) -> Result<StartRunResponse, ClientError> {
        let key = idempotency_key
            .map(|key| {
                HeaderValue::from_str(key.trim())
                    .ok()
                    .filter(|value| !value.is_empty())
                    .ok_or_else(|| {
                        ClientError::InvalidRequest(format!(
                            "idempotency key {key:?} is empty or not a valid header value; use \
                             printable ASCII, e.g. a UUID"
                        ))
                    })
            })
            .transpose()?;
        let mut builder = self.request(Method::POST, &["v1", "runs"]).json(request);
        if let Some(key) = key {
            builder = builder.header(IDEMPOTENCY_KEY_HEADER, key);
        }
        self.send(Method::POST, &["v1", "runs"], builder)
            .await
            .and_then(|answer| answer.decode())
    }

    /// `GET /v1/runs`: one page; pass `next_cursor` back as `cursor` for the next.
    pub async fn list_runs(&self, params: &ListRunsParams) -> Result<RunList, ClientError> {
        self.get(&["v1", "runs"], params).await
    }

    /// `GET /v1/runs/{id}`.
    pub async fn get_run(&self, run_id: &str) -> Result<RunDetail, ClientError> {
        let id = segment("run id", run_id)?;
        self.get(&["v1", "runs", id], &()).await
    }

    /// `GET /v1/runs/{id}/events`: one page of the audit log, after sequence number `after`.
    pub async fn run_events(
        &self,
        run_id: &str,
        after: Option<u64>,
        limit: Option<u32>,
    ) -> Result<EventList, ClientError> {
        #[derive(Serialize)]
        struct Query {
            #[serde(skip_serializing_if = "Option::is_none")]
            after: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            limit: Option<u32>,
        }
        let id = segment("run id", run_id)?;
        self.get(&["v1", "runs", id, "events"], &Query { after, limit })
            .await
    }

    /// `POST /v1/runs/{id}/cancel`.
    pub async fn cancel_run(
        &self,
        run_id: &str,
        request: &CancelRequest,
    ) -> Result<CommandResponse, ClientError> {
        self.run_command(run_id, "cancel", request).await
    }

    /// `POST /v1/runs/{id}/messages`: feedback for the run's agent.
    pub async fn send_message(
        &self,
        run_id: &str,
        request: &MessageRequest,
    ) -> Result<CommandResponse, ClientError> {
        self.run_command(run_id, "messages", request).await
    }

    /// `POST /v1/runs/{id}/retry`.
    pub async fn retry_run(
        &self,
        run_id: &str,
        request: &RetryRequest,
    ) -> Result<CommandResponse, ClientError> {
        self.run_command(run_id, "retry", request).await
    }

    /// `POST /v1/runs/{id}/rollback`.
    pub async fn rollback_run(
        &self,
        run_id: &str,
        request: &RollbackRequest,
    ) -> Result<CommandResponse, ClientError> {
        self.run_command(run_id, "rollback", request).await
    }

    async fn run_command<B: Serialize>(
        &self,
        run_id: &str,
        command: &str,
        body: &B,
    ) -> Result<CommandResponse, ClientError> {
        let id = segment("run id", run_id)?;
        let segments = ["v1", "runs", id, command];
        let builder = self.request(Method::POST, &segments).json(body);
        self.send(Method::POST, &segments, builder)
            .await
            .and_then(|answer| answer.decode())
    }

    // -----------------------------------------------------------------------------------------
    // Workflows
    // -----------------------------------------------------------------------------------------

    /// `GET /v1/workflows`: the latest version of every stored workflow.
    pub async fn list_workflows(&self) -> Result<WorkflowList, ClientError> {
        self.get(&["v1", "workflows"], &()).await
    }

    /// `GET /v1/workflows/{id}`: the latest version, or `version`.
    pub async fn get_workflow(
        &self,
        workflow_id: &str,
        version: Option<u64>,
    ) -> Result<WorkflowDetail, ClientError> {
        #[derive(Serialize)]
        struct Query {
            #[serde(skip_serializing_if = "Option::is_none")]
            version: Option<u64>,
        }
        let id = segment("workflow id", workflow_id)?;
        self.get(&["v1", "workflows", id], &Query { version }).await
    }

    /// `PUT /v1/workflows/{id}`: stores `definition` (YAML or JSON text, sent with the matching
    /// content type) as the workflow's next version. The definition's own `id` must be
    /// `workflow_id`.
    pub async fn put_workflow(
        &self,
        workflow_id: &str,
        definition: &str,
    ) -> Result<PutWorkflowResponse, ClientError> {
        let id = segment("workflow id", workflow_id)?;
        let segments = ["v1", "workflows", id];
        let builder = self
            .request(Method::PUT, &segments)
            .header(CONTENT_TYPE, definition_content_type(definition))
            .body(definition.to_owned());
        let answer = self.send(Method::PUT, &segments, builder).await?;
        let created = answer.status == StatusCode::CREATED.as_u16();
        Ok(PutWorkflowResponse {
            workflow: answer.decode()?,
            created,
        })
    }

    /// `DELETE /v1/workflows/{id}`. Runs already started keep the version they pinned.
    pub async fn delete_workflow(&self, workflow_id: &str) -> Result<(), ClientError> {
        let id = segment("workflow id", workflow_id)?;
        let segments = ["v1", "workflows", id];
        let builder = self.request(Method::DELETE, &segments);
        self.send(Method::DELETE, &segments, builder).await?;
        Ok(())
    }

    /// `POST /v1/workflows/validate`: checks `definition` without storing it. `strict` also
    /// checks agent workflow names against the agent service. An invalid definition is a
    /// report with `valid: false`, not an error.
    pub async fn validate_workflow(
        &self,
        definition: &str,
        strict: bool,
    ) -> Result<ValidationReport, ClientError> {
        let segments = ["v1", "workflows", "validate"];
        let builder = self
            .request(Method::POST, &segments)
            .query(&[("strict", if strict { "true" } else { "false" })])
            .header(CONTENT_TYPE, definition_content_type(definition))
            .body(definition.to_owned());
        self.send(Method::POST, &segments, builder)
            .await
            .and_then(|answer| answer.decode())
    }

    /// `GET /v1/agent-workflows`: what the agent service can run as one-step runs.
    pub async fn list_agent_workflows(&self) -> Result<AgentWorkflowList, ClientError> {
        self.get(&["v1", "agent-workflows"], &()).await
    }

    // -----------------------------------------------------------------------------------------
    // Sessions
    // -----------------------------------------------------------------------------------------

    /// `GET /v1/sessions`; `active: Some(true)` lists only sessions in use.
    pub async fn list_sessions(&self, active: Option<bool>) -> Result<SessionList, ClientError> {
        #[derive(Serialize)]
        struct Query {
            #[serde(skip_serializing_if = "Option::is_none")]
            active: Option<bool>,
        }
        self.get(&["v1", "sessions"], &Query { active }).await
    }

    /// `GET /v1/sessions/{name}`.
    pub async fn get_session(&self, name: &str) -> Result<SessionView, ClientError> {
        let name = segment("session name", name)?;
        self.get(&["v1", "sessions", name], &()).await
    }

    // -----------------------------------------------------------------------------------------
    // Approvals
    // -----------------------------------------------------------------------------------------

    /// `GET /v1/approvals`: approvals, newest request first (pending ones unless
    /// `params.status` says otherwise).
    pub async fn list_approvals(
        &self,
        params: &ListApprovalsParams,
    ) -> Result<ApprovalList, ClientError> {
        #[derive(Serialize)]
        struct Query<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            status: Option<&'static str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            workflow: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            limit: Option<u32>,
        }
        let query = Query {
            status: params.status.map(ApprovalFilter::as_str),
            workflow: params.workflow.as_deref(),
            limit: params.limit,
        };
        self.get(&["v1", "approvals"], &query).await
    }

    /// `POST /v1/approvals/{id}/decision`, decided as the API key's principal. The id
    /// (`{run_id}.{step}.{attempt}`) keeps its dots. Repeating a decision that may have been
    /// applied ([`ClientError::outcome_unknown`]) is safe: a repeat by the same approver
    /// changes nothing, and a decision that closed the approval answers 409.
    pub async fn decide_approval(
        &self,
        approval_id: &str,
        request: &DecisionRequest,
    ) -> Result<DecisionResponse, ClientError> {
        let id = segment("approval id", approval_id)?;
        let segments = ["v1", "approvals", id, "decision"];
        let builder = self.request(Method::POST, &segments).json(request);
        self.send(Method::POST, &segments, builder)
            .await
            .and_then(|answer| answer.decode())
    }

    // -----------------------------------------------------------------------------------------
    // Webhooks
    // -----------------------------------------------------------------------------------------

    /// `POST /v1/webhooks`: subscribes a URL. The answer is the only one that carries the
    /// signing secret. Not idempotent: after an error with [`ClientError::outcome_unknown`],
    /// look for the URL in [`FlowgateClient::list_webhooks`] before creating it again.
    pub async fn create_webhook(
        &self,
        request: &CreateWebhookRequest,
    ) -> Result<WebhookCreated, ClientError> {
        let segments = ["v1", "webhooks"];
        let builder = self.request(Method::POST, &segments).json(request);
        self.send(Method::POST, &segments, builder)
            .await
            .and_then(|answer| answer.decode())
    }

    /// `GET /v1/webhooks`: every subscription, oldest first, without secrets.
    pub async fn list_webhooks(&self) -> Result<WebhookList, ClientError> {
        self.get(&["v1", "webhooks"], &()).await
    }

    /// `GET /v1/webhooks/{id}`.
    pub async fn get_webhook(&self, webhook_id: &str) -> Result<Subscription, ClientError> {
        let id = segment("webhook id", webhook_id)?;
        self.get(&["v1", "webhooks", id], &()).await
    }

    /// `DELETE /v1/webhooks/{id}`. Deliveries already queued for it are dropped unsent.
    pub async fn delete_webhook(&self, webhook_id: &str) -> Result<(), ClientError> {
        let id = segment("webhook id", webhook_id)?;
        let segments = ["v1", "webhooks", id];
        let builder = self.request(Method::DELETE, &segments);
        self.send(Method::DELETE, &segments, builder).await?;
        Ok(())
    }

    /// `GET /v1/webhooks/{id}/deliveries`: one entry per delivery attempt, newest first;
    /// `limit` is 1 to 100 (the API's default is 20).
    pub async fn webhook_deliveries(
        &self,
        webhook_id: &str,
        limit: Option<u32>,
    ) -> Result<WebhookDeliveryList, ClientError> {
        let id = segment("webhook id", webhook_id)?;
        self.get(
            &["v1", "webhooks", id, "deliveries"],
            &WebhookDeliveriesParams { limit },
        )
        .await
    }

    // -----------------------------------------------------------------------------------------
    // Plumbing
    // -----------------------------------------------------------------------------------------

    /// `{base}/{segments...}`, each segment percent-encoded (so an id cannot change the path).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.http.request(method, self.url(segments))
    }

    async fn get<Q: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &Q,
    ) -> Result<T, ClientError> {
        let builder = self.request(Method::GET, segments).query(query);
        self.send(Method::GET, segments, builder).await?.decode()
    }

    /// Sends the request; a 2xx comes back as its raw body, anything else as an error.
    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        builder: RequestBuilder,
    ) -> Result<Answer, ClientError> {
        let request = format!("{method} {}", self.url(segments).path());
        let response = builder
            .send()
            .await
            .map_err(|e| self.transport_error(&request, &e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&request, &e))?;
        if status.is_success() {
            return Ok(Answer {
                request,
                status: status.as_u16(),
                base_url: self.base_url.to_string(),
                body: body.to_vec(),
            });
        }
        Err(api_error(status, &body, self.base_url.as_str()))
    }

    fn transport_error(&self, request: &str, error: &reqwest::Error) -> ClientError {
        let kind = if error.is_connect() {
            TransportKind::Connect
        } else if error.is_timeout() {
            TransportKind::Timeout
        } else {
            TransportKind::Other
        };
        let detail = match kind {
            TransportKind::Timeout => format!(
                "no answer within {}",
                humantime::format_duration(self.config.request_timeout)
            ),
            _ => error_chain(error),
        };
        ClientError::Transport {
            kind,
            request: request.to_string(),
            base_url: self.base_url.to_string(),
            detail,
        }
    }
}

/// A 2xx answer, not yet decoded.
struct Answer {
    request: String,
    status: u16,
    base_url: String,
    body: Vec<u8>,
}

impl Answer {
    fn decode<T: DeserializeOwned>(self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Decode {
            request: self.request,
            status: self.status,
            base_url: self.base_url,
            reason: e.to_string(),
            snippet: snippet(&self.body, 200),
        })
    }
}

/// The error an error status carries: the [`ErrorBody`] when the body is one, else a code
/// derived from the status and the body's text (or the status reason) as the message.
fn api_error(status: StatusCode, body: &[u8], base_url: &str) -> ClientError {
    if let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body) {
        return ClientError::Api {
            status: status.as_u16(),
            code: error.code,
            message: error.message,
            field: error.field,
            problems: error.problems,
        };
    }
    // Not the API's shape: a proxy, a gateway or another service answered. Keep its words
    // (a JSON `message`/`error` string when there is one) and say where they came from.
    let text = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            ["message", "error", "detail"]
                .iter()
                .find_map(|k| v.get(k).and_then(Value::as_str).map(str::to_string))
        })
        .unwrap_or_else(|| snippet(body, 200).trim().to_string());
    let reason = status.canonical_reason().unwrap_or("error");
    let said = if text.is_empty() {
        String::from("with an empty body")
    } else {
        format!("saying {text:?}")
    };
    ClientError::Api {
        status: status.as_u16(),
        code: fallback_code(status),
        message: format!(
            "{} {reason} {said}, which is not a Flowgate API error; check that {base_url} is the \
             Flowgate API and not a proxy or another service",
            status.as_u16()
        ),
        field: None,
        problems: Vec::new(),
    }
}

/// A code for an error answer that did not carry one, in the API's own vocabulary where the
/// status has an obvious meaning.
fn fallback_code(status: StatusCode) -> String {
    let code = match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        409 => "conflict",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "unprocessable",
        429 => "too_many_requests",
        500 => "internal",
        502 => "bad_gateway",
        503 => "unavailable",
        504 => "gateway_timeout",
        other => return format!("http_{other}"),
    };
    code.to_string()
}

/// A path segment that must not be empty, `.` or `..`: the URL would drop it, and the request
/// would address another route. Anything else is percent-encoded by [`FlowgateClient::url`]
/// (`/` included), and dots inside an id (approval ids have them) stay as they are.
fn segment<'a>(what: &str, value: &'a str) -> Result<&'a str, ClientError> {
    if value.trim().is_empty() {
        Err(ClientError::InvalidRequest(format!("the {what} is empty")))
    } else if matches!(value, "." | "..") {
        Err(ClientError::InvalidRequest(format!(
            "the {what} {value:?} cannot be part of a URL path; copy the id from the listing"
        )))
    } else {
        Ok(value)
    }
}

fn parse_base_url(text: &str) -> Result<Url, ClientError> {
    let mut url = Url::parse(text.trim()).map_err(|e| {
        ClientError::Config(format!(
            "API URL {text:?} is not a URL ({e}); expected e.g. {DEFAULT_BASE_URL}"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ClientError::Config(format!(
            "API URL {url} must be http or https"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ClientError::Config(format!(
            "API URL {url} must not carry a query or fragment"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ClientError::Config(
            "the API URL must not carry credentials; pass the API key separately (it is sent in \
             the x-api-key header)"
                .into(),
        ));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// `what failed: cause: cause` without the URL (the error names it separately).
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = String::from(if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "reading the answer failed"
    } else {
        "sending the request failed"
    });
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_content_type_from_the_text() {
        assert_eq!(definition_content_type("  {\"id\": 1}"), JSON_CONTENT_TYPE);
        assert_eq!(definition_content_type("id: x\n"), YAML_CONTENT_TYPE);
        assert_eq!(definition_content_type("# {\nid: x"), YAML_CONTENT_TYPE);
    }

    #[test]
    fn refuses_bad_base_urls_and_keeps_a_path_prefix() {
        for bad in [
            "not a url",
            "ftp://host",
            "http://host/?k=v",
            "http://user:pw@host/",
        ] {
            assert!(
                matches!(FlowgateClient::new(bad, None), Err(ClientError::Config(_))),
                "{bad}"
            );
        }
        let client = FlowgateClient::new("https://api.example.com/prod", None).expect("valid");
        assert_eq!(
            client.url(&["v1", "runs", "a/b c"]).as_str(),
            "https://api.example.com/prod/v1/runs/a%2Fb%20c"
        );
        assert_eq!(
            client
                .url(&["v1", "approvals", "r-1.review.2", "decision"])
                .as_str(),
            "https://api.example.com/prod/v1/approvals/r-1.review.2/decision"
        );
    }

    #[test]
    fn segments_the_url_would_drop_are_refused() {
        for bad in ["", "  ", ".", ".."] {
            assert!(
                matches!(
                    segment("approval id", bad),
                    Err(ClientError::InvalidRequest(_))
                ),
                "{bad:?}"
            );
        }
        assert_eq!(segment("approval id", "r.s.1").ok(), Some("r.s.1"));
        assert_eq!(segment("approval id", "...").ok(), Some("..."));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let client =
            FlowgateClient::new(DEFAULT_BASE_URL, Some("sekrit-key-123".into())).expect("valid");
        let text = format!("{client:?}");
        assert!(!text.contains("sekrit"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
        assert!(client.has_api_key());
        let none = FlowgateClient::new(DEFAULT_BASE_URL, Some("  ".into())).expect("valid");
        assert!(!none.has_api_key());
    }

    #[test]
    fn retryable_and_ambiguous_errors() {
        let api = |status| ClientError::Api {
            status,
            code: "x".into(),
            message: "m".into(),
            field: None,
            problems: Vec::new(),
        };
        assert!(api(503).is_retryable());
        assert!(api(429).is_retryable());
        assert!(!api(404).is_retryable());
        assert!(!api(501).is_retryable());
        assert!(api(502).outcome_unknown());
        assert!(!api(503).outcome_unknown());
        let connect = ClientError::Transport {
            kind: TransportKind::Connect,
            request: "GET /v1/runs".into(),
            base_url: DEFAULT_BASE_URL.into(),
            detail: "connection refused".into(),
        };
        assert!(connect.is_retryable());
        assert!(!connect.outcome_unknown());
        assert!(connect.to_string().contains("is `flowgate serve` running"));
    }
}
