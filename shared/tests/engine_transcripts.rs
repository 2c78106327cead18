//! Transcript tests: one per engine behaviour, events in, effects (and state) out.

mod support;

use flowgate_shared::engine::{Effect, Event, Rejection};
use flowgate_shared::model::{
    AgentRunStatus, ApprovalDecision, ApprovalStatus, CompensationStatus, RunStatus, StepStatus,
};
use serde_json::{Map, Value, json};
use support::*;

const DIAMOND: &str = r#"
id: diamond
inputs:
  task: { type: string, default: "the feature" }
steps:
  - id: plan
    kind: agent
    workflow: architect
    message: "Plan ${{ inputs.task }}"
  - id: left
    kind: agent
    workflow: implement
    message: "Left part of ${{ steps.plan.output }}"
    depends_on: [plan]
  - id: right
    kind: agent
    workflow: implement
    message: "Right part"
    depends_on: [plan]
  - id: join
    kind: agent
    workflow: review
    message: "Review"
    depends_on: [left, right]
outputs:
  summary: "${{ steps.join.output }}"
"#;

fn inputs(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[test]
fn start_runs_only_root_steps_and_audits_it() {
    let mut h = Harness::with_inputs(DIAMOND, inputs(&[("task", json!("auth"))]));
    let effects = h.start();
    assert_eq!(h.status(), RunStatus::Running);
    assert_eq!(started_agents(&effects), vec!["plan"]);
    assert_eq!(emitted(&effects), vec!["run.started"]);
    assert_eq!(h.step("left"), StepStatus::Pending);
    assert_eq!(h.audit_kinds(), vec!["run.started", "step.started"]);
    let Effect::StartAgent { spec, attempt, .. } = &effects[1] else {
        panic!("expected StartAgent, got {effects:?}")
    };
    assert_eq!(*attempt, 1);
    assert_eq!(spec.workflow, "architect");
    assert_eq!(spec.session_name, "flowgate-r1-plan-1");
    // A second Start is harmless.
    h.send_noop(Event::Start);
}

#[test]
fn ready_steps_start_together_and_join_waits_for_both() {
    let mut h = Harness::new(DIAMOND);
    h.start();
    let effects = h.run_agent("plan", "up-plan", "the plan");
    let mut started = started_agents(&effects);
    started.sort();
    assert_eq!(
        started,
        vec!["left", "right"],
        "both branches start at once"
    );
    let effects = h.run_agent("left", "up-left", "L");
    assert!(started_agents(&effects).is_empty(), "join waits for right");
    assert_eq!(h.step("join"), StepStatus::Pending);
    let effects = h.run_agent("right", "up-right", "R");
    assert_eq!(started_agents(&effects), vec!["join"]);
    let effects = h.run_agent("join", "up-join", "all good");
    assert_eq!(h.status(), RunStatus::Succeeded);
    assert_eq!(emitted(&effects), vec!["step.completed", "run.completed"]);
    assert_eq!(h.run.outputs["summary"], json!("all good"));
    assert_eq!(h.run.wake_at, None, "a finished run needs no attention");
}

#[test]
fn agent_lifecycle_start_progress_completion() {
    let mut h = Harness::new(DIAMOND);
    h.start();
    let effects = h.agent_started("plan", "up-1");
    let Effect::PollAgent {
        upstream_run_id,
        poll,
        delay_ms,
        ..
    } = &effects[0]
    else {
        panic!("expected a poll, got {effects:?}")
    };
    assert_eq!(
        (upstream_run_id.as_str(), *poll, *delay_ms),
        ("up-1", 0, 2_000)
    );
    // Progress shows up in the run.
    h.later(2_000);
    let effects = h.observe("plan", running(0, 5_000));
    let a = h.run.steps["plan"].agent.clone().expect("agent progress");
    assert_eq!(a.tokens, 5_000);
    assert_eq!(a.upstream_status, Some(AgentRunStatus::Running));
    // The run left `pending`: the backoff restarts, this poll counting as its first.
    assert!(matches!(
        effects[0],
        Effect::PollAgent {
            poll: 1,
            delay_ms: 3_000,
            ..
        }
    ));
    // No progress: the poll interval grows, the same poll chain goes on, nothing is written.
    h.later(3_000);
    let before = h.run.clone();
    let effects = h.observe("plan", running(0, 5_000));
    assert_eq!(h.run, before, "an idle poll writes nothing");
    assert!(matches!(
        effects[0],
        Effect::PollAgent {
            poll: 1,
            delay_ms: 4_500,
            ..
        }
    ));
    h.later(4_500);
    let effects = h.agent_completes("plan", "design doc");
    assert_eq!(h.step("plan"), StepStatus::Succeeded);
    assert_eq!(h.run.steps["plan"].output, Some(json!("design doc")));
    // The design reaches the next step's message through the template.
    let msgs: Vec<String> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::StartAgent { spec, step, .. } if step == "left" => Some(spec.message.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(msgs, vec!["Left part of design doc"]);
}

#[test]
fn agent_failure_fails_the_step_and_the_run() {
    let mut h = Harness::new(DIAMOND);
    h.start();
    h.agent_started("plan", "up-1");
    let effects = h.observe("plan", failed("1 validation error"));
    assert_eq!(h.step("plan"), StepStatus::Failed);
    assert_eq!(h.status(), RunStatus::Failed);
    assert!(
        h.run.steps["plan"]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("1 validation error")
    );
    assert_eq!(emitted(&effects), vec!["step.failed", "run.failed"]);
    assert_eq!(h.step("left"), StepStatus::Cancelled);
}

#[test]
fn agent_killed_outside_flowgate_counts_as_failure() {
    let mut h = Harness::new(DIAMOND);
    h.start();
    h.agent_started("plan", "up-1");
    h.observe(
        "plan",
        flowgate_shared::engine::AgentObservation {
            status: Some(AgentRunStatus::Killed),
            ..Default::default()
        },
    );
    assert_eq!(h.step("plan"), StepStatus::Failed);
    assert!(
        h.run.steps["plan"]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("killed")
    );
}

#[test]
fn agent_start_refused_by_the_service_fails_the_attempt() {
    let mut h = Harness::new(DIAMOND);
    h.start();
    h.send(Event::AgentStartFailed {
        step: "plan".into(),
        attempt: 1,
        error: "404 Workflow 'architect' not found".into(),
    });
    assert_eq!(h.step("plan"), StepStatus::Failed);
    assert!(h.run.error.as_deref().unwrap_or("").contains("not found"));
}

const RETRYING: &str = r#"
id: retrying
steps:
  - id: build
    kind: agent
    workflow: implement
    message: build it
    timeout: 10m
    retry: { max_attempts: 3, backoff: exponential, initial_delay: 10s, max_delay: 15s }
"#;

#[test]
fn timed_out_agent_is_killed_and_retried_with_backoff() {
    let mut h = Harness::new(RETRYING);
    let effects = h.start();
    assert_eq!(
        wake(&effects),
        Some(T0 + 600_000),
        "wake for the step timeout"
    );
    h.agent_started("build", "up-1");
    h.at(600_000);
    let effects = h.tick();
    assert_eq!(kills(&effects), vec![("build".to_string(), false)]);
    assert_eq!(h.step("build"), StepStatus::Retrying);
    assert_eq!(
        h.run.steps["build"].timer_at,
        Some(T0 + 610_000),
        "first retry after 10 s"
    );
    // A late answer about the timed-out attempt changes nothing.
    h.send_noop(Event::AgentObserved {
        step: "build".into(),
        attempt: 1,
        poll: 0,
        observation: completed("late"),
    });
    h.at(610_000);
    let effects = h.tick();
    let Effect::StartAgent { attempt, spec, .. } = &effects[0] else {
        panic!("expected a restart, got {effects:?}")
    };
    assert_eq!(*attempt, 2);
    assert_eq!(
        spec.session_name, "flowgate-r1-build-2",
        "each attempt has its own session name"
    );
    assert_eq!(spec.timeout_secs, Some(600));
    // Second failure: the delay doubles but is capped at 15 s.
    h.agent_started("build", "up-2");
    h.observe("build", failed("boom"));
    assert_eq!(h.run.steps["build"].timer_at, Some(h.now + 15_000));
    h.later(15_000);
    h.tick();
    h.agent_started("build", "up-3");
    h.observe("build", failed("boom again"));
    assert_eq!(h.step("build"), StepStatus::Failed, "three attempts used");
    assert_eq!(h.status(), RunStatus::Failed);
    let retries = h
        .audit_kinds()
        .iter()
        .filter(|k| *k == "step.retrying")
        .count();
    assert_eq!(retries, 2);
}

#[test]
fn run_timeout_stops_everything() {
    let mut h = Harness::new(
        r#"
id: slow
timeout: 1h
steps:
  - id: a
    kind: agent
    workflow: implement
    message: go
"#,
    );
    let effects = h.start();
    assert_eq!(wake(&effects), Some(T0 + 3_600_000));
    h.agent_started("a", "up-1");
    h.at(3_600_000);
    let effects = h.tick();
    assert_eq!(h.status(), RunStatus::TimedOut);
    assert_eq!(h.step("a"), StepStatus::TimedOut);
    assert_eq!(kills(&effects), vec![("a".to_string(), true)]);
    assert_eq!(emitted(&effects), vec!["run.failed"]);
}

/// Found by the seeded simulation: a run that ended while its agent kill was lost (a crash
/// right after the decision was written) left the agent run working, because nothing
/// re-issued the kill of a finished run.
#[test]
fn a_lost_kill_is_issued_again_after_the_run_finished_until_confirmed() {
    let mut h = Harness::new(
        r#"
id: slow
timeout: 1h
steps:
  - id: a
    kind: agent
    workflow: implement
    message: go
"#,
    );
    h.start();
    h.agent_started("a", "up-1");
    h.at(3_600_000);
    let effects = h.tick();
    assert_eq!(h.status(), RunStatus::TimedOut);
    assert_eq!(kills(&effects), vec![("a".to_string(), true)]);
    // The kill effect is lost: the finished run stays due until it is confirmed.
    assert_eq!(h.run.pending_kills.len(), 1);
    let retry_at = h.run.pending_kills[0].retry_at;
    assert_eq!(h.run.wake_at, Some(retry_at));
    assert_eq!(h.run.due_at(), Some(retry_at), "the sweeper must find it");
    // A tick before the retry time re-issues nothing.
    h.at(3_600_000 + 1_000);
    assert!(kills(&h.tick()).is_empty());
    // The sweeper's tick after it does, and the wait backs off.
    h.now = retry_at;
    let effects = h.tick();
    assert_eq!(kills(&effects), vec![("a".to_string(), true)]);
    assert_eq!(h.run.pending_kills[0].tries, 2);
    assert!(h.run.pending_kills[0].retry_at > retry_at + 60_000);
    assert_eq!(h.status(), RunStatus::TimedOut, "the outcome stands");
    // Confirmed: nothing is due any more.
    h.send(Event::AgentKilled {
        step: "a".into(),
        attempt: 1,
    });
    assert!(h.run.pending_kills.is_empty());
    assert_eq!(h.run.wake_at, None);
    assert_eq!(h.run.due_at(), None);
}

#[test]
fn a_kill_never_confirmed_is_given_up_with_an_audit_entry() {
    let mut h = Harness::new(
        r#"
id: slow
timeout: 1h
steps:
  - id: a
    kind: agent
    workflow: implement
    message: go
"#,
    );
    h.start();
    h.agent_started("a", "up-1");
    h.at(3_600_000);
    h.tick();
    for _ in 0..100 {
        let Some(at) = h.run.wake_at else { break };
        h.now = at;
        h.tick();
    }
    assert!(h.run.pending_kills.is_empty());
    assert_eq!(h.run.wake_at, None);
    assert!(
        h.audit_kinds().iter().any(|k| k == "agent.kill_abandoned"),
        "{:?}",
        h.audit_kinds()
    );
}

const APPROVAL: &str = r#"
id: gated
inputs:
  task: { type: string, required: true }
steps:
  - id: design
    kind: agent
    workflow: architect
    message: "Design ${{ inputs.task }}"
  - id: approve
    kind: approval
    message: "Approve this design? ${{ steps.design.output }}"
    approvers: [U1, U2, U3]
    required: 2
    expires_in: 1h
    depends_on: [design]
  - id: build
    kind: agent
    workflow: implement
    message: build
    depends_on: [approve]
"#;

fn gated() -> Harness {
    let mut h = Harness::with_inputs(APPROVAL, inputs(&[("task", json!("login"))]));
    h.run.started_by = Some("U1".into());
    h.start();
    h.run_agent("design", "up-d", "use JWT");
    h
}

#[test]
fn approval_opens_with_rendered_message_and_needs_two_of_three() {
    let mut h = gated();
    assert_eq!(h.step("approve"), StepStatus::Waiting);
    let a = h.run.steps["approve"].approval.clone().expect("approval");
    assert_eq!(a.message, "Approve this design? use JWT");
    assert_eq!(a.expires_at, Some(h.now + 3_600_000));
    assert!(
        h.last
            .iter()
            .any(|e| matches!(e, Effect::RequestApproval { required: 2, .. }))
    );
    assert!(emitted(&h.last).contains(&"approval.requested".to_string()));
    h.decide_approval("approve", "U2", ApprovalDecision::Approve, None)
        .expect("U2 may approve");
    assert_eq!(h.step("approve"), StepStatus::Waiting, "one of two");
    let effects = h
        .decide_approval("approve", "U3", ApprovalDecision::Approve, Some("ship it"))
        .expect("U3 may approve");
    assert_eq!(h.step("approve"), StepStatus::Succeeded);
    assert_eq!(started_agents(&effects), vec!["build"]);
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::CloseApproval {
            status: ApprovalStatus::Approved,
            ..
        }
    )));
}

