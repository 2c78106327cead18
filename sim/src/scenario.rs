//! Random scenarios: workflows (as YAML, parsed and validated by the real definition code) and
//! the starts made of them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use flowgate_shared::definition::{WorkflowDefinition, parse_definition};
use flowgate_shared::model::Millis;

use crate::agent::Script;
use crate::chaos::Chaos;

/// People who may decide approvals in generated workflows.
pub const APPROVERS: [&str; 3] = ["alice", "bob", "carol"];
/// Someone who is never an approver.
pub const STRANGER: &str = "mallory";
/// Who starts runs through the API (and so may not approve them).
pub const STARTER: &str = "api:sim";
/// Every generated workflow gives up after this long: a run still active well after it is
/// stuck, not slow.
pub const RUN_TIMEOUT_MS: Millis = 6 * 3_600_000;

/// One generated workflow.
#[derive(Debug, Clone)]
pub struct WorkflowSpec {
    pub id: String,
    pub yaml: String,
    pub definition: WorkflowDefinition,
    /// Approval step id → who may decide it.
    pub approvers: BTreeMap<String, Vec<String>>,
    /// Whether it has a schedule trigger (fired by the driver).
    pub scheduled: bool,
}

/// One start request through the API.
#[derive(Debug, Clone)]
pub struct StartPlan {
    pub at: Millis,
    pub workflow: String,
    pub idempotency_key: String,
    /// The client sends the same request again this much later (a retry after a timeout).
    pub repeat_after: Option<Millis>,
    /// A person cancels the run this long after starting it (`force` kills agents at once).
    pub cancel_after: Option<(Millis, bool)>,
    /// A person sends feedback to the run's running agent step this long after starting it.
    pub feedback_after: Option<Millis>,
}

/// One scheduled firing (EventBridge Scheduler delivers it `deliveries` times).
#[derive(Debug, Clone)]
pub struct FirePlan {
    pub at: Millis,
    pub workflow: String,
    pub deliveries: u32,
}

/// Everything a seed does, decided up front (the driver's reactions to what happens are
/// decided as they happen, from the same generator).
#[derive(Debug, Clone)]
pub struct Scenario {
    pub workflows: Vec<WorkflowSpec>,
    pub starts: Vec<StartPlan>,
    pub fires: Vec<FirePlan>,
    /// Slack and an outbound webhook receiver are configured but unreachable.
    pub receivers_down: bool,
}

fn duration(ms: Millis) -> String {
    if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", (ms / 1_000).max(1))
    }
}

