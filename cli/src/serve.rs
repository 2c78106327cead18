//! `flowgate serve`: every Flowgate function in one process on 127.0.0.1, on embedded defaults.
//!
//! What runs, and what it stands in for on AWS:
//!
//! | here | on AWS |
//! |---|---|
//! | the HTTP API router on a TCP listener | the `flowgate-api` Lambda behind API Gateway |
//! | `--workers` tasks receiving from an in-process delay queue and calling the executor | the `flowgate-poller` Lambda on SQS |
//! | a sweeper task every `--sweep-interval` | the triggers Lambda's one-minute schedule |
//! | schedules as records, fired by a ticker task every second | EventBridge Scheduler invoking the triggers Lambda |
//! | a redb file in `--data-dir` | the DynamoDB table |
//! | the built-in agent simulator (without `--agent-url`) | the real agent service |
//!
//! The queue lives in memory, so stopping the process loses it. Nothing else is lost: every
//! run is in the store with the moment it next needs attention (`wake_at`), and at startup
//! [`recover`] re-arms every non-terminal run from the store (see [`recover::resume`] for why
//! that is more than one sweep).
//!
//! [`start`] brings everything up and returns a [`Server`] handle (the load benchmark and the
//! tests use it in-process); [`run`] is the command: logging, start, wait for Ctrl-C/SIGTERM,
//! drain.

mod keys;
pub mod recover;
mod workers;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt as _;
use flowgate_api::{ApprovalSettings, Services};
use flowgate_shared::adapters::embedded::EmbeddedStore;
use flowgate_shared::adapters::memqueue::{DEFAULT_VISIBILITY_TIMEOUT, MemQueue};
use flowgate_shared::adapters::record_scheduler::RecordScheduler;
use flowgate_shared::agent::simulator::{Simulator, SimulatorConfig, SimulatorHandle};
use flowgate_shared::agent::{AgentClient, AgentClientConfig, AgentError};
use flowgate_shared::notify::config::NotifyConfig;
use flowgate_shared::ports::StoreError;
use flowgate_shared::runtime::{Clock, ExecError, Executor, SystemClock};
use flowgate_shared::telemetry::{self, LogFormat};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use keys::{API_KEY_FILE, KeySource};

/// The address `flowgate serve` listens on by default (and the CLI's default `--url`).
pub const DEFAULT_ADDR: &str = "127.0.0.1:8787";

