//! `flowgate-bench`: the benchmark report. Prints it and writes it into `docs/benchmarks.md`
//! (between the `bench:begin`/`bench:end` markers).
//!
//! ```sh
//! cargo run --profile sim -p flowgate-bench              # starts moto from .venv when AWS_ENDPOINT_URL is unset
//! cargo run --profile sim -p flowgate-bench -- --no-write
//! ```
//!
//! Sections: AWS requests of the reference workflow (fixed 8 s and adaptive polling) counted
//! through the real handlers; its cost per 1,000 runs against Step Functions Standard and an
//! Express hybrid; engine decisions per second; end-to-end throughput and step-to-step latency
//! of `flowgate serve`; the Lambda package sizes when `scripts/build-lambdas` has run.

mod cost;
mod proxy;
mod reference;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use flowgate_cli::load::{self, LoadOptions, LoadReport};
use flowgate_shared::adapters::dynamodb::DynamoStore;
use flowgate_shared::definition::parse_definition;
use flowgate_shared::engine::{AgentObservation, Event, decide_mut};
use flowgate_shared::model::{AgentRunStatus, Run};

use crate::cost::{Usage, cost, lambda_invocation, sfn_express_hybrid, sfn_poll, sfn_standard};
use crate::proxy::CountingProxy;
use crate::reference::{Measured, Polling};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Parser)]
#[command(about = "Flowgate's benchmark report (writes docs/benchmarks.md)")]
struct Args {
    /// Print only; leave docs/benchmarks.md alone.
    #[arg(long)]
    no_write: bool,
    /// Runs of the local end-to-end load.
    #[arg(long, default_value_t = 500)]
    runs: usize,
}

/// The billed duration the cost model assumes: a poll waits on a remote HTTPS call (100 ms),
/// anything else is a short handler (30 ms).
fn modelled_ms(polled: bool) -> f64 {
    if polled { 100.0 } else { 30.0 }
}

fn usage(m: &Measured) -> Usage {
    Usage {
        lambda_ms: m
            .invocations
            .iter()
            .map(|i| modelled_ms(i.polled))
            .collect(),
        sqs_requests: m.sqs_requests() as f64,
        wru: m.wru(),
        rru: m.rru(),
        api_requests: m.api_requests as f64,
        ..Usage::default()
    }
}