/// Generate one workflow. Panics if the real parser refuses it: a generator bug, which the
/// failing seed reproduces.
fn workflow(chaos: &Chaos, index: usize, previous: Option<&str>) -> WorkflowSpec {
    let id = format!("wf{index}");
    let mut yaml = String::new();
    let _ = writeln!(yaml, "id: {id}");
    let _ = writeln!(yaml, "timeout: {}", duration(RUN_TIMEOUT_MS));
    if chaos.chance(0.2) {
        let _ = writeln!(yaml, "concurrency: {{limit: 1}}");
    }
    let mut scheduled = false;
    let chained = previous.filter(|_| chaos.chance(0.25));
    if chaos.chance(0.15) || chained.is_some() {
        let _ = writeln!(yaml, "triggers:");
        if let Some(previous) = chained {
            let _ = writeln!(
                yaml,
                "  - {{type: workflow_completed, workflow: {previous}}}"
            );
        }
        if chained.is_none() || chaos.chance(0.3) {
            scheduled = true;
            let overlap = ["skip", "allow"][chaos.index(2)];
            let _ = writeln!(
                yaml,
                "  - {{type: schedule, expression: \"rate(1 hour)\", overlap: {overlap}}}"
            );
        }
    }
    let _ = writeln!(yaml, "steps:");
    let steps = chaos.between(1, 5) as usize;
    let mut approvers = BTreeMap::new();
    for i in 0..steps {
        let step = format!("s{i}");
        let _ = writeln!(yaml, "  - id: {step}");
        let deps: Vec<String> = (0..i)
            .filter(|_| chaos.chance(0.5))
            .map(|d| format!("s{d}"))
            .collect();
        if !deps.is_empty() {
            let _ = writeln!(yaml, "    depends_on: [{}]", deps.join(", "));
            if chaos.chance(0.15) {
                let when = ["always", "failure"][chaos.index(2)];
                let _ = writeln!(yaml, "    when: {when}");
            }
        }
        if chaos.chance(0.1) {
            let _ = writeln!(yaml, "    continue_on_failure: true");
        }
        if chaos.chance(0.3) {
            let _ = writeln!(
                yaml,
                "    retry: {{max_attempts: {}, backoff: fixed, initial_delay: 5s}}",
                chaos.between(2, 3)
            );
        }
        match chaos.index(4) {
            0 | 1 => {
                let script = Script {
                    fail_percent: [0, 0, 20, 50][chaos.index(4)],
                    never_percent: [0, 0, 0, 15][chaos.index(4)],
                    min_secs: 5,
                    max_secs: [30, 120, 600][chaos.index(3)],
                };
                let _ = writeln!(yaml, "    kind: agent");
                let _ = writeln!(yaml, "    workflow: builder");
                let _ = writeln!(yaml, "    message: \"work {step} {}\"", script.render());
                if chaos.chance(0.3) {
                    let _ = writeln!(yaml, "    max_turns: {}", chaos.between(5, 40));
                }
                // A run that may never finish needs a timeout to end it.
                if script.never_percent > 0 || chaos.chance(0.3) {
                    let _ = writeln!(yaml, "    timeout: {}m", chaos.between(3, 20));
                }
            }
            2 => {
                let count = chaos.between(2, 3) as usize;
                let start = chaos.index(APPROVERS.len());
                let who: Vec<String> = (0..count)
                    .map(|k| APPROVERS[(start + k) % APPROVERS.len()].to_string())
                    .collect();
                let required = if count > 1 && chaos.chance(0.3) { 2 } else { 1 };
                let _ = writeln!(yaml, "    kind: approval");
                let _ = writeln!(yaml, "    message: \"approve {step}?\"");
                let _ = writeln!(yaml, "    approvers: [{}]", who.join(", "));
                let _ = writeln!(yaml, "    required: {required}");
                if chaos.chance(0.3) {
                    let on_expiry = ["reject", "approve"][chaos.index(2)];
                    let _ = writeln!(yaml, "    expires_in: 20m");
                    let _ = writeln!(yaml, "    on_expiry: {on_expiry}");
                }
                approvers.insert(step.clone(), who);
            }
            _ => {
                let _ = writeln!(yaml, "    kind: wait");
                let _ = writeln!(
                    yaml,
                    "    duration: {}",
                    duration(chaos.between(1, 600) * 1_000)
                );
            }
        }
    }
    let definition = match parse_definition(&yaml) {
        Ok(def) => def,
        Err(e) => panic!("the generator made an invalid workflow ({e}):\n{yaml}"),
    };
    WorkflowSpec {
        id,
        yaml,
        definition,
        approvers,
        scheduled,
    }
}

/// A whole scenario: 1 to 3 workflows, 1 to 3 starts of each in the first ten minutes.
pub fn generate(chaos: &Chaos) -> Scenario {
    let count = chaos.between(1, 3) as usize;
    let mut workflows: Vec<WorkflowSpec> = Vec::new();
    for i in 0..count {
        let previous = workflows.last().map(|w| w.id.clone());
        workflows.push(workflow(chaos, i, previous.as_deref()));
    }
    let mut starts = Vec::new();
    let mut fires = Vec::new();
    for wf in &workflows {
        for _ in 0..chaos.between(1, 3) {
            let n = starts.len();
            starts.push(StartPlan {
                at: chaos.between(0, 600) * 1_000,
                workflow: wf.id.clone(),
                idempotency_key: format!("start-{n}"),
                repeat_after: chaos.chance(0.2).then(|| chaos.between(1, 120) * 1_000),
                cancel_after: chaos
                    .chance(0.1)
                    .then(|| (chaos.between(1, 1_800) * 1_000, chaos.chance(0.3))),
                feedback_after: chaos.chance(0.15).then(|| chaos.between(1, 600) * 1_000),
            });
        }
        if wf.scheduled {
            let every = chaos.between(5, 30) * 60_000;
            for k in 0..chaos.between(1, 2) {
                fires.push(FirePlan {
                    at: (k + 1) * every,
                    workflow: wf.id.clone(),
                    deliveries: chaos.between(1, 3) as u32,
                });
            }
        }
    }
    Scenario {
        workflows,
        starts,
        fires,
        receivers_down: chaos.chance(0.2),
    }
}
