//! `/v1/workflows`: stored definitions (versioned), validation, and the agent service's own
//! workflows (which `POST /v1/runs` can start directly as one-step runs).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use flowgate_shared::agent::WorkflowInfo;
use flowgate_shared::api::{
    AgentWorkflowList, AgentWorkflowView, ErrorBody, ValidationReport, WorkflowDetail, WorkflowList,
};
use flowgate_shared::definition::{
    Problem, StepAction, StoredWorkflow, WorkflowDefinition, parse_definition,
    parse_definition_value,
};
use flowgate_shared::runtime::{CheckedRun, NewRun, check_run};
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use super::{Path, Query};
use crate::Services;
use crate::auth::Principal;
use crate::body::DefinitionBody;
use crate::error::{ApiError, problem_view};
use crate::views;

/// Every stored workflow (latest version of each).
#[utoipa::path(
    get,
    path = "/v1/workflows",
    tag = "workflows",
    responses(
        (status = 200, description = "Stored workflows", body = WorkflowList),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
    )
)]
pub(crate) async fn list_workflows(
    State(s): State<Services>,
    _: Principal,
) -> Result<Json<WorkflowList>, ApiError> {
    let mut workflows = s.workflows.list_workflows().await?;
    workflows.sort_by(|a, b| a.definition.id.cmp(&b.definition.id));
    Ok(Json(WorkflowList {
        workflows: workflows.iter().map(views::workflow_summary).collect(),
    }))
}

/// Make the scheduler hold what the stored definition says. The definition is already stored
/// when this runs, so a failure answers 503 naming what to do: repeating the request syncs
/// again (a repeated PUT stores one more identical version, which is harmless), and the
/// sweeper puts missing or extra schedules right within a minute either way.
async fn sync_schedules(s: &Services, id: &str, version: Option<u64>) -> Result<(), ApiError> {
    let Some(scheduler) = &s.scheduler else {
        return Ok(());
    };
    match flowgate_shared::runtime::sync_schedules(scheduler.as_ref(), s.workflows.as_ref(), id)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => {
            let message = match version {
                Some(v) => format!(
                    "workflow {id} was stored as version {v}, but its schedules could not be updated ({e}); repeat the request to sync them"
                ),
                None => format!(
                    "workflow {id} was deleted, but its schedules could not be removed ({e}); the sweep removes them within a minute"
                ),
            };
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "schedules_not_synced",
                message,
            ))
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct VersionParams {
    /// A specific version (still readable after a delete); the latest when absent.
    version: Option<u64>,
}

/// A stored workflow definition.
#[utoipa::path(
    get,
    path = "/v1/workflows/{id}",
    tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"), VersionParams),
    responses(
        (status = 200, description = "The definition", body = WorkflowDetail),
        (status = 400, description = "Bad version parameter", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such workflow or version", body = ErrorBody),
    )
)]
pub(crate) async fn get_workflow(
    State(s): State<Services>,
    _: Principal,
    Path(id): Path<String>,
    Query(params): Query<VersionParams>,
) -> Result<Json<WorkflowDetail>, ApiError> {
    let stored = s
        .workflows
        .get_workflow(&id, params.version)
        .await?
        .ok_or_else(|| workflow_not_found(&id))?;
    Ok(Json(views::workflow_detail(&stored)))
}

fn workflow_not_found(id: &str) -> ApiError {
    ApiError::not_found(
        "workflow_not_found",
        format!("there is no workflow {id:?}; list them with GET /v1/workflows"),
    )
}

