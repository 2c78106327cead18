use aws_lambda_events::event::sqs::SqsEvent;
use flowgate_poller::{PollerConfig, build_executor, handle_batch};
use flowgate_shared::telemetry::{self, LogFormat};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init(LogFormat::detect());
    let config = PollerConfig::from_env()?;
    let executor = build_executor(&config).await?;
    let executor = &executor;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(handle_batch(executor, event.payload).await)
    }))
    .await
}
