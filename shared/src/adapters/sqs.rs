//! The work queue on an SQS standard queue.
//!
//! Delays use `DelaySeconds` (whole seconds, at most 900; sub-second delays round up so a poll
//! never comes early). Redelivery is SQS's own: a received message stays invisible for the
//! queue's visibility timeout and reappears with a higher `ApproximateReceiveCount` unless
//! deleted. On Lambda the poller receives through the event source mapping instead of
//! [`WorkQueue::receive`]; it uses [`decode_body`] on each record.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};

use crate::ports::{QueueError, Received, WorkMessage, WorkQueue, check_delay, check_hand_back};

/// SQS's limits.
const MAX_BATCH: usize = 10;
const MAX_WAIT: Duration = Duration::from_secs(20);

/// Work queue on one SQS queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
}

fn sdk_err<E, R>(op: &str, err: SdkError<E, R>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let code = err.code().unwrap_or_default().to_string();
    let message = format!("SQS {op}: {}", DisplayErrorContext(&err));
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            QueueError::Unavailable { message }
        }
        SdkError::ServiceError(_)
            if matches!(
                code.as_str(),
                "ThrottlingException"
                    | "RequestThrottled"
                    | "ServiceUnavailable"
                    | "InternalError"
                    | "InternalFailure"
                    | "KmsThrottled"
            ) =>
        {
            QueueError::Unavailable { message }
        }
        _ => QueueError::Backend { message },
    }
}

/// `DelaySeconds` for a delay: whole seconds, rounded up.
fn delay_seconds(delay: Duration) -> i32 {
    let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    // check_delay bounds this by 900, check_hand_back by 39,600.
    i32::try_from(secs).unwrap_or(900)
}

fn encode(message: &WorkMessage) -> Result<String, QueueError> {
    serde_json::to_string(message).map_err(|e| QueueError::Invalid {
        field: "message",
        reason: e.to_string(),
    })
}

/// Decode an SQS message body into a [`WorkMessage`] (also for Lambda SQS events).
pub fn decode_body(body: &str) -> Result<WorkMessage, serde_json::Error> {
    serde_json::from_str(body)
}

impl SqsQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }

    /// A queue with a client built from an already loaded configuration (a function loads it
    /// once for all of its clients).
    pub fn from_sdk_config(config: &super::SdkConfig, queue_url: impl Into<String>) -> Self {
        Self::new(Client::new(config), queue_url)
    }

    /// Open a connection to SQS (DNS, TCP, TLS) with a read that changes nothing: the queue's
    /// ARN attribute (`sqs:GetQueueAttributes`). Functions call it during Lambda's INIT phase
    /// so the first invocation does not pay for the handshake.
    pub async fn warm_up(&self) -> Result<(), QueueError> {
        self.client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| sdk_err("GetQueueAttributes (warm-up)", e))?;
        Ok(())
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Create a standard queue (or get the existing one with the same attributes) with the
    /// given visibility timeout, for tests and `flowgate serve --aws`. Deployed queues (with
    /// their DLQ) come from the SAM template.
    pub async fn create_queue(
        client: &Client,
        name: &str,
        visibility_timeout: Duration,
    ) -> Result<SqsQueue, QueueError> {
        let out = client
            .create_queue()
            .queue_name(name)
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                visibility_timeout.as_secs().to_string(),
            )
            .send()
            .await
            .map_err(|e| sdk_err("CreateQueue", e))?;
        let url = out.queue_url.ok_or_else(|| QueueError::Backend {
            message: format!("SQS CreateQueue for {name} returned no queue URL"),
        })?;
        Ok(SqsQueue::new(client.clone(), url))
    }

    async fn send_chunk(&self, chunk: &[(WorkMessage, Duration)]) -> Result<(), QueueError> {
        let mut entries = Vec::with_capacity(chunk.len());
        for (i, (message, delay)) in chunk.iter().enumerate() {
            entries.push(
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(encode(message)?)
                    .delay_seconds(delay_seconds(*delay))
                    .build()
                    .map_err(|e| QueueError::Invalid {
                        field: "message",
                        reason: e.to_string(),
                    })?,
            );
        }
        let out = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| sdk_err("SendMessageBatch", e))?;
        if out.failed.is_empty() {
            return Ok(());
        }
        let details: Vec<String> = out
            .failed
            .iter()
            .map(|f| {
                format!(
                    "{} ({}: {})",
                    f.id,
                    f.code,
                    f.message.as_deref().unwrap_or("")
                )
            })
            .collect();
        let message = format!(
            "SQS SendMessageBatch: {} of {} messages not sent: {}",
            out.failed.len(),
            chunk.len(),
            details.join("; ")
        );
        if out.failed.iter().any(|f| f.sender_fault) {
            Err(QueueError::Backend { message })
        } else {
            Err(QueueError::Unavailable { message })
        }
    }
}

#[async_trait]
impl WorkQueue for SqsQueue {
    #[tracing::instrument(level = "debug", skip_all, fields(run_id = message.run_id(), delay_ms = delay.as_millis()))]
    async fn send(&self, message: &WorkMessage, delay: Duration) -> Result<(), QueueError> {
        check_delay(delay)?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(encode(message)?)
            .delay_seconds(delay_seconds(delay))
            .send()
            .await
            .map_err(|e| sdk_err("SendMessage", e))?;
        Ok(())
    }

    async fn send_batch(&self, messages: &[(WorkMessage, Duration)]) -> Result<(), QueueError> {
        for (_, delay) in messages {
            check_delay(*delay)?;
        }
        for chunk in messages.chunks(MAX_BATCH) {
            self.send_chunk(chunk).await?;
        }
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        if max == 0 {
            return Err(QueueError::Invalid {
                field: "max",
                reason: "receive at least one message".to_string(),
            });
        }
        let max = i32::try_from(max.min(MAX_BATCH)).unwrap_or(10);
        let wait_secs = i32::try_from(wait.min(MAX_WAIT).as_secs()).unwrap_or(20);
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max)
            .wait_time_seconds(wait_secs)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| sdk_err("ReceiveMessage", e))?;
        let mut received = Vec::new();
        for m in out.messages.unwrap_or_default() {
            let (Some(receipt), Some(body)) = (m.receipt_handle, m.body) else {
                continue;
            };
            let receive_count = m
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|c| c.parse().ok())
                .unwrap_or(1);
            match decode_body(&body) {
                Ok(message) => received.push(Received {
                    receipt,
                    message,
                    receive_count,
                }),
                // Leave a message we cannot read where it is: it reappears after the visibility
                // timeout and the queue's redrive policy moves it to the DLQ for a person.
                Err(e) => tracing::error!(
                    message_id = m.message_id.as_deref().unwrap_or(""),
                    receive_count,
                    error = %e,
                    "undecodable work message left for the dead-letter queue"
                ),
            }
        }
        Ok(received)
    }

    async fn ack(&self, receipt: &str) -> Result<(), QueueError> {
        match self
            .client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // The message was already deleted or its receipt superseded by a redelivery.
            Err(e) if e.code() == Some("ReceiptHandleIsInvalid") => Ok(()),
            Err(e) => Err(sdk_err("DeleteMessage", e)),
        }
    }

    async fn redeliver(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        check_hand_back(delay)?;
        match self
            .client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(delay_seconds(delay))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // This delivery outlived its visibility timeout: the message is visible again or
            // was received again, and whoever receives it carries the chain on.
            Err(e)
                if matches!(
                    e.code(),
                    Some("ReceiptHandleIsInvalid" | "AWS.SimpleQueueService.MessageNotInflight")
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk_err("ChangeMessageVisibility", e)),
        }
    }
}