#[test]
fn approval_rejection_fails_the_run_with_the_reason() {
    let mut h = gated();
    h.decide_approval("approve", "U2", ApprovalDecision::Reject, Some("too risky"))
        .expect("accepted");
    assert_eq!(h.step("approve"), StepStatus::Failed);
    assert_eq!(h.status(), RunStatus::Failed);
    assert!(h.run.error.as_deref().unwrap_or("").contains("too risky"));
    assert_eq!(h.step("build"), StepStatus::Cancelled);
}

#[test]
fn approval_authorisation_and_duplicates() {
    let mut h = gated();
    let err = h
        .decide_approval("approve", "U9", ApprovalDecision::Approve, None)
        .unwrap_err();
    assert!(matches!(err, Rejection::NotAnApprover { .. }), "{err}");
    let err = h
        .decide_approval("approve", "U1", ApprovalDecision::Approve, None)
        .unwrap_err();
    assert!(matches!(err, Rejection::SelfApproval { .. }), "{err}");
    h.decide_approval("approve", "U2", ApprovalDecision::Approve, None)
        .expect("first click");
    let before = h.run.clone();
    // Double click: a no-op, not an error, and not counted twice.
    let effects = h
        .decide_approval("approve", "U2", ApprovalDecision::Approve, None)
        .expect("second click is harmless");
    assert!(effects.is_empty());
    assert_eq!(h.run, before);
    let err = h.try_send(Event::ApprovalDecided {
        approval_id: "nope".into(),
        by: "U2".into(),
        decision: ApprovalDecision::Approve,
        comment: None,
        groups: vec![],
    });
    assert!(matches!(err, Err(Rejection::UnknownApproval(_))));
}

