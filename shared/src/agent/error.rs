//! Errors of the agent API client: which call failed, why, and whether trying again can help.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

/// The agent API call an error belongs to (also the `call` field of the client's tracing spans).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentCall {
    StartRun,
    Status,
    ListRuns,
    Kill,
    Cleanup,
    AddMessage,
    MessageQueue,
    Health,
    ListWorkflows,
}

impl AgentCall {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentCall::StartRun => "start_run",
            AgentCall::Status => "status",
            AgentCall::ListRuns => "list_runs",
            AgentCall::Kill => "kill",
            AgentCall::Cleanup => "cleanup",
            AgentCall::AddMessage => "add_message",
            AgentCall::MessageQueue => "message_queue",
            AgentCall::Health => "health",
            AgentCall::ListWorkflows => "list_workflows",
        }
    }

    /// Whether sending the request twice is harmless.
    ///
    /// A start has no idempotency key (a second POST starts a second run) and an added message
    /// is queued once per POST, so those two are resent only when the first attempt certainly
    /// never reached the service (a connect error). Reads, kill and cleanup converge to the same
    /// state when repeated.
    pub fn is_idempotent(self) -> bool {
        !matches!(self, AgentCall::StartRun | AgentCall::AddMessage)
    }
}

impl fmt::Display for AgentCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed agent API call. The message says what failed and what to do next; use
/// [`AgentError::is_retryable`] to decide programmatically.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// HTTP 401: the key is missing or wrong. Never retried.
    #[error(
        "agent API {call} was refused with HTTP 401 ({detail}); check the agent API key Flowgate \
         is configured with (retrying will not help)"
    )]
    Unauthorized { call: AgentCall, detail: String },

    /// Any other non-2xx answer, with the service's `detail` rendered readably.
    #[error("agent API {call} failed with HTTP {status}: {detail}; {}", status_advice(*.call, *.status, *.attempts))]
    Http {
        call: AgentCall,
        status: u16,
        detail: String,
        attempts: u32,
    },

    /// No connection could be made: the request was never sent.
    #[error(
        "agent API {call} could not connect to {url} ({attempts} attempt(s)): {message}; the \
         request was not sent, so retrying later is safe"
    )]
    Connect {
        call: AgentCall,
        url: String,
        message: String,
        attempts: u32,
    },

    /// No answer within the per-request timeout: the service may still have acted.
    #[error(
        "agent API {call} got no answer within {timeout:?} ({attempts} attempt(s)); {}",
        ambiguity_advice(*.call)
    )]
    Timeout {
        call: AgentCall,
        timeout: Duration,
        attempts: u32,
    },

    /// The connection broke after the request was sent, or the body could not be read.
    #[error("agent API {call} failed in transport ({attempts} attempt(s)): {message}; {}", ambiguity_advice(*.call))]
    Transport {
        call: AgentCall,
        message: String,
        attempts: u32,
    },

    /// A 2xx whose body is not the JSON the API defines.
    #[error(
        "agent API {call} answered HTTP {status} with a body that is not the expected JSON \
         ({reason}); body starts with {snippet:?}; check that the base URL points at the agent \
         service and not at a proxy or another service"
    )]
    MalformedResponse {
        call: AgentCall,
        status: u16,
        reason: String,
        snippet: String,
    },

    /// HTTP 200 with `status: "failed"` (quirk 9): the service accepted the request but setup
    /// threw, so no run is going.
    #[error(
        "the agent service could not start workflow {workflow:?} (HTTP 200 with status \
         \"failed\"): {message}; no run is going, start a new attempt"
    )]
    StartFailed {
        workflow: String,
        run_id: Option<String>,
        message: String,
    },

    /// A `/runs` search read its page budget without finding the run or reaching older runs.
    #[error(
        "searched {pages} page(s) of {workflow:?} runs without finding the run or reaching runs \
         started before it; pass the attempt's start time to bound the search"
    )]
    SearchExhausted { workflow: String, pages: u32 },

    /// Refused client-side because the service would reject it.
    #[error("agent API {call} was not sent: {reason}")]
    InvalidRequest { call: AgentCall, reason: String },

    /// The client could not be built (bad base URL, key not a valid header value, TLS set-up).
    #[error("agent client configuration is invalid: {0}")]
    Config(String),
}

impl AgentError {
    /// Whether the same request may succeed later: connect errors, timeouts, broken
    /// connections, 429 and 5xx. A 4xx is an answer, a failed start is final for that attempt.
    ///
    /// For [`AgentCall::StartRun`] a retryable error other than [`AgentError::Connect`] is
    /// ambiguous (see [`AgentError::outcome_unknown`]): look the run up by session name before
    /// starting again.
    pub fn is_retryable(&self) -> bool {
        match self {
            AgentError::Connect { .. }
            | AgentError::Timeout { .. }
            | AgentError::Transport { .. } => true,
            AgentError::Http { status, .. } => is_retryable_status(*status),
            AgentError::Unauthorized { .. }
            | AgentError::MalformedResponse { .. }
            | AgentError::StartFailed { .. }
            | AgentError::InvalidRequest { .. }
            | AgentError::SearchExhausted { .. }
            | AgentError::Config(_) => false,
        }
    }

