//! `flowgate-bench`: the benchmark report. Prints it and writes it into `docs/benchmarks.md`
//! (between the `bench:begin`/`bench:end` markers).
//!
//! ```sh
//! cargo run --profile sim -p flowgate-bench              # starts moto from .venv when AWS_ENDPOINT_URL is unset
//! cargo run --profile sim -p flowgate-bench -- --no-write
//! FLOWGATE_BENCH_TRACE=1 cargo run --profile sim -p flowgate-bench -- --reference-only  # every billed write on stderr
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
use flowgate_shared::model::{AgentRunStatus, Run, RunStatus};

use crate::cost::{Usage, cost, lambda_invocation, sfn_express_hybrid, sfn_poll, sfn_standard};
use crate::proxy::{CountingProxy, IndexSpec, Projection};
use crate::reference::{Measured, Polling, Shape};

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
    /// Runs of the spread-out local loads.
    #[arg(long, default_value_t = 100)]
    light_runs: usize,
    /// Only the reference workflow's accounting (implies --no-write): a quick look at costs.
    #[arg(long)]
    reference_only: bool,
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

/// The request table and the cost table of one workflow shape; returns its goal lines.
/// One shape's table: a column per polling variant (`runs[0]` is fixed 8 s polling, the one the
/// Step Functions figures are counted against; `runs[1]` the default adaptive polling), the cost
/// comparison, and the goals line.
fn shape_section(md: &mut String, runs: &[Measured]) -> String {
    let fixed = &runs[0];
    let adaptive = &runs[1];
    let shape = fixed.shape;
    let _ = writeln!(md, "#### {}\n", shape.label());
    let labels: Vec<&str> = runs.iter().map(|m| m.polling.label()).collect();
    let _ = writeln!(md, "| per run | {} |", labels.join(" | "));
    let _ = writeln!(md, "|---|{}", "---:|".repeat(runs.len()));
    let row = |md: &mut String, what: &str, f: &dyn Fn(&Measured) -> String| {
        let cells: Vec<String> = runs.iter().map(f).collect();
        let _ = writeln!(md, "| {what} | {} |", cells.join(" | "));
    };
    row(md, "run status", &|m| m.status.to_string());
    row(md, "run length (virtual)", &|m| {
        format!("{:.1} min", m.virtual_ms as f64 / 60_000.0)
    });
    row(md, "agent status polls (per agent step)", &|m| {
        let per: Vec<String> = m.polls_per_step.iter().map(u64::to_string).collect();
        format!("{} ({})", m.agent_polls, per.join(" + "))
    });
    row(md, "agent API calls in all", &|m| m.agent_calls.to_string());
    row(md, "Lambda invocations", &|m| {
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for i in &m.invocations {
            *counts.entry(i.function).or_default() += 1;
        }
        let parts: Vec<String> = counts.iter().map(|(f, n)| format!("{f} {n}")).collect();
        format!("{} ({})", m.invocations.len(), parts.join(", "))
    });
    row(md, "work messages", &|m| {
        let parts: Vec<String> = m
            .message_kinds
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        format!("{} ({})", m.messages, parts.join(", "))
    });
    row(
        md,
        "SQS requests (send / receive / delete / change visibility)",
        &|m| {
            format!(
                "{} ({} / {} / {} / {})",
                m.sqs_requests(),
                m.sqs_send_calls,
                m.sqs_receive_calls,
                m.sqs_delete_calls,
                m.sqs_hand_back_calls
            )
        },
    );
    let ops: std::collections::BTreeSet<&String> =
        runs.iter().flat_map(|m| m.dynamodb.keys()).collect();
    for op in ops {
        row(
            md,
            &format!("DynamoDB {}", op.trim_start_matches("DynamoDB_20120810.")),
            &|m| m.dynamodb.get(op).map_or(0, |o| o.requests).to_string(),
        );
    }
    row(md, "DynamoDB requests in all", &|m| {
        m.dynamodb_requests().to_string()
    });
    row(md, "DynamoDB read units (RRU)", &|m| {
        format!("{:.1}", m.rru())
    });
    row(md, "DynamoDB write units (WRU)", &|m| {
        format!("{:.1}", m.wru())
    });
    row(md, "WRU by what was written", &|m| {
        let parts: Vec<String> = m
            .written
            .iter()
            .map(|(what, units)| format!("{what} {units:.0}"))
            .collect();
        parts.join(", ")
    });
    row(md, "API Gateway requests", &|m| m.api_requests.to_string());
    row(md, "mean handler time here (moto)", &|m| {
        let total: f64 = m.invocations.iter().map(|i| i.local_ms).sum();
        format!("{:.0} ms", total / m.invocations.len().max(1) as f64)
    });

    let (states, tasks) = shape.sfn_states();
    let sfn_polls = u32::try_from(fixed.agent_polls).unwrap_or(u32::MAX);
    let c_fixed = cost(&usage(fixed));
    let c_adaptive = cost(&usage(adaptive));
    let c_standard = cost(&sfn_standard(states, tasks, sfn_polls));
    let c_express = sfn_express_hybrid(
        states,
        tasks,
        sfn_polls,
        fixed.virtual_ms as f64 / 1_000.0,
        3,
    );
    let flowgate_poll = marginal_poll(fixed, adaptive);
    let _ = writeln!(
        md,
        "\n| variant | $ per run | $ per 1,000 runs | Standard ÷ this |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|");
    let mut variants = vec![
        (
            format!("Step Functions Standard, 3-state poll loop ({sfn_polls} polls)"),
            c_standard,
        ),
        (
            "Step Functions Express child + Standard parent".to_string(),
            c_express,
        ),
    ];
    for m in runs {
        variants.push((
            format!("Flowgate, {} (measured)", m.polling.label()),
            cost(&usage(m)),
        ));
    }
    for (what, c) in variants {
        let _ = writeln!(
            md,
            "| {what} | {c:.7} | {} | {:.1}x |",
            money(c * 1_000.0),
            c_standard / c
        );
    }
    // Where each adaptive run's money goes.
    for m in &runs[1..] {
        let u = usage(m);
        let total = cost(&u);
        let parts = [
            ("SQS", cost::PRICES.sqs_request * u.sqs_requests),
            ("DynamoDB writes", cost::PRICES.wru * u.wru),
            (
                "Lambda",
                u.lambda_ms.iter().map(|ms| lambda_invocation(*ms)).sum(),
            ),
            ("DynamoDB reads", cost::PRICES.rru * u.rru),
            ("API Gateway", cost::PRICES.api_request * u.api_requests),
        ];
        let split: Vec<String> = parts
            .iter()
            .map(|(what, c)| format!("{what} {:.0}%", 100.0 * c / total))
            .collect();
        let _ = writeln!(
            md,
            "\nSplit of the run with {}: {}.",
            m.polling.label(),
            split.join(", ")
        );
    }
    let long_fixed = fixed.polls_per_step.first().copied().unwrap_or(0) as f64;
    let long_adaptive = adaptive.polls_per_step.first().copied().unwrap_or(1).max(1) as f64;
    let _ = writeln!(md);
    let every_minute = cost(&usage(&runs[2]));
    format!(
        "- {}: per run, Flowgate with its default settings is **{:.1}x** cheaper than Step Functions Standard (goal: at least 100x, {}; with progress recorded every minute {:.1}x, with fixed 8 s polling {:.1}x); a poll costs Flowgate ${flowgate_poll:.3e} at the margin (a receive and a hand-back, a 100 ms invocation, the run read, any progress write) against ${:.3e}, **{:.0}x** (goal: at least 30x); on the 10-minute run adaptive polling made **{:.1}x fewer polls** ({} against {}; goal: at least 4x).",
        shape.label(),
        c_standard / c_adaptive,
        if c_standard / c_adaptive >= 100.0 {
            "met"
        } else {
            "not met"
        },
        c_standard / every_minute,
        c_standard / c_fixed,
        sfn_poll(),
        sfn_poll() / flowgate_poll,
        long_fixed / long_adaptive,
        long_adaptive,
        long_fixed
    )
}