#[test]
fn approval_expiry_rejects_by_default() {
    let mut h = gated();
    h.later(3_600_000);
    let effects = h.tick();
    assert_eq!(h.step("approve"), StepStatus::TimedOut);
    assert_eq!(h.status(), RunStatus::Failed);
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::CloseApproval {
            status: ApprovalStatus::Expired,
            ..
        }
    )));
    // A click after expiry is refused.
    let err = h
        .decide_approval("approve", "U2", ApprovalDecision::Approve, None)
        .unwrap_err();
    assert!(matches!(err, Rejection::ApprovalClosed { .. }), "{err}");
}

#[test]
fn approval_expiry_can_approve_or_escalate() {
    let mut h = Harness::new(
        r#"
id: lenient
steps:
  - id: ok
    kind: approval
    message: fine?
    expires_in: 10m
    on_expiry: approve
"#,
    );
    h.start();
    h.later(600_000);
    h.tick();
    assert_eq!(h.step("ok"), StepStatus::Succeeded);
    assert_eq!(h.status(), RunStatus::Succeeded);

    let mut h = Harness::new(ESCALATING);
    h.start();
    h.later(600_000);
    let effects = h.tick();
    assert_eq!(h.step("ok"), StepStatus::Waiting);
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::RequestApproval { approvers, .. } if approvers == &vec!["S-leads".to_string()]
    )));
    assert!(h.audit_kinds().contains(&"approval.escalated".to_string()));
    // The escalation group may now decide.
    h.decide_approval("ok", "S-leads", ApprovalDecision::Approve, None)
        .expect("escalation group decides");
    assert_eq!(h.status(), RunStatus::Succeeded);
    // An escalated approval that expires again is rejected.
    let mut h = Harness::new(ESCALATING);
    h.start();
    h.later(600_000);
    h.tick();
    h.later(600_000);
    h.tick();
    assert_eq!(h.step("ok"), StepStatus::TimedOut);
    assert_eq!(h.status(), RunStatus::Failed);
}