/// How long stopping waits for open HTTP requests before closing their connections. Runs are
/// durable, so cutting a request off loses nothing the client cannot ask for again.
const HTTP_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Shortest accepted `--sweep-interval`: a sweep reads the store's wake-up index, so a busy
/// loop would only burn the disk.
const MIN_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Configuration of `flowgate serve`: flags, each with an environment variable.
#[derive(Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is logged first).
    #[arg(long, env = "FLOWGATE_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: SocketAddr,
    /// Where runs and workflows are stored (and the generated API key). Default: $HOME/.flowgate.
    #[arg(long, env = "FLOWGATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Root URL of the Claude Code agent service. Without it the built-in simulator is started.
    #[arg(long, env = "FLOWGATE_AGENT_URL")]
    pub agent_url: Option<String>,
    /// API key of the agent service (required with --agent-url).
    #[arg(long, env = "FLOWGATE_AGENT_API_KEY", hide_env_values = true)]
    pub agent_api_key: Option<String>,
    /// The API key clients must send. Without it (and without hashes), a key is generated into
    /// <data-dir>/api-key (mode 0600), where the CLI finds it.
    #[arg(long, env = "FLOWGATE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Accepted keys as `principal=<sha256 hex>,...` (the Lambda's format), instead of --api-key.
    #[arg(long, env = "FLOWGATE_API_KEY_HASHES", hide_env_values = true)]
    pub api_key_hashes: Option<String>,
    /// Principals whose keys may decide approvals, comma-separated (default: every key; the
    /// key of --api-key or the key file is `local`).
    #[arg(long, env = "FLOWGATE_API_KEY_APPROVERS")]
    pub api_key_approvers: Option<String>,
    /// Work messages handled at once.
    #[arg(long, env = "FLOWGATE_WORKERS", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,
    /// How often overdue runs are re-woken (also once at startup).
    #[arg(long, env = "FLOWGATE_SWEEP_INTERVAL", default_value = "60s",
          value_parser = crate::parse_duration)]
    pub sweep_interval: Duration,
    /// How long a run of the built-in agent simulator takes.
    #[arg(long, env = "FLOWGATE_SIMULATOR_RUN_DURATION", default_value = "20s",
          value_parser = crate::parse_duration)]
    pub simulator_run_duration: Duration,
    /// Log lines as `text` (for people) or `json` (for log shippers).
    #[arg(long, env = "FLOWGATE_LOG_FORMAT", default_value = "text",
          value_parser = ["text", "json"])]
    pub log_format: String,
    /// Slack bot token: run threads and approval messages go to Slack (log only without it).
    #[arg(long, env = "FLOWGATE_SLACK_BOT_TOKEN", hide_env_values = true)]
    pub slack_bot_token: Option<String>,
    /// The Slack app's signing secret, to accept button clicks on /slack/interactions.
    #[arg(long, env = "FLOWGATE_SLACK_SIGNING_SECRET", hide_env_values = true)]
    pub slack_signing_secret: Option<String>,
    /// Channel for run threads when a workflow names none.
    #[arg(long, env = "FLOWGATE_SLACK_CHANNEL")]
    pub slack_channel: Option<String>,
    /// Slack Web API root (tests point it at a local server).
    #[arg(long, env = "FLOWGATE_SLACK_API_URL", hide = true)]
    pub slack_api_url: Option<String>,
    /// Public URL of this server, for links in Slack messages and approval links
    /// (default: http://<addr>).
    #[arg(long, env = "FLOWGATE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Key (32+ characters) signing one-time approval links; no links without it.
    #[arg(long, env = "FLOWGATE_APPROVAL_LINK_KEY", hide_env_values = true)]
    pub approval_link_key: Option<String>,
    /// Standard Webhooks secrets (`whsec_…`) accepted on signed approval decisions.
    #[arg(
        long,
        env = "FLOWGATE_APPROVAL_WEBHOOK_SECRETS",
        hide_env_values = true
    )]
    pub approval_webhook_secrets: Option<String>,
    /// Inbound webhook triggers' secrets, `trigger_id=secret,...` (`trigger_id@header=secret`
    /// names a shared secret's header); a trigger without one refuses every delivery.
    #[arg(long, env = "FLOWGATE_HOOK_SECRETS", hide_env_values = true)]
    pub hook_secrets: Option<String>,
}

impl fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("ServeArgs")
            .field("addr", &self.addr)
            .field("data_dir", &self.data_dir)
            .field("agent_url", &self.agent_url)
            .field("agent_api_key", &redacted(&self.agent_api_key))
            .field("api_key", &redacted(&self.api_key))
            .field("api_key_hashes", &self.api_key_hashes.is_some())
            .field("api_key_approvers", &self.api_key_approvers)
            .field("workers", &self.workers)
            .field("sweep_interval", &self.sweep_interval)
            .field("simulator_run_duration", &self.simulator_run_duration)
            .field("log_format", &self.log_format)
            .field("slack_bot_token", &redacted(&self.slack_bot_token))
            .field(
                "slack_signing_secret",
                &redacted(&self.slack_signing_secret),
            )
            .field("slack_channel", &self.slack_channel)
            .field("public_url", &self.public_url)
            .field("approval_link_key", &redacted(&self.approval_link_key))
            .field("hook_secrets", &redacted(&self.hook_secrets))
            .finish()
    }
}