/// moto for the measurement: the one AWS_ENDPOINT_URL names, or one started from .venv.
fn moto() -> Result<(String, Option<Child>), BoxError> {
    if let Ok(url) = std::env::var("AWS_ENDPOINT_URL") {
        return Ok((url, None));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    if !python.exists() {
        return Err("no AWS_ENDPOINT_URL and no .venv: run scripts/test once (it creates .venv with moto), or start moto and export AWS_ENDPOINT_URL".into());
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(python)
        .arg(root.join("scripts/moto_server.py"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let url = format!("http://127.0.0.1:{port}");
    let began = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if began.elapsed() > Duration::from_secs(30) {
            return Err("moto did not start within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((url, Some(child)))
}

/// Decisions per second of the engine on one core: a four-step agent workflow replayed from
/// start to end (start, agent started, five progress polls and the completion per step).
fn engine_decisions_per_second() -> Result<f64, BoxError> {
    let def = parse_definition(
        "id: four\nsteps:\n  - {id: a, kind: agent, workflow: w, message: m}\n  - {id: b, kind: agent, workflow: w, message: m, depends_on: [a]}\n  - {id: c, kind: agent, workflow: w, message: m, depends_on: [b]}\n  - {id: d, kind: agent, workflow: w, message: m, depends_on: [c]}\n",
    )?;
    let mut decisions = 0u64;
    let began = Instant::now();
    let mut now = 1_000_000;
    while began.elapsed() < Duration::from_secs(1) {
        let mut run = Run::new("r", &def, 1, Default::default(), now);
        decide_mut(&mut run, &def, &Event::Start, now).map_err(|e| e.to_string())?;
        decisions += 1;
        for step in ["a", "b", "c", "d"] {
            let attempt = run.steps[step].attempt;
            decide_mut(
                &mut run,
                &def,
                &Event::AgentStarted {
                    step: step.into(),
                    attempt,
                    upstream_run_id: format!("up-{step}"),
                },
                now,
            )
            .map_err(|e| e.to_string())?;
            decisions += 1;
            for poll in 0..6u32 {
                now += 2_000;
                let done = poll == 5;
                let observation = AgentObservation {
                    status: Some(if done {
                        AgentRunStatus::Completed
                    } else {
                        AgentRunStatus::Running
                    }),
                    turns: poll,
                    tokens: u64::from(poll) * 1_000,
                    output: done.then(|| "done".to_string()),
                    ..AgentObservation::default()
                };
                let polls = run.steps[step].agent.as_ref().map_or(0, |a| a.polls);
                decide_mut(
                    &mut run,
                    &def,
                    &Event::AgentObserved {
                        step: step.into(),
                        attempt,
                        poll: polls,
                        interval_ms: 2_000,
                        observation,
                    },
                    now,
                )
                .map_err(|e| e.to_string())?;
                decisions += 1;
            }
        }
    }
    Ok(decisions as f64 / began.elapsed().as_secs_f64())
}

fn lambda_sizes(root: &Path) -> Option<String> {
    let tsv = std::fs::read_to_string(root.join("target/lambda/sizes.tsv")).ok()?;
    let mut out = String::from("| function (arm64) | binary | zip |\n|---|---:|---:|\n");
    for line in tsv.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        if let [f, b, z] = cols[..] {
            let mb = |s: &str| s.parse::<f64>().unwrap_or(0.0) / 1_048_576.0;
            let _ = writeln!(out, "| {f} | {:.2} MB | {:.2} MB |", mb(b), mb(z));
        }
    }
    Some(out)
}

fn money(x: f64) -> String {
    format!("${x:.4}")
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut md = String::new();

    // --- the reference workflow, counted
    let (endpoint, mut moto_child) = moto()?;
    let proxy = CountingProxy::start(&endpoint).await?;
    let counted_config = moto_config(&proxy.url).await;
    let direct_config = moto_config(&endpoint).await;
    let table = format!("flowgate-bench-{}", std::process::id());
    let direct_client = aws_sdk_dynamodb_client(&direct_config);
    DynamoStore::create_table(&direct_client, &table).await?;
    let counted = DynamoStore::new(aws_sdk_dynamodb_client(&counted_config), table.clone());
    let direct = DynamoStore::new(direct_client, table);
    let fixed = reference::measure(&proxy, &counted, &direct, Polling::Fixed8s).await?;
    let adaptive = reference::measure(&proxy, &counted, &direct, Polling::Adaptive).await?;
    if let Some(child) = moto_child.as_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }

    let _ = writeln!(md, "### The reference workflow, request by request\n");
    let _ = writeln!(
        md,
        "`cargo run --profile sim -p flowgate-bench`: the cost-model page's reference workflow (prepare, a 10-minute agent run, an approval answered after a minute, a 30-second agent run, finalize) once per polling policy, through the real handlers: the API's start, the poller's Lambda handler on every message (one-record SQS batches), the approvals function's decision, the executor and the DynamoDB store, whose every request went over the wire to moto through a counting proxy (capacity units from the items on the wire, by DynamoDB's size rules). The work queue and the agent service ran on a virtual clock (SQS requests counted by SQS's billing rules: a send per call, a receive and a delete per batch).\n"
    );
    let _ = writeln!(
        md,
        "| per run | {} | {} |",
        fixed.polling.label(),
        adaptive.polling.label()
    );
    let _ = writeln!(md, "|---|---:|---:|");
    let row = |md: &mut String, what: &str, a: String, b: String| {
        let _ = writeln!(md, "| {what} | {a} | {b} |");
    };
    row(
        &mut md,
        "run status",
        fixed.status.to_string(),
        adaptive.status.to_string(),
    );
    row(
        &mut md,
        "agent status polls",
        fixed.agent_polls.to_string(),
        adaptive.agent_polls.to_string(),
    );
    row(
        &mut md,
        "agent API calls in all",
        fixed.agent_calls.to_string(),
        adaptive.agent_calls.to_string(),
    );
    row(
        &mut md,
        "run length (virtual)",
        format!("{:.1} min", fixed.virtual_ms as f64 / 60_000.0),
        format!("{:.1} min", adaptive.virtual_ms as f64 / 60_000.0),
    );
    let by_function = |m: &Measured| {
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for i in &m.invocations {
            *counts.entry(i.function).or_default() += 1;
        }
        let parts: Vec<String> = counts.iter().map(|(f, n)| format!("{f} {n}")).collect();
        format!("{} ({})", m.invocations.len(), parts.join(", "))
    };
    row(
        &mut md,
        "Lambda invocations",
        by_function(&fixed),
        by_function(&adaptive),
    );
    let kinds = |m: &Measured| {
        let parts: Vec<String> = m
            .message_kinds
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        format!("{} ({})", m.messages, parts.join(", "))
    };
    row(&mut md, "work messages", kinds(&fixed), kinds(&adaptive));
    row(
        &mut md,
        "SQS requests (send / receive / delete)",
        format!(
            "{} ({} / {} / {})",
            fixed.sqs_requests(),
            fixed.sqs_send_calls,
            fixed.sqs_receive_calls,
            fixed.sqs_delete_calls
        ),
        format!(
            "{} ({} / {} / {})",
            adaptive.sqs_requests(),
            adaptive.sqs_send_calls,
            adaptive.sqs_receive_calls,
            adaptive.sqs_delete_calls
        ),
    );
    let ops: std::collections::BTreeSet<&String> = fixed
        .dynamodb
        .keys()
        .chain(adaptive.dynamodb.keys())
        .collect();
    for op in ops {
        let get = |m: &Measured| m.dynamodb.get(op).map_or(0, |o| o.requests).to_string();
        row(
            &mut md,
            &format!("DynamoDB {}", op.trim_start_matches("DynamoDB_20120810.")),
            get(&fixed),
            get(&adaptive),
        );
    }
    row(
        &mut md,
        "DynamoDB requests in all",
        fixed.dynamodb_requests().to_string(),
        adaptive.dynamodb_requests().to_string(),
    );
    row(
        &mut md,
        "DynamoDB read units (RRU)",
        format!("{:.1}", fixed.rru()),
        format!("{:.1}", adaptive.rru()),
    );
    row(
        &mut md,
        "DynamoDB write units (WRU)",
        format!("{:.1}", fixed.wru()),
        format!("{:.1}", adaptive.wru()),
    );
    row(
        &mut md,
        "API Gateway requests",
        fixed.api_requests.to_string(),
        adaptive.api_requests.to_string(),
    );
    let local = |m: &Measured| {
        let total: f64 = m.invocations.iter().map(|i| i.local_ms).sum();
        format!("{:.0} ms", total / m.invocations.len().max(1) as f64)
    };
    row(
        &mut md,
        "mean handler time here (moto)",
        local(&fixed),
        local(&adaptive),
    );
    let poll_ratio = fixed.agent_polls as f64 / adaptive.agent_polls.max(1) as f64;
    let _ = writeln!(
        md,
        "\nAdaptive polling made **{poll_ratio:.1}x fewer status polls** than fixed 8 s polling on the 10-minute run (goal: at least 4x).\n"
    );

    // --- cost
    let c_fixed = cost(&usage(&fixed));
    let c_adaptive = cost(&usage(&adaptive));
    let sfn_polls = 75; // 600 s / 8 s, as the Step Functions loop waits 8 s per iteration
    let c_standard = cost(&sfn_standard(sfn_polls));
    let c_express = sfn_express_hybrid(sfn_polls, 600.0, 2);
    // Flowgate's marginal cost of one poll: what the extra polls of fixed polling cost.
    let extra_polls = fixed
        .agent_polls
        .saturating_sub(adaptive.agent_polls)
        .max(1) as f64;
    let flowgate_poll = (c_fixed - c_adaptive) / extra_polls;
    let _ = writeln!(md, "### Cost per run and per 1,000 runs\n");
    let _ = writeln!(
        md,
        "Prices and formulas of the cost-model page (us-east-1, arm64, 128 MB, no free tier). Flowgate's Lambda time is billed as the page models it (a poll 100 ms, any other invocation 30 ms), its requests as counted above. The Step Functions rows are the page's equivalent state machines at the same 8 s poll interval (75 polls: a Wait → Task → Choice loop of 3 transitions each).\n"
    );
    let _ = writeln!(
        md,
        "| variant | $ per run | $ per 1,000 runs | Standard ÷ this |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|");
    for (what, c) in [
        ("Step Functions Standard, 3-state poll loop", c_standard),
        ("Step Functions Express child + Standard parent", c_express),
        ("Flowgate, fixed 8 s polling (measured)", c_fixed),
        ("Flowgate, adaptive polling (measured)", c_adaptive),
    ] {
        let _ = writeln!(
            md,
            "| {what} | {c:.7} | {} | {:.1}x |",
            money(c * 1_000.0),
            c_standard / c
        );
    }
    let _ = writeln!(
        md,
        "\n- Cost per reference run: Flowgate (adaptive) is **{:.0}x** cheaper than Step Functions Standard (goal: at least 100x); with fixed 8 s polling {:.0}x.",
        c_standard / c_adaptive,
        c_standard / c_fixed
    );
    let _ = writeln!(
        md,
        "- Cost per poll: Flowgate's marginal poll costs ${flowgate_poll:.3e} (one message hop, a 100 ms invocation, the run read and any progress write), the Standard loop's ${:.3e}: **{:.0}x** (goal: at least 30x).",
        sfn_poll(),
        sfn_poll() / flowgate_poll
    );
    let _ = writeln!(
        md,
        "- Not counted: the sweeper's one invocation a minute and the event source mapping's empty receives (fixed per deployment, not per run), CloudWatch Logs, storage. A poll's Lambda at 128 MB costs {} of which the request charge is {}.\n",
        money(lambda_invocation(100.0) * 1_000_000.0) + " per million",
        money(cost::PRICES.lambda_request * 1_000_000.0) + " per million"
    );

    // --- engine
    let dps = engine_decisions_per_second()?;
    let _ = writeln!(md, "### Engine decisions per second\n");
    let _ = writeln!(
        md,
        "A four-step agent workflow replayed from start to end (start, agent started, five progress polls and the completion per step), `decide_mut` on one core: **{dps:.0} decisions/s** (`cargo bench -p flowgate-shared --bench engine` measures a 20-step DAG with criterion).\n"
    );

    // --- local end to end
    let options = LoadOptions {
        runs: args.runs,
        clients: 32,
        workers: 16,
        agent_run: Duration::from_secs(1),
        deadline: Duration::from_secs(600),
        workflow: "id: bench-chain\npolling: {initial: 250ms, factor: 1.5, max: 1s}\nsteps:\n  - {id: a, kind: agent, workflow: implement, message: one}\n  - {id: b, kind: agent, workflow: implement, message: two, depends_on: [a]}\n  - {id: c, kind: agent, workflow: review, message: three, depends_on: [b]}\n".to_string(),
    };
    let report = load::run(&options).await?;
    let _ = writeln!(md, "### flowgate serve end to end\n");
    let _ = writeln!(
        md,
        "{} runs started at once of a three-step agent chain (agent runs of 1 s on the built-in simulator), through the HTTP API of an in-process `flowgate serve` (16 workers, durable embedded store); all on this 2-core machine. Step-to-step latency is from a step's `step.succeeded` to the next step's `agent.started` in the audit log (the next agent run accepted and recorded).\n",
        report.accepted
    );
    let secs = report.elapsed.as_secs_f64();
    let _ = writeln!(
        md,
        "- {} of {} runs succeeded ({} not), in {secs:.1} s: **{:.0} runs/s, {:.0} steps/s**.",
        report.succeeded,
        report.accepted,
        report.not_succeeded.len(),
        report.runs_per_second(),
        (report.accepted * report.steps_per_run) as f64 / secs
    );
    for (edge, ms) in &report.hops {
        let _ = writeln!(
            md,
            "- step-to-step {edge}: {} samples, **p50 {} ms, p99 {} ms** (goal: p50 under 2 ms, p99 under 10 ms), max {} ms.",
            ms.len(),
            LoadReport::percentile(ms, 0.5),
            LoadReport::percentile(ms, 0.99),
            LoadReport::percentile(ms, 1.0)
        );
    }
    let _ = writeln!(md);

    // --- packages
    let _ = writeln!(md, "### Lambda packages\n");
    match lambda_sizes(&root) {
        Some(table) => {
            let _ = writeln!(
                md,
                "From `scripts/build-lambdas` (arm64 release zips):\n\n{table}"
            );
        }
        None => {
            let _ = writeln!(
                md,
                "Run `scripts/build-lambdas` for the sizes (the figures measured with the deploy work are under \"Lambda packages and cold starts\" below).\n"
            );
        }
    }
    let _ = writeln!(
        md,
        "Init times: see \"Init and first invocation\" below (`scripts/coldstart.py`)."
    );

    println!("{md}");
    if !args.no_write {
        let path = root.join("docs/benchmarks.md");
        let doc = std::fs::read_to_string(&path)?;
        let (begin, end) = ("<!-- bench:begin -->", "<!-- bench:end -->");
        let section =
            format!("{begin}\n## Flowgate against Step Functions (flowgate-bench)\n\n{md}{end}");
        let updated = match (doc.find(begin), doc.find(end)) {
            (Some(b), Some(e)) if e > b => {
                format!("{}{section}{}", &doc[..b], &doc[e + end.len()..])
            }
            _ => format!("{doc}\n{section}\n"),
        };
        std::fs::write(&path, updated)?;
        println!("written to {}", path.display());
    }
    if report.not_succeeded.is_empty() && fixed.status.is_terminal() {
        Ok(())
    } else {
        Err("some runs did not succeed".into())
    }
}

/// An SDK configuration for moto: its endpoint, a region, and dummy credentials (moto takes
/// any), so nothing is looked up in the environment or the instance metadata service.
async fn moto_config(endpoint: &str) -> flowgate_shared::adapters::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "test",
            "test",
            None,
            None,
            "flowgate-bench",
        ))
        .load()
        .await
}

fn aws_sdk_dynamodb_client(
    config: &flowgate_shared::adapters::SdkConfig,
) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}
