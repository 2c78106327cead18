//! The MCP server: Flowgate's tools as one rmcp [`ServerHandler`], whatever the transport.
//!
//! [`FlowgateMcp`] holds no state of its own besides a cached permission; each tool asks its
//! [`Connector`] for the API of the caller, calls it, and turns the answer into a result with
//! `structuredContent` (checked against the tool's output schema by strict clients) and a short
//! readable text. Every call is bounded by [`Settings::call_timeout`], and every failure is a
//! tool result with `isError: true` saying what to do next ([`ToolError`]).
//!
//! `decide_approval` is listed only when the caller's key may decide approvals (`GET /v1/me`):
//! a model should not be offered a tool it may not use, and a key handed to an assistant is
//! often one that must not wave its own work through a human gate. Calling it anyway gets the
//! API's 403 as a tool error.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowgate_shared::api::client::{ApprovalFilter, ListApprovalsParams};
use flowgate_shared::api::{
    CancelRequest, DecisionRequest, EventView, ListRunsParams, MessageKind, MessageRequest,
    RunDetail, StartRunRequest,
};
use flowgate_shared::model::{ApprovalStatus, StepStatus};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::{ToolCallContext, schema_for_output};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities,
    ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_router};
use serde::Serialize;
use tokio::sync::OnceCell;
use tracing::{debug, info, warn};

use crate::api::{Connector, FlowgateApi};
use crate::error::ToolError;
use crate::types::*;

/// Name of the approval tool, hidden from keys that may not decide approvals.
pub const DECIDE_APPROVAL: &str = "decide_approval";

/// Pages of the audit log a detailed status reads at most (100 entries each) to find the
/// newest entries.
const MAX_EVENT_PAGES: usize = 20;

/// How long `run_workflow` may spend reading the run after its wait ends.
const READ_GRACE: Duration = Duration::from_secs(4);

/// What the server tells a client about itself (shown to the model by most hosts).
const INSTRUCTIONS: &str = "Flowgate runs multi-step AI coding-agent workflows (design, \
implement, test, review, ...). list_workflows shows what can be run; run_workflow starts a run \
and returns its run id at once (wait_seconds waits up to 20 s, with progress); \
get_workflow_status follows a run (turns/max_turns per step, cost, open approvals); \
send_feedback talks to the running agent; kill_workflow cancels. list_recent_runs, \
list_sessions and get_session_status look around; list_pending_approvals shows human gates, and \
decide_approval (offered only to keys allowed to approve) decides them. Errors come back as tool \
results that say what to do next.";

/// Tuning of the tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Budget of one API call made by a tool; a call that takes longer fails the tool with a
    /// timeout message instead of leaving the client waiting.
    pub call_timeout: Duration,
    /// Pause between two reads of a run while `run_workflow` waits.
    pub poll_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            call_timeout: Duration::from_secs(8),
            poll_interval: Duration::from_millis(1_000),
        }
    }
}

/// Flowgate's MCP server. Cheap to clone; the Streamable HTTP transport makes one per request.
#[derive(Clone)]
pub struct FlowgateMcp {
    connector: Arc<dyn Connector>,
    settings: Arc<Settings>,
    /// `GET /v1/me`'s `may_approve`, once known, when the connector says it cannot change.
    may_approve: Arc<OnceCell<bool>>,
    tool_router: ToolRouter<FlowgateMcp>,
}

impl fmt::Debug for FlowgateMcp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowgateMcp")
            .field("connector", &self.connector)
            .field("settings", &self.settings)
            .field("may_approve", &self.may_approve.get())
            .finish_non_exhaustive()
    }
}

/// A successful result: the structured value and its readable summary.
fn reply<T: Serialize + Summary>(out: &T) -> CallToolResult {
    match serde_json::to_value(out) {
        Ok(value) => {
            let mut result = CallToolResult::structured(value);
            result.content = vec![ContentBlock::text(out.summary())];
            result
        }
        Err(e) => ToolError::Invalid(format!("the result could not be encoded: {e}")).into_result(),
    }
}

