//! Whole runs under load through `flowgate serve`: N runs at once of an agent → approval →
//! agent workflow, the agent steps on the built-in simulator, every approval answered by a
//! scripted approver through the HTTP API (see [`flowgate_cli::load`]). Exits non-zero unless
//! every accepted run succeeded; prints throughput and step-to-step latency.
//!
//! ```sh
//! cargo run --profile sim -p flowgate-cli --example runs_load              # 1,000 runs
//! cargo run --profile sim -p flowgate-cli --example runs_load -- --runs 200
//! ```

use std::time::Duration;

use clap::Parser;
use flowgate_cli::load::{self, LoadOptions, LoadReport};

const WORKFLOW: &str = r#"
id: load-agent-approval
name: Agent, approval, agent
polling: {initial: 500ms, factor: 1.5, max: 2s}
steps:
  - id: build
    kind: agent
    workflow: implement
    message: build the change
  - id: approve
    kind: approval
    message: "ship ${{ steps.build.output }}?"
    approvers: [approver]
    depends_on: [build]
  - id: review
    kind: agent
    workflow: review
    message: review the change
    depends_on: [approve]
"#;

#[derive(Debug, Parser)]
#[command(
    about = "Whole-run load on flowgate serve: agent steps on the simulator, approvals by a script"
)]
struct Args {
    /// Runs started at once.
    #[arg(long, default_value_t = 1_000)]
    runs: usize,
    /// Concurrent HTTP requests of the starting clients and of the approver.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Work messages the server handles at once.
    #[arg(long, default_value_t = 16)]
    workers: u16,
    /// How long each simulated agent run takes.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    agent_run: Duration,
    /// Give up after this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    deadline: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        ))
        .with_writer(std::io::stderr)
        .try_init();
    println!(
        "runs load: {} runs of agent → approval → agent (agent runs take {:?}), {} workers",
        args.runs, args.agent_run, args.workers
    );
    let report = load::run(&LoadOptions {
        runs: args.runs,
        clients: args.clients,
        workers: args.workers,
        agent_run: args.agent_run,
        deadline: args.deadline,
        workflow: WORKFLOW.to_string(),
        data_parent: None,
        stagger: Duration::ZERO,
    })
    .await?;
    let secs = report.elapsed.as_secs_f64();
    println!(
        "  all finished {secs:.2} s after the first start: {:.0} runs/s, {:.0} steps/s; {} approvals decided by the script",
        report.runs_per_second(),
        (report.accepted * report.steps_per_run) as f64 / secs,
        report.approvals_decided
    );
    for (edge, ms) in &report.hops {
        println!(
            "  step-to-step {edge}: {} samples, p50 {} ms, p99 {} ms, max {} ms",
            ms.len(),
            LoadReport::percentile(ms, 0.50),
            LoadReport::percentile(ms, 0.99),
            LoadReport::percentile(ms, 1.0)
        );
    }
    println!(
        "  no-loss check: {} accepted, {} succeeded, {} did not",
        report.accepted,
        report.succeeded,
        report.not_succeeded.len()
    );
    if !report.not_succeeded.is_empty() {
        return Err(format!("runs that did not succeed: {:?}", report.not_succeeded).into());
    }
    Ok(())
}
