use aws_lambda_events::event::sqs::SqsEvent;
use flowgate_poller::{handle_batch, init_from_env};
use flowgate_shared::telemetry::{self, LogFormat};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init(LogFormat::detect());
    let executor = init_from_env().await?;
    let executor = &executor;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(handle_batch(executor, event.payload).await)
    }))
    .await
}