const ESCALATING: &str = r#"
id: escalating
steps:
  - id: ok
    kind: approval
    message: fine?
    approvers: [U1]
    expires_in: 10m
    on_expiry: escalate
    escalate_to: [S-leads]
"#;

const FIX_LOOP: &str = r#"
id: fixer
steps:
  - id: test
    kind: agent
    workflow: test
    message: run the tests
    continue_on_failure: true
  - id: fix
    kind: agent
    workflow: fix
    message: "fix: ${{ steps.test.output }}"
    depends_on: [test]
    when: failure
  - id: retest
    kind: agent
    workflow: test
    message: again
    depends_on: [fix]
  - id: report
    kind: notify
    message: "done"
    webhook_url: "https://example.test/hook"
    depends_on: [retest]
    when: always
"#;

#[test]
fn continue_on_failure_runs_the_failure_branch() {
    let mut h = Harness::new(FIX_LOOP);
    h.start();
    h.agent_started("test", "u1");
    let effects = h.observe("test", failed("3 tests failed"));
    assert_eq!(h.step("test"), StepStatus::Failed);
    assert_eq!(h.status(), RunStatus::Running, "the run goes on");
    assert_eq!(started_agents(&effects), vec!["fix"]);
    h.run_agent("fix", "u2", "patched");
    h.run_agent("retest", "u3", "green");
    assert_eq!(h.step("report"), StepStatus::Running);
    h.http_ok("report", Value::Null);
    assert_eq!(h.status(), RunStatus::Succeeded);
}

#[test]
fn skipped_branch_propagates_and_always_still_runs() {
    let mut h = Harness::new(FIX_LOOP);
    h.start();
    let effects = h.run_agent("test", "u1", "all green");
    assert_eq!(h.step("fix"), StepStatus::Skipped);
    assert_eq!(h.step("retest"), StepStatus::Skipped, "skip propagates");
    assert_eq!(h.step("report"), StepStatus::Running, "when: always runs");
    assert!(effects.iter().any(|e| matches!(e, Effect::Notify { .. })));
    h.http_ok("report", Value::Null);
    assert_eq!(h.status(), RunStatus::Succeeded);
}

#[test]
fn cancel_kills_agents_closes_approvals_and_waits_for_confirmation() {
    let mut h = Harness::new(
        r#"
id: parallel
steps:
  - id: a
    kind: agent
    workflow: implement
    message: a
  - id: gate
    kind: approval
    message: ok?
"#,
    );
    h.start();
    h.agent_started("a", "up-a");
    let effects = h.send(Event::CancelRequested {
        by: "api:alice".into(),
        reason: Some("wrong branch".into()),
        force: false,
    });
    assert_eq!(kills(&effects), vec![("a".to_string(), false)]);
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::CloseApproval {
            status: ApprovalStatus::Cancelled,
            ..
        }
    )));
    assert_eq!(h.status(), RunStatus::Cancelling);
    assert_eq!(
        wake(&effects),
        Some(h.now + 30_000),
        "force after the grace period"
    );
    let effects = h.send(Event::AgentKilled {
        step: "a".into(),
        attempt: 1,
    });
    assert_eq!(h.status(), RunStatus::Cancelled);
    assert_eq!(emitted(&effects), vec!["run.cancelled"]);
    let last = h.audit.last().expect("audit");
    assert_eq!(last.actor, "api:alice", "the audit says who cancelled");
    // Cancelling again is refused with a clear reason.
    let err = h
        .try_send(Event::CancelRequested {
            by: "api:alice".into(),
            reason: None,
            force: false,
        })
        .unwrap_err();
    assert!(err.to_string().contains("cancelled"), "{err}");
}

#[test]
fn cancel_forces_kills_after_the_grace_period() {
    let mut h = Harness::new(DIAMOND);
    h.start();
    h.agent_started("plan", "up-1");
    h.send(Event::CancelRequested {
        by: "api:bob".into(),
        reason: None,
        force: false,
    });
    h.later(30_000);
    let effects = h.tick();
    assert_eq!(kills(&effects), vec![("plan".to_string(), true)]);
    assert_eq!(h.status(), RunStatus::Cancelled);
}

#[test]
fn forced_cancel_finishes_at_once_and_a_late_start_is_killed() {
    let mut h = Harness::new(DIAMOND);
    h.start(); // StartAgent issued, not yet confirmed
    let effects = h.send(Event::CancelRequested {
        by: "api:bob".into(),
        reason: None,
        force: true,
    });
    assert_eq!(h.status(), RunStatus::Cancelled);
    assert_eq!(kills(&effects), vec![("plan".to_string(), true)]);
    // The start raced the cancel and got through: the orphan is killed.
    let effects = h.send(Event::AgentStarted {
        step: "plan".into(),
        attempt: 1,
        upstream_run_id: "up-late".into(),
    });
    assert!(matches!(
        &effects[0],
        Effect::KillAgent { upstream_run_id: Some(id), force: true, .. } if id == "up-late"
    ));
    assert_eq!(h.status(), RunStatus::Cancelled);
}

const COMPENSATING: &str = r#"
id: deploy
steps:
  - id: branch
    kind: http
    method: POST
    url: "https://git.example.test/branches"
    compensate: { kind: http, method: DELETE, url: "https://git.example.test/branches/${{ run.id }}" }
  - id: ticket
    kind: http
    method: POST
    url: "https://tickets.example.test/"
    depends_on: [branch]
    compensate: { kind: notify, message: "ticket withdrawn", webhook_url: "https://example.test/h" }
  - id: build
    kind: agent
    workflow: implement
    message: build
    depends_on: [ticket]
"#;

