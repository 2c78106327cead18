//! The reference workflow of the cost-model page, run once through the real handlers and
//! counted: prepare (an HTTP task), an agent run of 10 minutes, an approval, a short agent run,
//! finalize (an HTTP task).
//!
//! What runs for real: the API's start (`start_run`), the poller's Lambda handler
//! (`flowgate_poller::handle_batch`) on every message, as one-record SQS batches, the approvals
//! function's decision (`Executor::command_deferred`), the executor, the engine and the
//! DynamoDB store, whose every request goes over the wire to moto through the counting proxy.
//! What runs on the virtual clock, so ten minutes take a moment: the work queue (SQS's delays,
//! counted by SQS's billing rules: a send per call, and the event source mapping's receive and
//! delete per batch) and the agent service (`flowgate_sim`'s, with the same lifecycle as the
//! simulator: pending, running with turns, completed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use flowgate_shared::adapters::dynamodb::DynamoStore;
use flowgate_shared::agent::{
    AddMessageResponse, AgentError, KillOutcome, MessageType, RunSummary, StartRunResponse,
};
use flowgate_shared::definition::parse_definition;
use flowgate_shared::engine::{AgentObservation, AgentStartSpec, Event, approval_id};
use flowgate_shared::model::{ApprovalDecision, Millis, RunStatus};
use flowgate_shared::notify::config::NotifyConfig;
use flowgate_shared::ports::{
    QueueError, Received, RunStore, WorkMessage, WorkQueue, WorkflowStore,
};
use flowgate_shared::runtime::{AgentApi, Clock, Executor, ManualClock, NewRun, start_run};
use flowgate_sim::agent::SimAgent;
use flowgate_sim::chaos::{Chaos, Faults};
use flowgate_sim::queue::SimQueue;

use crate::proxy::{CountingProxy, OpCount};

/// Which reference workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The cost-model page's: prepare, a 10-minute agent run, an approval, finalize.
    Page,
    /// The benchmark issue's: the same with a 30-second agent step after the approval.
    WithReview,
}

impl Shape {
    pub fn label(self) -> &'static str {
        match self {
            Shape::Page => "cost-model page (4 steps)",
            Shape::WithReview => "with a short review step (5 steps)",
        }
    }

    /// Step Functions states outside the poll loops, and Lambda tasks among them (besides the
    /// approval callback).
    pub fn sfn_states(self) -> (u32, u32) {
        match self {
            // Prepare, StartAgentRun, Approval (a task that sends the request), Finalize.
            Shape::Page => (4, 4),
            Shape::WithReview => (5, 5),
        }
    }
}

/// How the workflow polls its agent steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polling {
    /// Every 8 s, as the cost-model page's Flowgate variant (b).
    Fixed8s,
    /// The default: 2 s growing ×1.5 up to 60 s (variant (c)).
    Adaptive,
    /// The default intervals, with progress (turns, tokens, cost) recorded at most once a
    /// minute (`polling.progress_every: 1m`, the default before reads showed progress live):
    /// the same polls, more run writes.
    AdaptiveEveryMinute,
}

impl Polling {
    pub fn label(self) -> &'static str {
        match self {
            Polling::Fixed8s => "fixed 8 s",
            Polling::Adaptive => "adaptive 2 s ×1.5 → 60 s",
            Polling::AdaptiveEveryMinute => "adaptive, progress every minute",
        }
    }

    fn yaml(self) -> &'static str {
        match self {
            Polling::Fixed8s => "polling: {initial: 8s, factor: 1, max: 8s}\n",
            Polling::Adaptive => "",
            Polling::AdaptiveEveryMinute => "polling: {progress_every: 1m}\n",
        }
    }
}

/// One Lambda invocation of the run.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub function: &'static str,
    /// Whether it polled the agent service (the cost model bills those at 100 ms).
    pub polled: bool,
    /// How long the handler took here (against moto on this machine).
    pub local_ms: f64,
}

