//! Adapters: the real implementations of the [ports](crate::ports).
//!
//! - `aws` feature: [`dynamodb::DynamoStore`] (run and workflow store on one DynamoDB table, see
//!   `DYNAMODB.md` next to this file) and [`sqs::SqsQueue`].
//! - `embedded` feature: [`embedded::EmbeddedStore`] (one redb file).
//!   [`eventbridge::EventBridgeScheduler`] (schedules on EventBridge Scheduler).
//! - always: [`memqueue::MemQueue`] (in-process delay queue, tokio only) and
//!   [`record_scheduler::RecordScheduler`] (schedules as records, fired by `flowgate serve`).

#[cfg(feature = "aws")]
pub mod dynamodb;
#[cfg(feature = "embedded")]
pub mod embedded;
#[cfg(feature = "aws")]
pub mod eventbridge;
#[cfg(feature = "embedded")]
mod group_commit;
pub mod memqueue;
pub mod record_scheduler;
#[cfg(feature = "aws")]
pub mod sqs;

/// The loaded SDK configuration a function builds all of its AWS clients from (loaded once:
/// resolving region and credentials is part of every cold start).
#[cfg(feature = "aws")]
pub use aws_config::SdkConfig;

/// Load the AWS SDK configuration the usual way (environment, profile, instance role), pinned
/// to the latest behavior version.
///
/// The SDK itself honours `AWS_ENDPOINT_URL` (and the per-service `AWS_ENDPOINT_URL_DYNAMODB`,
/// `AWS_ENDPOINT_URL_SQS`), which is how tests reach moto; `endpoint_url` overrides it for
/// callers that know an emulator's address only at run time (LocalStack in a container).
#[cfg(feature = "aws")]
pub async fn aws_config(endpoint_url: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}