    /// Whether the service may have acted on the request even though the call failed: a
    /// timeout, a connection broken after sending, or a 5xx. A start that failed this way may
    /// have created a run.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            AgentError::Timeout { .. } | AgentError::Transport { .. } => true,
            AgentError::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// The HTTP status the service answered with, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            AgentError::Unauthorized { .. } => Some(401),
            AgentError::Http { status, .. } | AgentError::MalformedResponse { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// The call that failed, when the error belongs to one.
    pub fn call(&self) -> Option<AgentCall> {
        match self {
            AgentError::Unauthorized { call, .. }
            | AgentError::Http { call, .. }
            | AgentError::Connect { call, .. }
            | AgentError::Timeout { call, .. }
            | AgentError::Transport { call, .. }
            | AgentError::MalformedResponse { call, .. }
            | AgentError::InvalidRequest { call, .. } => Some(*call),
            AgentError::StartFailed { .. } => Some(AgentCall::StartRun),
            AgentError::SearchExhausted { .. } => Some(AgentCall::ListRuns),
            AgentError::Config(_) => None,
        }
    }

    /// Whether the service said the thing asked about does not exist (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

/// 429 and 5xx are worth another try; every other status is the service's answer.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

fn status_advice(call: AgentCall, status: u16, attempts: u32) -> String {
    if !is_retryable_status(status) {
        "the service refused the request; retrying it unchanged will not help".to_string()
    } else if status >= 500 && !call.is_idempotent() {
        // A 5xx may come after the service acted (the run was created, the message queued).
        ambiguity_advice(call).to_string()
    } else {
        format!("the service is busy or failing ({attempts} attempt(s)); retry later")
    }
}

fn ambiguity_advice(call: AgentCall) -> &'static str {
    match call {
        AgentCall::StartRun => {
            "the run may or may not have been created: look it up by session name before \
             starting it again"
        }
        AgentCall::AddMessage => {
            "the message may or may not have been queued: check the message queue before \
             sending it again"
        }
        _ => "retry later",
    }
}

/// Renders an error body's `detail` readably. FastAPI sends `{"detail": "<text>"}` for
/// `HTTPException`s and `{"detail": [{"loc", "msg", ...}]}` for validation errors; a list becomes
/// `body.max_turns: Input should be less than or equal to 200; ...`. Bodies without a `detail`
/// are shown as a short snippet.
pub fn render_detail(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => match map.get("detail") {
            Some(detail) => render_detail_value(detail),
            None => snippet(body, 300),
        },
        Ok(_) | Err(_) if body.is_empty() => "(empty body)".to_string(),
        Ok(_) | Err(_) => snippet(body, 300),
    }
}

fn render_detail_value(detail: &Value) -> String {
    match detail {
        Value::String(text) => text.clone(),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(render_validation_item)
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

fn render_validation_item(item: &Value) -> String {
    let Some(obj) = item.as_object() else {
        return item.to_string();
    };
    let loc = obj
        .get("loc")
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .map(|p| match p {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(".")
        })
        .unwrap_or_default();
    let msg = obj
        .get("msg")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| item.to_string());
    if loc.is_empty() {
        msg
    } else {
        format!("{loc}: {msg}")
    }
}

/// The first `max` characters of a body, lossily decoded, for error messages.
pub(crate) fn snippet(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_string_and_list_details() {
        assert_eq!(
            render_detail(br#"{"detail":"Run x not found"}"#),
            "Run x not found"
        );
        let list = br#"{"detail":[{"type":"less_than_equal","loc":["body","max_turns"],"msg":"Input should be less than or equal to 200","input":500,"ctx":{"le":200}},{"type":"missing","loc":["body","message"],"msg":"Field required","input":{}}]}"#;
        assert_eq!(
            render_detail(list),
            "body.max_turns: Input should be less than or equal to 200; body.message: Field required"
        );
        assert_eq!(render_detail(b""), "(empty body)");
        assert_eq!(
            render_detail(b"<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
    }

    #[test]
    fn retryability_follows_the_status() {
        let http = |status| AgentError::Http {
            call: AgentCall::Status,
            status,
            detail: String::new(),
            attempts: 1,
        };
        assert!(http(500).is_retryable());
        assert!(http(503).is_retryable());
        assert!(http(429).is_retryable());
        assert!(!http(404).is_retryable());
        assert!(!http(422).is_retryable());
        assert!(!http(429).outcome_unknown());
        assert!(http(502).outcome_unknown());
    }
}