#[test]
fn failure_runs_compensations_newest_first() {
    let mut h = Harness::new(COMPENSATING);
    h.start();
    h.http_ok("branch", json!({"name": "b"}));
    h.http_ok("ticket", json!({"id": 7}));
    h.agent_started("build", "u1");
    let effects = h.observe("build", failed("compile error"));
    assert_eq!(h.status(), RunStatus::Compensating);
    let Effect::Compensate { step, action } = effects
        .iter()
        .find(|e| matches!(e, Effect::Compensate { .. }))
        .expect("a compensation")
    else {
        unreachable!()
    };
    assert_eq!(step, "ticket", "newest first");
    assert_eq!(action.kind().as_str(), "notify");
    let effects = h.send(Event::CompensationFinished {
        step: "ticket".into(),
        ok: true,
        error: None,
    });
    let Some(Effect::Compensate { step, action }) = effects
        .iter()
        .find(|e| matches!(e, Effect::Compensate { .. }))
    else {
        panic!("expected the next compensation, got {effects:?}")
    };
    assert_eq!(step, "branch");
    let flowgate_shared::definition::StepAction::Http(http) = action else {
        panic!("http compensation expected")
    };
    assert_eq!(
        http.url, "https://git.example.test/branches/r1",
        "templates rendered"
    );
    h.send(Event::CompensationFinished {
        step: "branch".into(),
        ok: false,
        error: Some("404".into()),
    });
    assert_eq!(h.status(), RunStatus::Failed);
    assert_eq!(
        h.run.steps["branch"]
            .compensation
            .as_ref()
            .map(|c| c.status),
        Some(CompensationStatus::Failed)
    );
}

#[test]
fn rollback_of_a_finished_run_compensates_and_keeps_its_outcome() {
    let mut h = Harness::new(COMPENSATING);
    h.start();
    h.http_ok("branch", Value::Null);
    h.http_ok("ticket", Value::Null);
    h.run_agent("build", "u1", "built");
    assert_eq!(h.status(), RunStatus::Succeeded);
    let effects = h.send(Event::RollbackRequested {
        by: "api:ops".into(),
        reason: Some("bad release".into()),
    });
    assert_eq!(h.status(), RunStatus::Compensating);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Compensate { step, .. } if step == "ticket"))
    );
    h.send(Event::CompensationFinished {
        step: "ticket".into(),
        ok: true,
        error: None,
    });
    h.send(Event::CompensationFinished {
        step: "branch".into(),
        ok: true,
        error: None,
    });
    assert_eq!(h.status(), RunStatus::Succeeded);
    let err = h
        .try_send(Event::RollbackRequested {
            by: "api:ops".into(),
            reason: None,
        })
        .unwrap_err();
    assert!(matches!(err, Rejection::NothingToCompensate(_)));
}

#[test]
fn feedback_reaches_a_running_agent_and_is_refused_otherwise() {
    let mut h = Harness::new(DIAMOND);
    h.start();
    let err = h
        .try_send(Event::FeedbackSent {
            step: None,
            by: "api:alice".into(),
            content: "use rust".into(),
            message_type: "user".into(),
        })
        .unwrap_err();
    assert!(
        matches!(err, Rejection::NoRunningAgentStep),
        "not started yet: {err}"
    );
    h.agent_started("plan", "up-1");
    let effects = h.send(Event::FeedbackSent {
        step: None,
        by: "api:alice".into(),
        content: "use rust".into(),
        message_type: "user".into(),
    });
    assert!(matches!(
        &effects[0],
        Effect::SendAgentMessage { upstream_run_id, content, .. } if upstream_run_id == "up-1" && content == "use rust"
    ));
    assert_eq!(
        h.audit.last().map(|a| a.kind.as_str()),
        Some("agent.feedback")
    );
    assert!(
        matches!(
            &effects[1],
            Effect::PollAgent {
                delay_ms: 2_000,
                poll: 1,
                ..
            }
        ),
        "feedback starts a fast poll chain: {effects:?}"
    );
    let err = h
        .try_send(Event::FeedbackSent {
            step: Some("join".into()),
            by: "api:alice".into(),
            content: "x".into(),
            message_type: "user".into(),
        })
        .unwrap_err();
    assert!(err.to_string().contains("not running"), "{err}");
}

#[test]
fn retry_resumes_a_failed_run_from_the_failed_step() {
    let mut h = Harness::new(DIAMOND);
    h.start();
    h.run_agent("plan", "u-plan", "plan");
    h.run_agent("left", "u-left", "L");
    h.agent_started("right", "u-right");
    h.observe("right", failed("flaky"));
    assert_eq!(h.status(), RunStatus::Failed);
    let effects = h.send(Event::RetryRequested {
        by: "api:alice".into(),
        from_step: None,
    });
    assert_eq!(h.status(), RunStatus::Running);
    assert_eq!(
        started_agents(&effects),
        vec!["right"],
        "finished steps are kept"
    );
    assert_eq!(h.step("plan"), StepStatus::Succeeded);
    let Effect::StartAgent { spec, attempt, .. } = &effects[0] else {
        panic!()
    };
    assert_eq!(
        *attempt, 2,
        "attempt numbers continue so session names stay unique"
    );
    assert_eq!(spec.session_name, "flowgate-r1-right-2");
    h.run_agent("right", "u-right2", "R");
    h.run_agent("join", "u-join", "ok");
    assert_eq!(h.status(), RunStatus::Succeeded);
    // From a named step: it and everything downstream run again.
    let mut h = Harness::new(DIAMOND);
    h.start();
    h.send(Event::CancelRequested {
        by: "a".into(),
        reason: None,
        force: true,
    });
    let err = h
        .try_send(Event::RetryRequested {
            by: "a".into(),
            from_step: Some("nope".into()),
        })
        .unwrap_err();
    assert!(matches!(err, Rejection::UnknownStep(_)));
    let effects = h.send(Event::RetryRequested {
        by: "a".into(),
        from_step: Some("plan".into()),
    });
    assert_eq!(started_agents(&effects), vec!["plan"]);
}