/// Store a definition as the workflow's next version (runs already started keep theirs).
#[utoipa::path(
    put,
    path = "/v1/workflows/{id}",
    tag = "workflows",
    params(("id" = String, Path, description = "Workflow id; must equal the definition's `id`")),
    request_body(description = "The definition, as JSON or YAML",
        content((Object = "application/json"), (String = "application/yaml"))),
    responses(
        (status = 201, description = "Stored as version 1", body = WorkflowDetail),
        (status = 200, description = "Stored as a new version", body = WorkflowDetail),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Neither JSON nor YAML", body = ErrorBody),
        (status = 422, description = "The definition is invalid (every problem is listed)", body = ErrorBody),
        (status = 503, description = "Stored, but its schedules could not be synced (`schedules_not_synced`); repeat the request", body = ErrorBody),
    )
)]
pub(crate) async fn put_workflow(
    State(s): State<Services>,
    Principal(principal): Principal,
    Path(id): Path<String>,
    DefinitionBody(text): DefinitionBody,
) -> Result<impl IntoResponse, ApiError> {
    let def = parse_definition(&text).map_err(|errors| {
        ApiError::unprocessable(
            "invalid_definition",
            format!(
                "the definition has {} problem(s); fix them and PUT again",
                errors.problems().len()
            ),
        )
        .with_problems(errors.problems())
    })?;
    if def.id != id {
        return Err(ApiError::unprocessable(
            "invalid_definition",
            format!(
                "the definition's id is {:?} but the URL names {id:?}; they must match",
                def.id
            ),
        )
        .with_field("id"));
    }
    let stored = s.workflows.put_workflow(&def, s.clock.now_ms()).await?;
    info!(workflow_id = %id, version = stored.version, principal = %principal, "workflow stored");
    sync_schedules(&s, &id, Some(stored.version)).await?;
    let status = if stored.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(views::workflow_detail(&stored))))
}

/// Delete a workflow: new runs can no longer start it; runs on it finish on their version.
#[utoipa::path(
    delete,
    path = "/v1/workflows/{id}",
    tag = "workflows",
    params(("id" = String, Path, description = "Workflow id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such workflow", body = ErrorBody),
        (status = 503, description = "Deleted, but its schedules could not be removed (`schedules_not_synced`); the sweep removes them within a minute", body = ErrorBody),
    )
)]
pub(crate) async fn delete_workflow(
    State(s): State<Services>,
    Principal(principal): Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if s.workflows.delete_workflow(&id).await? {
        info!(workflow_id = %id, principal = %principal, "workflow deleted");
        sync_schedules(&s, &id, None).await?;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(workflow_not_found(&id))
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValidateParams {
    /// Also check agent step workflow names against the agent service.
    #[serde(default)]
    strict: bool,
}

/// Validate a definition without storing it. Always 200 when the body could be read: the
/// report says whether it is valid and lists every problem.
#[utoipa::path(
    post,
    path = "/v1/workflows/validate",
    tag = "workflows",
    params(ValidateParams),
    request_body(description = "The definition, as JSON or YAML",
        content((Object = "application/json"), (String = "application/yaml"))),
    responses(
        (status = 200, description = "The validation report", body = ValidationReport),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Neither JSON nor YAML", body = ErrorBody),
        (status = 503, description = "strict: the agent service could not be asked; retry", body = ErrorBody),
    )
)]
pub(crate) async fn validate_workflow(
    State(s): State<Services>,
    _: Principal,
    Query(params): Query<ValidateParams>,
    DefinitionBody(text): DefinitionBody,
) -> Result<Json<ValidationReport>, ApiError> {
    let mut problems = match parse_definition(&text) {
        Ok(def) if params.strict => {
            let offered = agent_workflows_or_unavailable(&s).await?;
            unknown_agent_workflows(&def, &offered)
        }
        Ok(_) => Vec::new(),
        Err(errors) => errors.0,
    };
    problems.dedup();
    Ok(Json(ValidationReport {
        valid: problems.is_empty(),
        problems: problems.iter().map(problem_view).collect(),
        strict: params.strict,
    }))
}

/// Agent steps (and agent compensations) naming a workflow the agent service does not offer.
fn unknown_agent_workflows(def: &WorkflowDefinition, offered: &[WorkflowInfo]) -> Vec<Problem> {
    let names: Vec<&str> = offered.iter().map(|w| w.name.as_str()).collect();
    let mut problems = Vec::new();
    for (i, step) in def.steps.iter().enumerate() {
        let actions = [
            (format!("steps[{i}].workflow"), Some(&step.action)),
            (
                format!("steps[{i}].compensate.workflow"),
                step.compensate.as_ref(),
            ),
        ];
        for (path, action) in actions {
            if let Some(StepAction::Agent(a)) = action
                && !names.contains(&a.workflow.as_str())
            {
                problems.push(Problem {
                    path,
                    message: format!(
                        "the agent service has no workflow {:?}; it offers: {}",
                        a.workflow,
                        names.join(", ")
                    ),
                });
            }
        }
    }
    problems
}

async fn agent_workflows_or_unavailable(s: &Services) -> Result<Vec<WorkflowInfo>, ApiError> {
    s.agent.list_workflows().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "agent_unavailable",
            format!("the agent service could not list its workflows: {e}"),
        )
    })
}

