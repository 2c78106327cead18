//! Lambda function `flowgate-approvals`: Slack interactivity and signed webhook approvals.
//!
//! The handler lives here (not in `main.rs`) so tests can call it directly. It is built out in
//! issue 5 (approvals); until then it refuses every invocation with an error that says so, rather
//! than pretending to succeed.

use lambda_runtime::{Error, LambdaEvent};
use serde_json::Value;

/// Handle one invocation.
pub async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    tracing::warn!(request_id = %event.context.request_id, "flowgate-approvals is not implemented yet");
    Err("flowgate-approvals is not implemented yet (issue 5 (approvals)); nothing was done, do not retry".into())
}
