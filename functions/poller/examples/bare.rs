//! A hello-world Lambda function (lambda_runtime + tokio + serde_json, the same as the
//! lambda-perf Rust function): the floor `scripts/coldstart.py` compares Flowgate's functions
//! with. Built with the workspace's release profile.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<_, Error>(event.payload)
    }))
    .await
}
