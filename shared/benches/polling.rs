//! Status polls, queue messages (sent, and handed back by a poll chain that goes on), store
//! writes and detection lag for a 10-minute agent run,
//! fixed 8 s polling against adaptive polling, through the real engine on a virtual clock.
//!
//! The agent is scripted like the real service: pending for 1 s, then running, its token count
//! growing every second and a turn every 45 s, then completed. Each policy is run for every run
//! length from 600 s to 660 s (so the completion falls at every point of a poll interval) and
//! the table reports the means and the worst detection lag. Run with
//! `cargo bench -p flowgate-shared --bench polling`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use flowgate_shared::definition::{
    AgentAction, PollingPolicy, StepAction, StepDef, When, WorkflowDefinition,
};
use flowgate_shared::duration::DurationSpec;
use flowgate_shared::engine::{AgentObservation, Effect, Event, decide_mut};
use flowgate_shared::model::{AgentRunStatus, Millis, Run, RunStatus};

fn definition(polling: PollingPolicy) -> WorkflowDefinition {
    WorkflowDefinition {
        id: "poll-bench".into(),
        name: None,
        description: None,
        inputs: BTreeMap::new(),
        steps: vec![StepDef {
            id: "implement".into(),
            name: None,
            action: StepAction::Agent(AgentAction {
                workflow: "implement".into(),
                message: "build it".into(),
                max_turns: Some(50),
                session: None,
                repository_url: None,
                git_branch: None,
                budget: None,
            }),
            depends_on: vec![],
            when: When::Success,
            timeout: None,
            retry: None,
            continue_on_failure: false,
            compensate: None,
        }],
        triggers: vec![],
        notifications: vec![],
        timeout: None,
        outputs: BTreeMap::new(),
        polling: Some(polling),
        budget: None,
        concurrency: None,
    }
}

#[derive(Default)]
struct Tally {
    polls: u64,
    /// Messages sent (the start, wake-ups, each new poll chain).
    messages: u64,
    /// Polls whose chain went on in the same message, handed back to the queue.
    hand_backs: u64,
    writes: u64,
    lag_ms: Millis,
}

/// What the scripted agent reports at `t` ms after it was started.
fn observe(t: Millis, run_ms: Millis) -> AgentObservation {
    const PENDING_MS: Millis = 1_000;
    let status = if t < PENDING_MS {
        AgentRunStatus::Pending
    } else if t < PENDING_MS + run_ms {
        AgentRunStatus::Running
    } else {
        AgentRunStatus::Completed
    };
    let running_ms = (t - PENDING_MS).clamp(0, run_ms);
    AgentObservation {
        status: Some(status),
        turns: (running_ms / 45_000) as u32,
        tokens: (running_ms / 1_000) as u64 * 180,
        cost_usd: if status == AgentRunStatus::Completed {
            0.72
        } else {
            0.0
        },
        output: (status == AgentRunStatus::Completed).then(|| "done".into()),
        ..Default::default()
    }
}

/// Events due at a time, in time order (a stand-in for the delayed work queue).
#[derive(Default)]
struct DelayQueue {
    heap: BinaryHeap<Reverse<(Millis, u64)>>,
    events: BTreeMap<u64, Event>,
    seq: u64,
}

impl DelayQueue {
    fn push(&mut self, at: Millis, e: Event) {
        self.seq += 1;
        self.events.insert(self.seq, e);
        self.heap.push(Reverse((at, self.seq)));
    }

    fn pop(&mut self) -> Option<(Millis, Event)> {
        let Reverse((at, id)) = self.heap.pop()?;
        Some((at, self.events.remove(&id)?))
    }
}