/// What one poll costs Flowgate at the margin: the difference between the fixed 8 s run and
/// the adaptive one, over the polls adaptive polling did not make.
fn marginal_poll(fixed: &Measured, adaptive: &Measured) -> f64 {
    let extra = fixed
        .agent_polls
        .saturating_sub(adaptive.agent_polls)
        .max(1) as f64;
    (cost(&usage(fixed)) - cost(&usage(adaptive))) / extra
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
    let direct_config = moto_config(&endpoint).await;
    let table = format!("flowgate-bench-{}", std::process::id());
    let direct_client = aws_sdk_dynamodb_client(&direct_config);
    DynamoStore::create_table(&direct_client, &table).await?;
    let (table_keys, indexes) = table_shape(&direct_client, &table).await?;
    let proxy = CountingProxy::start(&endpoint, table_keys, indexes).await?;
    let counted_config = moto_config(&proxy.url).await;
    let counted = DynamoStore::new(aws_sdk_dynamodb_client(&counted_config), table.clone());
    let direct = DynamoStore::new(direct_client, table);
    let mut measured = Vec::new();
    for shape in [Shape::Page, Shape::WithReview] {
        let mut runs = Vec::new();
        for polling in [
            Polling::Fixed8s,
            Polling::Adaptive,
            Polling::AdaptiveEveryMinute,
        ] {
            runs.push(reference::measure(&proxy, &counted, &direct, shape, polling).await?);
        }
        measured.push(runs);
    }
    if let Some(child) = moto_child.as_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = writeln!(md, "### The reference workflow, request by request\n");
    let _ = writeln!(
        md,
        "`cargo run --profile sim -p flowgate-bench`: the cost-model page's reference workflow (prepare, a 10-minute agent run, an approval answered after a minute, finalize), and the same with a 30-second agent step after the approval (the benchmark issue's five steps), once per polling policy, through the real handlers: the API's start, the poller's Lambda handler on every message (one-record SQS batches), the approvals function's decision, the executor and the DynamoDB store, whose every request went over the wire to moto through a counting proxy (capacity units from the items on the wire, by DynamoDB's size rules). The work queue and the agent service ran on a virtual clock (SQS requests counted by SQS's billing rules: a send per call, a receive and a delete per batch, a `ChangeMessageVisibility` per hand-back; each delivery is one SQS-triggered invocation).\n"
    );
    let mut goals = Vec::new();
    for runs in &measured {
        goals.push(shape_section(&mut md, runs));
    }
    for line in goals {
        let _ = writeln!(md, "{line}");
    }
    let _ = writeln!(
        md,
        "\nNot counted: the sweeper's one invocation a minute and the event source mapping's empty receives (fixed per deployment, not per run), CloudWatch Logs, storage. Flowgate's Lambda time is billed as the page models it (a poll 100 ms, any other invocation 30 ms; one poll invocation at 128 MB is {} per million, of which the request charge is {}). The Step Functions figures are the page's equivalent state machines at the same 8 s poll interval, with as many polls as fixed 8 s polling made here (a Wait → Task → Choice loop of 3 transitions per poll).\n",
        money(lambda_invocation(100.0) * 1_000_000.0),
        money(cost::PRICES.lambda_request * 1_000_000.0)
    );
    let page = &measured[0][1];
    // What the five-step variant's short agent step adds, with the default settings, on
    // Flowgate and on Step Functions, and the two runs' totals: (flowgate, sfn, sfn total,
    // flowgate total).
    let short_step = {
        let standard = |shape: Shape, m: &Measured| {
            let (states, tasks) = shape.sfn_states();
            let polls = u32::try_from(m.agent_polls).unwrap_or(u32::MAX);
            cost(&sfn_standard(states, tasks, polls))
        };
        let (four, five) = (&measured[0], &measured[1]);
        let flowgate = cost(&usage(&five[1])) - cost(&usage(&four[1]));
        let sfn = standard(Shape::WithReview, &five[0]) - standard(Shape::Page, &four[0]);
        (
            flowgate,
            sfn,
            standard(Shape::WithReview, &five[0]),
            cost(&usage(&five[1])),
        )
    };
    let written = |what: &str| page.written.get(what).copied().unwrap_or(0.0);
    let marginal_poll = marginal_poll(&measured[0][0], &measured[0][1]);
    let _ = writeln!(
        md,
        "Index writes are billed here: for every table write the proxy counts the entries DynamoDB writes in the global secondary indexes (a put into an index, a delete and a put when an index key moves, one write when projected attributes change, 1 KB of the entry per unit). The first version of this report left them out and said 76x; with the listing indexes projecting whole run items they were more than half of a run's write units (83 of 144 on the page's run). The listing indexes now project only what their filters read, and a run's `wake_at` is no longer moved on at every write (it may be early, never late).\n\nRun writes: a run is one conditional write per decision. The newest decision's audit entries ride in the run item and are copied to their own item by the next decision that writes entries (before it replaces them, so no entry is ever only in a write that failed), and the run is stored deflated, under 1 KB; progress is an `UpdateItem` that leaves the entries alone (`shared/src/adapters/DYNAMODB.md`, \"Runs and their audit log\"). With the audit log written inside the run's transactions, one item per entry, the page's run took 80 write units, then 45, then 35; it takes {:.0} now (run item {:.0}, audit {:.0}, index entries {:.0}, sessions {:.0}). Along the way: a new run is written once, already started (the engine decides the start before the first write and queues its effects as one `Perform`); a session is written once per run that uses it (whether it is active is read from its last run); the poll that sees an agent run leave `pending` counts as the first of the restarted backoff; polls read their run eventually consistent (half a read unit; a poll that looks stale is read again consistently before it is dropped); and a run's end is queued as a delivery only when something waits on it.\n\nThe last round: **a poll chain hands its own SQS message back for its next poll** (`ChangeMessageVisibility` with the next interval, and the record reported to the event source mapping so it is not deleted): one request where a send and the mapping's delete were two, so a poll is a receive and a hand-back. The backoff is continued from the run's last recorded poll instead of travelling in the message, which is what lets the message stay unchanged. A poll that records something (the agent run leaving `pending`, or progress; not a heartbeat) starts a new chain in a new message, and so does a message received 15 times (the queue's redrive limit is 20). **Progress is recorded every 5 minutes by default** (it was once a minute), and `GET /v1/runs/{{id}}` reads running agents' progress live from the agent service, so nobody looking at a run sees older figures than before; progress that crosses a budget is still recorded at once. With progress every minute the page's run takes {:.0} write units more. **A lost poll chain is presumed lost ten minutes after its heartbeat was due, not one**: a chain's message is handed back from poll to poll and goes missing only in rare failures, and the longer slack lets a live chain's heartbeat writes leave the wake-up in `due` alone for two heartbeats out of three (the page's run no longer moves it while its agent runs). **Sessions are one item collection** (`pk = SESSIONS`) rather than entries of the `by_kind` index: a session write is one unit where it was two.\n\nWhere the per-run goal stands: met on both runs with the default settings. A poll costs about ${:.2e} at the margin (the receive and the hand-back $0.8e-6, a 100 ms invocation $0.37e-6, half a read unit), {:.0} times less than the Standard loop's; the rest is each run's fixed part. The page models one small write per state change; the measured run also keeps an audit log (a write per decision that adds entries), the listing and sweeper index entries (each status change writes both listing indexes; each move of the wake-up is a delete and a put in `due`: in at the start, moved when the agent run starts, out and in again around the approval, out at the end) and a session record per agent step. The run item is 600 to 1,000 bytes deflated, so keeping more audit entries in it would double the units of every later write, progress included. The five-step variant adds a short agent step: its fixed part (a start claim, two run writes, an audit copy, two wake-up moves, a session) and 6 polls (adaptive polling starts at 2 s, so a 30-second agent run is polled more often than at a fixed 8 s) add ${:.2e} to the run, against ${:.2e} on Step Functions (4 more polls of 3 transitions): {:.0} times less; the rest of the run is cheaper than 100x by enough to carry it. Left: dropping `status` from the `by_workflow` projection (a status filter on one workflow's runs would then be applied after reading the runs) would save two index writes a run but needs a new index on deployed tables; a callback from the agent service, where one exists, would replace polls altogether.\n",
        page.wru(),
        written("run item"),
        written("audit entries"),
        written("index entries"),
        written("other items"),
        measured[0][2].wru() - page.wru(),
        marginal_poll,
        sfn_poll() / marginal_poll,
        short_step.0,
        short_step.1,
        short_step.1 / short_step.0,
    );

    if args.reference_only {
        println!("{md}");
        return Ok(());
    }

    // --- engine
    let dps = engine_decisions_per_second()?;
    let _ = writeln!(md, "### Engine decisions per second\n");
    let _ = writeln!(
        md,
        "A four-step agent workflow replayed from start to end (start, agent started, five progress polls and the completion per step), `decide_mut` on one core: **{dps:.0} decisions/s** (`cargo bench -p flowgate-shared --bench engine` measures a 20-step DAG with criterion).\n"
    );

    // --- local end to end
    let chain = "id: bench-chain\npolling: {initial: 250ms, factor: 1.5, max: 1s}\nsteps:\n  - {id: a, kind: agent, workflow: implement, message: one}\n  - {id: b, kind: agent, workflow: implement, message: two, depends_on: [a]}\n  - {id: c, kind: agent, workflow: review, message: three, depends_on: [b]}\n";
    let shm = Path::new("/dev/shm");
    let spread = Duration::from_millis(200);
    let mut loads = vec![
        (
            "runs spread out (one every 200 ms), store on disk",
            args.light_runs,
            None,
            spread,
        ),
        (
            "all at once, store on disk",
            args.runs,
            None,
            Duration::ZERO,
        ),
    ];
    if shm.is_dir() {
        loads.insert(
            1,
            (
                "runs spread out (one every 200 ms), store in memory (/dev/shm)",
                args.light_runs,
                Some(shm.to_path_buf()),
                spread,
            ),
        );
    }
    let _ = writeln!(md, "### flowgate serve end to end\n");
    let _ = writeln!(
        md,
        "Runs started at once of a three-step agent chain (agent runs of 1 s on the built-in simulator), through the HTTP API of an in-process `flowgate serve` (16 workers, the embedded store with durable commits); client, server and simulator share this 2-core machine. Step-to-step latency is from a step's `step.succeeded` to the next step's `agent.started` in the audit log: the decision that finished one step and started the next is written durably, the next agent run is created (a first start needs no look-up by session name) and that is written durably too. This disk takes about 3.4 ms per synchronous write (`dd oflag=dsync`); `/dev/shm` shows the same path without it.\n"
    );
    let _ = writeln!(
        md,
        "| load | runs | succeeded | runs/s | steps/s | step-to-step p50 | p99 | max |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut all_loads_succeeded = true;
    for (what, runs, data_parent, stagger) in loads {
        let report = load::run(&LoadOptions {
            runs,
            clients: 32,
            workers: 16,
            agent_run: Duration::from_secs(1),
            deadline: Duration::from_secs(600),
            workflow: chain.to_string(),
            data_parent,
            stagger,
        })
        .await?;
        all_loads_succeeded &= report.not_succeeded.is_empty();
        let secs = report.elapsed.as_secs_f64();
        let hops = report
            .hops
            .values()
            .flatten()
            .copied()
            .collect::<Vec<i64>>();
        let _ = writeln!(
            md,
            "| {what} | {} | {} | {:.0} | {:.0} | **{} ms** | **{} ms** | {} ms |",
            report.accepted,
            report.succeeded,
            report.runs_per_second(),
            (report.accepted * report.steps_per_run) as f64 / secs,
            LoadReport::percentile(&hops, 0.5),
            LoadReport::percentile(&hops, 0.99),
            LoadReport::percentile(&hops, 1.0)
        );
    }
    let _ = writeln!(
        md,
        "\nGoal: step-to-step p50 under 2 ms and p99 under 10 ms on `flowgate serve`.\n"
    );

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
                "Run `scripts/build-lambdas` for the sizes (the figures measured with the deploy work are under \"Lambda packages and cold starts\").\n"
            );
        }
    }
    let _ = writeln!(
        md,
        "Init times: see \"Init and first invocation\" under \"Lambda packages and cold starts\" (`scripts/coldstart.py`)."
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
    let all_succeeded = measured
        .iter()
        .flatten()
        .all(|m| m.status == RunStatus::Succeeded);
    if all_loads_succeeded && all_succeeded {
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

/// The table's key attributes and global secondary indexes, as created, so the proxy bills
/// index writes for the schema really in use.
async fn table_shape(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<(Vec<String>, Vec<IndexSpec>), BoxError> {
    use aws_sdk_dynamodb::types::{KeyType, ProjectionType};
    let described = client.describe_table().table_name(table).send().await?;
    let t = described.table.ok_or("DescribeTable answered no table")?;
    let keys = t
        .key_schema()
        .iter()
        .map(|k| k.attribute_name().to_string())
        .collect();
    let mut indexes = Vec::new();
    for gsi in t.global_secondary_indexes() {
        let key = |kind: KeyType| {
            gsi.key_schema()
                .iter()
                .find(|k| *k.key_type() == kind)
                .map(|k| k.attribute_name().to_string())
        };
        let projection = gsi.projection().ok_or("an index without a projection")?;
        indexes.push(IndexSpec {
            name: gsi.index_name().unwrap_or_default().to_string(),
            hash: key(KeyType::Hash).ok_or("an index without a hash key")?,
            range: key(KeyType::Range),
            projection: match projection.projection_type() {
                Some(ProjectionType::KeysOnly) => Projection::KeysOnly,
                Some(ProjectionType::Include) => {
                    Projection::Include(projection.non_key_attributes().to_vec())
                }
                _ => Projection::All,
            },
        });
    }
    Ok((keys, indexes))
}

fn aws_sdk_dynamodb_client(
    config: &flowgate_shared::adapters::SdkConfig,
) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}
