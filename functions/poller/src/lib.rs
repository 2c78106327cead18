//! Lambda function `flowgate-poller`: the SQS consumer that advances runs and polls agent runs on delayed messages.
//!
//! The handler lives here (not in `main.rs`) so tests can call it directly. It is built out in
//! issue 3 (agent steps and the poller); until then it refuses every invocation with an error that says so, rather
//! than pretending to succeed.

use lambda_runtime::{Error, LambdaEvent};
use serde_json::Value;

/// Handle one invocation.
pub async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    tracing::warn!(request_id = %event.context.request_id, "flowgate-poller is not implemented yet");
    Err("flowgate-poller is not implemented yet (issue 3 (agent steps and the poller)); nothing was done, do not retry".into())
}
