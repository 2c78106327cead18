//! The simulation itself under test: a handful of seeds pass, a seed replays exactly, and
//! each deliberately broken system is caught by the invariant it breaks (so the checks can
//! fail). The 10,000-seed run is a step of `scripts/test` (an optimised build:
//! `cargo run --profile sim -p flowgate-sim`).

use flowgate_sim::chaos::Faults;
use flowgate_sim::{Sabotage, SimConfig, run_seed_blocking, run_seeds};

#[test]
fn a_few_seeds_with_every_fault_break_no_invariant() {
    let summary = run_seeds(1_000_000, 24, 2, &SimConfig::default());
    let report: Vec<String> = summary
        .failing
        .iter()
        .flat_map(|o| {
            o.violations
                .iter()
                .map(move |v| format!("seed {}: {v}", o.seed))
        })
        .collect();
    assert!(report.is_empty(), "{report:#?}");
    assert_eq!(summary.seeds, 24);
    assert!(summary.runs >= 24, "every seed starts runs: {summary:?}");
    let crashes = summary.faults.get("crashes").copied().unwrap_or(0);
    let races = summary.faults.get("races").copied().unwrap_or(0);
    assert!(
        crashes > 0 && races > 0,
        "faults were injected: {:?}",
        summary.faults
    );
}

#[test]
fn a_seed_replays_exactly() {
    let config = SimConfig::default();
    let a = run_seed_blocking(4_711, &config);
    let b = run_seed_blocking(4_711, &config);
    assert_eq!(
        (
            a.runs,
            a.agent_runs,
            a.actions,
            a.messages_delivered,
            a.virtual_ms
        ),
        (
            b.runs,
            b.agent_runs,
            b.actions,
            b.messages_delivered,
            b.virtual_ms
        )
    );
    assert_eq!(a.faults, b.faults);
    let c = run_seed_blocking(4_712, &config);
    assert_ne!(
        (a.actions, a.messages_delivered, &a.faults),
        (c.actions, c.messages_delivered, &c.faults),
        "another seed is another world"
    );
}

/// Seeds until one breaks `invariant` (a broken system must be caught within a few).
fn caught(sabotage: Sabotage, faults: Faults, invariant: &str) -> u64 {
    let config = SimConfig {
        faults,
        sabotage: Some(sabotage),
        ..SimConfig::default()
    };
    for seed in 0..60 {
        let outcome = run_seed_blocking(seed, &config);
        if outcome.violations.iter().any(|v| v.invariant == invariant) {
            return seed;
        }
    }
    panic!("{sabotage:?} broke {invariant:?} in no seed: the check cannot fail");
}

#[test]
fn an_agent_service_that_hides_runs_leads_to_duplicate_agent_runs_and_is_caught() {
    let faults = Faults {
        agent_answer_lost: 0.3,
        ..Faults::none()
    };
    caught(
        Sabotage::HideAgentRuns,
        faults,
        "at most one agent run per step attempt",
    );
}

#[test]
fn approvals_recorded_without_the_engine_are_caught() {
    caught(
        Sabotage::UncheckedApprovals,
        Faults::none(),
        "approvals decided only by allowed approvers",
    );
}

#[test]
fn work_lost_to_crashes_without_a_sweeper_is_caught() {
    let faults = Faults {
        crash_after_call: 0.05,
        ..Faults::none()
    };
    caught(Sabotage::NoSweeper, faults, "every run finishes");
}
