//! The Slack Web API client: the handful of methods Flowgate needs to post approval requests and
//! run threads, update them after a decision, open the reason/feedback modal and resolve approver
//! user groups.
//!
//! Every call is one attempt. Flowgate posts to Slack from queue-driven effects, and the queue is
//! what retries: [`SlackError::is_retryable`] and [`SlackError::retry_after`] tell the caller
//! whether to put the work back and for how long. Retrying inside the client as well would
//! multiply the attempts and could outlive a Lambda's budget.
//!
//! The bot token travels only in the `Authorization` header (marked sensitive) and never appears
//! in logs, URLs or `Debug` output.

use std::fmt;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{RequestBuilder, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::{Instrument, debug, info_span, warn};

use super::error::SlackError;

/// Where the Slack Web API lives; tests and proxies point [`SlackConfig::base_url`] elsewhere.
pub const DEFAULT_BASE_URL: &str = "https://slack.com/api/";
/// Budget of one call. Slack answers in well under a second; a click handler that waits longer
/// than Slack's 3 s acknowledgement window has already failed the user, so keep this short.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Slack expects the charset spelled out on JSON bodies (it warns `missing_charset` otherwise).
const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// How to reach Slack.
#[derive(Clone, PartialEq)]
pub struct SlackConfig {
    /// Bot token (`xoxb-…`), sent as `Authorization: Bearer <token>`.
    pub token: String,
    /// The Web API root, with or without a trailing slash (default [`DEFAULT_BASE_URL`]).
    pub base_url: String,
    /// Budget of one HTTP call, connect to last byte (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
}

impl SlackConfig {
    /// A configuration for the public Slack API with the default timeout.
    pub fn new(token: impl Into<String>) -> Self {
        SlackConfig {
            token: token.into(),
            base_url: DEFAULT_BASE_URL.to_string(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl Default for SlackConfig {
    /// Defaults without a token: [`SlackClient::new`] refuses it until one is set.
    fn default() -> Self {
        SlackConfig::new(String::new())
    }
}

impl fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackConfig")
            .field("token", &"<redacted>")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Where `chat.postMessage` put a message: what `chat.update` and thread replies need.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PostedMessage {
    /// The channel id Slack resolved (a name or user id in the request becomes `C…`/`D…`).
    pub channel: String,
    /// The message timestamp, Slack's message id within the channel.
    pub ts: String,
}

/// Client of the Slack Web API, authenticated with a bot token.
#[derive(Clone)]
pub struct SlackClient {
    http: reqwest::Client,
    base_url: Url,
    timeout: Duration,
}

impl fmt::Debug for SlackClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token lives in the reqwest client's default headers; say it is there, never what.
        f.debug_struct("SlackClient")
            .field("base_url", &self.base_url.as_str())
            .field("token", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The part of every Slack answer that says whether the call worked.
#[derive(Deserialize)]
struct Envelope {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warning: Option<String>,
    /// `invalid_blocks` and friends explain themselves here.
    #[serde(default)]
    response_metadata: Option<ResponseMetadata>,
}

#[derive(Deserialize)]
struct ResponseMetadata {
    #[serde(default)]
    messages: Vec<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
struct Members {
    users: Vec<String>,
}

/// An answer we need nothing from beyond `ok`.
#[derive(Deserialize)]
struct Nothing {}

impl SlackClient {
    /// Builds a client; fails on an empty token, a token a header cannot carry, or a base URL
    /// that is not http(s).
    pub fn new(config: SlackConfig) -> Result<Self, SlackError> {
        let raw = config.base_url.trim();
        let mut base_url = Url::parse(raw).map_err(|e| {
            SlackError::Config(format!(
                "Slack API URL {raw:?} is not a URL ({e}); expected e.g. {DEFAULT_BASE_URL}"
            ))
        })?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(SlackError::Config(format!(
                "Slack API URL {base_url} must be http or https"
            )));
        }
        if base_url.query().is_some() || base_url.fragment().is_some() {
            return Err(SlackError::Config(format!(
                "Slack API URL {base_url} must not carry a query or fragment"
            )));
        }
        // `Url::join` replaces the last segment unless the path ends with a slash.
        if !base_url.path().ends_with('/') {
            let path = format!("{}/", base_url.path());
            base_url.set_path(&path);
        }
        let token = config.token.trim();
        if token.is_empty() {
            return Err(SlackError::Config(
                "the Slack bot token is empty; set it to the app's xoxb-… token".into(),
            ));
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            SlackError::Config(
                "the Slack bot token contains characters a header cannot carry".into(),
            )
        })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("flowgate/", env!("CARGO_PKG_VERSION")))
            .timeout(config.timeout)
            .build()
            .map_err(|e| SlackError::Config(format!("HTTP client set-up failed: {e}")))?;
        Ok(SlackClient {
            http,
            base_url,
            timeout: config.timeout,
        })
    }

    /// The API root this client talks to.
    pub fn base_url(&self) -> &str {
        self.base_url.as_str()
    }

    /// Posts a message (`chat.postMessage`), in a thread when `thread_ts` is given.
    ///
    /// `text` is the notification and screen-reader fallback when `blocks` are given, the
    /// message itself otherwise. Returns the resolved channel id and the message `ts`, which
    /// [`SlackClient::update_message`] and thread replies need.
    pub async fn post_message(
        &self,
        channel: &str,
        text: &str,
        blocks: Option<&Value>,
        thread_ts: Option<&str>,
    ) -> Result<PostedMessage, SlackError> {
        let mut body = json!({ "channel": channel, "text": text });
        if let Some(blocks) = blocks {
            body["blocks"] = blocks.clone();
        }
        if let Some(ts) = thread_ts {
            body["thread_ts"] = Value::from(ts);
        }
        self.call_json("chat.postMessage", &body).await
    }

    /// Replaces a message's text and blocks (`chat.update`).
    ///
    /// With `blocks: None` Slack keeps the message's previous blocks; pass an empty array to
    /// remove them.
    pub async fn update_message(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
        blocks: Option<&Value>,
    ) -> Result<(), SlackError> {
        let mut body = json!({ "channel": channel, "ts": ts, "text": text });
        if let Some(blocks) = blocks {
            body["blocks"] = blocks.clone();
        }
        let _: Nothing = self.call_json("chat.update", &body).await?;
        Ok(())
    }

    /// Opens a modal (`views.open`). `trigger_id` comes from the click and expires 3 s after
    /// it, so call this straight from the interaction handler.
    pub async fn open_view(&self, trigger_id: &str, view: &Value) -> Result<(), SlackError> {
        let body = json!({ "trigger_id": trigger_id, "view": view });
        let _: Nothing = self.call_json("views.open", &body).await?;
        Ok(())
    }

    /// Shows `text` to one user in a channel (`chat.postEphemeral`): used to tell someone why
    /// their click was refused without telling everyone.
    pub async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        text: &str,
    ) -> Result<(), SlackError> {
        let body = json!({ "channel": channel, "user": user, "text": text });
        let _: Nothing = self.call_json("chat.postEphemeral", &body).await?;
        Ok(())
    }

    /// The user ids in a user group (`usergroups.users.list`), for approvers given as `S…`
    /// group ids. Sent as a form because Slack's read methods do not all take JSON bodies.
    pub async fn usergroup_members(&self, usergroup: &str) -> Result<Vec<String>, SlackError> {
        let method = "usergroups.users.list";
        let form = serde_urlencoded::to_string([("usergroup", usergroup)])
            .map_err(|e| SlackError::Config(format!("{method}: cannot encode the form: {e}")))?;
        let url = self.url(method)?;
        let request = self
            .http
            .post(url)
            .header(CONTENT_TYPE, FORM_CONTENT_TYPE)
            .body(form);
        let members: Members = self.send(method, request).await?;
        Ok(members.users)
    }

    fn url(&self, method: &str) -> Result<Url, SlackError> {
        self.base_url
            .join(method)
            .map_err(|e| SlackError::Config(format!("cannot build the URL of {method}: {e}")))
    }

    async fn call_json<T: DeserializeOwned>(
        &self,
        method: &str,
        body: &Value,
    ) -> Result<T, SlackError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| SlackError::Config(format!("{method}: cannot encode the body: {e}")))?;
        let url = self.url(method)?;
        let request = self
            .http
            .post(url)
            .header(CONTENT_TYPE, JSON_CONTENT_TYPE)
            .body(bytes);
        self.send(method, request).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: &str,
        request: RequestBuilder,
    ) -> Result<T, SlackError> {
        let span = info_span!("slack_api", method);
        let result = self.attempt(method, request).instrument(span.clone()).await;
        let _entered = span.enter();
        match &result {
            Ok(_) => debug!("Slack API call succeeded"),
            Err(e) => warn!(error = %e, retryable = e.is_retryable(), "Slack API call failed"),
        }
        result
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        method: &str,
        request: RequestBuilder,
    ) -> Result<T, SlackError> {
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(method, &e))?;
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
            .map_err(|e| self.transport_error(method, &e))?;
        if status == 429 {
            return Err(SlackError::RateLimited { retry_after });
        }
        if status >= 500 {
            return Err(SlackError::Http { status });
        }
        let envelope = serde_json::from_slice::<Envelope>(&body);
        if !(200..300).contains(&status) {
            // A 4xx that still speaks Slack's envelope names its problem; prefer that.
            return Err(match envelope {
                Ok(Envelope {
                    ok: false,
                    error: Some(error),
                    ..
                }) => SlackError::Api {
                    method: method.to_string(),
                    error,
                },
                _ => SlackError::Http { status },
            });
        }
        let envelope = envelope.map_err(|e| decode_error(method, status, &e, &body))?;
        if let Some(meta) = &envelope.response_metadata {
            for message in meta.messages.iter().chain(&meta.warnings) {
                debug!(detail = %message, "Slack response metadata");
            }
        }
        if !envelope.ok {
            let error = envelope
                .error
                .unwrap_or_else(|| "unknown_error".to_string());
            if let Some(meta) = &envelope.response_metadata
                && !meta.messages.is_empty()
            {
                // `invalid_blocks` says which block is wrong only here.
                warn!(error, details = ?meta.messages, "Slack refused the call");
            }
            return Err(SlackError::Api {
                method: method.to_string(),
                error,
            });
        }
        if let Some(warning) = &envelope.warning {
            debug!(warning, "Slack answered with a warning");
        }
        serde_json::from_slice::<T>(&body).map_err(|e| decode_error(method, status, &e, &body))
    }

    fn transport_error(&self, method: &str, error: &reqwest::Error) -> SlackError {
        if error.is_timeout() {
            return SlackError::Transport(format!(
                "{method} got no answer within {:?}",
                self.timeout
            ));
        }
        let mut text = format!(
            "{method}: {}",
            if error.is_connect() {
                "connection failed"
            } else if error.is_body() || error.is_decode() {
                "reading the answer failed"
            } else {
                "sending the request failed"
            }
        );
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        SlackError::Transport(text)
    }
}

fn decode_error(method: &str, status: u16, error: &serde_json::Error, body: &[u8]) -> SlackError {
    let text = String::from_utf8_lossy(body);
    let mut snippet: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        snippet.push('…');
    }
    SlackError::Decode(format!(
        "{method} answered HTTP {status} with a body that is not the expected JSON ({error}); \
         body starts with {snippet:?}"
    ))
}
