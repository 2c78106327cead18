//! An API over real parts for tests: the embedded store in a temp dir, the in-process queue,
//! the agent simulator on a local port, and a worker pumping the queue through the executor.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use flowgate_api::{ApiKeys, Services, app};
use flowgate_shared::adapters::embedded::EmbeddedStore;
use flowgate_shared::adapters::memqueue::MemQueue;
use flowgate_shared::agent::simulator::{Simulator, SimulatorConfig, SimulatorHandle};
use flowgate_shared::agent::{AgentClient, AgentClientConfig};
use flowgate_shared::model::Run;
use flowgate_shared::ports::{RunQuery, RunStore, WorkQueue, WorkflowStore};
use flowgate_shared::runtime::{Executor, SystemClock};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub const KEY: &str = "test-key-alice";
pub const PRINCIPAL: &str = "alice";

pub struct TestApi {
    pub app: Router,
    pub store: Arc<EmbeddedStore>,
    pub queue: Arc<MemQueue>,
    pub executor: Arc<Executor>,
    pub sim: SimulatorHandle,
    _dir: tempfile::TempDir,
}

/// A response: status, headers, and the body parsed as JSON (`Value::Null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl TestApi {
    pub async fn start() -> Self {
        Self::with_simulator(SimulatorConfig::fast()).await
    }

    pub async fn with_simulator(config: SimulatorConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open store"));
        let queue = Arc::new(MemQueue::new(Duration::from_secs(30)));
        let sim = Simulator::start(config).await.expect("simulator");
        let agent = Arc::new(
            AgentClient::new(&sim.base_url, &sim.api_key, AgentClientConfig::default())
                .expect("agent client"),
        );
        let executor = Arc::new(
            Executor::new(
                store.clone(),
                store.clone(),
                queue.clone(),
                agent.clone(),
                Arc::new(SystemClock),
            )
            .expect("executor"),
        );
        let services = Services {
            store: store.clone(),
            workflows: store.clone(),
            queue: queue.clone(),
            executor: executor.clone(),
            agent,
            clock: Arc::new(SystemClock),
            keys: Arc::new(ApiKeys::single(PRINCIPAL, KEY)),
            notifier: Arc::new(
                flowgate_shared::notify::config::NotifyConfig::default()
                    .build(store.clone())
                    .expect("notifier"),
            ),
            approvals: Arc::new(Default::default()),
            hooks: Arc::new(Default::default()),
            scheduler: None,
        };
        TestApi {
            app: app(services),
            store,
            queue,
            executor,
            sim,
            _dir: dir,
        }
    }

    /// Send a request with the test key; `body` is sent as JSON when given.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("x-api-key", KEY);
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(serde_json::to_vec(&v).expect("json"))
            }
            None => Body::empty(),
        };
        self.send(req.body(body).expect("request")).await
    }

    pub async fn send(&self, req: Request<Body>) -> Answer {
        let res = self.app.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        let html = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/html"));
        let body = if bytes.is_empty() {
            Value::Null
        } else if html {
            // Approval link pages are HTML; keep the text.
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "response is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Store a definition given as YAML.
    pub async fn put_yaml(&self, id: &str, yaml: &str) -> Answer {
        let req = Request::builder()
            .method("PUT")
            .uri(format!("/v1/workflows/{id}"))
            .header("x-api-key", KEY)
            .header("content-type", "application/yaml")
            .body(Body::from(yaml.to_string()))
            .expect("request");
        self.send(req).await
    }

    /// Handle queued messages until `done(run)` holds for the run (or fail after `limit`).
    pub async fn pump_until(
        &self,
        run_id: &str,
        limit: Duration,
        done: impl Fn(&Run) -> bool,
    ) -> Run {
        let deadline = Instant::now() + limit;
        loop {
            let run = self
                .store
                .get_run(run_id)
                .await
                .expect("read run")
                .expect("run exists");
            if done(&run) {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {run_id} did not get there in {limit:?}: {run:#?}"
            );
            let batch = self
                .queue
                .receive(10, Duration::from_millis(50))
                .await
                .expect("receive");
            for received in batch {
                if let Err(e) = self.executor.handle(&received.message).await {
                    assert!(!e.is_retryable(), "retryable failure in a test: {e}");
                }
                self.queue.ack(&received.receipt).await.expect("ack");
            }
        }
    }

    pub async fn pump_to_end(&self, run_id: &str) -> Run {
        self.pump_until(run_id, Duration::from_secs(20), |r| r.status.is_terminal())
            .await
    }

    /// Everything the store and queue hold, to show a refused request changed nothing.
    pub async fn snapshot(&self) -> String {
        let runs = self
            .store
            .list_runs(&RunQuery {
                limit: 100,
                ..RunQuery::default()
            })
            .await
            .expect("list runs");
        let mut workflows = self.store.list_workflows().await.expect("list workflows");
        workflows.sort_by(|a, b| a.definition.id.cmp(&b.definition.id));
        let sessions = self.store.list_sessions(false).await.expect("sessions");
        let mut audit = Vec::new();
        for run in &runs.runs {
            audit.push(self.store.audit(&run.id, None, 1000).await.expect("audit"));
        }
        format!(
            "{:?}\n{:?}\n{:?}\n{:?}\nqueue={}",
            runs.runs,
            workflows,
            sessions,
            audit,
            self.queue.len()
        )
    }
}

pub const TWO_STEPS: &str = r#"
id: two-steps
description: architect then implement
inputs:
  task: {type: string, required: true}
steps:
  - id: design
    kind: agent
    workflow: architect
    message: "Design: ${{ inputs.task }}"
  - id: build
    kind: agent
    workflow: implement
    depends_on: [design]
    message: "Build from ${{ steps.design.output }}"
    max_turns: 30
outputs:
  result: "${{ steps.build.output }}"
"#;

/// What [`TestApi::start_with`] sets up beyond [`TestApi::start`]'s defaults: Slack (a bot
/// token, an API base URL such as a wiremock server, a default channel), the approval routes'
/// secrets, approval links, more API keys, and the clock the API's handlers read.
#[derive(Default)]
pub struct TestOptions {
    /// Slack, public URL and link key: built into the notifier the API and the executor share.
    pub notify: flowgate_shared::notify::config::NotifyConfig,
    /// Slack signing secret, Standard Webhooks secrets and the webhook principal.
    pub approvals: flowgate_api::ApprovalSettings,
    /// Inbound webhook triggers' secrets (default: none, so every delivery is refused).
    pub hooks: flowgate_api::HookSecrets,
    /// Where storing a workflow syncs its schedules (default: not synced).
    pub scheduler: Option<Arc<dyn flowgate_shared::ports::Scheduler>>,
    /// More API keys as `(principal, key)`, accepted beside [`KEY`] (for [`PRINCIPAL`]).
    pub extra_keys: Vec<(String, String)>,
    /// `FLOWGATE_API_KEY_APPROVERS`: the principals whose keys may decide approvals.
    pub approvers: Option<String>,
    /// The clock the handlers read (signature windows, link expiry, start times); the
    /// executor keeps the system clock. Default: the system clock.
    pub api_clock: Option<Arc<dyn flowgate_shared::runtime::Clock>>,
    /// Default: [`SimulatorConfig::fast`].
    pub simulator: Option<SimulatorConfig>,
}

/// A response read as bytes (HTML pages, empty bodies).
#[derive(Debug)]
pub struct RawAnswer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl RawAnswer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl TestApi {
    /// An API configured by `options`, whose executor has the notifier, so deliveries (Slack
    /// messages, webhooks) are sent when the queue is pumped.
    pub async fn start_with(options: TestOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open store"));
        let queue = Arc::new(MemQueue::new(Duration::from_secs(30)));
        let sim = Simulator::start(options.simulator.unwrap_or_else(SimulatorConfig::fast))
            .await
            .expect("simulator");
        let agent = Arc::new(
            AgentClient::new(&sim.base_url, &sim.api_key, AgentClientConfig::default())
                .expect("agent client"),
        );
        let notifier = Arc::new(options.notify.build(store.clone()).expect("notifier"));
        let executor = Arc::new(
            Executor::new(
                store.clone(),
                store.clone(),
                queue.clone(),
                agent.clone(),
                Arc::new(SystemClock),
            )
            .expect("executor")
            .with_notifier(notifier.clone()),
        );
        let keys = if options.extra_keys.is_empty() {
            ApiKeys::single(PRINCIPAL, KEY)
        } else {
            let spec = std::iter::once((PRINCIPAL.to_string(), KEY.to_string()))
                .chain(options.extra_keys)
                .map(|(principal, key)| format!("{principal}={}", flowgate_api::hash_key(&key)))
                .collect::<Vec<_>>()
                .join(",");
            ApiKeys::from_hashes(&spec).expect("API keys")
        }
        .with_approvers(options.approvers.as_deref().unwrap_or_default());
        let services = Services {
            store: store.clone(),
            workflows: store.clone(),
            queue: queue.clone(),
            executor: executor.clone(),
            agent,
            clock: options.api_clock.unwrap_or_else(|| Arc::new(SystemClock)),
            keys: Arc::new(keys),
            notifier,
            approvals: Arc::new(options.approvals),
            hooks: Arc::new(options.hooks),
            scheduler: options.scheduler.clone(),
        };
        TestApi {
            app: app(services),
            store,
            queue,
            executor,
            sim,
            _dir: dir,
        }
    }

    /// Like [`TestApi::call`], with another API key (or none).
    pub async fn call_as(
        &self,
        key: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(serde_json::to_vec(&v).expect("json"))
            }
            None => Body::empty(),
        };
        self.send(req.body(body).expect("request")).await
    }

    /// Send a request and keep the body as bytes.
    pub async fn send_raw(&self, req: Request<Body>) -> RawAnswer {
        let res = self.app.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let headers = res.headers().clone();
        let body = res
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        RawAnswer {
            status,
            headers,
            body,
        }
    }

    /// Handle every message that is due now (deliveries, deferred effects), until the queue
    /// has nothing visible for `quiet`. Delayed messages (timers) stay queued.
    pub async fn pump_due(&self, quiet: Duration) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let batch = self.queue.receive(10, quiet).await.expect("receive");
            if batch.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "the queue never went quiet");
            for received in batch {
                if let Err(e) = self.executor.handle(&received.message).await {
                    assert!(!e.is_retryable(), "retryable failure in a test: {e}");
                }
                self.queue.ack(&received.receipt).await.expect("ack");
            }
        }
    }
}
