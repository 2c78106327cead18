//! Approvals: the list of open approvals, and decisions from the API (an API key or a Standard
//! Webhooks signature), from Slack buttons and modals, and from one-time links.
//!
//! Every channel ends in the same place, [`decide`]: one conditional write of the decision
//! (the engine checks the approver, self-approval, that the approval is still open, and treats
//! a repeat by the same person as a no-op) and one enqueue of the effects. So a click is
//! answered well within Slack's 3 s and the run continues from the queue.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use flowgate_shared::api::{ApprovalList, DecisionRequest, DecisionResponse, ErrorBody};
use flowgate_shared::engine::{Event, Rejection, approval_run_id};
use flowgate_shared::model::{ApprovalDecision, ApprovalStatus, Run, RunStatus};
use flowgate_shared::ports::{RunQuery, RunSort, SortOrder};
use flowgate_shared::runtime::CommandError;
use flowgate_shared::signing::{self, SignatureError};
use serde::Deserialize;
use tracing::{info, warn};

use super::{Path, Query};
use crate::Services;
use crate::auth::{ApiKeys, Principal};
use crate::body::RawBody;
use crate::error::ApiError;
use crate::views;

/// Runs scanned for `GET /v1/approvals` (pages of 100). Open approvals live on running runs,
/// so the scan covers the running runs of a busy installation.
const MAX_SCANNED_PAGES: usize = 20;

/// Apply a decision: the shared path of every channel. `groups` are approver groups the caller
/// vouches `by` belongs to (Slack user groups resolved by the Slack handler).
pub(crate) async fn decide(
    s: &Services,
    approval_id: &str,
    by: &str,
    groups: Vec<String>,
    decision: ApprovalDecision,
    comment: Option<String>,
) -> Result<Run, DecideError> {
    let run_id = approval_run_id(approval_id)
        .ok_or_else(|| DecideError::NotFound(approval_id.to_string()))?;
    let event = Event::ApprovalDecided {
        approval_id: approval_id.to_string(),
        by: by.to_string(),
        decision,
        comment,
        groups,
    };
    match s.executor.command_deferred(run_id, event).await {
        Ok(run) => {
            info!(run_id, approval_id, by, %decision, "approval decision recorded");
            Ok(run)
        }
        Err(CommandError::NotFound(_))
        | Err(CommandError::Rejected(Rejection::UnknownApproval(_))) => {
            Err(DecideError::NotFound(approval_id.to_string()))
        }
        Err(CommandError::Rejected(r)) => Err(DecideError::Rejected(r)),
        Err(CommandError::Exec(e)) => Err(DecideError::Failed(e.into())),
    }
}

/// Why a decision was not recorded (nothing was written).
#[derive(Debug)]
pub(crate) enum DecideError {
    NotFound(String),
    Rejected(Rejection),
    Failed(ApiError),
}

impl DecideError {
    /// What to tell a person (Slack ephemeral reply, link page).
    pub(crate) fn message(&self) -> String {
        match self {
            DecideError::NotFound(id) => format!("There is no open approval {id}."),
            DecideError::Rejected(r) => format!("{r}."),
            DecideError::Failed(_) => {
                "Flowgate could not record the decision just now; try again in a moment."
                    .to_string()
            }
        }
    }
}

impl From<DecideError> for ApiError {
    fn from(e: DecideError) -> Self {
        match e {
            DecideError::NotFound(id) => ApiError::not_found(
                "approval_not_found",
                format!("there is no approval {id}; list open ones with GET /v1/approvals"),
            ),
            DecideError::Rejected(r) => r.into(),
            DecideError::Failed(e) => e,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApprovalParams {
    /// `pending` (default), `approved`, `rejected`, `expired`, `cancelled`, `retried`,
    /// `skipped`, or `all`.
    #[serde(default)]
    status: Option<String>,
    /// Only approvals of this workflow's runs.
    #[serde(default)]
    workflow: Option<String>,
    /// At most this many (1 to 100, default 50).
    #[serde(default)]
    limit: Option<u32>,
}

/// Approvals, newest request first: open ones by default.
#[utoipa::path(
    get,
    path = "/v1/approvals",
    tag = "approvals",
    params(ApprovalParams),
    responses(
        (status = 200, description = "Approvals", body = ApprovalList),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 422, description = "Unknown status or limit out of range", body = ErrorBody),
    )
)]
pub(crate) async fn list_approvals(
    State(s): State<Services>,
    _: Principal,
    Query(params): Query<ApprovalParams>,
) -> Result<Json<ApprovalList>, ApiError> {
    let wanted: Option<ApprovalStatus> = match params.status.as_deref().unwrap_or("pending") {
        "all" => None,
        text => Some(text.parse().map_err(|_| {
            ApiError::unprocessable(
                "invalid_status",
                format!(
                    "status {text:?} is not one of pending, approved, rejected, expired, \
                     cancelled, retried, skipped, all"
                ),
            )
            .with_field("status")
        })?),
    };
    let limit = params.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::unprocessable(
            "invalid_limit",
            format!("limit must be between 1 and 100, got {limit}"),
        )
        .with_field("limit"));
    }
    // Pending approvals only exist on running runs; other states can be on any run.
    let statuses = if wanted == Some(ApprovalStatus::Pending) {
        vec![RunStatus::Running]
    } else {
        Vec::new()
    };
    let mut query = RunQuery {
        workflow_id: params.workflow.clone(),
        statuses,
        sort: RunSort::StartedAt,
        order: SortOrder::Desc,
        limit: 100,
        ..RunQuery::default()
    };
    let mut approvals = Vec::new();
    for _ in 0..MAX_SCANNED_PAGES {
        let page = s.store.list_runs(&query).await?;
        for run in &page.runs {
            for (step, a) in run.approvals() {
                if wanted.is_none_or(|w| w == a.status) {
                    approvals.push(views::approval_view(run, step.unwrap_or_default(), a));
                }
            }
        }
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => break,
        }
    }
    approvals.sort_by_key(|a| std::cmp::Reverse(a.requested_at));
    approvals.truncate(limit as usize);
    Ok(Json(ApprovalList { approvals }))
}

