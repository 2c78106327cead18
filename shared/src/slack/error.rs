//! Errors of the Slack client: which method failed, Slack's reason, and whether trying again
//! can help.

use std::time::Duration;

/// Slack error codes that describe Slack's trouble rather than the request's: the same call may
/// work later.
const RETRYABLE_API_ERRORS: &[&str] = &[
    "ratelimited",
    "rate_limited",
    "internal_error",
    "service_unavailable",
    "request_timeout",
    "fatal_error",
];

/// A failed Slack API call. The message says what failed and what to do next; use
/// [`SlackError::is_retryable`] to decide programmatically.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SlackError {
    /// Slack answered `{"ok": false, "error": "<code>"}`.
    #[error("Slack {method} failed with {error:?}: {}", api_advice(.method, .error))]
    Api { method: String, error: String },

    /// HTTP 429: Slack's per-method rate limit. Wait `retry_after` (its `Retry-After`).
    #[error("Slack rate-limited the call{}; retry after the wait", retry_after_text(*.retry_after))]
    RateLimited { retry_after: Option<Duration> },

    /// Any other non-2xx answer without Slack's error envelope.
    #[error("Slack answered HTTP {status}; {}", http_advice(*.status))]
    Http { status: u16 },

    /// No answer: connect error, timeout, or a connection broken mid-call. Slack may or may not
    /// have acted (a message may have been posted).
    #[error("Slack could not be reached: {0}; retry later")]
    Transport(String),

    /// A 2xx whose body is not the JSON Slack sends.
    #[error(
        "Slack's answer could not be read: {0}; check that the Slack base URL points at the \
         Slack Web API (https://slack.com/api/)"
    )]
    Decode(String),

    /// The client could not be built or the request could not be encoded.
    #[error("Slack client configuration is invalid: {0}")]
    Config(String),
}

impl SlackError {
    /// Whether the same call may succeed later: rate limits, 5xx, transport failures and the
    /// Slack error codes that mean Slack itself is struggling. Everything else is an answer
    /// about the request (wrong channel, missing scope, bad token) that a retry repeats.
    pub fn is_retryable(&self) -> bool {
        match self {
            SlackError::Api { error, .. } => RETRYABLE_API_ERRORS.contains(&error.as_str()),
            SlackError::RateLimited { .. } | SlackError::Transport(_) => true,
            SlackError::Http { status } => *status == 429 || (500..=599).contains(status),
            SlackError::Decode(_) | SlackError::Config(_) => false,
        }
    }

    /// How long Slack asked us to wait, when it said (HTTP 429 `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SlackError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// Slack's error code (`channel_not_found`, `invalid_auth`, …) when Slack gave one.
    pub fn api_error(&self) -> Option<&str> {
        match self {
            SlackError::Api { error, .. } => Some(error),
            _ => None,
        }
    }
}

fn retry_after_text(retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(wait) => format!(" (Retry-After: {} s)", wait.as_secs()),
        None => String::new(),
    }
}

fn http_advice(status: u16) -> &'static str {
    if status >= 500 {
        "Slack is failing; retry later"
    } else if status == 404 {
        "the method URL does not exist; check the Slack base URL"
    } else {
        "the request was refused; retrying it unchanged will not help"
    }
}

/// What to do about a Slack error code, in words a person configuring Flowgate can act on.
fn api_advice(method: &str, error: &str) -> String {
    let advice = match error {
        "channel_not_found" | "not_in_channel" => {
            "invite the app to the channel or fix slack_channel"
        }
        "is_archived" => "the channel is archived; unarchive it or fix slack_channel",
        "not_authed" | "invalid_auth" | "account_inactive" | "token_revoked" | "token_expired"
        | "no_permission" => {
            "the bot token is missing, wrong or revoked; check the Slack token Flowgate is \
             configured with"
        }
        "missing_scope" => {
            "the Slack app lacks an OAuth scope (chat:write, usergroups:read); add it and \
             reinstall the app"
        }
        "message_not_found" | "cant_update_message" | "edit_window_closed" => {
            "the message is gone or was not posted by this app; post a new one"
        }
        "expired_trigger_id" | "invalid_trigger_id" | "exchanged_trigger_id" => {
            "a trigger id works once and within 3 seconds of the click; open the modal straight \
             from the click handler"
        }
        "user_not_in_channel" => {
            "the user is not in the channel, so the ephemeral message cannot be shown"
        }
        "user_not_found" => "the user id is wrong or the user was deactivated",
        "no_such_subteam" | "subteam_not_found" => {
            "the user group does not exist; approvers must name groups by their S… id"
        }
        "invalid_blocks"
        | "invalid_blocks_format"
        | "invalid_arguments"
        | "msg_too_long"
        | "no_text"
        | "too_many_attachments"
        | "view_too_large" => {
            "Slack refused the message layout; this is a Flowgate bug, please report it with the \
             approval or run id"
        }
        "ratelimited" | "rate_limited" => "Slack is rate-limiting this app; retry later",
        e if RETRYABLE_API_ERRORS.contains(&e) => "Slack is having trouble; retry later",
        _ => return format!("see https://docs.slack.dev/reference/methods/{method} for the code"),
    };
    advice.to_string()
}
