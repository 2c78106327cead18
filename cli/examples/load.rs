//! Load benchmark of `flowgate serve`: run starts per second and the latency of
//! `POST /v1/runs` and `GET /v1/runs/{id}` under concurrent clients.
//!
//! ```sh
//! cargo run --release -p flowgate-cli --example load                 # serve in-process
//! cargo run --release -p flowgate-cli --example load -- --url http://127.0.0.1:8787 --api-key KEY
//! ```
//!
//! In-process, a server starts on a fresh data directory and a free port (the same `start` as
//! `flowgate serve`, logging at `warn` unless `RUST_LOG` says otherwise, so log volume does not
//! dominate). The workflow has one `wait` step, so every accepted run is also started by the
//! workers (a second durable write) while the clients keep posting, and nothing calls out.
//!
//! Phases: starts (`--starts` POSTs over `--clients` connections), then the time until the
//! workers have started every run, then reads (`--reads` GETs of random runs).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use flowgate_cli::serve::{self, ServeArgs};
use flowgate_shared::telemetry::{self, LogFormat};

const WORKFLOW_ID: &str = "load-one-step";
const WORKFLOW: &str = "id: load-one-step\nname: One wait step\nsteps:\n  - id: pause\n    kind: wait\n    duration: 1h\n";
/// Most time the workers get to start every accepted run before the benchmark gives up.
const DRAIN_DEADLINE: Duration = Duration::from_secs(300);

#[derive(Debug, Parser)]
#[command(about = "Load benchmark of flowgate serve")]
struct Args {
    /// A running server to load; without it one is started in-process.
    #[arg(long)]
    url: Option<String>,
    /// API key for --url.
    #[arg(long, env = "FLOWGATE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Concurrent clients (one connection each).
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Runs to start.
    #[arg(long, default_value_t = 5_000)]
    starts: usize,
    /// Run reads.
    #[arg(long, default_value_t = 20_000)]
    reads: usize,
    /// In-process server: its worker count.
    #[arg(long, default_value_t = 8)]
    workers: u16,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    init_logging();
    let (url, key, server, _dir) = match &args.url {
        Some(url) => {
            let key = args
                .api_key
                .clone()
                .ok_or("--url needs --api-key (or FLOWGATE_API_KEY)")?;
            (url.trim_end_matches('/').to_string(), key, None, None)
        }
        None => {
            let dir = tempfile::tempdir()?;
            let key = "load-benchmark-key".to_string();
            let mut serve_args = ServeArgs::with_data_dir(dir.path());
            serve_args.addr = "127.0.0.1:0".parse()?;
            serve_args.api_key = Some(key.clone());
            serve_args.workers = args.workers;
            let server = serve::start(serve_args).await?;
            (server.url(), key, Some(server), Some(dir))
        }
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;

    let put = http
        .put(format!("{url}/v1/workflows/{WORKFLOW_ID}"))
        .header("x-api-key", &key)
        .header("content-type", "application/yaml")
        .body(WORKFLOW)
        .send()
        .await?;
    if !put.status().is_success() {
        return Err(format!(
            "storing the workflow failed: {} {}",
            put.status(),
            put.text().await?
        )
        .into());
    }

    println!(
        "flowgate serve load: {} clients, {} starts, {} reads against {url}{}",
        args.clients,
        args.starts,
        args.reads,
        if server.is_some() {
            " (in-process)"
        } else {
            ""
        }
    );

    // Phase 1: starts.
    let body = serde_json::json!({ "workflow": WORKFLOW_ID }).to_string();
    let started = Instant::now();
    let results = fan_out(args.clients, args.starts, {
        let http = http.clone();
        let url = url.clone();
        let key = key.clone();
        move |_| {
            let request = http
                .post(format!("{url}/v1/runs"))
                .header("x-api-key", &key)
                .header("content-type", "application/json")
                .body(body.clone());
            async move {
                let response = request.send().await?;
                let status = response.status();
                let text = response.text().await?;
                if status.as_u16() != 202 {
                    return Err(format!("POST /v1/runs answered {status}: {text}").into());
                }
                let value: serde_json::Value = serde_json::from_str(&text)?;
                Ok(value["run_id"].as_str().unwrap_or_default().to_string())
            }
        }
    })
    .await?;
    let elapsed = started.elapsed();
    let (ids, latencies): (Vec<String>, Vec<Duration>) = results.into_iter().unzip();
    report("POST /v1/runs", latencies, elapsed);

    // Phase 2: until the workers have started every run.
    let drain_start = Instant::now();
    loop {
        let pending: serde_json::Value = http
            .get(format!("{url}/v1/runs?status=pending&limit=1"))
            .header("x-api-key", &key)
            .send()
            .await?
            .json()
            .await?;
        if pending["runs"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        if drain_start.elapsed() > DRAIN_DEADLINE {
            return Err("the workers did not start every run in time".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = started.elapsed();
    println!(
        "  all {} runs started by the workers {:.2} s after the first POST ({:.0} runs/s end to end)",
        ids.len(),
        drained.as_secs_f64(),
        ids.len() as f64 / drained.as_secs_f64()
    );

    // Phase 3: reads.
    let ids = Arc::new(ids);
    let started = Instant::now();
    let results = fan_out(args.clients, args.reads, {
        let http = http.clone();
        let url = url.clone();
        let key = key.clone();
        let ids = ids.clone();
        move |n| {
            // A spread-out walk over the ids (7919 is prime), so reads do not follow writes.
            let id = &ids[(n * 7_919) % ids.len()];
            let request = http
                .get(format!("{url}/v1/runs/{id}"))
                .header("x-api-key", &key);
            async move {
                let response = request.send().await?;
                let status = response.status();
                let bytes = response.bytes().await?;
                if status.as_u16() != 200 {
                    return Err(format!("GET /v1/runs/{{id}} answered {status}").into());
                }
                Ok(bytes.len())
            }
        }
    })
    .await?;
    let elapsed = started.elapsed();
    let latencies = results.into_iter().map(|(_, d)| d).collect();
    report("GET /v1/runs/{id}", latencies, elapsed);

    if let Some(server) = server {
        server.shutdown().await?;
    }
    Ok(())
}

/// The server's usual logging when RUST_LOG is set; otherwise warnings only, so writing two
/// info lines per accepted run to the terminal is not what gets measured.
fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        telemetry::init(LogFormat::Text);
    } else {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// Run `total` requests made by `make(n)` over `clients` concurrent tasks; each result comes
/// back with its latency. The first error stops the benchmark.
async fn fan_out<T, F, Fut>(
    clients: usize,
    total: usize,
    make: F,
) -> Result<Vec<(T, Duration)>, BoxError>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<T, BoxError>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        let next = next.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let began = Instant::now();
                let value = make(n).await?;
                out.push((value, began.elapsed()));
            }
            Ok::<_, BoxError>(out)
        }));
    }
    let mut all = Vec::with_capacity(total);
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(all)
}

fn report(what: &str, mut latencies: Vec<Duration>, elapsed: Duration) {
    if latencies.is_empty() {
        println!("  {what}: no requests");
        return;
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1_000.0
    };
    println!(
        "  {what}: {} requests in {:.2} s = {:.0}/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
    );
}