/// Decide on an approval, authenticated with an API key (the key's principal decides) or
/// signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature` over
/// the raw body; decides as the configured webhook principal).
#[utoipa::path(
    post,
    path = "/v1/approvals/{id}/decision",
    tag = "approvals",
    params(("id" = String, Path, description = "Approval id (`{run_id}.{step}.{attempt}`)")),
    request_body = DecisionRequest,
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "Decision recorded (a repeat by the same approver changes nothing)", body = DecisionResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key or signature", body = ErrorBody),
        (status = 403, description = "Not an approver, or the run's starter approving their own run", body = ErrorBody),
        (status = 404, description = "No such approval", body = ErrorBody),
        (status = 409, description = "The approval is closed", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid decision (unknown value, feedback missing)", body = ErrorBody),
    )
)]
pub(crate) async fn decide_approval(
    State(s): State<Services>,
    Path(id): Path<String>,
    raw: RawBody,
) -> Result<Json<DecisionResponse>, ApiError> {
    let by = authenticate(&s, &raw)?;
    let request: DecisionRequest = raw.json()?;
    let comment = request.comment.filter(|c| !c.trim().is_empty());
    if comment
        .as_ref()
        .is_some_and(|c| c.len() > MAX_COMMENT_BYTES)
    {
        return Err(ApiError::unprocessable(
            "comment_too_long",
            format!("comment is longer than {MAX_COMMENT_BYTES} bytes"),
        )
        .with_field("comment"));
    }
    let run = decide(&s, &id, &by, Vec::new(), request.decision, comment).await?;
    let (step, approval) = run
        .approval(&id)
        .ok_or_else(|| ApiError::internal(format!("approval {id} vanished from run {}", run.id)))?;
    Ok(Json(DecisionResponse {
        approval: views::approval_view(&run, step.unwrap_or_default(), approval),
        run_status: run.status,
        by,
    }))
}

/// Longest accepted reason or feedback.
pub(crate) const MAX_COMMENT_BYTES: usize = 3_000;

/// The decider: an API key's principal, or the webhook principal for a valid signature.
fn authenticate(s: &Services, raw: &RawBody) -> Result<String, ApiError> {
    if let Some(key) = ApiKeys::presented(&raw.headers).map_err(ApiError::unauthorized)? {
        let principal = s
            .keys
            .principal_for(key)
            .ok_or_else(|| ApiError::unauthorized("the API key is not valid"))?;
        if !s.keys.may_approve(principal) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "not_an_approver",
                format!(
                    "the API key of `{principal}` may not decide approvals (it is not listed in \
                     FLOWGATE_API_KEY_APPROVERS); ask someone whose key may, or decide in Slack \
                     or through an approval link"
                ),
            ));
        }
        return Ok(principal.to_string());
    }
    if raw.headers.contains_key("webhook-signature") {
        if s.approvals.webhook_secrets.is_empty() {
            return Err(ApiError::unauthorized(
                "signed decisions are not enabled here (no webhook secret is configured); send an API key",
            ));
        }
        let now = s.clock.now_ms() / 1000;
        signing::verify_standard(
            &s.approvals.webhook_secrets,
            &raw.header_pairs(),
            &raw.bytes,
            now,
        )
        .map_err(|e| signature_error(&e))?;
        return Ok(s.approvals.webhook_principal.clone());
    }
    Err(ApiError::unauthorized(
        "missing credentials: send an API key (x-api-key or Authorization: Bearer) or sign the request per Standard Webhooks",
    ))
}

/// A signature failure as a 401 naming the problem (never the expected value).
pub(crate) fn signature_error(e: &SignatureError) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        e.code(),
        format!("signature check failed: {e}"),
    )
}

// ----- one-time links -------------------------------------------------------------------------

