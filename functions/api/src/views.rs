//! Run state (what the store keeps) to the API's views (what callers read).

use std::collections::BTreeMap;

use flowgate_shared::api::{
    AgentView, ApprovalView, DecisionView, RunDetail, RunLinks, RunSummary, SessionRunView,
    SessionView, StepView, WorkflowDetail, WorkflowSummary,
};
use flowgate_shared::definition::{StepAction, StoredWorkflow, WorkflowDefinition};
use flowgate_shared::engine::{AgentObservation, take_observed};
use flowgate_shared::model::{ApprovalState, ApprovalStatus, Millis, Run, StepState};
use flowgate_shared::ports::SessionRecord;

pub fn run_summary(run: &Run) -> RunSummary {
    RunSummary {
        id: run.id.clone(),
        workflow_id: run.workflow_id.clone(),
        workflow_version: run.workflow_version,
        status: run.status,
        created_at: run.created_at,
        started_at: run.started_at,
        completed_at: run.completed_at,
        duration_ms: run.duration_ms(),
        cost_usd: run.cost_usd(),
        error: run.error.clone(),
        started_by: run.started_by.clone(),
    }
}

/// [`run_detail`] with the live figures of running agent steps (from
/// [`observe_live`](flowgate_shared::runtime::observe_live), read at `now`) in place of the
/// recorded ones. Figures only grow, so a live answer older than the record changes nothing.
pub fn run_detail_live(
    run: &Run,
    def: Option<&WorkflowDefinition>,
    live: &BTreeMap<String, AgentObservation>,
    now: Millis,
) -> RunDetail {
    if live.is_empty() {
        return run_detail(run, def);
    }
    let mut run = run.clone();
    for (step, obs) in live {
        if let Some(a) = run.steps.get_mut(step).and_then(|s| s.agent.as_mut()) {
            take_observed(a, obs);
            a.upstream_status = obs.status.or(a.upstream_status);
        }
    }
    let mut detail = run_detail(&run, def);
    for step in &mut detail.steps {
        if live.contains_key(&step.id)
            && let Some(agent) = step.agent.as_mut()
        {
            agent.observed_at = Some(now);
        }
    }
    detail
}

/// The full view. `def` is the version the run is pinned to; without it (a definition that
/// went missing) steps are listed by id with what the run itself knows.
pub fn run_detail(run: &Run, def: Option<&WorkflowDefinition>) -> RunDetail {
    let steps: Vec<StepView> = match def {
        Some(def) => def
            .steps
            .iter()
            .map(|d| {
                let state = run.steps.get(&d.id).cloned().unwrap_or_default();
                let workflow = match &d.action {
                    StepAction::Agent(a) => Some(a.workflow.clone()),
                    _ => None,
                };
                step_view(
                    run,
                    &d.id,
                    d.kind().as_str(),
                    d.depends_on.clone(),
                    &state,
                    workflow,
                )
            })
            .collect(),
        None => run
            .steps
            .iter()
            .map(|(id, state)| {
                let kind = if state.agent.is_some() {
                    "agent"
                } else if state.approval.is_some() {
                    "approval"
                } else {
                    "unknown"
                };
                step_view(run, id, kind, Vec::new(), state, None)
            })
            .collect(),
    };
    let open_approvals = run
        .approvals()
        .filter(|(_, a)| a.status == ApprovalStatus::Pending)
        .map(|(step, a)| approval_view(run, step.unwrap_or_default(), a))
        .collect();
    RunDetail {
        summary: run_summary(run),
        inputs: run.inputs.clone(),
        outputs: run.outputs.clone(),
        steps,
        open_approvals,
        session_name: run.session_name.clone(),
        max_turns: run.max_turns,
        parent_run_id: run.parent_run_id.clone(),
        updated_at: run.updated_at,
        links: RunLinks::for_run(&run.id),
    }
}

fn step_view(
    run: &Run,
    id: &str,
    kind: &str,
    depends_on: Vec<String>,
    state: &StepState,
    workflow: Option<String>,
) -> StepView {
    let duration_ms = state
        .completed_at
        .zip(state.started_at)
        .map(|(end, start)| end - start);
    StepView {
        id: id.to_string(),
        kind: kind.to_string(),
        depends_on,
        status: state.status,
        attempt: state.attempt,
        started_at: state.started_at,
        completed_at: state.completed_at,
        duration_ms,
        output: state.output.clone(),
        error: state.error.clone(),
        agent: state.agent.as_ref().map(|a| AgentView {
            workflow: workflow.clone().unwrap_or_default(),
            upstream_run_id: a.upstream_run_id.clone(),
            session_id: a.session_id.clone(),
            status: a.upstream_status,
            turns: a.turns,
            max_turns: a.max_turns,
            phase: a.phase.clone(),
            tokens: a.tokens,
            cost_usd: a.cost_usd + a.previous_attempts_cost_usd,
            last_activity_at: a.last_activity_at,
            observed_at: None,
        }),
        approval: state.approval.as_ref().map(|a| approval_view(run, id, a)),
    }
}

pub fn approval_view(run: &Run, step: &str, a: &ApprovalState) -> ApprovalView {
    ApprovalView {
        id: a.id.clone(),
        run_id: run.id.clone(),
        step: step.to_string(),
        kind: a.kind,
        status: a.status,
        message: a.message.clone(),
        approvers: a.approvers.clone(),
        required: a.required,
        requested_at: a.requested_at,
        expires_at: a.expires_at,
        decisions: a
            .decisions
            .iter()
            .map(|d| DecisionView {
                by: d.by.clone(),
                decision: d.decision,
                comment: d.comment.clone(),
                at: d.at,
            })
            .collect(),
    }
}

pub fn workflow_summary(w: &StoredWorkflow) -> WorkflowSummary {
    WorkflowSummary {
        id: w.definition.id.clone(),
        version: w.version,
        name: w.definition.name.clone(),
        description: w.definition.description.clone(),
        steps: w.definition.steps.len(),
        created_at: w.created_at,
    }
}

pub fn workflow_detail(w: &StoredWorkflow) -> WorkflowDetail {
    WorkflowDetail {
        id: w.definition.id.clone(),
        version: w.version,
        created_at: w.created_at,
        // A definition is plain data: serializing it cannot fail.
        definition: serde_json::to_value(&w.definition).unwrap_or_default(),
    }
}

pub fn session_view(s: SessionRecord) -> SessionView {
    SessionView {
        name: s.name,
        agent_session_id: s.agent_session_id,
        active: s.active,
        created_at: s.created_at,
        updated_at: s.updated_at,
        runs: s
            .runs
            .into_iter()
            .map(|r| SessionRunView {
                run_id: r.run_id,
                step_id: r.step_id,
                at: r.at,
            })
            .collect(),
    }
}
