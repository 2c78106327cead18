use std::sync::Arc;

use flowgate_api::config::{Function, init_from_env};
use flowgate_shared::telemetry::{self, LogFormat};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init(LogFormat::detect());
    let started = init_from_env(Function::Triggers).await?;
    let triggers = Arc::new(flowgate_triggers::Triggers::new(started.services));
    run(service_fn(move |event: LambdaEvent<Value>| {
        let triggers = triggers.clone();
        async move { triggers.handle(event).await }
    }))
    .await
}
