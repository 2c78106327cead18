//! Transcript tests for approval gates: retry with feedback, skip, cancel, authorisation,
//! N of M, reminders, timed escalation, budget gates (`on_exceed: ask`), and the definition
//! checks behind them.
#![allow(clippy::unwrap_used)]

mod support;

use flowgate_shared::definition::{Problem, StepAction, parse_definition};
use flowgate_shared::engine::{
    AgentObservation, AgentStartSpec, Effect, Event, Rejection, decide_mut, next_timer,
};
use flowgate_shared::model::{
    AgentRunStatus, ApprovalDecision, ApprovalKind, ApprovalStatus, Millis, RunStatus, StepStatus,
};
use serde_json::json;
use support::*;

const MINUTE: Millis = 60_000;
const HOUR: Millis = 60 * MINUTE;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Decide on an approval by id (a step's gate or the run's budget gate), with the groups the
/// adapter resolved for `by`.
fn decide_id(
    h: &mut Harness,
    approval_id: &str,
    by: &str,
    decision: ApprovalDecision,
    comment: Option<&str>,
    groups: &[&str],
) -> Result<Vec<Effect>, Rejection> {
    h.try_send(decided(approval_id, by, decision, comment, groups))
}

fn decided(
    approval_id: &str,
    by: &str,
    decision: ApprovalDecision,
    comment: Option<&str>,
    groups: &[&str],
) -> Event {
    Event::ApprovalDecided {
        approval_id: approval_id.into(),
        by: by.into(),
        decision,
        comment: comment.map(str::to_string),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

/// The id of the approval currently on `step`.
fn approval_of(h: &Harness, step: &str) -> String {
    h.run.steps[step]
        .approval
        .as_ref()
        .unwrap_or_else(|| panic!("{step} has no approval"))
        .id
        .clone()
}

/// The id of the run's budget gate.
fn budget_gate_id(h: &Harness) -> String {
    h.run
        .budget_gate
        .as_ref()
        .expect("a budget gate is open")
        .approval
        .id
        .clone()
}

/// `(approval_id, status)` of every `CloseApproval` effect.
fn closes(effects: &[Effect]) -> Vec<(String, ApprovalStatus)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::CloseApproval {
                approval_id,
                status,
                ..
            } => Some((approval_id.clone(), *status)),
            _ => None,
        })
        .collect()
}

/// `(approval_id, approvers, escalation)` of every `RequestApproval` effect.
fn requests(effects: &[Effect]) -> Vec<(String, Vec<String>, bool)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::RequestApproval {
                approval_id,
                approvers,
                escalation,
                ..
            } => Some((approval_id.clone(), approvers.clone(), *escalation)),
            _ => None,
        })
        .collect()
}

/// Reminder numbers of every `RemindApproval` effect.
fn reminders(effects: &[Effect]) -> Vec<u32> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::RemindApproval { reminder, .. } => Some(*reminder),
            _ => None,
        })
        .collect()
}

/// The start request for `step` among `effects`: `(attempt, spec)`.
fn start_of(effects: &[Effect], step: &str) -> (u32, AgentStartSpec) {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::StartAgent {
                step: s,
                attempt,
                spec,
                ..
            } if s == step => Some((*attempt, spec.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no StartAgent for {step} in {effects:?}"))
}

fn count_audit(h: &Harness, kind: &str) -> usize {
    h.audit.iter().filter(|a| a.kind == kind).count()
}

/// A live agent run's progress with this total cost (of the current attempt).
fn spending(cost_usd: f64, turns: u32) -> AgentObservation {
    AgentObservation {
        status: Some(AgentRunStatus::Running),
        turns,
        tokens: 100 * u64::from(turns) + 1,
        cost_usd,
        ..Default::default()
    }
}

fn with_session(obs: AgentObservation, session_id: &str) -> AgentObservation {
    AgentObservation {
        session_id: Some(session_id.into()),
        ..obs
    }
}

/// Assert a refused event leaves the run exactly as it was (on the engine's in-place path too).
fn assert_refused_untouched(h: &Harness, e: Event) -> Rejection {
    let mut copy = h.run.clone();
    let err = decide_mut(&mut copy, &h.def, &e, h.now).expect_err("the event must be refused");
    assert_eq!(copy, h.run, "a refused {e:?} must not touch the run");
    err
}

// ---------------------------------------------------------------------------------------------
// 1. Retry with feedback
// ---------------------------------------------------------------------------------------------

const DESIGN_REVIEW: &str = r#"
id: design-review
steps:
  - id: architect
    kind: agent
    workflow: architect
    message: "Design the storage layer"
  - id: review
    kind: approval
    message: "Approve this design? ${{ steps.architect.output }}"
    approvers: [U0REVIEW1, U0REVIEW2]
    depends_on: [architect]
  - id: implement
    kind: agent
    workflow: implement
    message: "Build ${{ steps.architect.output }}"
    depends_on: [review]
"#;

/// The design is done (with a captured agent session) and the review is open.
fn design_under_review() -> Harness {
    let mut h = Harness::new(DESIGN_REVIEW);
    h.start();
    h.agent_started("architect", "up-arch-1");
    h.later(1_000);
    h.observe(
        "architect",
        with_session(completed("use sqlite"), "sess-arch"),
    );
    assert_eq!(h.step("review"), StepStatus::Waiting);
    h
}

#[test]
fn retry_with_feedback_reruns_the_agent_in_its_session_and_asks_again() {
    let mut h = design_under_review();
    let first = approval_of(&h, "review");
    assert_eq!(first, "r1.review.1");
    h.later(1_000);
    let effects = decide_id(
        &mut h,
        &first,
        "U0REVIEW1",
        ApprovalDecision::Retry,
        Some("use postgres"),
        &[],
    )
    .expect("an approver may ask for a retry");

    // The gate closes as retried.
    assert_eq!(
        closes(&effects),
        vec![(first.clone(), ApprovalStatus::Retried)]
    );
    let decided: Vec<_> = h
        .audit
        .iter()
        .filter(|a| a.kind == "approval.decided")
        .collect();
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0].actor, "U0REVIEW1");
    assert_eq!(decided[0].data["status"], json!("retried"));
    assert_eq!(decided[0].data["comment"], json!("use postgres"));
    assert!(
        h.audit_kinds()
            .contains(&"step.retry_with_feedback".to_string())
    );

    // The architect runs again: a new attempt, the feedback at the end of its message, in the
    // conversation of the attempt being redone.
    assert_eq!(started_agents(&effects), vec!["architect"]);
    assert_eq!(h.step("architect"), StepStatus::Running);
    assert_eq!(h.run.steps["architect"].attempt, 2);
    let (attempt, spec) = start_of(&effects, "architect");
    assert_eq!(attempt, 2);
    assert_eq!(spec.session_name, "flowgate-r1-architect-2");
    assert!(
        spec.message.starts_with("Design the storage layer"),
        "{}",
        spec.message
    );
    assert!(spec.message.ends_with("use postgres"), "{}", spec.message);
    assert!(
        spec.message.contains("U0REVIEW1"),
        "the feedback names who gave it: {}",
        spec.message
    );
    assert_eq!(spec.session_id.as_deref(), Some("sess-arch"));
    assert_eq!(
        h.run.steps["architect"]
            .agent
            .as_ref()
            .and_then(|a| a.session_id.as_deref()),
        Some("sess-arch")
    );
    // The spend of the first attempt is not forgotten.
    assert!(
        (h.run.cost_usd() - 0.5).abs() < 1e-9,
        "cost {}",
        h.run.cost_usd()
    );

    // The review waits for the new design; nothing downstream started.
    assert_eq!(h.step("review"), StepStatus::Pending);
    assert_eq!(h.step("implement"), StepStatus::Pending);
    assert_eq!(h.status(), RunStatus::Running);

    h.later(1_000);
    let effects = h.agent_started("architect", "up-arch-2");
    assert!(started_agents(&effects).is_empty());
    h.later(1_000);
    let effects = h.agent_completes("architect", "use postgres 16");
    // A new approval (attempt 2) is asked, with the new design; implement still waits.
    let second = approval_of(&h, "review");
    assert_eq!(second, "r1.review.2");
    assert_ne!(second, first);
    let asked = requests(&effects);
    assert_eq!(asked.len(), 1, "{effects:?}");
    assert_eq!(asked[0].0, second);
    assert!(!asked[0].2, "a fresh request, not an escalation");
    assert_eq!(
        h.run.steps["review"].approval.as_ref().unwrap().message,
        "Approve this design? use postgres 16"
    );
    assert!(started_agents(&effects).is_empty());
    assert_eq!(h.step("implement"), StepStatus::Pending);
    assert_eq!(h.step("review"), StepStatus::Waiting);
    assert_eq!(
        count_audit(&h, "step.started"),
        4,
        "architect x2, review x2"
    );

    // This time it is approved and the build starts from the new design.
    let effects = decide_id(
        &mut h,
        &second,
        "U0REVIEW2",
        ApprovalDecision::Approve,
        None,
        &[],
    )
    .unwrap();
    let (_, spec) = start_of(&effects, "implement");
    assert_eq!(spec.message, "Build use postgres 16");
    assert!(
        !spec.message.contains("Feedback"),
        "feedback goes only to the step that was retried"
    );
    h.run_agent("implement", "up-impl", "built");
    assert_eq!(h.status(), RunStatus::Succeeded);
}

