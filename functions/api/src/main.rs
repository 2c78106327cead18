use flowgate_shared::telemetry::{self, LogFormat};
use lambda_http::{Error, run};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init(LogFormat::detect());
    let services = flowgate_api::config::services_from_env().await?;
    run(flowgate_api::app(services)).await
}
