//! Tool failures, worded for the model that called the tool.
//!
//! Every failure of a tool reaches the client as a tool result with `isError: true` (never a
//! JSON-RPC error, which clients tend to show as an opaque "internal error", and never a hang):
//! the API's own message, its status and code, and what to do next. The API's messages already
//! say what was wrong; the hints add the tool-level next step (which tool to call, whether to
//! retry, or that a person has to act).

use flowgate_shared::api::client::ClientError;
use rmcp::model::{CallToolResult, ContentBlock};

/// Why a tool call failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The API refused or could not be reached.
    #[error("{}", api_message(.0))]
    Api(#[from] ClientError),
    /// The arguments make no sense before any call is made.
    #[error("{0}")]
    Invalid(String),
    /// The call ran out of time (the API did not answer in time).
    #[error(
        "{what} did not finish within {seconds} s; the Flowgate API is slow or unreachable. \
         Try again; if a run was being started, check list_recent_runs before starting it again"
    )]
    Timeout { what: &'static str, seconds: u64 },
}

impl ToolError {
    /// The failure as the tool result a client shows the model.
    pub fn into_result(self) -> CallToolResult {
        CallToolResult::error(vec![ContentBlock::text(self.to_string())])
    }
}

/// The API's message plus the next step a model can take.
fn api_message(error: &ClientError) -> String {
    let ClientError::Api {
        status,
        code,
        message,
        field,
        problems,
    } = error
    else {
        // Transport, decode and configuration errors already say what to do (start the
        // server, check the URL, try again).
        let retry = if error.is_retryable() {
            " This may pass if you try again shortly."
        } else {
            ""
        };
        return format!("The Flowgate API could not be reached: {error}.{retry}");
    };
    let mut text = format!("{message} (HTTP {status} {code}");
    if let Some(field) = field {
        text.push_str(&format!(", field `{field}`"));
    }
    text.push(')');
    for p in problems.iter().take(10) {
        text.push_str(&format!("\n- {}: {}", p.path, p.message));
    }
    let hint = match (*status, code.as_str()) {
        (401, _) => {
            " The MCP server's API key was refused: set the right key (FLOWGATE_API_KEY or \
             --api-key for `flowgate mcp`, the x-api-key header for the remote endpoint). A \
             person has to fix this; retrying will not help."
        }
        (403, "not_an_approver") => {
            " This API key may not decide this approval; a person who is an approver has to \
             decide it (in Slack, through an approval link, or with their own key)."
        }
        (403, "self_approval") => {
            " Whoever started a run may not approve it; another approver has to decide."
        }
        (403, _) => " This API key is not allowed to do this.",
        (404, "run_not_found") => " Check the run id with list_recent_runs.",
        (404, "approval_not_found") => " List open approvals with list_pending_approvals.",
        (404, "session_not_found") => " List sessions with list_sessions.",
        (404, _) => "",
        (409, _) => {
            " The run's current state does not allow this; get_workflow_status shows what it \
             is doing now."
        }
        (422, "unknown_workflow") => " list_workflows shows what can be run.",
        (422, "unknown_session") => " list_sessions shows the sessions that exist.",
        (422, _) => " Correct the arguments and call the tool again.",
        (429, _) | (503, _) => " The service is busy or briefly unavailable; try again shortly.",
        (s, _) if s >= 500 => " The Flowgate API failed; try again shortly.",
        _ => "",
    };
    text.push_str(hint);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> ClientError {
        ClientError::Api {
            status,
            code: code.into(),
            message: "the API key is not valid".into(),
            field: None,
            problems: Vec::new(),
        }
    }

    #[test]
    fn api_errors_keep_the_message_and_add_the_next_step() {
        let text = ToolError::from(api(401, "unauthorized")).to_string();
        assert!(text.starts_with("the API key is not valid (HTTP 401 unauthorized)"));
        assert!(text.contains("FLOWGATE_API_KEY"), "{text}");
        let text = ToolError::from(api(404, "run_not_found")).to_string();
        assert!(text.contains("list_recent_runs"), "{text}");
        let result = ToolError::Invalid("bad".into()).into_result();
        assert_eq!(result.is_error, Some(true));
        assert!(result.structured_content.is_none());
    }
}
