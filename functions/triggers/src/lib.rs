//! Lambda function `flowgate-triggers`: EventBridge schedules, inbound webhook triggers, completion chaining, the sweeper.
//!
//! The handler lives here (not in `main.rs`) so tests can call it directly. It is built out in
//! issue 6 (triggers and the sweeper); until then it refuses every invocation with an error that says so, rather
//! than pretending to succeed.

use lambda_runtime::{Error, LambdaEvent};
use serde_json::Value;

/// The HTTP side of this function: `POST /hooks/{trigger_id}` (inbound webhook triggers), the
/// router `flowgate_api` builds, so the api function, `flowgate serve` and this function answer
/// a delivery the same way. Its services come from `flowgate_api::config::services_from_env`
/// (the hook secrets from `FLOWGATE_HOOK_SECRETS`).
pub fn hooks_app(services: flowgate_api::Services) -> axum::Router {
    flowgate_api::hooks_app(services)
}

/// Handle one invocation.
pub async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    tracing::warn!(request_id = %event.context.request_id, "flowgate-triggers is not implemented yet");
    Err("flowgate-triggers is not implemented yet (issue 6 (triggers and the sweeper)); nothing was done, do not retry".into())
}
