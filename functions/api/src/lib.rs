//! Lambda function `flowgate-api`: the HTTP API: start, list, get, cancel, feedback, workflows, sessions, /mcp.
//!
//! The handler lives here (not in `main.rs`) so tests can call it directly. It is built out in
//! issue 4 (the HTTP API); until then it refuses every invocation with an error that says so, rather
//! than pretending to succeed.

use lambda_runtime::{Error, LambdaEvent};
use serde_json::Value;

/// Handle one invocation.
pub async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    tracing::warn!(request_id = %event.context.request_id, "flowgate-api is not implemented yet");
    Err("flowgate-api is not implemented yet (issue 4 (the HTTP API)); nothing was done, do not retry".into())
}