#[test]
fn retry_needs_feedback_and_a_refusal_changes_nothing() {
    let mut h = design_under_review();
    let id = approval_of(&h, "review");
    for comment in [None, Some(""), Some("   ")] {
        let err = assert_refused_untouched(
            &h,
            decided(&id, "U0REVIEW1", ApprovalDecision::Retry, comment, &[]),
        );
        assert!(
            matches!(
                &err,
                Rejection::CommentRequired {
                    decision: ApprovalDecision::Retry,
                    ..
                }
            ),
            "{err}"
        );
    }
    // The gate is still open and the same person may still decide.
    assert_eq!(
        h.run.steps["review"].approval.as_ref().unwrap().status,
        ApprovalStatus::Pending
    );
    assert!(
        h.run.steps["review"]
            .approval
            .as_ref()
            .unwrap()
            .decisions
            .is_empty()
    );
    decide_id(
        &mut h,
        &id,
        "U0REVIEW1",
        ApprovalDecision::Approve,
        None,
        &[],
    )
    .expect("a refused retry did not count as a decision");
    assert_eq!(h.step("implement"), StepStatus::Running);
}

#[test]
fn a_retried_approval_stays_visible_as_retried_and_late_clicks_are_closed() {
    let mut h = design_under_review();
    let id = approval_of(&h, "review");
    decide_id(
        &mut h,
        &id,
        "U0REVIEW1",
        ApprovalDecision::Retry,
        Some("use postgres"),
        &[],
    )
    .unwrap();
    // Until the gate is asked again, the run still shows how the last one ended.
    let (step, a) = h
        .run
        .approval(&id)
        .expect("the retried approval is still part of the run");
    assert_eq!(step, Some("review"));
    assert_eq!(a.status, ApprovalStatus::Retried);
    assert_eq!(a.decisions.len(), 1);
    // A second approver clicking on the old request learns it is closed (409), not unknown.
    let err = decide_id(
        &mut h,
        &id,
        "U0REVIEW2",
        ApprovalDecision::Approve,
        None,
        &[],
    )
    .unwrap_err();
    assert!(matches!(err, Rejection::ApprovalClosed { .. }), "{err}");
}

#[test]
fn retry_closes_other_open_approvals_it_resets() {
    // Two gates on the same design: a retry from one re-runs the design, so the other
    // gate's question is obsolete and its request must be closed.
    let mut h = Harness::new(
        r#"
id: two-reviews
steps:
  - id: architect
    kind: agent
    workflow: architect
    message: design
  - id: review
    kind: approval
    message: "design ok?"
    depends_on: [architect]
  - id: security
    kind: approval
    message: "secure?"
    depends_on: [architect]
"#,
    );
    h.start();
    h.run_agent("architect", "up-1", "d1");
    let review = approval_of(&h, "review");
    let security = approval_of(&h, "security");
    let effects = decide_id(
        &mut h,
        &review,
        "U0REVIEW1",
        ApprovalDecision::Retry,
        Some("smaller"),
        &[],
    )
    .unwrap();
    assert_eq!(h.step("security"), StepStatus::Pending);
    let closed = closes(&effects);
    assert!(
        closed
            .iter()
            .any(|(id, s)| id == &security && *s != ApprovalStatus::Pending),
        "the security request is closed too: {closed:?}"
    );
    let err = decide_id(
        &mut h,
        &security,
        "U0SEC",
        ApprovalDecision::Approve,
        None,
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(err, Rejection::ApprovalClosed { .. }),
        "a click on the obsolete request is refused as closed: {err}"
    );
}

