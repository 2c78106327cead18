use flowgate_api::config::{Function, init_from_env};
use flowgate_shared::telemetry::{self, LogFormat};
use lambda_http::{Error, run};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init(LogFormat::detect());
    let started = init_from_env(Function::Api).await?;
    run(flowgate_api::app_with_mcp_hosts(
        started.services,
        started.mcp_allowed_hosts.as_deref(),
    ))
    .await
}