#[test]
fn running_runs_cannot_be_retried() {
    let mut h = Harness::new(DIAMOND);
    h.start();
    let err = h
        .try_send(Event::RetryRequested {
            by: "a".into(),
            from_step: None,
        })
        .unwrap_err();
    assert!(matches!(err, Rejection::NotRetryable { .. }));
}

#[test]
fn stale_and_duplicate_events_are_no_ops() {
    let mut h = Harness::new(DIAMOND);
    h.start();
    h.agent_started("plan", "up-1");
    // Duplicate start confirmation.
    h.send_noop(Event::AgentStarted {
        step: "plan".into(),
        attempt: 1,
        upstream_run_id: "up-1".into(),
    });
    // A poll answer for the wrong poll number (a duplicated poll message).
    h.observe("plan", running(0, 10));
    h.send_noop(Event::AgentObserved {
        step: "plan".into(),
        attempt: 1,
        poll: 0,
        observation: running(0, 99),
    });
    // Events for a step that is not running, or an attempt that does not exist.
    h.send_noop(Event::StepSucceeded {
        step: "join".into(),
        attempt: 1,
        output: Value::Null,
    });
    h.send_noop(Event::AgentObserved {
        step: "plan".into(),
        attempt: 7,
        poll: 1,
        observation: completed("x"),
    });
    h.send_noop(Event::CompensationFinished {
        step: "plan".into(),
        ok: true,
        error: None,
    });
    h.send_noop(Event::AgentKilled {
        step: "plan".into(),
        attempt: 1,
    });
    // Nothing is due.
    h.send_noop(Event::Tick);
    // After the end, everything is a no-op.
    h.agent_completes("plan", "p");
    h.send(Event::CancelRequested {
        by: "x".into(),
        reason: None,
        force: true,
    });
    h.send_noop(Event::Tick);
    h.send_noop(Event::Start);
    h.send_noop(Event::AgentObserved {
        step: "left".into(),
        attempt: 1,
        poll: 0,
        observation: completed("late"),
    });
}

#[test]
fn lost_effects_are_reissued_on_tick() {
    let mut h = Harness::new(DIAMOND);
    h.start();
    assert_eq!(
        h.run.wake_at,
        Some(T0 + 30_000),
        "recheck the unconfirmed start"
    );
    // The start's outcome was lost: after 30 s a tick asks again, same session name.
    h.later(29_000);
    h.send_noop(Event::Tick);
    h.later(1_000);
    let effects = h.tick();
    let Effect::StartAgent { spec, attempt, .. } = &effects[0] else {
        panic!("expected the start again, got {effects:?}")
    };
    assert_eq!(
        (*attempt, spec.session_name.as_str()),
        (1, "flowgate-r1-plan-1")
    );
    h.agent_started("plan", "up-1");
    // The poll message was lost. A live chain writes at least once per heartbeat (5 min), so
    // after a heartbeat, the longest interval (60 s) and ten minutes of slack, a tick
    // re-issues it.
    let polled = h.run.steps["plan"]
        .agent
        .as_ref()
        .and_then(|a| a.polled_at)
        .expect("polled");
    let lost = polled + 300_000 + 60_000 + 600_000;
    assert_eq!(h.run.wake_at, Some(lost));
    h.now = lost - 1;
    h.send_noop(Event::Tick);
    h.now = lost;
    let effects = h.tick();
    assert!(matches!(
        &effects[0],
        Effect::PollAgent {
            poll: 0,
            delay_ms: 0,
            ..
        }
    ));
}

#[test]
fn wait_http_and_notify_steps() {
    let mut h = Harness::new(
        r#"
id: mixed
steps:
  - id: pause
    kind: wait
    duration: 5m
  - id: call
    kind: http
    method: POST
    url: "https://api.example.test/deploy/${{ run.id }}"
    headers: { x-run: "${{ run.id }}" }
    body: { ref: "${{ run.workflow }}" }
    retry: { max_attempts: 2, backoff: fixed, initial_delay: 1s }
    depends_on: [pause]
  - id: tell
    kind: notify
    message: "deployed"
    slack_channel: C123
    depends_on: [call]
"#,
    );
    let effects = h.start();
    assert_eq!(h.step("pause"), StepStatus::Running);
    assert_eq!(wake(&effects), Some(T0 + 300_000));
    h.later(299_999);
    h.send_noop(Event::Tick);
    h.later(1);
    let effects = h.tick();
    let Some(Effect::CallHttp {
        url, headers, body, ..
    }) = effects
        .iter()
        .find(|e| matches!(e, Effect::CallHttp { .. }))
    else {
        panic!("expected an http call, got {effects:?}")
    };
    assert_eq!(url, "https://api.example.test/deploy/r1");
    assert_eq!(headers["x-run"], "r1");
    assert_eq!(body, &Some(json!({"ref": "mixed"})));
    h.http_err("call", "503 Service Unavailable");
    assert_eq!(h.step("call"), StepStatus::Retrying);
    h.later(1_000);
    h.tick();
    h.http_ok("call", json!({"deployed": true}));
    assert_eq!(h.run.steps["call"].output, Some(json!({"deployed": true})));
    assert!(matches!(
        h.last.iter().find(|e| matches!(e, Effect::Notify { .. })),
        Some(Effect::Notify { slack_channel: Some(c), .. }) if c == "C123"
    ));
    h.http_ok("tell", Value::Null);
    assert_eq!(h.status(), RunStatus::Succeeded);
}