/// A tool's outcome as the MCP result (an error becomes `isError: true`, never a JSON-RPC
/// error, so the model sees the message).
fn finish<T: Serialize + Summary>(
    tool: &'static str,
    outcome: Result<T, ToolError>,
) -> Result<CallToolResult, ErrorData> {
    Ok(match outcome {
        Ok(out) => reply(&out),
        Err(e) => {
            info!(tool, error = %e, "tool call failed");
            e.into_result()
        }
    })
}

#[tool_router]
impl FlowgateMcp {
    /// The server over `connector`, with the default [`Settings`].
    pub fn new(connector: Arc<dyn Connector>) -> Self {
        Self::with_settings(connector, Settings::default())
    }

    pub fn with_settings(connector: Arc<dyn Connector>, settings: Settings) -> Self {
        FlowgateMcp {
            connector,
            settings: Arc::new(settings),
            may_approve: Arc::new(OnceCell::new()),
            tool_router: Self::tool_router(),
        }
    }

    /// The API for the request `ctx` belongs to.
    fn api(&self, ctx: &RequestContext<RoleServer>) -> Arc<dyn FlowgateApi> {
        self.connector
            .connect(ctx.extensions.get::<http::request::Parts>())
    }

    /// `fut`, failing with [`ToolError::Timeout`] after the call budget.
    async fn bounded<T, E>(
        &self,
        what: &'static str,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<T, ToolError>
    where
        ToolError: From<E>,
    {
        self.bounded_for(what, self.settings.call_timeout, fut)
            .await
    }

    /// `fut`, failing with [`ToolError::Timeout`] after `budget` (at most the call budget).
    async fn bounded_for<T, E>(
        &self,
        what: &'static str,
        budget: Duration,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<T, ToolError>
    where
        ToolError: From<E>,
    {
        let budget = budget.min(self.settings.call_timeout);
        match tokio::time::timeout(budget, fut).await {
            Ok(result) => result.map_err(ToolError::from),
            Err(_) => Err(ToolError::Timeout {
                what,
                seconds: budget.as_secs().max(1),
            }),
        }
    }

    /// Whether the caller's key may decide approvals; `false` when that cannot be found out
    /// (a refused key, an unreachable API): the tool is then not offered.
    async fn may_approve(&self, ctx: &RequestContext<RoleServer>) -> bool {
        if let Some(known) = self.may_approve.get() {
            return *known;
        }
        match self.bounded("GET /v1/me", self.api(ctx).me()).await {
            Ok(identity) => {
                if self.connector.identity_is_fixed() {
                    let _ = self.may_approve.set(identity.may_approve);
                }
                debug!(principal = %identity.principal, may_approve = identity.may_approve, "caller identified");
                identity.may_approve
            }
            Err(e) => {
                warn!(error = %e, "cannot tell whether this API key may decide approvals; not offering decide_approval");
                false
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Tools
    // -----------------------------------------------------------------------------------------

    #[tool(
        description = "Start a workflow run: a stored workflow (see list_workflows) or an agent \
                       service workflow by name (architect, implement, ...) as a one-step run, \
                       which needs a message. Returns the run id at once; with wait_seconds \
                       (at most 20) it waits for the run to finish, sending progress \
                       notifications (turns/max_turns and the current step) when the client \
                       asks for progress. A run still going afterwards keeps going: follow it \
                       with get_workflow_status.",
        output_schema = schema_for_output::<RunWorkflowResult>(),
        annotations(
            title = "Run a workflow",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn run_workflow(
        &self,
        Parameters(args): Parameters<RunWorkflowArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        finish("run_workflow", self.start_and_wait(args, &ctx).await)
    }

    #[tool(
        description = "List what can be run: Flowgate's stored workflow definitions and the \
                       agent service's workflows (each runnable as a one-step run with a \
                       message).",
        output_schema = schema_for_output::<WorkflowCatalog>(),
        annotations(
            title = "List workflows",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_workflows(
        &self,
        Parameters(NoArgs {}): Parameters<NoArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let api = self.api(&ctx);
        let (stored, agent) = tokio::join!(
            self.bounded("GET /v1/workflows", api.list_workflows()),
            self.bounded("GET /v1/agent-workflows", api.list_agent_workflows()),
        );
        let outcome = stored.map(|stored| {
            let (agent_workflows, agent_workflows_error) = match agent {
                Ok(list) => (list.workflows.iter().map(Into::into).collect(), None),
                Err(e) => (Vec::new(), Some(e.to_string())),
            };
            WorkflowCatalog {
                workflows: stored.workflows.iter().map(Into::into).collect(),
                agent_workflows,
                agent_workflows_error,
            }
        });
        finish("list_workflows", outcome)
    }

    #[tool(
        description = "List recent runs, newest first unless sort_by/sort_order say otherwise; \
                       filter by workflow and status (comma-separated), page through with page \
                       and page_size.",
        output_schema = schema_for_output::<RunPage>(),
        annotations(
            title = "List recent runs",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_recent_runs(
        &self,
        Parameters(args): Parameters<ListRecentRunsArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        finish("list_recent_runs", self.runs_page(args, &ctx).await)
    }

    #[tool(
        description = "A run's status: each step's progress (turns/max_turns, cost), the current \
                       step, open approvals, errors and outputs. detailed adds inputs, step \
                       outputs, agent ids and the newest audit log entries.",
        output_schema = schema_for_output::<RunState>(),
        annotations(
            title = "Get a run's status",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_workflow_status(
        &self,
        Parameters(args): Parameters<GetWorkflowStatusArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        finish("get_workflow_status", self.status(args, &ctx).await)
    }

    #[tool(
        description = "Cancel a run. Its agent runs stop gracefully, or at once with force; \
                       finished work is kept (compensations run where the workflow defines \
                       them).",
        output_schema = schema_for_output::<CommandResult>(),
        annotations(
            title = "Kill a run",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn kill_workflow(
        &self,
        Parameters(args): Parameters<KillWorkflowArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let request = CancelRequest {
            force: args.force,
            reason: args.reason.filter(|r| !r.trim().is_empty()),
        };
        let outcome = self
            .bounded(
                "POST /v1/runs/{id}/cancel",
                self.api(&ctx).cancel_run(&args.run_id, &request),
            )
            .await
            .map(|answer| CommandResult {
                run_id: answer.run_id,
                status: answer.status.as_str().to_string(),
                action: if args.force {
                    "Cancelled; its agent runs are killed at once.".to_string()
                } else {
                    "Cancel requested; its agent runs stop gracefully.".to_string()
                },
            });
        finish("kill_workflow", outcome)
    }

    #[tool(
        description = "Send feedback to a run's running agent step (the running one unless step \
                       is given), as the user or as a system message.",
        output_schema = schema_for_output::<CommandResult>(),
        annotations(
            title = "Send feedback to a run's agent",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn send_feedback(
        &self,
        Parameters(args): Parameters<SendFeedbackArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let request = MessageRequest {
            content: args.message,
            kind: match args.message_type.unwrap_or_default() {
                MessageType::User => MessageKind::User,
                MessageType::System => MessageKind::System,
            },
            step: args.step.filter(|s| !s.trim().is_empty()),
        };
        let outcome = self
            .bounded(
                "POST /v1/runs/{id}/messages",
                self.api(&ctx).send_message(&args.run_id, &request),
            )
            .await
            .map(|answer| CommandResult {
                run_id: answer.run_id,
                status: answer.status.as_str().to_string(),
                action: format!(
                    "Feedback delivered as a {} message to the agent{}.",
                    request.kind.as_str(),
                    request
                        .step
                        .as_deref()
                        .map(|s| format!(" of step {s}"))
                        .unwrap_or_default()
                ),
            });
        finish("send_feedback", outcome)
    }

    #[tool(
        description = "List named agent conversations (sessions) that later runs can continue \
                       with run_workflow's continue_session.",
        output_schema = schema_for_output::<SessionListResult>(),
        annotations(
            title = "List sessions",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_sessions(
        &self,
        Parameters(args): Parameters<ListSessionsArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let outcome = self
            .bounded(
                "GET /v1/sessions",
                self.api(&ctx)
                    .list_sessions(args.active_only.then_some(true)),
            )
            .await
            .map(|list| SessionListResult {
                sessions: list.sessions.iter().map(Into::into).collect(),
            });
        finish("list_sessions", outcome)
    }

    #[tool(
        description = "One session: whether it is in use, its agent conversation id and the run \
                       steps that used it.",
        output_schema = schema_for_output::<SessionStatus>(),
        annotations(
            title = "Get a session",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_session_status(
        &self,
        Parameters(args): Parameters<GetSessionStatusArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let outcome = self
            .bounded(
                "GET /v1/sessions/{name}",
                self.api(&ctx).get_session(&args.session),
            )
            .await
            .map(|session| SessionStatus::from(&session));
        finish("get_session_status", outcome)
    }

    #[tool(
        description = "List approvals waiting for a human decision (approval steps, and budget \
                       gates asking whether to continue past a budget), newest first.",
        output_schema = schema_for_output::<ApprovalListResult>(),
        annotations(
            title = "List pending approvals",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_pending_approvals(
        &self,
        Parameters(args): Parameters<ListPendingApprovalsArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let params = ListApprovalsParams {
            status: Some(ApprovalFilter::Status(ApprovalStatus::Pending)),
            workflow: args.workflow.filter(|w| !w.trim().is_empty()),
            limit: Some(100),
        };
        let outcome = self
            .bounded("GET /v1/approvals", self.api(&ctx).list_approvals(&params))
            .await
            .map(|list| ApprovalListResult {
                approvals: list.approvals.iter().map(approval_summary).collect(),
            });
        finish("list_pending_approvals", outcome)
    }

    #[tool(
        description = "Decide an approval as this API key's principal: approve, reject (reason \
                       in comment), retry (the agent step before the gate runs again with \
                       comment as feedback), skip, or cancel the run. Whoever started a run may \
                       not approve it.",
        output_schema = schema_for_output::<DecisionResult>(),
        annotations(
            title = "Decide an approval",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn decide_approval(
        &self,
        Parameters(args): Parameters<DecideApprovalArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let request = DecisionRequest {
            decision: args.decision.into(),
            comment: args.comment.filter(|c| !c.trim().is_empty()),
        };
        let outcome = self
            .bounded(
                "POST /v1/approvals/{id}/decision",
                self.api(&ctx).decide_approval(&args.approval_id, &request),
            )
            .await
            .map(|answer| DecisionResult {
                approval_id: answer.approval.id,
                approval_status: answer.approval.status.as_str().to_string(),
                run_id: answer.approval.run_id,
                run_status: answer.run_status.as_str().to_string(),
                by: answer.by,
            });
        finish(DECIDE_APPROVAL, outcome)
    }
}

// ---------------------------------------------------------------------------------------------
// The tools' work
// ---------------------------------------------------------------------------------------------

impl FlowgateMcp {
    async fn start_and_wait(
        &self,
        args: RunWorkflowArgs,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<RunWorkflowResult, ToolError> {
        let began = Instant::now();
        let wait = Duration::from_secs(args.wait_seconds.unwrap_or(0).min(MAX_WAIT_SECONDS).into());
        let request = StartRunRequest {
            workflow: args.workflow_name,
            inputs: args.inputs.unwrap_or_default(),
            message: args.message,
            max_turns: args.max_turns,
            session_name: args.session_name,
            continue_session: args.continue_session,
            repository_url: args.repository_url,
            git_branch: args.git_branch,
        };
        let api = self.api(ctx);
        let started = self
            .bounded("POST /v1/runs", api.start_run(&request))
            .await?;
        info!(run_id = %started.run_id, workflow = %started.workflow_id, wait_s = wait.as_secs(), "run started through MCP");

        let token = ctx.meta.get_progress_token();
        let mut reporter = Reporter::default();
        let deadline = began + wait;
        // Reads after the wait get a short budget of their own, so the whole call stays inside
        // `wait + READ_GRACE` (20 + 4 s: under API Gateway's 29 s even when the API is slow).
        let hard_deadline = deadline + READ_GRACE;
        let run = loop {
            let budget = hard_deadline.saturating_duration_since(Instant::now());
            let run = self
                .bounded_for(
                    "GET /v1/runs/{id}",
                    budget.max(Duration::from_millis(500)),
                    api.get_run(&started.run_id),
                )
                .await
                .map_err(|e| {
                    ToolError::Invalid(format!(
                        "run {} was started, but reading its state failed: {e}. Follow it with \
                         get_workflow_status (do not start it again)",
                        started.run_id
                    ))
                })?;
            if let Some(token) = &token
                && let Some(update) = reporter.update(&run)
            {
                let mut note = ProgressNotificationParam::new(token.clone(), update.progress)
                    .with_message(update.message);
                if let Some(total) = update.total {
                    note = note.with_total(total);
                }
                if let Err(e) = ctx.peer.notify_progress(note).await {
                    debug!(error = %e, "progress notification not delivered");
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if run.summary.status.is_terminal() || left.is_zero() {
                break run;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.poll_interval.min(left)) => {}
                _ = ctx.ct.cancelled() => break run,
            }
        };
        Ok(RunWorkflowResult {
            workflow_version: started.workflow_version,
            waited_seconds: if wait.is_zero() {
                0.0
            } else {
                (began.elapsed().as_secs_f64() * 10.0).round() / 10.0
            },
            run: RunState::from_detail(&run, false, &[]),
        })
    }

    async fn status(
        &self,
        args: GetWorkflowStatusArgs,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<RunState, ToolError> {
        let api = self.api(ctx);
        let run = self
            .bounded("GET /v1/runs/{id}", api.get_run(&args.run_id))
            .await?;
        let events = if args.detailed {
            self.newest_events(api.as_ref(), &args.run_id).await?
        } else {
            Vec::new()
        };
        Ok(RunState::from_detail(&run, args.detailed, &events))
    }

    /// The newest [`DETAILED_EVENTS`] audit entries, oldest first.
    async fn newest_events(
        &self,
        api: &dyn FlowgateApi,
        run_id: &str,
    ) -> Result<Vec<EventView>, ToolError> {
        let mut newest = std::collections::VecDeque::with_capacity(DETAILED_EVENTS + 100);
        let mut after = None;
        for _ in 0..MAX_EVENT_PAGES {
            let page = self
                .bounded(
                    "GET /v1/runs/{id}/events",
                    api.run_events(run_id, after, Some(100)),
                )
                .await?;
            newest.extend(page.events);
            while newest.len() > DETAILED_EVENTS {
                newest.pop_front();
            }
            match page.next_after {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        Ok(newest.into())
    }

    async fn runs_page(
        &self,
        args: ListRecentRunsArgs,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<RunPage, ToolError> {
        let page = args.page.unwrap_or(1).max(1);
        let page_size = args.page_size.unwrap_or(20).clamp(1, 100);
        let wanted = page.saturating_mul(page_size);
        if wanted > MAX_LISTED_RUNS {
            return Err(ToolError::Invalid(format!(
                "page {page} of {page_size} runs reaches past the newest {MAX_LISTED_RUNS} runs; \
                 narrow the list with workflow or status, or sort differently"
            )));
        }
        let mut params = ListRunsParams {
            workflow: args.workflow.filter(|w| !w.trim().is_empty()),
            status: args.status.filter(|s| !s.trim().is_empty()),
            sort: args.sort_by.map(|s| s.as_str().to_string()),
            order: args.sort_order.map(|o| o.as_str().to_string()),
            ..ListRunsParams::default()
        };
        let api = self.api(ctx);
        let mut runs = Vec::new();
        let mut more = false;
        loop {
            let left = wanted as usize - runs.len();
            params.limit = Some(left.min(100) as u32);
            let list = self.bounded("GET /v1/runs", api.list_runs(&params)).await?;
            runs.extend(list.runs);
            match list.next_cursor {
                Some(cursor) if runs.len() < wanted as usize => params.cursor = Some(cursor),
                Some(_) => {
                    more = true;
                    break;
                }
                None => break,
            }
        }
        let skip = ((page - 1) * page_size) as usize;
        Ok(RunPage {
            runs: runs.iter().skip(skip).map(RunListItem::from).collect(),
            page,
            page_size,
            has_more: more,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Progress
// ---------------------------------------------------------------------------------------------

/// One progress notification's content.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProgressUpdate {
    pub progress: f64,
    pub total: Option<f64>,
    pub message: String,
}

/// Turns reads of a run into progress notifications: one when what it says changed.
///
/// `progress` counts work done in the run's own units: each agent step contributes its turns
/// (its `max_turns` once finished), every other step 1 once finished; `total` is the sum of the
/// shares when every agent step's `max_turns` is known. The protocol requires `progress` to
/// grow with every notification, and a retried step starts again at turn 0, so a value that
/// would not grow is nudged just above the last one.
#[derive(Debug, Default)]
pub(crate) struct Reporter {
    last: Option<(f64, String)>,
}

impl Reporter {
    pub(crate) fn update(&mut self, run: &RunDetail) -> Option<ProgressUpdate> {
        let (progress, total) = amounts(run);
        let message = progress_message(run);
        let progress = match &self.last {
            Some((_, last_message)) if *last_message == message => return None,
            Some((last, _)) if progress <= *last => last + 0.001,
            _ => progress,
        };
        self.last = Some((progress, message.clone()));
        Some(ProgressUpdate {
            progress,
            total,
            message,
        })
    }
}

fn amounts(run: &RunDetail) -> (f64, Option<f64>) {
    let mut done = 0.0;
    let mut total = Some(0.0);
    for step in &run.steps {
        let finished = step.status.is_terminal();
        if step.kind == "agent" {
            // The agent's own limit, else the run's cap; unknown until the agent reports one.
            let share = step
                .agent
                .as_ref()
                .and_then(|a| a.max_turns)
                .or(run.max_turns)
                .map(f64::from);
            total = total.zip(share).map(|(t, s)| t + s);
            let turns = step.agent.as_ref().map_or(0, |a| a.turns);
            done += match (finished, share) {
                (true, Some(share)) => share,
                (_, Some(share)) => f64::from(turns).min(share),
                (_, None) => f64::from(turns),
            };
        } else {
            total = total.map(|t| t + 1.0);
            if finished {
                done += 1.0;
            }
        }
    }
    (done, total.filter(|t| *t > 0.0))
}

/// `step design (agent): running, turn 3/10; run running`, or what the run waits for.
fn progress_message(run: &RunDetail) -> String {
    let status = run.summary.status;
    let id = &run.summary.id;
    let Some(step) = current_step(run) else {
        if status.is_terminal() {
            return format!("run {id} {}", status_phrase(status.as_str()));
        }
        return match run.steps.iter().find(|s| s.status == StepStatus::Pending) {
            Some(next) => format!("run {id} {status}; next step: {}", next.id),
            None => format!("run {id} {status}"),
        };
    };
    let mut text = format!("step {} ({}): {}", step.id, step.kind, step.status);
    if let Some(agent) = &step.agent {
        let max = agent.max_turns.or(run.max_turns);
        match max {
            Some(max) => text.push_str(&format!(", turn {}/{max}", agent.turns)),
            None => text.push_str(&format!(", turn {}", agent.turns)),
        }
        if let Some(phase) = agent
            .phase
            .as_deref()
            .filter(|p| *p != step.status.as_str() && !p.is_empty())
        {
            text.push_str(&format!(" ({phase})"));
        }
    }
    if step.status == StepStatus::Waiting {
        text.push_str(" (waiting for an approval)");
    }
    text.push_str(&format!("; run {status}"));
    text
}

// ---------------------------------------------------------------------------------------------
// The handler
// ---------------------------------------------------------------------------------------------

impl ServerHandler for FlowgateMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("flowgate", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut tools = self.tool_router.list_all();
        if !self.may_approve(&ctx).await {
            tools.retain(|t| t.name != DECIDE_APPROVAL);
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.tool_router
            .call(ToolCallContext::new(self, request, ctx))
            .await
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tool_router.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A run of two steps: an agent step (`turns` of `max_turns`, in `status`) and a notify step.
    fn run(status: &str, agent_status: &str, turns: u32, max_turns: Option<u32>) -> RunDetail {
        let mut agent = json!({
            "workflow": "architect", "turns": turns, "tokens": 0, "cost_usd": 0.0
        });
        if let Some(max) = max_turns {
            agent["max_turns"] = json!(max);
        }
        serde_json::from_value(json!({
            "id": "r-1", "workflow_id": "wf", "workflow_version": 1, "status": status,
            "created_at": 0, "cost_usd": 0.0, "inputs": {}, "outputs": {},
            "steps": [
                {"id": "design", "kind": "agent", "depends_on": [], "status": agent_status,
                 "attempt": 1, "agent": agent},
                {"id": "tell", "kind": "notify", "depends_on": ["design"],
                 "status": if status == "succeeded" { "succeeded" } else { "pending" },
                 "attempt": 0}
            ],
            "open_approvals": [], "updated_at": 0,
            "links": {"self": "", "events": "", "cancel": "", "messages": ""}
        }))
        .expect("a RunDetail")
    }

    #[test]
    fn progress_counts_turns_and_finished_steps() {
        let mut reporter = Reporter::default();
        let first = reporter
            .update(&run("running", "running", 2, Some(10)))
            .expect("first read reports");
        assert_eq!(first.progress, 2.0);
        assert_eq!(first.total, Some(11.0));
        assert_eq!(
            first.message,
            "step design (agent): running, turn 2/10; run running"
        );
        // Nothing changed: nothing sent.
        assert_eq!(
            reporter.update(&run("running", "running", 2, Some(10))),
            None
        );
        let done = reporter
            .update(&run("succeeded", "succeeded", 4, Some(10)))
            .expect("the end reports");
        assert_eq!((done.progress, done.total), (11.0, Some(11.0)));
        assert_eq!(done.message, "run r-1 succeeded");
    }

    #[test]
    fn progress_grows_with_every_notification_even_when_turns_restart() {
        let mut reporter = Reporter::default();
        let a = reporter
            .update(&run("running", "running", 5, None))
            .unwrap();
        assert_eq!(
            (a.progress, a.total),
            (5.0, None),
            "no total without max_turns"
        );
        // A retry starts the agent again at turn 0: still a larger progress value.
        let b = reporter
            .update(&run("running", "retrying", 0, None))
            .unwrap();
        assert!(b.progress > a.progress, "{b:?}");
        let c = reporter
            .update(&run("running", "running", 1, None))
            .unwrap();
        assert!(c.progress > b.progress, "{c:?}");
    }

    #[test]
    fn a_pending_run_names_its_next_step() {
        let mut reporter = Reporter::default();
        let note = reporter
            .update(&run("pending", "pending", 0, Some(10)))
            .unwrap();
        assert_eq!(note.message, "run r-1 pending; next step: design");
    }
}