/// The workflows the agent service offers; each can be started directly with
/// `POST /v1/runs {"workflow": "<name>", "message": "..."}`.
#[utoipa::path(
    get,
    path = "/v1/agent-workflows",
    tag = "workflows",
    responses(
        (status = 200, description = "The agent service's workflows", body = AgentWorkflowList),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 503, description = "The agent service could not be asked; retry", body = ErrorBody),
    )
)]
pub(crate) async fn agent_workflows(
    State(s): State<Services>,
    _: Principal,
) -> Result<Json<AgentWorkflowList>, ApiError> {
    let offered = agent_workflows_or_unavailable(&s).await?;
    Ok(Json(AgentWorkflowList {
        workflows: offered
            .into_iter()
            .map(|w| AgentWorkflowView {
                name: w.name,
                display_name: w.display_name,
                description: w.description,
                max_turns: w.max_turns,
            })
            .collect(),
    }))
}

/// The stored workflow a start request names, with the request checked against it. A stored
/// workflow is used as is; otherwise, when the agent service offers a workflow of that name, a
/// one-step definition running it is stored (once: later runs reuse it), and only after the
/// request was checked against it, so a refused start stores nothing.
pub(crate) async fn workflow_for_start(
    s: &Services,
    new: NewRun,
) -> Result<(StoredWorkflow, CheckedRun), ApiError> {
    if let Some(stored) = s.workflows.get_workflow(&new.workflow_id, None).await? {
        let checked = check_run(s.store.as_ref(), &stored.definition, new).await?;
        return Ok((stored, checked));
    }
    let name = new.workflow_id.as_str();
    let offered = s.agent.list_workflows().await.map_err(|e| {
        if e.is_retryable() {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "agent_unavailable",
                format!(
                    "workflow {name:?} is not stored, and the agent service could not be asked \
                     whether it offers it ({e}); retry"
                ),
            )
        } else {
            ApiError::unprocessable(
                "unknown_workflow",
                format!("workflow {name:?} is not stored, and the agent service refused to list its workflows ({e})"),
            )
            .with_field("workflow")
        }
    })?;
    let Some(info) = offered.iter().find(|w| w.name == name) else {
        let names: Vec<&str> = offered.iter().map(|w| w.name.as_str()).collect();
        return Err(ApiError::unprocessable(
            "unknown_workflow",
            format!(
                "there is no stored workflow {name:?} and the agent service offers no workflow of \
                 that name; store one with PUT /v1/workflows/{{id}}, or run one of: {}",
                names.join(", ")
            ),
        )
        .with_field("workflow"));
    };
    let def = one_step_definition(info).map_err(|problems| {
        ApiError::unprocessable(
            "unknown_workflow",
            format!("agent workflow {name:?} cannot be run directly: its name is not a valid workflow id"),
        )
        .with_problems(&problems)
        .with_field("workflow")
    })?;
    let checked = check_run(s.store.as_ref(), &def, new).await?;
    let stored = s.workflows.put_workflow(&def, s.clock.now_ms()).await?;
    info!(workflow_id = %stored.definition.id, version = stored.version, "stored a one-step definition for an agent workflow");
    Ok((stored, checked))
}

/// A workflow with one agent step running the agent service's workflow `info.name`, taking
/// the start request's `message`, `repository_url` and `git_branch` as inputs.
pub(crate) fn one_step_definition(info: &WorkflowInfo) -> Result<WorkflowDefinition, Vec<Problem>> {
    let name = &info.name;
    let doc = json!({
        "id": name,
        "name": info.display_name.clone().unwrap_or_else(|| name.clone()),
        "description": format!("One-step run of the agent service's {name} workflow"),
        "inputs": {
            "message": {"type": "string", "required": true, "description": "The task for the agent"},
            "repository_url": {"type": "string", "default": "", "description": "Repository to work on"},
            "git_branch": {"type": "string", "default": "", "description": "Branch to work on"}
        },
        "steps": [{
            "id": name,
            "kind": "agent",
            "workflow": name,
            "message": "${{ inputs.message }}",
            "repository_url": "${{ inputs.repository_url }}",
            "git_branch": "${{ inputs.git_branch }}"
        }],
        "outputs": {"result": format!("${{{{ steps.{name}.output }}}}")}
    });
    parse_definition_value(&doc).map_err(|e| e.0)
}