/// Everything one reference run caused.
#[derive(Debug, Clone)]
pub struct Measured {
    pub shape: Shape,
    pub polling: Polling,
    pub status: RunStatus,
    pub dynamodb: BTreeMap<String, OpCount>,
    /// DynamoDB write units by what they wrote.
    pub written: BTreeMap<&'static str, f64>,
    pub sqs_send_calls: u64,
    pub messages: u64,
    /// Work messages by kind (`poll`, `event start`, `deliver lifecycle`, ...).
    pub message_kinds: BTreeMap<String, u64>,
    pub sqs_receive_calls: u64,
    pub sqs_delete_calls: u64,
    /// `ChangeMessageVisibility` calls: a poll chain handing its message back.
    pub sqs_hand_back_calls: u64,
    pub invocations: Vec<Invocation>,
    pub api_requests: u64,
    pub agent_polls: u64,
    /// Status polls of each agent step, in order (the 10-minute run first).
    pub polls_per_step: Vec<u64>,
    pub agent_calls: u64,
    /// From the first start to the run's end, virtual.
    pub virtual_ms: Millis,
}

impl Measured {
    pub fn rru(&self) -> f64 {
        self.dynamodb.values().map(|o| o.rru).sum()
    }
    /// Write units, the indexes' included.
    pub fn wru(&self) -> f64 {
        self.dynamodb.values().map(|o| o.wru).sum()
    }
    pub fn dynamodb_requests(&self) -> u64 {
        self.dynamodb.values().map(|o| o.requests).sum()
    }
    pub fn sqs_requests(&self) -> u64 {
        self.sqs_send_calls
            + self.sqs_receive_calls
            + self.sqs_delete_calls
            + self.sqs_hand_back_calls
    }
}

/// The queue on the virtual clock, counting `SendMessage`/`SendMessageBatch` and
/// `ChangeMessageVisibility` calls.
struct CountingQueue {
    inner: Arc<SimQueue>,
    calls: AtomicU64,
    hand_backs: AtomicU64,
    messages: AtomicU64,
    kinds: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl CountingQueue {
    fn count(&self, message: &WorkMessage) {
        let kind = match message {
            WorkMessage::Event { event, .. } => format!("event {}", event.name()),
            WorkMessage::Poll { .. } => "poll".to_string(),
            WorkMessage::Wake { .. } => "wake".to_string(),
            WorkMessage::Perform { .. } => "perform".to_string(),
            WorkMessage::Deliver { delivery, .. } => format!("deliver {}", delivery.name()),
        };
        *self
            .kinds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(kind)
            .or_default() += 1;
    }
}

#[async_trait]
impl WorkQueue for CountingQueue {
    async fn send(&self, message: &WorkMessage, delay: Duration) -> Result<(), QueueError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.count(message);
        self.inner.send(message, delay).await
    }
    async fn send_batch(&self, messages: &[(WorkMessage, Duration)]) -> Result<(), QueueError> {
        // SendMessageBatch carries up to 10.
        self.calls
            .fetch_add(messages.len().div_ceil(10) as u64, Ordering::Relaxed);
        self.messages
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        for (message, _) in messages {
            self.count(message);
        }
        self.inner.send_batch(messages).await
    }
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        self.inner.receive(max, wait).await
    }
    async fn ack(&self, receipt: &str) -> Result<(), QueueError> {
        self.inner.ack(receipt).await
    }
    async fn redeliver(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        // ChangeMessageVisibility: one request.
        self.hand_backs.fetch_add(1, Ordering::Relaxed);
        self.inner.redeliver(receipt, delay).await
    }
}

/// The agent service, counting calls (status polls apart).
struct CountingAgent {
    inner: SimAgent,
    polls: AtomicU64,
    calls: AtomicU64,
    /// Status polls per agent run, in start order.
    per_run: std::sync::Mutex<Vec<(String, u64)>>,
}

impl CountingAgent {
    fn polled(&self, run_id: &str) {
        let mut runs = self
            .per_run
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match runs.iter_mut().find(|(id, _)| id == run_id) {
            Some((_, n)) => *n += 1,
            None => runs.push((run_id.to_string(), 1)),
        }
    }
}