#[test]
fn retry_step_names_the_agent_step_to_run_again() {
    let mut h = Harness::new(
        r#"
id: plan-code-review
steps:
  - id: plan
    kind: agent
    workflow: architect
    message: "plan it"
  - id: code
    kind: agent
    workflow: implement
    message: "code ${{ steps.plan.output }}"
    depends_on: [plan]
  - id: review
    kind: approval
    message: ok?
    depends_on: [code]
    retry_step: plan
"#,
    );
    h.start();
    h.agent_started("plan", "up-p1");
    h.observe("plan", with_session(completed("plan A"), "sess-plan"));
    h.agent_started("code", "up-c1");
    h.observe("code", with_session(completed("code A"), "sess-code"));
    let id = approval_of(&h, "review");
    let effects = decide_id(
        &mut h,
        &id,
        "U0LEAD",
        ApprovalDecision::Retry,
        Some("split the plan in two"),
        &[],
    )
    .unwrap();
    // Not the nearest agent step (code) but the one named.
    assert_eq!(started_agents(&effects), vec!["plan"]);
    let (attempt, spec) = start_of(&effects, "plan");
    assert_eq!(attempt, 2);
    assert!(spec.message.ends_with("split the plan in two"));
    assert_eq!(spec.session_id.as_deref(), Some("sess-plan"));
    assert_eq!(h.step("code"), StepStatus::Pending);
    assert_eq!(h.step("review"), StepStatus::Pending);
    // Downstream steps run again afterwards, without the feedback.
    h.agent_started("plan", "up-p2");
    let effects = h.agent_completes("plan", "plan B");
    let (attempt, spec) = start_of(&effects, "code");
    assert_eq!(attempt, 2);
    assert_eq!(spec.message, "code plan B");
}