#[test]
fn sessions_carry_the_conversation_to_later_steps() {
    let mut h = Harness::new(
        r#"
id: convo
steps:
  - id: design
    kind: agent
    workflow: architect
    message: design
    session: main
  - id: build
    kind: agent
    workflow: implement
    message: build
    session: main
    depends_on: [design]
"#,
    );
    h.start();
    h.agent_started("design", "u1");
    let mut obs = running(1, 10);
    obs.session_id = Some("claude-session-42".into());
    h.observe("design", obs);
    let effects = h.agent_completes("design", "done");
    let Some(Effect::StartAgent { spec, .. }) = effects
        .iter()
        .find(|e| matches!(e, Effect::StartAgent { .. }))
    else {
        panic!()
    };
    assert_eq!(spec.session_id.as_deref(), Some("claude-session-42"));
}

#[test]
fn every_transition_is_audited_with_who_and_when() {
    let mut h = gated();
    h.later(1_000);
    h.decide_approval("approve", "U2", ApprovalDecision::Approve, None)
        .expect("ok");
    h.decide_approval("approve", "U3", ApprovalDecision::Approve, None)
        .expect("ok");
    h.run_agent("build", "u-b", "built");
    let kinds = h.audit_kinds();
    for expected in [
        "run.started",
        "step.started",
        "agent.started",
        "step.succeeded",
        "approval.requested",
        "approval.decided",
        "run.completed",
    ] {
        assert!(
            kinds.contains(&expected.to_string()),
            "missing {expected} in {kinds:?}"
        );
    }
    let seqs: Vec<u64> = h.audit.iter().map(|a| a.seq).collect();
    assert_eq!(seqs, (0..h.audit.len() as u64).collect::<Vec<_>>());
    let decided: Vec<_> = h
        .audit
        .iter()
        .filter(|a| a.kind == "approval.decided")
        .collect();
    assert_eq!(decided.len(), 2);
    assert_eq!(decided[0].actor, "U2");
    assert_eq!(decided[0].at, T0 + 1_000);
    assert_eq!(h.run.audit_seq, h.audit.len() as u64);
}

#[test]
fn idle_polls_back_off_write_a_heartbeat_and_respect_the_workflow_policy() {
    let mut h = Harness::new(
        r#"
id: fixed
polling: { initial: 8s, factor: 1, max: 8s }
steps:
  - id: a
    kind: agent
    workflow: implement
    message: go
"#,
    );
    h.start();
    let effects = h.agent_started("a", "up");
    assert!(matches!(
        effects[0],
        Effect::PollAgent {
            delay_ms: 8_000,
            ..
        }
    ));
    h.later(8_000);
    h.observe("a", running(0, 10)); // progress: written
    let mut interval = 8_000;
    let mut writes = 0;
    for _ in 0..40 {
        h.later(interval as i64);
        let before = h.run.clone();
        let effects = h.send(Event::AgentObserved {
            step: "a".into(),
            attempt: 1,
            poll: 1,
            observation: running(0, 10),
        });
        let Effect::PollAgent { delay_ms, poll, .. } = &effects[0] else {
            panic!("{effects:?}")
        };
        assert_eq!((*delay_ms, *poll), (8_000, 1), "fixed policy, same chain");
        interval = *delay_ms;
        if h.run != before {
            writes += 1;
        }
    }
    // 40 idle polls over 320 s: one heartbeat write (at 5 min), not 40.
    assert_eq!(writes, 1);
}

#[test]
fn a_step_over_its_budget_is_killed_and_fails_without_retry() {
    let mut h = Harness::new(
        r#"
id: capped
steps:
  - id: a
    kind: agent
    workflow: implement
    message: go
    retry: { max_attempts: 3 }
    budget: { max_cost_usd: 1.0, max_turns: 30, max_duration: 1h }
"#,
    );
    h.start();
    h.agent_started("a", "up");
    let mut obs = running(5, 100);
    obs.cost_usd = 1.25;
    let effects = h.observe("a", obs);
    assert_eq!(kills(&effects), vec![("a".to_string(), false)]);
    assert_eq!(h.step("a"), StepStatus::Failed, "no retry for a budget");
    let err = h.run.steps["a"].error.clone().unwrap_or_default();
    assert!(err.contains("budget") && err.contains("1.0000"), "{err}");
    assert_eq!(h.status(), RunStatus::Failed);

    // The wall-clock cap is a timer.
    let mut h = Harness::new(
        r#"
id: capped
steps:
  - id: a
    kind: agent
    workflow: implement
    message: go
    budget: { max_duration: 20m }
"#,
    );
    let effects = h.start();
    assert_eq!(wake(&effects), Some(T0 + 1_200_000));
    h.agent_started("a", "up");
    h.at(1_200_000);
    h.tick();
    assert_eq!(h.step("a"), StepStatus::Failed);
    assert!(
        h.run
            .error
            .clone()
            .unwrap_or_default()
            .contains("wall-clock")
    );
}

#[test]
fn a_run_over_its_budget_stops_every_step() {
    let mut h = Harness::new(
        r#"
id: capped-run
budget: { max_turns: 10 }
steps:
  - id: a
    kind: agent
    workflow: implement
    message: a
  - id: b
    kind: agent
    workflow: implement
    message: b
"#,
    );
    h.start();
    h.agent_started("a", "up-a");
    h.agent_started("b", "up-b");
    h.observe("a", running(6, 10));
    assert_eq!(h.status(), RunStatus::Running);
    let effects = h.observe("b", running(5, 10));
    assert_eq!(h.status(), RunStatus::Failed);
    let mut killed = kills(&effects);
    killed.sort();
    assert_eq!(killed.len(), 2, "both agent runs stopped: {killed:?}");
    assert!(
        h.run
            .error
            .clone()
            .unwrap_or_default()
            .contains("11 agent turns")
    );
}