#[async_trait]
impl AgentApi for CountingAgent {
    async fn start_run(&self, spec: &AgentStartSpec) -> Result<StartRunResponse, AgentError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.start_run(spec).await
    }
    async fn find_run_by_session_name(
        &self,
        workflow: &str,
        session_name: &str,
        not_before: Option<Millis>,
    ) -> Result<Option<RunSummary>, AgentError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner
            .find_run_by_session_name(workflow, session_name, not_before)
            .await
    }
    async fn observe(&self, workflow: &str, run_id: &str) -> Result<AgentObservation, AgentError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.polled(run_id);
        self.inner.observe(workflow, run_id).await
    }
    async fn kill_if_active(&self, run_id: &str, force: bool) -> Result<KillOutcome, AgentError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.kill_if_active(run_id, force).await
    }
    async fn add_message(
        &self,
        run_id: &str,
        message_type: MessageType,
        content: &str,
    ) -> Result<AddMessageResponse, AgentError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.add_message(run_id, message_type, content).await
    }
}

fn definition(shape: Shape, polling: Polling, task_url: &str) -> String {
    let review = match shape {
        Shape::Page => "",
        Shape::WithReview => {
            "  - id: review\n    kind: agent\n    workflow: review\n    message: \"a short review [sim min=30 max=30]\"\n    depends_on: [approve]\n"
        }
    };
    let last = match shape {
        Shape::Page => "approve",
        Shape::WithReview => "review",
    };
    format!(
        r#"id: reference
name: Reference workflow (cost-model page)
{polling}steps:
  - id: prepare
    kind: http
    method: POST
    url: "{task_url}/prepare"
  - id: agent
    kind: agent
    workflow: implement
    message: "implement the change [sim min=600 max=600]"
    depends_on: [prepare]
  - id: approve
    kind: approval
    message: "ship it?"
    approvers: [approver]
    depends_on: [agent]
{review}  - id: finalize
    kind: http
    method: POST
    url: "{task_url}/finalize"
    depends_on: [{last}]
"#,
        polling = polling.yaml()
    )
}

