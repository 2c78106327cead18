//! `flowgate-sim`: run seeds of the whole-system simulation and report.
//!
//! ```text
//! flowgate-sim --seeds 100000            # the longer mode
//! flowgate-sim --seed 4711 --verbose     # replay one seed with the system's logs
//! ```

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use flowgate_sim::chaos::Faults;
use flowgate_sim::{SimConfig, run_seed_blocking, run_seeds};

#[derive(Debug, Parser)]
#[command(about = "Seeded whole-system simulation with fault injection")]
struct Args {
    /// How many seeds to run.
    #[arg(long, default_value_t = 10_000)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Replay this one seed (with --verbose, the system's logs show what happened).
    #[arg(long)]
    seed: Option<u64>,
    /// Threads (each seed runs alone on one, so results do not depend on this).
    #[arg(long, default_value_t = std::thread::available_parallelism().map_or(1, |n| n.get()))]
    threads: usize,
    /// Run without faults (the baseline).
    #[arg(long)]
    no_faults: bool,
    /// Print the system's logs (RUST_LOG filters them; default info).
    #[arg(long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.verbose {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let config = SimConfig {
        faults: if args.no_faults {
            Faults::none()
        } else {
            Faults::standard()
        },
        ..SimConfig::default()
    };
    if let Some(seed) = args.seed {
        let config = SimConfig {
            keep_audit: args.verbose,
            ..config
        };
        let outcome = run_seed_blocking(seed, &config);
        println!(
            "seed {seed}: {} runs, {} agent runs, {} actions, {} deliveries, {:.1} virtual hours; faults {:?}",
            outcome.runs,
            outcome.agent_runs,
            outcome.actions,
            outcome.messages_delivered,
            outcome.virtual_ms as f64 / 3_600_000.0,
            outcome.faults
        );
        for line in &outcome.run_lines {
            println!("  run {line}");
        }
        for v in &outcome.violations {
            println!("  VIOLATION {v}");
        }
        return if outcome.violations.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let started = Instant::now();
    let summary = run_seeds(args.first, args.seeds, args.threads, &config);
    let elapsed = started.elapsed();
    println!(
        "simulation: {} seeds ({}..{}) in {:.1} s ({:.0} seeds/s): {} runs, {} agent runs, {} actions, {} message deliveries, {:.0} virtual hours",
        summary.seeds,
        args.first,
        args.first + args.seeds,
        elapsed.as_secs_f64(),
        summary.seeds as f64 / elapsed.as_secs_f64().max(1e-9),
        summary.runs,
        summary.agent_runs,
        summary.actions,
        summary.messages,
        summary.virtual_ms as f64 / 3_600_000.0
    );
    println!("faults injected: {:?}", summary.faults);
    println!(
        "invariant violations: {} in {} seed(s)",
        summary.violations(),
        summary.failing.len()
    );
    for outcome in summary.failing.iter().take(20) {
        for v in &outcome.violations {
            println!(
                "  seed {} VIOLATION {v}  (replay: flowgate-sim --seed {} --verbose)",
                outcome.seed, outcome.seed
            );
        }
    }
    if summary.failing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
