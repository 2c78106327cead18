use flowgate_shared::telemetry::{self, LogFormat};
use lambda_http::{Error, run};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init(LogFormat::detect());
    let services = flowgate_approvals::services_from_env().await?;
    run(flowgate_approvals::app(services)).await
}