fn simulate(polling: &PollingPolicy, run_ms: Millis) -> Tally {
    let def = definition(polling.clone());
    let mut run = Run::new("bench", &def, 1, Default::default(), 0);
    let mut tally = Tally::default();
    let mut queue = DelayQueue::default();
    queue.push(0, Event::Start);
    tally.messages += 1;
    let mut started_at: Option<Millis> = None;
    while let Some((now, mut event)) = queue.pop() {
        // The chain this poll's message belongs to: a next poll of the same chain is the same
        // message handed back.
        let mut chain = None;
        if let Event::AgentObserved {
            observation, poll, ..
        } = &mut event
        {
            tally.polls += 1;
            chain = Some(*poll);
            *observation = observe(now - started_at.unwrap_or(0), run_ms);
        }
        let mut work = vec![event];
        while let Some(e) = work.pop() {
            let changes = decide_mut(&mut run, &def, &e, now).expect("accepted");
            tally.writes += u64::from(changes.changed);
            for effect in changes.effects {
                match effect {
                    Effect::StartAgent { step, attempt, .. } => {
                        started_at = Some(now);
                        work.push(Event::AgentStarted {
                            step,
                            attempt,
                            upstream_run_id: "up".into(),
                        });
                    }
                    Effect::PollAgent {
                        step,
                        attempt,
                        poll,
                        delay_ms,
                        ..
                    } => {
                        if chain.take() == Some(poll) {
                            tally.hand_backs += 1;
                        } else {
                            tally.messages += 1;
                        }
                        let e = Event::AgentObserved {
                            step,
                            attempt,
                            poll,
                            observation: AgentObservation::default(),
                        };
                        queue.push(now + delay_ms as Millis, e);
                    }
                    Effect::ScheduleWake { at } => {
                        tally.messages += 1;
                        queue.push(at, Event::Tick);
                    }
                    _ => {}
                }
            }
        }
        if run.status.is_terminal() {
            assert_eq!(run.status, RunStatus::Succeeded);
            let done = started_at.unwrap_or(0) + 1_000 + run_ms;
            tally.lag_ms = run.completed_at.unwrap_or(now) - done;
            break;
        }
    }
    tally
}

fn main() {
    let policies = [
        (
            "fixed 8 s",
            PollingPolicy {
                initial: DurationSpec::from_secs(8),
                factor: 1.0,
                max: DurationSpec::from_secs(8),
                progress_every: None,
            },
        ),
        (
            "adaptive 2 s ×1.5 → 60 s (default)",
            PollingPolicy::default(),
        ),
        (
            "adaptive 2 s ×2 → 60 s",
            PollingPolicy {
                initial: DurationSpec::from_secs(2),
                factor: 2.0,
                max: DurationSpec::from_secs(60),
                progress_every: None,
            },
        ),
        (
            "adaptive 2 s ×1.5 → 30 s",
            PollingPolicy {
                initial: DurationSpec::from_secs(2),
                factor: 1.5,
                max: DurationSpec::from_secs(30),
                progress_every: None,
            },
        ),
        (
            "default, progress every minute",
            PollingPolicy {
                progress_every: Some(DurationSpec::from_secs(60)),
                ..PollingPolicy::default()
            },
        ),
    ];
    println!("10-minute agent run (run lengths 600-660 s, 61 cases each), virtual clock:\n");
    println!(
        "| polling | status polls | queue messages sent | hand-backs | store writes | mean lag | worst lag |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut fixed_polls = 0.0;
    for (name, policy) in &policies {
        let cases: Vec<Tally> = (600..=660).map(|s| simulate(policy, s * 1_000)).collect();
        let n = cases.len() as f64;
        let mean = |f: &dyn Fn(&Tally) -> f64| cases.iter().map(f).sum::<f64>() / n;
        let polls = mean(&|t| t.polls as f64);
        let messages = mean(&|t| t.messages as f64);
        let hand_backs = mean(&|t| t.hand_backs as f64);
        let writes = mean(&|t| t.writes as f64);
        let lag = mean(&|t| t.lag_ms as f64) / 1_000.0;
        let worst = cases.iter().map(|t| t.lag_ms).max().unwrap_or(0) as f64 / 1_000.0;
        if fixed_polls == 0.0 {
            fixed_polls = polls;
        }
        println!(
            "| {name} | {polls:.1} ({:.1}x fewer) | {messages:.1} | {hand_backs:.1} | {writes:.1} | {lag:.1} s | {worst:.1} s |",
            fixed_polls / polls
        );
    }
}