/// A task endpoint for the HTTP steps (the Lambda tasks of the Step Functions version).
async fn task_server() -> std::io::Result<String> {
    let app =
        axum::Router::new().fallback(|| async { axum::Json(serde_json::json!({"ok": true})) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}"))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Run the reference workflow once with `polling`, counting everything it causes.
///
/// `counted` reaches moto through `proxy`; `direct` is the same table without the proxy, for
/// the driver's own reads (when to approve, when the run ended), which are not the run's.
pub async fn measure(
    proxy: &CountingProxy,
    counted: &DynamoStore,
    direct: &DynamoStore,
    shape: Shape,
    polling: Polling,
) -> Result<Measured, BoxError> {
    if crate::proxy::trace_writes() {
        eprintln!("--- {}, {}", shape.label(), polling.label());
    }
    let epoch: Millis = flowgate_sim::EPOCH;
    let clock = Arc::new(ManualClock::new(epoch));
    let chaos = Arc::new(Chaos::new(0, Faults::none()));
    let sim_queue = Arc::new(SimQueue::new(clock.clone()));
    let queue = Arc::new(CountingQueue {
        inner: sim_queue.clone(),
        calls: AtomicU64::new(0),
        hand_backs: AtomicU64::new(0),
        messages: AtomicU64::new(0),
        kinds: Default::default(),
    });
    let agent = Arc::new(CountingAgent {
        inner: SimAgent::new(clock.clone(), chaos),
        polls: AtomicU64::new(0),
        calls: AtomicU64::new(0),
        per_run: Default::default(),
    });
    let store = Arc::new(counted.clone());
    let notifier = NotifyConfig::default().build(store.clone())?;
    let executor = Executor::new(
        store.clone(),
        store.clone(),
        queue.clone(),
        agent.clone(),
        clock.clone(),
    )?
    .with_notifier(Arc::new(notifier));
    let task_url = task_server().await?;
    let def = parse_definition(&definition(shape, polling, &task_url))?;
    store.put_workflow(&def, clock.now_ms()).await?;

    proxy.reset();
    let mut invocations = Vec::new();
    let mut api_requests = 0u64;
    let (mut receives, mut deletes) = (0u64, 0u64);

    // The API function starts the run (one API Gateway request, one invocation).
    let began = Instant::now();
    let started = start_run(
        &*store,
        &*store,
        &*queue,
        &*store,
        clock.now_ms(),
        NewRun {
            workflow_id: "reference".into(),
            started_by: Some("api:starter".into()),
            ..NewRun::default()
        },
    )
    .await?;
    invocations.push(Invocation {
        function: "api",
        polled: false,
        local_ms: began.elapsed().as_secs_f64() * 1_000.0,
    });
    api_requests += 1;
    let run_id = started.run_id;
    let approval = approval_id(&run_id, "approve", 1);
    let mut decided = false;

    let deadline = epoch + 3 * 3_600_000;
    loop {
        let visible = sim_queue.visible();
        if let Some(id) = visible.first() {
            let Some(received) = sim_queue.take(*id) else {
                continue;
            };
            let polled = matches!(received.message, WorkMessage::Poll { .. });
            let mut record = SqsMessage::default();
            record.message_id = Some(format!("m-{id}"));
            record.receipt_handle = Some(received.receipt.clone());
            record.attributes.insert(
                "ApproximateReceiveCount".into(),
                received.receive_count.to_string(),
            );
            record.body = Some(serde_json::to_string(&received.message)?);
            let mut event = SqsEvent::default();
            event.records = vec![record];
            receives += 1;
            let began = Instant::now();
            let response = flowgate_poller::handle_batch(&executor, event).await;
            invocations.push(Invocation {
                function: "poller",
                polled,
                local_ms: began.elapsed().as_secs_f64() * 1_000.0,
            });
            if response.batch_item_failures.is_empty() {
                sim_queue.delete(&received.receipt);
                deletes += 1;
            }
            continue;
        }
        // The approver answers a minute after the request, through the approvals function.
        let run = direct.get_run(&run_id).await?.ok_or("the run vanished")?;
        if run.status.is_terminal() && sim_queue.is_empty() {
            break;
        }
        let open = run
            .steps
            .get("approve")
            .and_then(|s| s.approval.as_ref())
            .is_some_and(|a| a.id == approval);
        if open && !decided {
            clock.advance(Duration::from_secs(60));
            let began = Instant::now();
            executor
                .command_deferred(
                    &run_id,
                    Event::ApprovalDecided {
                        approval_id: approval.clone(),
                        by: "approver".into(),
                        decision: ApprovalDecision::Approve,
                        comment: None,
                        groups: Vec::new(),
                    },
                )
                .await?;
            invocations.push(Invocation {
                function: "approvals",
                polled: false,
                local_ms: began.elapsed().as_secs_f64() * 1_000.0,
            });
            api_requests += 1;
            decided = true;
            continue;
        }
        match sim_queue.next_visible_at() {
            Some(at) if at <= deadline => clock.set(at),
            _ => return Err(format!("the {} run is stuck: {run:?}", polling.label()).into()),
        }
    }
    let run = direct.get_run(&run_id).await?.ok_or("the run vanished")?;
    Ok(Measured {
        shape,
        polling,
        status: run.status,
        dynamodb: proxy.snapshot(),
        written: proxy.written(),
        sqs_send_calls: queue.calls.load(Ordering::Relaxed),
        messages: queue.messages.load(Ordering::Relaxed),
        message_kinds: queue
            .kinds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone(),
        sqs_receive_calls: receives,
        sqs_delete_calls: deletes,
        sqs_hand_back_calls: queue.hand_backs.load(Ordering::Relaxed),
        invocations,
        api_requests,
        agent_polls: agent.polls.load(Ordering::Relaxed),
        polls_per_step: agent
            .per_run
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(_, n)| *n)
            .collect(),
        agent_calls: agent.calls.load(Ordering::Relaxed),
        virtual_ms: run.completed_at.unwrap_or(clock.now_ms()) - epoch,
    })
}