#[test]
fn a_run_can_continue_an_earlier_session() {
    let mut h = Harness::new(DIAMOND);
    h.run.resume_session_id = Some("claude-earlier".into());
    let effects = h.start();
    let Effect::StartAgent { spec, .. } = &effects[1] else {
        panic!("{effects:?}")
    };
    assert_eq!(spec.session_id.as_deref(), Some("claude-earlier"));
    let effects = h.run_agent("plan", "u", "p");
    for e in &effects {
        if let Effect::StartAgent { spec, .. } = e {
            assert_eq!(
                spec.session_id, None,
                "only the first agent step continues it"
            );
        }
    }
}

/// By default progress is recorded at most once per heartbeat (5 minutes): polls are there to
/// catch a change of status, and reads show progress live. Growing tokens back the interval
/// off like any poll; only a status change restarts the backoff.
#[test]
fn growing_tokens_are_written_every_five_minutes_and_only_a_status_change_restarts_the_backoff() {
    let mut h = Harness::new(DIAMOND);
    h.start();
    h.agent_started("plan", "up");
    h.later(2_000);
    let before = h.run.clone();
    let effects = h.observe("plan", running(0, 100)); // pending → running: backoff restarts
    assert_ne!(h.run, before, "a change of status is recorded at once");
    let Effect::PollAgent {
        delay_ms: mut delay,
        poll: 1,
        ..
    } = effects[0].clone()
    else {
        panic!("{effects:?}")
    };
    assert_eq!(
        delay, 3_000,
        "this poll counts as the first of the new backoff"
    );
    let (mut delays, mut recorded_after, mut waited) = (Vec::new(), Vec::new(), 0);
    for i in 2..=14u64 {
        h.later(delay as i64);
        waited += delay;
        let before = h.run.clone();
        let poll = h.run.steps["plan"].agent.as_ref().map_or(0, |a| a.polls);
        let effects = h.send(Event::AgentObserved {
            step: "plan".into(),
            attempt: 1,
            poll,
            observation: running(0, 100 * i),
        });
        if h.run != before {
            recorded_after.push(waited);
        }
        let Effect::PollAgent { delay_ms, .. } = &effects[0] else {
            panic!("{effects:?}")
        };
        delay = *delay_ms;
        delays.push(delay);
    }
    // The backoff goes on from the last recorded poll: interval = recorded + elapsed × 0.5.
    assert_eq!(
        delays,
        vec![
            4_500, 6_750, 10_125, 15_187, 22_781, 34_171, 51_257, 60_000, 60_000, 60_000, 60_000,
            60_000, 60_000
        ]
    );
    assert_eq!(
        recorded_after,
        vec![327_771],
        "progress only once 5 minutes had passed since the last write"
    );
    assert_eq!(
        h.run.steps["plan"].agent.as_ref().map(|a| a.tokens),
        Some(1_200),
        "the record holds the tokens of the poll that recorded them (the 12th), not newer ones"
    );
}

#[test]
fn a_tick_starts_a_run_whose_start_message_was_lost() {
    let mut h = Harness::new(DIAMOND);
    assert_eq!(h.run.wake_at, Some(T0), "a new run needs attention at once");
    let effects = h.tick();
    assert_eq!(h.status(), RunStatus::Running);
    assert_eq!(started_agents(&effects), vec!["plan"]);
}

/// Budgets are checked against recorded progress, so progress that crosses one is recorded,
/// and acted on, at once, however long `progress_every` is.
#[test]
fn progress_crossing_a_budget_is_recorded_at_once_whatever_progress_every_says() {
    let mut h = Harness::new(
        r#"
id: capped
polling: { initial: 10s, factor: 1, max: 10s, progress_every: 5m }
steps:
  - id: a
    kind: agent
    workflow: implement
    message: go
    budget: { max_turns: 5 }
"#,
    );
    h.start();
    h.agent_started("a", "up");
    h.later(10_000);
    h.observe("a", running(1, 100)); // the status changes: recorded at once
    h.later(10_000);
    let before = h.run.clone();
    let effects = h.observe("a", running(3, 300));
    assert_eq!(
        h.run, before,
        "under the cap and within progress_every: not recorded"
    );
    assert!(kills(&effects).is_empty());
    h.later(10_000);
    let effects = h.observe("a", running(6, 600));
    assert_eq!(kills(&effects), vec![("a".to_string(), false)]);
    assert_eq!(h.step("a"), StepStatus::Failed);
    assert_eq!(h.run.steps["a"].agent.as_ref().map(|a| a.turns), Some(6));
}

#[test]
fn progress_every_records_progress_at_most_that_often_and_a_change_of_status_at_once() {
    let mut h = Harness::new(
        r#"
id: quiet
polling: { initial: 10s, factor: 1, max: 10s, progress_every: 1m }
steps:
  - id: a
    kind: agent
    workflow: implement
    message: go
"#,
    );
    h.start();
    h.agent_started("a", "up");
    h.later(10_000);
    h.observe("a", running(1, 100)); // the status changes: recorded at once
    let recorded = |h: &Harness| h.run.steps["a"].agent.as_ref().map_or(0, |a| a.turns);
    assert_eq!(recorded(&h), 1);
    let mut writes = 0;
    for turn in 2..=7u32 {
        h.later(10_000);
        let before = h.run.clone();
        let effects = h.observe("a", running(turn, 100 * u64::from(turn)));
        assert!(
            matches!(effects[..], [Effect::PollAgent { .. }]),
            "polling goes on: {effects:?}"
        );
        if h.run != before {
            writes += 1;
        }
        if turn < 7 {
            assert_eq!(
                recorded(&h),
                1,
                "turn {turn}: within the minute, not recorded"
            );
        }
    }
    assert_eq!(writes, 1, "one progress write in a minute of polls");
    assert_eq!(
        recorded(&h),
        7,
        "a minute on, the latest progress is recorded"
    );
    h.later(10_000);
    h.observe("a", completed("done")); // a status change: at once
    assert_eq!(h.step("a"), StepStatus::Succeeded);
    assert_eq!(h.status(), RunStatus::Succeeded);
}