impl ServeArgs {
    /// The defaults, as `flowgate serve` with no flags and no environment would use them
    /// (for in-process use: tests and the load benchmark).
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        ServeArgs {
            addr: SocketAddr::from(([127, 0, 0, 1], 8787)),
            data_dir: Some(data_dir.into()),
            agent_url: None,
            agent_api_key: None,
            api_key: None,
            api_key_hashes: None,
            api_key_approvers: None,
            workers: 8,
            sweep_interval: Duration::from_secs(60),
            simulator_run_duration: Duration::from_secs(20),
            log_format: "text".to_string(),
            slack_bot_token: None,
            slack_signing_secret: None,
            slack_channel: None,
            slack_api_url: None,
            public_url: None,
            approval_link_key: None,
            approval_webhook_secrets: None,
            hook_secrets: None,
        }
    }

    /// The notifier's settings from these flags.
    fn notify_config(&self, addr: SocketAddr) -> NotifyConfig {
        NotifyConfig {
            slack_token: self.slack_bot_token.clone(),
            slack_channel: self.slack_channel.clone(),
            slack_api_url: self.slack_api_url.clone(),
            public_url: Some(
                self.public_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{addr}")),
            ),
            link_key: self.approval_link_key.clone(),
        }
    }

    /// The approval routes' verification settings from these flags.
    fn approval_settings(&self) -> Result<ApprovalSettings, ServeError> {
        let secrets = self.approval_webhook_secrets.clone();
        let signing = self.slack_signing_secret.clone();
        ApprovalSettings::from_lookup(|name| match name {
            flowgate_api::approvals::ENV_SLACK_SIGNING_SECRET => signing.clone(),
            flowgate_api::approvals::ENV_APPROVAL_WEBHOOK_SECRETS => secrets.clone(),
            other => std::env::var(other).ok(),
        })
        .map_err(ServeError::Config)
    }
}

/// Why `flowgate serve` could not start or stop cleanly; each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("no data directory: HOME is not set; pass --data-dir or set FLOWGATE_DATA_DIR")]
    NoDataDir,
    #[error("cannot use data directory {path}: {source}; pick another with --data-dir")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("API keys: {0}")]
    Keys(String),
    #[error("{0}")]
    Config(String),
    #[error(
        "--agent-url is set but --agent-api-key (FLOWGATE_AGENT_API_KEY) is not; give the agent \
         service's key, or drop --agent-url to use the built-in simulator"
    )]
    MissingAgentKey,
    #[error("agent service: {0}")]
    Agent(#[from] AgentError),
    #[error("cannot start the built-in agent simulator: {0}")]
    Simulator(String),
    #[error("{0}")]
    Executor(#[from] ExecError),
    #[error(
        "cannot listen on {addr}: {source}; is another flowgate serve running? pick another \
             --addr (port 0 picks a free one)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "--sweep-interval must be at least {}s",
        MIN_SWEEP_INTERVAL.as_secs()
    )]
    SweepInterval,
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot wait for Ctrl-C/SIGTERM: {0}")]
    Signal(std::io::Error),
    #[error("the HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error("a background task ended abnormally: {0}")]
    Task(String),
}

/// `flowgate serve`: start, log where everything is, run until Ctrl-C or SIGTERM, then stop
/// accepting requests and let in-flight messages finish. A second signal stops at once (runs
/// are durable; the next start resumes them).
pub fn run(args: ServeArgs) -> Result<(), ServeError> {
    telemetry::init(if args.log_format == "json" {
        LogFormat::Json
    } else {
        LogFormat::Text
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    rt.block_on(async move {
        let server = start(args).await?;
        shutdown_signal().await?;
        info!(
            "stopping: no new requests; finishing the messages in flight (signal again to stop now)"
        );
        tokio::select! {
            result = server.shutdown() => result,
            second = shutdown_signal() => {
                second?;
                warn!("second signal: stopping now; unfinished work resumes at the next start");
                Ok(())
            }
        }
    })
}

/// Resolve once: Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() -> Result<(), ServeError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signal)?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map_err(ServeError::Signal),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map_err(ServeError::Signal)
    }
}

/// Every HTTP surface serve hosts, as one router. The approvals (Slack interactivity, signed
/// webhooks) and triggers (inbound webhooks) routers each become one `.merge(...)` line here;
/// only the API router may carry a fallback (axum refuses to merge two).
fn http_router(services: Services) -> Router {
    let extra_hosts = std::env::var(flowgate_api::mcp::ENV_MCP_ALLOWED_HOSTS).ok();
    flowgate_api::app_with_mcp_hosts(services, extra_hosts.as_deref())
}

