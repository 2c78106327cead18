//! Helpers of the poller and runtime tests: DynamoDB and SQS on moto, SQS messages shaped as
//! the Lambda event source mapping delivers them, and the three-step agent workflow.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use flowgate_shared::adapters::dynamodb::DynamoStore;
use flowgate_shared::adapters::sqs::SqsQueue;
use flowgate_shared::definition::{WorkflowDefinition, parse_definition};

/// A three-step agent workflow (a → b → c) polling every `poll` (fixed interval).
pub fn three_agent_steps(id: &str, poll: &str) -> WorkflowDefinition {
    let yaml = format!(
        r#"
id: {id}
polling: {{initial: {poll}, factor: 1, max: {poll}}}
steps:
  - id: a
    kind: agent
    workflow: architect
    message: "design the change"
  - id: b
    kind: agent
    workflow: implement
    depends_on: [a]
    message: "implement this design: ${{{{ steps.a.output }}}}"
  - id: c
    kind: agent
    workflow: review
    depends_on: [b]
    message: "review this implementation: ${{{{ steps.b.output }}}}"
"#
    );
    match parse_definition(&yaml) {
        Ok(def) => def,
        Err(e) => panic!("test definition is invalid: {e}"),
    }
}

/// A fresh DynamoDB table and SQS queue on moto, with the raw SQS client for receiving the way
/// Lambda does.
#[derive(Debug, Clone)]
pub struct MotoPorts {
    pub store: Arc<DynamoStore>,
    pub queue: Arc<SqsQueue>,
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub queue_arn: String,
    pub region: String,
}

/// DynamoDB + SQS on the moto server `scripts/test` starts (panics with instructions when
/// `AWS_ENDPOINT_URL` is not set). The queue hides received messages for `visibility`.
pub async fn moto_ports(visibility: Duration) -> MotoPorts {
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        panic!(
            "AWS_ENDPOINT_URL is not set, so there is no moto server for the poller tests. Run \
             `scripts/test`, or start `.venv/bin/python scripts/moto_server.py -p PORT` and \
             export AWS_ENDPOINT_URL=http://127.0.0.1:PORT AWS_REGION=us-east-1 \
             AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test."
        );
    }
    let config = flowgate_shared::adapters::aws_config(None).await;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let dynamo = aws_sdk_dynamodb::Client::new(&config);
    let table = format!("flowgate-poller-{suffix}");
    DynamoStore::create_table(&dynamo, &table)
        .await
        .expect("create the DynamoDB table on moto");
    let sqs = aws_sdk_sqs::Client::new(&config);
    let queue = SqsQueue::create_queue(&sqs, &format!("flowgate-poller-{suffix}"), visibility)
        .await
        .expect("create the SQS queue on moto");
    let queue_url = queue.queue_url().to_string();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("read the queue ARN");
    let queue_arn = attributes
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("the queue has an ARN");
    let region = config
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "us-east-1".to_string());
    MotoPorts {
        store: Arc::new(DynamoStore::new(dynamo, table)),
        queue: Arc::new(queue),
        sqs,
        queue_url,
        queue_arn,
        region,
    }
}

impl MotoPorts {
    /// Receive up to 10 messages (waiting up to `wait`, whole seconds) the way the Lambda event
    /// source mapping does, as the [`SqsEvent`] it would invoke the function with.
    pub async fn receive_event(&self, wait: Duration) -> SqsEvent {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(i32::try_from(wait.as_secs()).unwrap_or(20))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .expect("receive from SQS");
        let mut event = SqsEvent::default();
        event.records = out
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                let mut record = SqsMessage::default();
                record.message_id = m.message_id;
                record.receipt_handle = m.receipt_handle;
                record.body = m.body;
                record.md5_of_body = m.md5_of_body;
                record.attributes = m
                    .attributes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_string(), v))
                    .collect::<HashMap<_, _>>();
                record.event_source = Some("aws:sqs".to_string());
                record.event_source_arn = Some(self.queue_arn.clone());
                record.aws_region = Some(self.region.clone());
                record
            })
            .collect();
        event
    }

    /// Delete what Lambda deletes after a partial batch response: every record not reported
    /// as failed. Returns how many were deleted.
    pub async fn delete_handled(&self, event: &SqsEvent, response: &SqsBatchResponse) -> usize {
        let entries: Vec<DeleteMessageBatchRequestEntry> = event
            .records
            .iter()
            .filter(|r| {
                !response
                    .batch_item_failures
                    .iter()
                    .any(|f| Some(&f.item_identifier) == r.message_id.as_ref())
            })
            .enumerate()
            .filter_map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r.receipt_handle.clone()?)
                    .build()
                    .ok()
            })
            .collect();
        if entries.is_empty() {
            return 0;
        }
        let n = entries.len();
        let out = self
            .sqs
            .delete_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("delete handled messages");
        assert!(out.failed.is_empty(), "deletes failed: {:?}", out.failed);
        n
    }
}
