use std::sync::Arc;

use flowgate_shared::telemetry::{self, LogFormat};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init(LogFormat::detect());
    let services = flowgate_api::config::trigger_services_from_env().await?;
    let triggers = Arc::new(flowgate_triggers::Triggers::new(services));
    run(service_fn(move |event: LambdaEvent<Value>| {
        let triggers = triggers.clone();
        async move { triggers.handle(event).await }
    }))
    .await
}