/// A running `flowgate serve`.
pub struct Server {
    addr: SocketAddr,
    keys: KeySource,
    data_dir: PathBuf,
    stop: watch::Sender<bool>,
    http: JoinHandle<std::io::Result<()>>,
    workers: Vec<JoinHandle<()>>,
    sweeper: JoinHandle<()>,
    /// Fires `schedule` triggers (the in-process EventBridge Scheduler).
    ticker: JoinHandle<()>,
    resume: JoinHandle<()>,
    simulator: Option<SimulatorHandle>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("data_dir", &self.data_dir)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// The address the API listens on (the real port when `--addr` asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`: what the CLI's `--url` should be.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where the accepted API key came from.
    pub fn key_source(&self) -> &KeySource {
        &self.keys
    }

    /// Stop accepting connections, let open requests finish (up to a timeout), let every
    /// worker finish the message it holds, stop the sweeper (and a resume still under way),
    /// then the simulator.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        let _ = self.stop.send(true);
        let mut first_error = None;
        let mut http = self.http;
        match tokio::time::timeout(HTTP_DRAIN_TIMEOUT, &mut http).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => first_error = Some(ServeError::Http(e)),
            Ok(Err(e)) => first_error = Some(ServeError::Task(e.to_string())),
            Err(_) => {
                warn!(
                    timeout_s = HTTP_DRAIN_TIMEOUT.as_secs(),
                    "open HTTP requests did not finish in time; closing them"
                );
                http.abort();
            }
        }
        for task in self
            .workers
            .into_iter()
            .chain([self.sweeper, self.ticker, self.resume])
        {
            if let Err(e) = task.await {
                first_error.get_or_insert(ServeError::Task(e.to_string()));
            }
        }
        if let Some(simulator) = self.simulator
            && let Err(e) = simulator.shutdown().await
        {
            first_error.get_or_insert(ServeError::Simulator(e.to_string()));
        }
        info!("stopped");
        first_error.map_or(Ok(()), Err)
    }
}

/// Bring everything up: the listener, store, keys, agent (or the simulator), executor,
/// workers, sweeper, the recovery of runs the last stop interrupted, and the router.
pub async fn start(args: ServeArgs) -> Result<Server, ServeError> {
    if args.sweep_interval < MIN_SWEEP_INTERVAL {
        return Err(ServeError::SweepInterval);
    }
    // Bind first: a taken port fails before anything else is touched. Connections wait in
    // the backlog until the router serves them, after every other part is running.
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: args.addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: args.addr,
        source,
    })?;
    let data_dir = match args.data_dir.clone() {
        Some(dir) => dir,
        None => default_data_dir().ok_or(ServeError::NoDataDir)?,
    };
    keys::create_private_dir(&data_dir)?;
    let keys = keys::resolve(&args, &data_dir)?;
    let dir = data_dir.clone();
    let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(dir))
        .await
        .map_err(|e| ServeError::Task(e.to_string()))??;
    let store = Arc::new(store);

    let (agent, simulator) = agent(&args).await?;
    let agent = Arc::new(agent);
    let queue = Arc::new(MemQueue::new(DEFAULT_VISIBILITY_TIMEOUT));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let notifier = Arc::new(
        args.notify_config(addr)
            .build(store.clone())
            .map_err(|e| ServeError::Config(e.to_string()))?,
    );
    let approvals = Arc::new(args.approval_settings()?);
    let hooks = Arc::new(
        flowgate_api::HookSecrets::parse(args.hook_secrets.as_deref().unwrap_or_default())
            .map_err(|e| ServeError::Config(format!("--hook-secrets: {e}")))?,
    );
    let executor = Arc::new(
        Executor::new(
            store.clone(),
            store.clone(),
            queue.clone(),
            agent.clone(),
            clock.clone(),
        )?
        .with_notifier(notifier.clone()),
    );

    let (stop, stopped) = watch::channel(false);
    let workers = (0..args.workers)
        .map(|n| {
            tokio::spawn(workers::worker(
                n,
                queue.clone(),
                executor.clone(),
                stopped.clone(),
            ))
        })
        .collect();
    let scheduler = Arc::new(RecordScheduler::new(store.clone()));
    let background = workers::Background {
        store: store.clone(),
        queue: queue.clone(),
        scheduler: scheduler.clone(),
        clock: clock.clone(),
    };
    let sweeper = tokio::spawn(workers::sweeper(
        background.clone(),
        args.sweep_interval,
        stopped.clone(),
    ));
    let ticker = tokio::spawn(workers::schedules(background, stopped.clone()));

    // In the background: resuming polls the agent service, which may be slow or down, and
    // the API should not wait for that.
    let resume = tokio::spawn(recover::in_background(
        store.clone(),
        queue.clone(),
        executor.clone(),
        clock.clone(),
        stopped.clone(),
    ));

    let services = Services {
        store: store.clone(),
        workflows: store.clone(),
        queue: queue.clone(),
        executor,
        agent,
        clock,
        keys: Arc::new(
            keys.keys
                .clone()
                .with_approvers(args.api_key_approvers.as_deref().unwrap_or_default()),
        ),
        notifier,
        approvals,
        hooks,
        scheduler: Some(scheduler.clone()),
    };
    let listener = listener.tap_io(|tcp| {
        // Small JSON answers should leave at once, not wait for Nagle.
        let _ = tcp.set_nodelay(true);
    });
    let mut http_stopped = stopped;
    let http = tokio::spawn(
        axum::serve(listener, http_router(services))
            .with_graceful_shutdown(async move {
                let _ = http_stopped.wait_for(|s| *s).await;
            })
            .into_future(),
    );

    info!(%addr, "flowgate serve listening on http://{addr}");
    info!(data_dir = %data_dir.display(), "runs and workflows are stored in {}", store.path().display());
    info!("{}", keys.source.describe());
    info!("the dashboard is at http://{addr}/ (it asks for the API key)");
    match &simulator {
        Some(sim) => info!(
            agent_url = %sim.base_url,
            run_duration_s = args.simulator_run_duration.as_secs_f64(),
            "no --agent-url: agent steps run on the built-in agent simulator at {} (each run \
             takes {:?}; its runs live in memory, so an agent step a stop interrupts fails and \
             follows its retry policy); set --agent-url for a real agent service",
            sim.base_url,
            args.simulator_run_duration
        ),
        None => info!(
            agent_url = args.agent_url.as_deref().unwrap_or_default(),
            "agent steps run on the agent service at {}",
            args.agent_url.as_deref().unwrap_or_default()
        ),
    }
    info!(
        workers = args.workers,
        sweep_interval_s = args.sweep_interval.as_secs_f64(),
        "ready; Ctrl-C stops (in-flight messages finish first)"
    );
    Ok(Server {
        addr,
        keys: keys.source,
        data_dir,
        stop,
        http,
        workers,
        sweeper,
        ticker,
        resume,
        simulator,
    })
}

