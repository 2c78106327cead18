use flowgate_shared::telemetry::{self, LogFormat};
use lambda_runtime::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init(LogFormat::detect());
    run(service_fn(flowgate_poller::handler)).await
}
