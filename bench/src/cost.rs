//! Prices and cost formulas of `../shared/docs/cost-model.md` (us-east-1 list prices, no free
//! tiers), applied to counted requests.

/// Unit prices in dollars.
#[derive(Debug, Clone, Copy)]
pub struct Prices {
    pub lambda_request: f64,
    /// arm64, per GB-second.
    pub lambda_gb_s: f64,
    pub sqs_request: f64,
    pub wru: f64,
    pub rru: f64,
    pub api_request: f64,
    pub scheduler_invocation: f64,
    pub sfn_transition: f64,
    pub express_request: f64,
    pub express_gb_s: f64,
}

pub const PRICES: Prices = Prices {
    lambda_request: 0.20e-6,
    lambda_gb_s: 1.333_34e-5,
    sqs_request: 0.40e-6,
    wru: 0.625e-6,
    rru: 0.125e-6,
    api_request: 1.00e-6,
    scheduler_invocation: 1.00e-6,
    sfn_transition: 25e-6,
    express_request: 1.00e-6,
    express_gb_s: 1.667e-5,
};

/// The memory every function is deployed with (the template's 128 MB).
pub const MEMORY_GB: f64 = 0.125;

/// What one run caused, in billable units.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// Billed milliseconds of each Lambda invocation (rounded up to 1 ms).
    pub lambda_ms: Vec<f64>,
    pub sqs_requests: f64,
    pub wru: f64,
    pub rru: f64,
    pub api_requests: f64,
    pub scheduler_invocations: f64,
    /// Step Functions state transitions (baselines only).
    pub transitions: f64,
}

/// The cost of one Lambda invocation of `ms` at 128 MB (`cλ(d)` on the cost-model page).
pub fn lambda_invocation(ms: f64) -> f64 {
    PRICES.lambda_request + MEMORY_GB * ms.ceil() / 1_000.0 * PRICES.lambda_gb_s
}

/// Dollars for `usage` (`C_run` on the cost-model page).
pub fn cost(usage: &Usage) -> f64 {
    usage
        .lambda_ms
        .iter()
        .map(|ms| lambda_invocation(*ms))
        .sum::<f64>()
        + PRICES.sqs_request * usage.sqs_requests
        + PRICES.wru * usage.wru
        + PRICES.rru * usage.rru
        + PRICES.api_request * usage.api_requests
        + PRICES.scheduler_invocation * usage.scheduler_invocations
        + PRICES.sfn_transition * usage.transitions
}

/// The reference workflow on Step Functions Standard with a Wait → Task(Lambda) → Choice poll
/// loop per agent step: one transition per other state plus 3 per poll; its Lambda tasks and
/// the approval callback at 30 ms, each poll a 100 ms Lambda; two API calls (the cost-model
/// page's (a) is `sfn_standard(4, 4, 75)`).
pub fn sfn_standard(states: u32, tasks: u32, polls: u32) -> Usage {
    let mut lambda_ms = vec![30.0; tasks as usize + 1];
    lambda_ms.extend(std::iter::repeat_n(100.0, polls as usize));
    Usage {
        lambda_ms,
        api_requests: 2.0,
        transitions: f64::from(states) + 3.0 * f64::from(polls),
        ..Usage::default()
    }
}

/// The same workflow as a Standard parent (`states` + 1 transitions) with the polling in an
/// Express child: `executions` Express runs (5 minutes each at most) of `seconds` in all at
/// 64 MB (the page's figure is `sfn_express_hybrid(4, 4, 75, 600.0, 2)`).
pub fn sfn_express_hybrid(
    states: u32,
    tasks: u32,
    polls: u32,
    seconds: f64,
    executions: u32,
) -> f64 {
    let usage = Usage {
        transitions: f64::from(states) + 1.0,
        ..sfn_standard(states, tasks, polls)
    };
    cost(&usage)
        + f64::from(executions) * PRICES.express_request
        + seconds * 0.0625 * PRICES.express_gb_s
}

/// One poll iteration of the Standard 3-state loop (`poll (a)`).
pub fn sfn_poll() -> f64 {
    3.0 * PRICES.sfn_transition + lambda_invocation(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        ((a - b) / b).abs() < 0.01
    }

    /// The derived figures of the cost-model page, from its own counts.
    #[test]
    fn the_cost_model_pages_figures_come_out() {
        let a = cost(&sfn_standard(4, 4, 75));
        assert!(close(a, 5.76e-3), "{a}");
        assert!(close(sfn_poll(), 75.4e-6), "{}", sfn_poll());
        // (b): 6 invocations of 30 ms, 75 of 100 ms, 79 messages, 80 RRU, 81 WRU, 2 API calls.
        let mut lambda_ms = vec![30.0; 6];
        lambda_ms.extend(std::iter::repeat_n(100.0, 75));
        let b = cost(&Usage {
            lambda_ms,
            sqs_requests: 79.0 * 3.0,
            rru: 80.0,
            wru: 81.0,
            api_requests: 2.0,
            ..Usage::default()
        });
        assert!(close(b, 1.86e-4), "{b}");
        let express = sfn_express_hybrid(4, 4, 75, 600.0, 2);
        assert!(close(express, 7.83e-4), "{express}");
    }
}
