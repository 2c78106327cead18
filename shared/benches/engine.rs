//! Engine throughput on a 20-step DAG: how many decisions per second one core makes.
//!
//! The workload is a whole run replayed through `decide`: start, then for every agent step a
//! start confirmation, five progress polls and a completion, with approvals and waits between.
//! Criterion reports the throughput in decisions (elements) per second.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowgate_shared::definition::{
    AgentAction, ApprovalAction, RetryPolicy, StepAction, StepDef, When, WorkflowDefinition,
};
use flowgate_shared::duration::DurationSpec;
use flowgate_shared::engine::{AgentObservation, Effect, Event, decide, decide_mut};
use flowgate_shared::model::{AgentRunStatus, ApprovalDecision, Millis, Run};

/// Five layers of four steps; every step depends on two steps of the layer before. One step
/// per layer after the first is an approval, the rest are agent runs.
fn twenty_step_dag() -> WorkflowDefinition {
    let mut steps = Vec::new();
    for layer in 0..5 {
        for i in 0..4 {
            let id = format!("l{layer}s{i}");
            let depends_on = if layer == 0 {
                vec![]
            } else {
                vec![
                    format!("l{}s{}", layer - 1, i),
                    format!("l{}s{}", layer - 1, (i + 1) % 4),
                ]
            };
            let action = if layer > 0 && i == 3 {
                StepAction::Approval(ApprovalAction {
                    message: "Approve ${{ steps.l0s0.output }}?".into(),
                    approvers: vec!["alice".into()],
                    required: 1,
                    expires_in: Some(DurationSpec::from_secs(3_600)),
                    on_expiry: Default::default(),
                    escalate_to: vec![],
                    escalate_after: None,
                    remind_every: None,
                    retry_step: None,
                    slack_channel: None,
                })
            } else {
                StepAction::Agent(AgentAction {
                    workflow: "implement".into(),
                    message: "Implement part ${{ inputs.part }} after ${{ steps.l0s0.output }}"
                        .into(),
                    max_turns: Some(50),
                    session: None,
                    repository_url: Some("https://github.com/acme/app".into()),
                    git_branch: None,
                    budget: None,
                })
            };
            steps.push(StepDef {
                id,
                name: None,
                action,
                depends_on,
                when: When::Success,
                timeout: Some(DurationSpec::from_secs(1_800)),
                retry: Some(RetryPolicy {
                    max_attempts: 3,
                    backoff: Default::default(),
                    initial_delay: DurationSpec::from_secs(5),
                    max_delay: DurationSpec::from_secs(60),
                }),
                continue_on_failure: false,
                compensate: None,
            });
        }
    }
    WorkflowDefinition {
        id: "bench".into(),
        name: None,
        description: None,
        inputs: BTreeMap::new(),
        steps,
        triggers: vec![],
        notifications: vec![],
        timeout: Some(DurationSpec::from_secs(86_400)),
        outputs: BTreeMap::new(),
        polling: None,
        budget: None,
        concurrency: None,
    }
}

/// Drive a run to the end once, recording every event with its time.
fn script(def: &WorkflowDefinition, initial: &Run) -> Vec<(Event, Millis)> {
    let mut run = initial.clone();
    let mut now: Millis = 0;
    let mut script = Vec::new();
    let mut queue = vec![Event::Start];
    let mut polls: BTreeMap<String, u32> = BTreeMap::new();
    while let Some(event) = queue.pop() {
        now += 1_000;
        let d = decide(&run, def, &event, now).expect("accepted");
        script.push((event, now));
        run = d.run;
        for e in d.effects {
            match e {
                Effect::StartAgent { step, attempt, .. } => queue.push(Event::AgentStarted {
                    upstream_run_id: format!("up-{step}"),
                    step,
                    attempt,
                }),
                Effect::PollAgent {
                    step,
                    attempt,
                    poll,
                    ..
                } => {
                    let n = polls.entry(step.clone()).or_default();
                    *n += 1;
                    let done = *n > 5;
                    queue.push(Event::AgentObserved {
                        step,
                        attempt,
                        poll,
                        observation: AgentObservation {
                            status: Some(if done {
                                AgentRunStatus::Completed
                            } else {
                                AgentRunStatus::Running
                            }),
                            turns: *n,
                            tokens: u64::from(*n) * 1_000,
                            cost_usd: f64::from(*n) * 0.01,
                            output: done.then(|| "done".to_string()),
                            ..Default::default()
                        },
                    });
                }
                Effect::RequestApproval { approval_id, .. } => queue.push(Event::ApprovalDecided {
                    approval_id,
                    by: "alice".into(),
                    decision: ApprovalDecision::Approve,
                    comment: None,
                    groups: vec![],
                }),
                _ => {}
            }
        }
        if queue.is_empty() && !run.status.is_terminal() {
            queue.push(Event::Tick);
        }
    }
    assert!(run.status.is_terminal(), "the scripted run finishes");
    script
}

fn bench(c: &mut Criterion) {
    let def = twenty_step_dag();
    let mut inputs = serde_json::Map::new();
    inputs.insert("part".into(), "A".into());
    let initial = Run::new("bench-run", &def, 1, inputs, 0);
    let script = script(&def, &initial);
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(script.len() as u64));
    println!("engine bench: {} decisions per 20-step run", script.len());
    group.bench_function("20-step DAG, decide_mut", |b| {
        b.iter(|| {
            let mut run = initial.clone();
            for (event, now) in &script {
                black_box(decide_mut(&mut run, &def, event, *now).expect("accepted"));
            }
            run
        })
    });
    // The copying form, as a caller that keeps the old run (e.g. to compare) would use it.
    group.bench_function("20-step DAG, copying decide", |b| {
        b.iter(|| {
            let mut run = initial.clone();
            for (event, now) in &script {
                run = decide(black_box(&run), &def, event, *now)
                    .expect("accepted")
                    .run;
            }
            run
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