#[test]
fn retry_is_not_offered_without_an_agent_step_before_the_gate() {
    let mut h = Harness::new(
        r#"
id: lonely
steps:
  - id: ping
    kind: notify
    webhook_url: "https://example.test/hook"
    message: hi
  - id: gate
    kind: approval
    message: go?
    depends_on: [ping]
"#,
    );
    h.start();
    h.http_ok("ping", serde_json::Value::Null);
    let id = approval_of(&h, "gate");
    let err = assert_refused_untouched(
        &h,
        decided(&id, "U0LEAD", ApprovalDecision::Retry, Some("again"), &[]),
    );
    assert!(
        matches!(
            &err,
            Rejection::DecisionNotOffered {
                decision: ApprovalDecision::Retry,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(h.step("gate"), StepStatus::Waiting);
}

// ---------------------------------------------------------------------------------------------
// 2. Skip
// ---------------------------------------------------------------------------------------------

const SKIPPABLE: &str = r#"
id: skippable
steps:
  - id: build
    kind: agent
    workflow: implement
    message: build
  - id: deploy_gate
    kind: approval
    message: deploy?
    approvers: [U0OPS1]
    depends_on: [build]
  - id: deploy
    kind: agent
    workflow: deploy
    message: deploy
    depends_on: [deploy_gate]
  - id: docs
    kind: agent
    workflow: docs
    message: docs
    depends_on: [build]
"#;

#[test]
fn skip_skips_the_gate_and_what_needs_it_and_the_run_goes_on() {
    let mut h = Harness::new(SKIPPABLE);
    h.start();
    h.run_agent("build", "up-b", "built");
    assert_eq!(h.step("docs"), StepStatus::Running);
    let id = approval_of(&h, "deploy_gate");
    let effects = decide_id(
        &mut h,
        &id,
        "U0OPS1",
        ApprovalDecision::Skip,
        Some("not today"),
        &[],
    )
    .unwrap();
    assert_eq!(
        closes(&effects),
        vec![(id.clone(), ApprovalStatus::Skipped)]
    );
    assert_eq!(
        h.run.steps["deploy_gate"].approval.as_ref().unwrap().status,
        ApprovalStatus::Skipped
    );
    assert_eq!(h.step("deploy_gate"), StepStatus::Skipped);
    assert_eq!(h.step("deploy"), StepStatus::Skipped, "when: success skips");
    assert!(started_agents(&effects).is_empty());
    assert_eq!(h.status(), RunStatus::Running);
    let skipped_by = h
        .audit
        .iter()
        .find(|a| a.kind == "step.skipped" && a.step_id.as_deref() == Some("deploy_gate"))
        .expect("the skip is audited");
    assert_eq!(skipped_by.actor, "U0OPS1");
    h.run_agent("docs", "up-d", "documented");
    assert_eq!(h.status(), RunStatus::Succeeded);
}

// ---------------------------------------------------------------------------------------------
// 3. Cancel from the gate
// ---------------------------------------------------------------------------------------------

#[test]
fn cancel_from_the_gate_cancels_the_run() {
    let mut h = Harness::new(
        r#"
id: cancellable
steps:
  - id: gate
    kind: approval
    message: go?
    approvers: [U0OPS1]
  - id: side
    kind: agent
    workflow: implement
    message: side work
"#,
    );
    h.start();
    h.agent_started("side", "up-side");
    let id = approval_of(&h, "gate");
    let effects = decide_id(
        &mut h,
        &id,
        "U0OPS1",
        ApprovalDecision::Cancel,
        Some("wrong ticket"),
        &[],
    )
    .unwrap();
    assert_eq!(
        closes(&effects),
        vec![(id.clone(), ApprovalStatus::Cancelled)],
        "closed once, as cancelled"
    );
    assert_eq!(kills(&effects), vec![("side".to_string(), false)]);
    assert_eq!(h.status(), RunStatus::Cancelling);
    assert_eq!(h.step("gate"), StepStatus::Cancelled);
    assert_eq!(
        h.run.steps["gate"].approval.as_ref().unwrap().status,
        ApprovalStatus::Cancelled
    );
    let cancel = h.run.cancel.clone().expect("cancel recorded");
    assert_eq!(cancel.by, "U0OPS1");
    assert_eq!(cancel.reason.as_deref(), Some("wrong ticket"));
    h.send(Event::AgentKilled {
        step: "side".into(),
        attempt: 1,
    });
    assert_eq!(h.status(), RunStatus::Cancelled);
    assert_eq!(h.audit.last().unwrap().actor, "U0OPS1");
}

// ---------------------------------------------------------------------------------------------
// 4. Authorisation
// ---------------------------------------------------------------------------------------------

const GUARDED: &str = r#"
id: guarded
steps:
  - id: gate
    kind: approval
    message: go?
    approvers: [U123ABC45, S0GROUP01, U0STARTER]
"#;

fn guarded() -> Harness {
    let mut h = Harness::new(GUARDED);
    h.run.started_by = Some("U0STARTER".into());
    h.start();
    h
}

#[test]
fn only_listed_approvers_slack_ids_and_group_members_may_decide() {
    let mut h = guarded();
    let id = approval_of(&h, "gate");
    for by in ["U0NOBODY", "slack:U0NOBODY", "U123ABC4", "slack:S0GROUP01x"] {
        let err =
            assert_refused_untouched(&h, decided(&id, by, ApprovalDecision::Approve, None, &[]));
        assert!(
            matches!(err, Rejection::NotAnApprover { .. }),
            "{by}: {err}"
        );
    }
    // A group member only with the group resolved by the adapter.
    for groups in [&[][..], &["S0GROUP99"][..]] {
        let err = assert_refused_untouched(
            &h,
            decided(&id, "slack:UOTHER", ApprovalDecision::Approve, None, groups),
        );
        assert!(
            matches!(err, Rejection::NotAnApprover { .. }),
            "{groups:?}: {err}"
        );
    }
    let mut member = guarded();
    decide_id(
        &mut member,
        &id,
        "slack:UOTHER",
        ApprovalDecision::Approve,
        None,
        &["S0GROUP01"],
    )
    .expect("a member of a listed group may decide");
    assert_eq!(member.step("gate"), StepStatus::Succeeded);
    // A Slack principal matches its bare user id.
    decide_id(
        &mut h,
        &id,
        "slack:U123ABC45",
        ApprovalDecision::Approve,
        None,
        &[],
    )
    .expect("slack:U123ABC45 is U123ABC45");
    assert_eq!(h.step("gate"), StepStatus::Succeeded);
    assert_eq!(h.status(), RunStatus::Succeeded);
}

#[test]
fn the_starter_may_not_approve_or_skip_but_may_reject() {
    let mut h = guarded();
    let id = approval_of(&h, "gate");
    for decision in [ApprovalDecision::Approve, ApprovalDecision::Skip] {
        let err = assert_refused_untouched(&h, decided(&id, "U0STARTER", decision, None, &[]));
        assert!(
            matches!(&err, Rejection::SelfApproval { by } if by == "U0STARTER"),
            "{decision}: {err}"
        );
    }
    decide_id(
        &mut h,
        &id,
        "U0STARTER",
        ApprovalDecision::Reject,
        Some("changed my mind"),
        &[],
    )
    .expect("the starter may stop their own run");
    assert_eq!(h.step("gate"), StepStatus::Failed);
    assert_eq!(h.status(), RunStatus::Failed);
    assert!(
        h.run
            .error
            .as_deref()
            .unwrap_or("")
            .contains("changed my mind")
    );
}

#[test]
fn a_second_decision_by_the_same_person_is_a_no_op() {
    let mut h = Harness::new(
        r#"
id: two-of-three
steps:
  - id: gate
    kind: approval
    message: go?
    approvers: [U0A, U0B, U0C]
    required: 2
"#,
    );
    h.start();
    let id = approval_of(&h, "gate");
    decide_id(&mut h, &id, "U0A", ApprovalDecision::Approve, None, &[]).unwrap();
    for decision in [ApprovalDecision::Approve, ApprovalDecision::Reject] {
        h.send_noop(decided(&id, "U0A", decision, Some("again"), &[]));
    }
    let a = h.run.steps["gate"].approval.clone().unwrap();
    assert_eq!(a.decisions.len(), 1, "counted once");
    assert_eq!(a.status, ApprovalStatus::Pending);
}

#[test]
fn deciding_a_closed_approval_is_refused() {
    let mut h = Harness::new(
        r#"
id: one-of-two
steps:
  - id: gate
    kind: approval
    message: go?
    approvers: [U0A, U0B]
  - id: build
    kind: agent
    workflow: implement
    message: build
    depends_on: [gate]
"#,
    );
    h.start();
    let id = approval_of(&h, "gate");
    decide_id(&mut h, &id, "U0A", ApprovalDecision::Approve, None, &[]).unwrap();
    assert_eq!(h.step("build"), StepStatus::Running);
    for decision in [
        ApprovalDecision::Approve,
        ApprovalDecision::Reject,
        ApprovalDecision::Cancel,
    ] {
        let err = assert_refused_untouched(&h, decided(&id, "U0B", decision, Some("late"), &[]));
        assert!(
            matches!(&err, Rejection::ApprovalClosed { status, .. } if status == "approved"),
            "{decision}: {err}"
        );
    }
    assert_eq!(h.status(), RunStatus::Running);
}

#[test]
fn an_expired_approval_fails_its_step_and_refuses_late_decisions() {
    let mut h = Harness::new(
        r#"
id: expiring
steps:
  - id: gate
    kind: approval
    message: go?
    approvers: [U0A]
    expires_in: 1h
    on_expiry: reject
    continue_on_failure: true
  - id: side
    kind: wait
    duration: 3h
"#,
    );
    h.start();
    let id = approval_of(&h, "gate");
    assert_eq!(next_timer(&h.run, &h.def), Some(T0 + HOUR));
    h.at(HOUR - 1);
    h.send_noop(Event::Tick);
    h.at(HOUR);
    let effects = h.tick();
    assert_eq!(
        closes(&effects),
        vec![(id.clone(), ApprovalStatus::Expired)]
    );
    let a = h.run.steps["gate"].approval.clone().unwrap();
    assert_eq!(a.status, ApprovalStatus::Expired);
    assert!(h.step("gate").is_failure());
    assert_eq!(h.step("gate"), StepStatus::TimedOut);
    assert_eq!(h.status(), RunStatus::Running, "continue_on_failure");
    let err = assert_refused_untouched(
        &h,
        decided(&id, "U0A", ApprovalDecision::Approve, None, &[]),
    );
    assert!(
        matches!(&err, Rejection::ApprovalClosed { status, .. } if status == "expired"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. N of M
// ---------------------------------------------------------------------------------------------

#[test]
fn two_of_three_stays_open_after_one_approval() {
    let mut h = Harness::new(
        r#"
id: two-of-three
steps:
  - id: gate
    kind: approval
    message: go?
    approvers: [U0A, U0B, U0C]
    required: 2
  - id: build
    kind: agent
    workflow: implement
    message: build
    depends_on: [gate]
"#,
    );
    h.start();
    let id = approval_of(&h, "gate");
    let effects = decide_id(&mut h, &id, "U0B", ApprovalDecision::Approve, None, &[]).unwrap();
    assert!(closes(&effects).is_empty(), "{effects:?}");
    assert!(started_agents(&effects).is_empty());
    assert_eq!(h.step("gate"), StepStatus::Waiting);
    let a = h.run.steps["gate"].approval.clone().unwrap();
    assert_eq!(a.status, ApprovalStatus::Pending);
    assert_eq!(a.decisions.len(), 1);
    assert!(emitted(&effects).contains(&"approval.decided".to_string()));
    let effects = decide_id(&mut h, &id, "U0C", ApprovalDecision::Approve, None, &[]).unwrap();
    assert_eq!(closes(&effects), vec![(id, ApprovalStatus::Approved)]);
    assert_eq!(h.step("gate"), StepStatus::Succeeded);
    assert_eq!(
        h.run.steps["gate"].output.as_ref().unwrap()["approved_by"],
        json!(["U0B", "U0C"])
    );
    assert_eq!(started_agents(&effects), vec!["build"]);
}

// ---------------------------------------------------------------------------------------------
// 6. Reminders
// ---------------------------------------------------------------------------------------------

#[test]
fn reminders_go_out_every_interval_until_a_decision() {
    let mut h = Harness::new(
        r#"
id: reminding
steps:
  - id: gate
    kind: approval
    message: go?
    approvers: [U0A]
    remind_every: 1h
  - id: build
    kind: agent
    workflow: implement
    message: build
    depends_on: [gate]
"#,
    );
    let effects = h.start();
    let id = approval_of(&h, "gate");
    assert_eq!(next_timer(&h.run, &h.def), Some(T0 + HOUR));
    assert_eq!(wake(&effects), Some(T0 + HOUR));

    h.at(30 * MINUTE);
    h.send_noop(Event::Tick);

    h.at(HOUR);
    let effects = h.tick();
    assert_eq!(reminders(&effects), vec![1]);
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::RemindApproval { step, approval_id, .. } if step == "gate" && approval_id == &id
    )));
    assert_eq!(count_audit(&h, "approval.reminded"), 1);
    assert_eq!(h.run.steps["gate"].approval.as_ref().unwrap().reminders, 1);
    assert_eq!(next_timer(&h.run, &h.def), Some(T0 + 2 * HOUR));
    assert_eq!(wake(&effects), Some(T0 + 2 * HOUR));
    // A repeated tick at the same moment sends nothing more.
    h.send_noop(Event::Tick);

    h.at(2 * HOUR);
    let effects = h.tick();
    assert_eq!(reminders(&effects), vec![2]);
    assert_eq!(count_audit(&h, "approval.reminded"), 2);
    let reminded = h
        .audit
        .iter()
        .rfind(|a| a.kind == "approval.reminded")
        .unwrap();
    assert_eq!(reminded.step_id.as_deref(), Some("gate"));

    h.at(2 * HOUR + 30 * MINUTE);
    decide_id(&mut h, &id, "U0A", ApprovalDecision::Approve, None, &[]).unwrap();
    assert_eq!(
        h.run.steps["gate"].approval.as_ref().unwrap().remind_at,
        None
    );
    assert_eq!(h.step("build"), StepStatus::Running);
    assert_eq!(
        next_timer(&h.run, &h.def),
        None,
        "no reminder is due any more"
    );
    h.at(4 * HOUR);
    let effects = h.tick();
    assert!(reminders(&effects).is_empty(), "{effects:?}");
    assert_eq!(count_audit(&h, "approval.reminded"), 2);
}

// ---------------------------------------------------------------------------------------------
// 7. Escalation after a while
// ---------------------------------------------------------------------------------------------

#[test]
fn escalate_after_asks_the_escalation_list_once() {
    let mut h = Harness::new(
        r#"
id: escalate-after
steps:
  - id: gate
    kind: approval
    message: go?
    approvers: [U0OPS1]
    escalate_after: 30m
    escalate_to: [U0ESCALATE]
  - id: build
    kind: agent
    workflow: implement
    message: build
    depends_on: [gate]
"#,
    );
    h.start();
    let id = approval_of(&h, "gate");
    assert_eq!(next_timer(&h.run, &h.def), Some(T0 + 30 * MINUTE));
    let err = assert_refused_untouched(
        &h,
        decided(&id, "U0ESCALATE", ApprovalDecision::Approve, None, &[]),
    );
    assert!(
        matches!(err, Rejection::NotAnApprover { .. }),
        "not asked yet: {err}"
    );
    h.at(30 * MINUTE - 1);
    h.send_noop(Event::Tick);

    h.at(30 * MINUTE);
    let effects = h.tick();
    assert_eq!(
        requests(&effects),
        vec![(id.clone(), vec!["U0ESCALATE".to_string()], true)]
    );
    let a = h.run.steps["gate"].approval.clone().unwrap();
    assert_eq!(a.approvers, vec!["U0OPS1", "U0ESCALATE"]);
    assert!(a.escalated);
    assert_eq!(a.status, ApprovalStatus::Pending);
    assert_eq!(count_audit(&h, "approval.escalated"), 1);
    assert_eq!(next_timer(&h.run, &h.def), None);

    h.at(HOUR);
    let effects = h.tick();
    assert!(requests(&effects).is_empty(), "only once: {effects:?}");
    assert_eq!(count_audit(&h, "approval.escalated"), 1);

    decide_id(
        &mut h,
        &id,
        "U0ESCALATE",
        ApprovalDecision::Approve,
        None,
        &[],
    )
    .expect("the escalation list may decide");
    assert_eq!(h.step("gate"), StepStatus::Succeeded);
    assert_eq!(h.step("build"), StepStatus::Running);
}

// ---------------------------------------------------------------------------------------------
// 8. Budget gates
// ---------------------------------------------------------------------------------------------

const BUDGETED: &str = r#"
id: budgeted
steps:
  - id: code
    kind: agent
    workflow: implement
    message: write it
    budget: { max_cost_usd: 1.0, on_exceed: ask, approvers: [U0BUDGET1] }
  - id: pause
    kind: wait
    duration: 1m
  - id: docs
    kind: agent
    workflow: docs
    message: document it
    depends_on: [pause]
  - id: ship
    kind: agent
    workflow: ship
    message: ship it
    depends_on: [code]
"#;

/// `code` crossed its $1 budget at +10s and the run waits for an answer.
fn over_budget() -> Harness {
    let mut h = Harness::new(BUDGETED);
    h.run.started_by = Some("U0BUDGET1".into());
    let effects = h.start();
    assert_eq!(started_agents(&effects), vec!["code"]);
    h.agent_started("code", "up-code-1");
    h.at(10_000);
    h.observe("code", with_session(spending(1.5, 7), "sess-code"));
    h
}

#[test]
fn crossing_an_ask_budget_stops_the_agent_and_asks() {
    let h = over_budget();
    let effects = h.last.clone();
    assert_eq!(kills(&effects), vec![("code".to_string(), false)]);
    assert_eq!(h.step("code"), StepStatus::Waiting);
    assert_eq!(h.status(), RunStatus::Running);
    let gate = h.run.budget_gate.clone().expect("a budget gate");
    assert_eq!(gate.step.as_deref(), Some("code"));
    assert_eq!(gate.paused, vec!["code"]);
    assert_eq!(gate.approval.status, ApprovalStatus::Pending);
    assert_eq!(gate.approval.kind, ApprovalKind::Budget);
    assert_eq!(gate.approval.approvers, vec!["U0BUDGET1"]);
    assert!(
        gate.approval.message.contains("$1.5"),
        "the question names the spend: {}",
        gate.approval.message
    );
    let (step, a) = h.run.approval(&gate.approval.id).expect("listed");
    assert_eq!((step, a.kind), (Some("code"), ApprovalKind::Budget));
    let asked: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::RequestApproval {
                step,
                approval_id,
                message,
                approvers,
                required,
                ..
            } => Some((
                step.clone(),
                approval_id.clone(),
                message.clone(),
                approvers.clone(),
                *required,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        asked,
        vec![(
            "code".to_string(),
            gate.approval.id.clone(),
            gate.approval.message.clone(),
            vec!["U0BUDGET1".to_string()],
            1
        )]
    );
    assert!(started_agents(&effects).is_empty());
    assert!(h.audit_kinds().contains(&"budget.exceeded".to_string()));
    assert!(emitted(&effects).contains(&"approval.requested".to_string()));
}

#[test]
fn nothing_starts_while_the_budget_question_is_open() {
    let mut h = over_budget();
    // The wait step's time passes; what depends on it still must not start.
    h.at(2 * MINUTE);
    let effects = h.tick();
    assert!(started_agents(&effects).is_empty(), "{effects:?}");
    assert_eq!(h.step("docs"), StepStatus::Pending);
    assert_eq!(h.step("ship"), StepStatus::Pending);
    assert_eq!(h.step("code"), StepStatus::Waiting);
}

#[test]
fn a_paused_run_is_not_left_due_for_the_sweeper() {
    let mut h = over_budget();
    h.at(2 * MINUTE);
    h.tick();
    // Once a tick has handled everything, the run must not be due again at once (the sweeper
    // would re-wake it every minute for as long as the budget question stays open).
    let due = h.run.due_at();
    assert!(
        due.is_none_or(|t| t > h.now),
        "the run is due at {due:?}, before now {} (next timer {:?})",
        h.now,
        next_timer(&h.run, &h.def)
    );
}

#[test]
fn approving_a_budget_gate_continues_with_one_more_budget() {
    let mut h = over_budget();
    let id = budget_gate_id(&h);
    h.at(3 * MINUTE);
    // Not a budget approver.
    let err = assert_refused_untouched(
        &h,
        decided(&id, "U0OTHER", ApprovalDecision::Approve, None, &[]),
    );
    assert!(matches!(err, Rejection::NotAnApprover { .. }), "{err}");
    // The starter is the budget approver here, and may answer a question about their own spend.
    let effects = decide_id(
        &mut h,
        &id,
        "U0BUDGET1",
        ApprovalDecision::Approve,
        None,
        &[],
    )
    .expect("the starter may answer a budget gate");
    assert_eq!(
        closes(&effects),
        vec![(id.clone(), ApprovalStatus::Approved)]
    );
    assert_eq!(
        h.run.budget_gate.as_ref().unwrap().approval.status,
        ApprovalStatus::Approved
    );
    assert_eq!(h.run.steps["code"].budget_grants, 1);
    assert!(h.audit_kinds().contains(&"budget.continued".to_string()));
    // The step continues in a new attempt, in the same conversation, told why.
    assert_eq!(h.step("code"), StepStatus::Running);
    assert_eq!(h.run.steps["code"].attempt, 2);
    let (attempt, spec) = start_of(&effects, "code");
    assert_eq!(attempt, 2);
    assert!(spec.message.starts_with("write it"), "{}", spec.message);
    assert!(spec.message.contains("budget"), "{}", spec.message);
    assert_eq!(spec.session_id.as_deref(), Some("sess-code"));
    // The run is no longer paused: the wait step's dependant starts too.
    assert!(started_agents(&effects).contains(&"docs".to_string()));
    assert_eq!(h.step("ship"), StepStatus::Pending);

    // The cap is now $2 over all attempts: $1.5 + $0.3 = $1.8 is fine ...
    h.agent_started("code", "up-code-2");
    h.at(4 * MINUTE);
    let effects = h.observe("code", spending(0.3, 2));
    assert!(kills(&effects).is_empty(), "{effects:?}");
    assert!(requests(&effects).is_empty());
    assert_eq!(h.step("code"), StepStatus::Running);
    assert!((h.run.cost_usd() - 1.8).abs() < 1e-9);
    // ... and $1.5 + $1.0 = $2.5 asks again, with a new question.
    h.at(5 * MINUTE);
    let effects = h.observe("code", spending(1.0, 4));
    assert_eq!(kills(&effects), vec![("code".to_string(), false)]);
    let asked = requests(&effects);
    assert_eq!(asked.len(), 1, "{effects:?}");
    assert_ne!(asked[0].0, id, "a new question");
    assert_eq!(h.step("code"), StepStatus::Waiting);
    assert_eq!(budget_gate_id(&h), asked[0].0);
    assert!(
        h.run
            .budget_gate
            .as_ref()
            .unwrap()
            .approval
            .message
            .contains("$2.5")
    );
}

#[test]
fn rejecting_a_budget_gate_fails_the_step_and_the_run() {
    let mut h = over_budget();
    let id = budget_gate_id(&h);
    let effects = decide_id(
        &mut h,
        &id,
        "U0BUDGET1",
        ApprovalDecision::Reject,
        Some("too pricey"),
        &[],
    )
    .unwrap();
    assert_eq!(closes(&effects), vec![(id, ApprovalStatus::Rejected)]);
    assert_eq!(h.step("code"), StepStatus::Failed);
    let err = h.run.steps["code"].error.clone().unwrap_or_default();
    assert!(err.contains("declined"), "{err}");
    assert!(err.contains("too pricey"), "{err}");
    assert_eq!(h.status(), RunStatus::Failed);
    assert!(started_agents(&effects).is_empty());
}

#[test]
fn a_budget_gate_offers_only_approve_reject_and_cancel() {
    let h = over_budget();
    let id = budget_gate_id(&h);
    for decision in [ApprovalDecision::Retry, ApprovalDecision::Skip] {
        let err = assert_refused_untouched(&h, decided(&id, "U0BUDGET1", decision, Some("x"), &[]));
        assert!(
            matches!(&err, Rejection::DecisionNotOffered { decision: d, .. } if *d == decision),
            "{decision}: {err}"
        );
    }
    // Cancel from the budget question cancels the run.
    let mut h = over_budget();
    let effects = decide_id(
        &mut h,
        &id,
        "U0BUDGET1",
        ApprovalDecision::Cancel,
        None,
        &[],
    )
    .expect("cancel is offered");
    assert_eq!(closes(&effects), vec![(id, ApprovalStatus::Cancelled)]);
    assert!(matches!(
        h.status(),
        RunStatus::Cancelling | RunStatus::Cancelled
    ));
    assert_eq!(h.step("code"), StepStatus::Cancelled);
}

#[test]
fn a_run_budget_that_asks_pauses_every_running_agent_step() {
    let mut h = Harness::new(
        r#"
id: run-budget
budget: { max_cost_usd: 1.0, on_exceed: ask }
steps:
  - id: a
    kind: agent
    workflow: implement
    message: part a
  - id: b
    kind: agent
    workflow: implement
    message: part b
  - id: c
    kind: agent
    workflow: review
    message: review
    depends_on: [a, b]
"#,
    );
    h.start();
    h.agent_started("a", "up-a");
    h.agent_started("b", "up-b");
    let effects = h.observe("a", with_session(spending(0.6, 3), "sess-a"));
    assert!(kills(&effects).is_empty(), "$0.6 of $1 is fine");
    let effects = h.observe("b", with_session(spending(0.6, 3), "sess-b"));
    let mut killed = kills(&effects);
    killed.sort();
    assert_eq!(
        killed,
        vec![("a".to_string(), false), ("b".to_string(), false)]
    );
    assert_eq!(h.step("a"), StepStatus::Waiting);
    assert_eq!(h.step("b"), StepStatus::Waiting);
    let gate = h.run.budget_gate.clone().unwrap();
    assert_eq!(gate.step, None);
    assert_eq!(gate.paused, vec!["a", "b"]);
    assert_eq!(gate.approval.kind, ApprovalKind::Budget);
    assert!(
        gate.approval.message.contains("$1.2"),
        "{}",
        gate.approval.message
    );
    assert_eq!(requests(&effects).len(), 1);
    let (step, _) = h.run.approval(&gate.approval.id).unwrap();
    assert_eq!(step, None, "the run's own question");

    // No approvers listed: anyone with access may answer.
    let effects = decide_id(
        &mut h,
        &gate.approval.id,
        "api:alice",
        ApprovalDecision::Approve,
        None,
        &[],
    )
    .unwrap();
    assert_eq!(h.run.budget_grants, 1);
    let mut started = started_agents(&effects);
    started.sort();
    assert_eq!(started, vec!["a", "b"]);
    assert_eq!(
        start_of(&effects, "a").1.session_id.as_deref(),
        Some("sess-a")
    );
    assert_eq!(
        start_of(&effects, "b").1.session_id.as_deref(),
        Some("sess-b")
    );
    assert_eq!(h.step("c"), StepStatus::Pending);
}

#[test]
fn cancelling_the_run_closes_an_open_budget_gate() {
    let mut h = over_budget();
    let id = budget_gate_id(&h);
    let effects = h.send(Event::CancelRequested {
        by: "api:alice".into(),
        reason: None,
        force: false,
    });
    assert_eq!(
        closes(&effects),
        vec![(id.clone(), ApprovalStatus::Cancelled)]
    );
    assert_eq!(
        h.run.budget_gate.as_ref().unwrap().approval.status,
        ApprovalStatus::Cancelled
    );
    assert_eq!(h.step("code"), StepStatus::Cancelled);
    assert!(matches!(
        h.status(),
        RunStatus::Cancelling | RunStatus::Cancelled
    ));
    let err = assert_refused_untouched(
        &h,
        decided(&id, "U0BUDGET1", ApprovalDecision::Approve, None, &[]),
    );
    assert!(matches!(err, Rejection::ApprovalClosed { .. }), "{err}");
}

#[test]
fn a_granted_step_duration_budget_counts_from_the_first_start() {
    let mut h = Harness::new(
        r#"
id: step-duration
steps:
  - id: code
    kind: agent
    workflow: implement
    message: write it
    budget: { max_duration: 10m, on_exceed: ask }
"#,
    );
    h.start();
    h.agent_started("code", "up-1");
    assert_eq!(next_timer(&h.run, &h.def), Some(T0 + 10 * MINUTE));
    h.at(10 * MINUTE);
    h.tick();
    let id = budget_gate_id(&h);
    assert_eq!(h.step("code"), StepStatus::Waiting);
    h.at(11 * MINUTE);
    decide_id(
        &mut h,
        &id,
        "api:alice",
        ApprovalDecision::Approve,
        None,
        &[],
    )
    .unwrap();
    h.agent_started("code", "up-2");
    // One more budget's worth: 20 minutes from the first start, all attempts together.
    assert_eq!(next_timer(&h.run, &h.def), Some(T0 + 20 * MINUTE));
    h.at(20 * MINUTE);
    h.tick();
    assert_eq!(
        h.step("code"),
        StepStatus::Waiting,
        "the granted time is used up"
    );
    assert_ne!(budget_gate_id(&h), id);
}

#[test]
fn a_granted_run_duration_budget_schedules_the_next_check_at_the_new_cap() {
    let mut h = Harness::new(
        r#"
id: run-duration
budget: { max_duration: 10m, on_exceed: ask }
steps:
  - id: code
    kind: agent
    workflow: implement
    message: write it
"#,
    );
    h.start();
    h.agent_started("code", "up-1");
    assert_eq!(next_timer(&h.run, &h.def), Some(T0 + 10 * MINUTE));
    h.at(10 * MINUTE);
    h.tick();
    // Crossing the budget killed the agent run; the executor confirms it.
    h.send(Event::AgentKilled {
        step: "code".into(),
        attempt: 1,
    });
    let id = budget_gate_id(&h);
    h.at(11 * MINUTE);
    decide_id(
        &mut h,
        &id,
        "api:alice",
        ApprovalDecision::Approve,
        None,
        &[],
    )
    .unwrap();
    h.agent_started("code", "up-2");
    assert_eq!(h.run.budget_grants, 1);
    assert_eq!(next_timer(&h.run, &h.def), Some(T0 + 20 * MINUTE));
    assert!(
        h.run.due_at().is_some_and(|t| t > h.now),
        "not due again at once: {:?}",
        h.run.due_at()
    );
    h.at(20 * MINUTE);
    h.tick();
    assert_eq!(h.step("code"), StepStatus::Waiting);
    assert_ne!(budget_gate_id(&h), id);
}

#[test]
fn a_granted_turn_budget_counts_turns_of_all_attempts() {
    let mut h = Harness::new(
        r#"
id: step-turns
steps:
  - id: code
    kind: agent
    workflow: implement
    message: write it
    budget: { max_turns: 10, on_exceed: ask }
"#,
    );
    h.start();
    h.agent_started("code", "up-1");
    h.observe("code", spending(0.1, 11));
    let id = budget_gate_id(&h);
    decide_id(
        &mut h,
        &id,
        "api:alice",
        ApprovalDecision::Approve,
        None,
        &[],
    )
    .unwrap();
    h.agent_started("code", "up-2");
    // 11 + 5 = 16 of 20 turns: fine.
    let effects = h.observe("code", spending(0.2, 5));
    assert!(kills(&effects).is_empty());
    // 11 + 10 = 21 of 20 turns: one more budget's worth is used up.
    let effects = h.observe("code", spending(0.3, 10));
    assert_eq!(
        kills(&effects),
        vec![("code".to_string(), false)],
        "the second budget's worth of turns is used up"
    );
    assert_eq!(h.step("code"), StepStatus::Waiting);
}

// ---------------------------------------------------------------------------------------------
// 9. Definition checks
// ---------------------------------------------------------------------------------------------

fn problems(yaml: &str) -> Vec<Problem> {
    match parse_definition(yaml) {
        Ok(d) => panic!("expected problems, but it validated: {d:?}"),
        Err(e) => e.0,
    }
}

/// Exactly one problem, at `path`, whose message contains every needle.
fn assert_one_problem(name: &str, yaml: &str, path: &str, needles: &[&str]) {
    let ps = problems(yaml);
    assert_eq!(ps.len(), 1, "{name}: {ps:#?}");
    assert_eq!(ps[0].path, path, "{name}: {ps:#?}");
    for n in needles {
        assert!(
            ps[0].message.contains(n),
            "{name}: {:?} lacks {n:?}",
            ps[0].message
        );
    }
}

#[test]
fn retry_step_must_name_an_upstream_agent_step() {
    assert_one_problem(
        "unknown",
        r#"
id: w
steps:
  - {id: a, kind: agent, workflow: architect, message: go}
  - {id: gate, kind: approval, message: ok?, depends_on: [a], retry_step: nope}
"#,
        "steps[1].retry_step",
        &["\"nope\"", "not a step"],
    );
    assert_one_problem(
        "not upstream",
        r#"
id: w
steps:
  - {id: a, kind: agent, workflow: architect, message: go}
  - {id: b, kind: agent, workflow: architect, message: go}
  - {id: gate, kind: approval, message: ok?, depends_on: [a], retry_step: b}
"#,
        "steps[2].retry_step",
        &["\"b\"", "not upstream"],
    );
    assert_one_problem(
        "downstream",
        r#"
id: w
steps:
  - {id: a, kind: agent, workflow: architect, message: go}
  - {id: gate, kind: approval, message: ok?, depends_on: [a], retry_step: c}
  - {id: c, kind: agent, workflow: implement, message: go, depends_on: [gate]}
"#,
        "steps[1].retry_step",
        &["not upstream"],
    );
    assert_one_problem(
        "not an agent",
        r#"
id: w
steps:
  - {id: a, kind: agent, workflow: architect, message: go}
  - {id: n, kind: notify, webhook_url: "https://example.test/h", message: hi, depends_on: [a]}
  - {id: gate, kind: approval, message: ok?, depends_on: [n], retry_step: n}
"#,
        "steps[2].retry_step",
        &["\"n\"", "not an agent step"],
    );
    // Upstream through another step is fine.
    let def = parse_definition(
        r#"
id: w
steps:
  - {id: a, kind: agent, workflow: architect, message: go}
  - {id: n, kind: notify, webhook_url: "https://example.test/h", message: hi, depends_on: [a]}
  - {id: gate, kind: approval, message: ok?, depends_on: [n], retry_step: a}
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    match &def.step("gate").unwrap().action {
        StepAction::Approval(a) => assert_eq!(a.retry_step.as_deref(), Some("a")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn approval_timers_and_budget_approvers_are_checked() {
    assert_one_problem(
        "escalate_after without escalate_to",
        "id: w\nsteps:\n  - {id: gate, kind: approval, message: ok?, escalate_after: 30m}\n",
        "steps[0].escalate_after",
        &["escalate_to"],
    );
    assert_one_problem(
        "escalate_after 0s",
        "id: w\nsteps:\n  - {id: gate, kind: approval, message: ok?, escalate_after: 0s, escalate_to: [U1]}\n",
        "steps[0].escalate_after",
        &["longer than 0"],
    );
    assert_one_problem(
        "remind_every 0s",
        "id: w\nsteps:\n  - {id: gate, kind: approval, message: ok?, remind_every: 0s}\n",
        "steps[0].remind_every",
        &["remind_every", "longer than 0"],
    );
    assert_one_problem(
        "step budget approvers without ask",
        r#"
id: w
steps:
  - id: a
    kind: agent
    workflow: implement
    message: go
    budget: { max_cost_usd: 1.0, approvers: [U0BUDGET1] }
"#,
        "steps[0].budget.approvers",
        &["on_exceed: ask"],
    );
    assert_one_problem(
        "run budget approvers with on_exceed: fail",
        r#"
id: w
budget: { max_cost_usd: 1.0, on_exceed: fail, approvers: [U0BUDGET1] }
steps:
  - {id: a, kind: agent, workflow: implement, message: go}
"#,
        "budget.approvers",
        &["on_exceed: ask"],
    );
    // All of them, written right.
    let def = parse_definition(
        r#"
id: w
budget: { max_cost_usd: 5.0, on_exceed: ask, approvers: [U0BUDGET1] }
steps:
  - id: a
    kind: agent
    workflow: implement
    message: go
    budget: { max_turns: 50, on_exceed: ask, approvers: [U0BUDGET1] }
  - id: gate
    kind: approval
    message: ok?
    depends_on: [a]
    remind_every: 1h
    escalate_after: 30m
    escalate_to: [U0ESCALATE]
    retry_step: a
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let StepAction::Approval(a) = &def.step("gate").unwrap().action else {
        panic!("gate is an approval")
    };
    assert_eq!(a.remind_every.as_ref().unwrap().as_millis(), 3_600_000);
    assert_eq!(a.escalate_after.as_ref().unwrap().as_millis(), 1_800_000);
}