/// A confirmation page for a one-time approval link. Opening the link decides nothing (mail
/// scanners and chat unfurlers open links); the page's button posts the decision.
#[utoipa::path(
    get,
    path = "/approvals/link/{token}",
    tag = "approvals",
    params(("token" = String, Path, description = "Signed link token")),
    security(()),
    responses(
        (status = 200, description = "Confirmation page (HTML)", content_type = "text/html"),
        (status = 401, description = "Invalid or expired link", content_type = "text/html"),
    )
)]
pub(crate) async fn link_page(State(s): State<Services>, Path(token): Path<String>) -> Response {
    let claims = match verify_token(&s, &token) {
        Ok(c) => c,
        Err(page) => return page,
    };
    let (run, state) = match s
        .store
        .get_run(approval_run_id(&claims.approval_id).unwrap_or_default())
        .await
    {
        Ok(Some(run)) => {
            let state = run
                .approval(&claims.approval_id)
                .map(|(_, a)| (a.message.clone(), a.status));
            (Some(run.id.clone()), state)
        }
        _ => (None, None),
    };
    let Some((message, status)) = state else {
        return page(
            StatusCode::NOT_FOUND,
            "Approval not found",
            "This approval no longer exists.",
        );
    };
    if status != ApprovalStatus::Pending {
        return page(
            StatusCode::OK,
            "Already decided",
            &format!("This approval is {status}; nothing to do."),
        );
    }
    let action = html_escape(&claims.action);
    let body = format!(
        "<p>{}</p><p>Run {} asks for a decision.</p>\
         <form method=\"post\"><label for=\"comment\">Comment (optional)</label><br>\
         <textarea id=\"comment\" name=\"comment\" rows=\"4\" cols=\"60\" maxlength=\"3000\"></textarea><br>\
         <button type=\"submit\">Confirm: {action}</button></form>",
        html_escape(&message),
        html_escape(run.as_deref().unwrap_or_default()),
    );
    page(StatusCode::OK, &format!("Confirm: {action}"), &body)
}

#[derive(Debug, Deserialize)]
struct LinkForm {
    #[serde(default)]
    comment: Option<String>,
}

/// Apply a one-time link's decision (the form on [`link_page`] posts here).
#[utoipa::path(
    post,
    path = "/approvals/link/{token}",
    tag = "approvals",
    params(("token" = String, Path, description = "Signed link token")),
    security(()),
    responses(
        (status = 200, description = "Decision recorded (HTML)", content_type = "text/html"),
        (status = 401, description = "Invalid or expired link", content_type = "text/html"),
        (status = 403, description = "Refused (not an approver, self-approval)", content_type = "text/html"),
        (status = 409, description = "The approval is closed", content_type = "text/html"),
    )
)]
pub(crate) async fn link_decide(
    State(s): State<Services>,
    Path(token): Path<String>,
    raw: RawBody,
) -> Response {
    let claims = match verify_token(&s, &token) {
        Ok(c) => c,
        Err(page) => return page,
    };
    let Ok(decision) = claims.action.parse::<ApprovalDecision>() else {
        return page(
            StatusCode::UNAUTHORIZED,
            "Invalid link",
            "This link names no valid decision.",
        );
    };
    let comment = serde_urlencoded::from_bytes::<LinkForm>(&raw.bytes)
        .ok()
        .and_then(|f| f.comment)
        .map(|c| c.chars().take(MAX_COMMENT_BYTES).collect::<String>())
        .filter(|c| !c.trim().is_empty());
    match decide(
        &s,
        &claims.approval_id,
        &claims.approver,
        Vec::new(),
        decision,
        comment,
    )
    .await
    {
        Ok(_) => page(
            StatusCode::OK,
            "Decision recorded",
            &format!(
                "Recorded: {} on approval {}.",
                html_escape(&claims.action),
                html_escape(&claims.approval_id)
            ),
        ),
        Err(e) => {
            let status = match &e {
                DecideError::NotFound(_) => StatusCode::NOT_FOUND,
                DecideError::Rejected(Rejection::ApprovalClosed { .. }) => StatusCode::CONFLICT,
                DecideError::Rejected(_) => StatusCode::FORBIDDEN,
                DecideError::Failed(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            page(status, "Not recorded", &html_escape(&e.message()))
        }
    }
}

#[allow(clippy::result_large_err)]
fn verify_token(s: &Services, token: &str) -> Result<signing::LinkClaims, Response> {
    let Some(key) = s.notifier.links().link_key.as_ref() else {
        return Err(page(
            StatusCode::NOT_FOUND,
            "Links are off",
            "Approval links are not enabled on this server.",
        ));
    };
    signing::verify_link(key, token, s.clock.now_ms() / 1000).map_err(|e| {
        warn!(error = %e, "approval link refused");
        page(
            StatusCode::UNAUTHORIZED,
            "Invalid link",
            "This approval link is invalid or has expired.",
        )
    })
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{t} · Flowgate</title></head>\
         <body><main><h1>{t}</h1>{body}</main></body></html>",
        t = html_escape(title)
    );
    (status, Html(html)).into_response()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