/// `$HOME/.flowgate`, where the CLI looks too.
fn default_data_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".flowgate"))
}

/// The agent client: for `--agent-url`, or for a built-in simulator started on a free port
/// with a key of its own (nobody else needs to call it).
async fn agent(args: &ServeArgs) -> Result<(AgentClient, Option<SimulatorHandle>), ServeError> {
    if let Some(url) = args.agent_url.as_deref().filter(|u| !u.trim().is_empty()) {
        let key = args
            .agent_api_key
            .as_deref()
            .filter(|k| !k.trim().is_empty())
            .ok_or(ServeError::MissingAgentKey)?;
        let client = AgentClient::new(url, key, AgentClientConfig::default())?;
        return Ok((client, None));
    }
    if args.agent_api_key.is_some() {
        warn!("--agent-api-key is ignored without --agent-url (the built-in simulator is used)");
    }
    let config = SimulatorConfig {
        api_key: keys::generate_key(),
        run_duration: args.simulator_run_duration,
        ..SimulatorConfig::default()
    };
    let sim = Simulator::start(config)
        .await
        .map_err(|e| ServeError::Simulator(e.to_string()))?;
    let client = AgentClient::new(&sim.base_url, &sim.api_key, AgentClientConfig::default())?;
    Ok((client, Some(sim)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_keys() {
        let mut args = ServeArgs::with_data_dir("/tmp/x");
        args.api_key = Some("client-secret".into());
        args.agent_api_key = Some("agent-secret".into());
        let text = format!("{args:?}");
        assert!(
            !text.contains("client-secret") && !text.contains("agent-secret"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_too_short_sweep_interval_is_refused() {
        let mut args = ServeArgs::with_data_dir("/nonexistent");
        args.sweep_interval = Duration::from_millis(10);
        assert!(matches!(start(args).await, Err(ServeError::SweepInterval)));
    }
}
