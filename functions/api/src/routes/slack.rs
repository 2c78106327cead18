//! `POST /slack/interactions`: approval buttons and the reason/feedback modal.
//!
//! The request path is: verify Slack's signature over the exact raw body (±300 s), parse,
//! then one conditional write of the decision and one enqueue (see [`super::approvals::decide`]).
//! The approval message is updated afterwards from the queue (`chat.update`), so the click is
//! answered in milliseconds. Reject and retry open a modal first (`views.open`, which must
//! happen within 3 s of the click because the `trigger_id` expires), and decide on its
//! submission. A click that changes nothing (not an approver, approval closed) gets a reply
//! only the clicker sees.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flowgate_shared::api::ErrorBody;
use flowgate_shared::engine::{Rejection, approval_run_id};
use flowgate_shared::model::{ApprovalDecision, ApprovalState, ApprovalStatus};
use flowgate_shared::notify::{Delivery, is_slack_id};
use flowgate_shared::ports::WorkMessage;
use flowgate_shared::signing;
use flowgate_shared::slack::blocks::{self, ButtonAction};
use flowgate_shared::slack::interaction::{self, BlockActions, Interaction, ViewSubmission};
use serde_json::json;
use tracing::{info, warn};

use super::approvals::{DecideError, MAX_COMMENT_BYTES, decide, signature_error};
use crate::Services;
use crate::body::RawBody;
use crate::error::ApiError;

/// The modal's `callback_id` (set by [`blocks::decision_modal`]).
const DECISION_CALLBACK: &str = "approval_decision";

/// Slack interactivity: button clicks and modal submissions, signed by Slack.
#[utoipa::path(
    post,
    path = "/slack/interactions",
    tag = "approvals",
    security(()),
    request_body(content = String, content_type = "application/x-www-form-urlencoded",
                 description = "Slack's `payload=` form, signed with `x-slack-signature` and `x-slack-request-timestamp`"),
    responses(
        (status = 200, description = "Handled (Slack shows nothing, or the modal's errors)"),
        (status = 400, description = "Not a Slack interaction payload", body = ErrorBody),
        (status = 401, description = "Missing, stale or wrong signature", body = ErrorBody),
        (status = 503, description = "No Slack signing secret configured", body = ErrorBody),
    )
)]
pub(crate) async fn slack_interactions(
    State(s): State<Services>,
    raw: RawBody,
) -> Result<Response, ApiError> {
    let Some(secret) = s.approvals.slack_signing_secret.as_ref() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "slack_not_configured",
            "Slack interactivity is not enabled here: set FLOWGATE_SLACK_SIGNING_SECRET",
        ));
    };
    let now = s.clock.now_ms() / 1000;
    signing::verify_slack(secret, &raw.header_pairs(), &raw.bytes, now).map_err(|e| {
        warn!(error = %e, "Slack request refused");
        signature_error(&e)
    })?;
    let parsed = interaction::parse_interaction(&raw.bytes)
        .map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;
    match parsed {
        Interaction::BlockActions(click) => Ok(on_click(&s, click).await),
        Interaction::ViewSubmission(view) => Ok(on_submission(&s, view).await),
        Interaction::Other { kind } => {
            info!(kind = %kind, "Slack interaction ignored");
            Ok(StatusCode::OK.into_response())
        }
    }
}

async fn on_click(s: &Services, click: BlockActions) -> Response {
    let Some((approval_id, action)) = click.actions.iter().find_map(|a| {
        let id = blocks::approval_id_from_block_id(&a.block_id)?;
        let action = a.action_id.parse::<ButtonAction>().ok()?;
        Some((id.to_string(), action))
    }) else {
        return StatusCode::OK.into_response(); // not one of our buttons
    };
    let by = format!("slack:{}", click.user_id);
    let channel = click.channel_id.clone().unwrap_or_default();
    if action.needs_comment() {
        // Ask for the reason / feedback first, if this person may decide at all.
        if let Err(why) = precheck(s, &approval_id, &by, &click.user_id).await {
            reply_privately(s, &approval_id, &channel, &click.user_id, why).await;
            return StatusCode::OK.into_response();
        }
        let (Some(trigger), Some(slack)) = (click.trigger_id.as_deref(), s.notifier.slack_client())
        else {
            reply_privately(
                s,
                &approval_id,
                &channel,
                &click.user_id,
                "This decision needs a comment; use the API or the dashboard.".to_string(),
            )
            .await;
            return StatusCode::OK.into_response();
        };
        let view = blocks::decision_modal(
            &approval_id,
            action.as_str(),
            &channel,
            click.message_ts.as_deref().unwrap_or_default(),
        );
        if let Err(e) = slack.open_view(trigger, &view).await {
            warn!(approval_id = %approval_id, error = %e, "could not open the decision modal");
        }
        return StatusCode::OK.into_response();
    }
    let decision = decision_of(action);
    match decide_resolving_groups(s, &approval_id, &by, &click.user_id, decision, None).await {
        Ok(()) => {}
        Err(e) => reply_privately(s, &approval_id, &channel, &click.user_id, e.message()).await,
    }
    StatusCode::OK.into_response()
}

async fn on_submission(s: &Services, view: ViewSubmission) -> Response {
    if view.callback_id != DECISION_CALLBACK {
        return StatusCode::OK.into_response();
    }
    let meta = match interaction::parse_decision_metadata(&view.private_metadata) {
        Ok(m) => m,
        Err(e) => {
            return modal_error(&format!(
                "This form is damaged ({e}); click the button again."
            ));
        }
    };
    let Ok(action) = meta.action.parse::<ButtonAction>() else {
        return modal_error("This form names no valid decision; click the button again.");
    };
    let comment = view
        .value("comment", "comment")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| c.chars().take(MAX_COMMENT_BYTES).collect::<String>());
    let by = format!("slack:{}", view.user_id);
    match decide_resolving_groups(
        s,
        &meta.approval_id,
        &by,
        &view.user_id,
        decision_of(action),
        comment,
    )
    .await
    {
        Ok(()) => StatusCode::OK.into_response(), // an empty 200 closes the modal
        Err(e) => modal_error(&e.message()),
    }
}

/// Shows `message` under the modal's text box instead of closing it.
fn modal_error(message: &str) -> Response {
    Json(json!({"response_action": "errors", "errors": {"comment": message}})).into_response()
}

fn decision_of(action: ButtonAction) -> ApprovalDecision {
    match action {
        ButtonAction::Approve => ApprovalDecision::Approve,
        ButtonAction::Reject => ApprovalDecision::Reject,
        ButtonAction::Retry => ApprovalDecision::Retry,
        ButtonAction::Skip => ApprovalDecision::Skip,
        ButtonAction::Cancel => ApprovalDecision::Cancel,
    }
}

/// Decide as `by`; if refused because `by` is not listed, check the Slack user groups among
/// the approvers (one Slack call per group) and try once more with the groups found.
async fn decide_resolving_groups(
    s: &Services,
    approval_id: &str,
    by: &str,
    user: &str,
    decision: ApprovalDecision,
    comment: Option<String>,
) -> Result<(), DecideError> {
    match decide(s, approval_id, by, Vec::new(), decision, comment.clone()).await {
        Err(DecideError::Rejected(Rejection::NotAnApprover { .. })) => {
            let groups = member_groups(s, approval_id, user).await;
            if groups.is_empty() {
                return Err(DecideError::Rejected(Rejection::NotAnApprover {
                    approval_id: approval_id.to_string(),
                    by: by.to_string(),
                }));
            }
            decide(s, approval_id, by, groups, decision, comment)
                .await
                .map(|_| ())
        }
        other => other.map(|_| ()),
    }
}

/// The Slack user groups (`S…`) among the approval's approvers that `user` belongs to, read
/// from the stored run (after the engine refused `user` as not listed).
async fn member_groups(s: &Services, approval_id: &str, user: &str) -> Vec<String> {
    let Some(run_id) = approval_run_id(approval_id) else {
        return Vec::new();
    };
    let Ok(Some(run)) = s.store.get_run(run_id).await else {
        return Vec::new();
    };
    match run.approval(approval_id) {
        Some((_, approval)) => groups_of(s, approval, user).await,
        None => Vec::new(),
    }
}

/// The Slack user groups (`S…`) among `approval`'s approvers that `user` belongs to (one Slack
/// call per group).
async fn groups_of(s: &Services, approval: &ApprovalState, user: &str) -> Vec<String> {
    let Some(slack) = s.notifier.slack_client() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for group in approval
        .approvers
        .iter()
        .filter(|a| a.starts_with('S') && is_slack_id(a))
    {
        match slack.usergroup_members(group).await {
            Ok(members) if members.iter().any(|m| m == user) => found.push(group.clone()),
            Ok(_) => {}
            Err(e) => warn!(group = %group, error = %e, "could not list a Slack user group"),
        }
    }
    found
}

/// Before opening the modal: is the approval open, and may this person decide? (The decision
/// itself is checked again by the engine when the modal is submitted.)
async fn precheck(s: &Services, approval_id: &str, by: &str, user: &str) -> Result<(), String> {
    let not_found = || format!("There is no open approval {approval_id}.");
    let run_id = approval_run_id(approval_id).ok_or_else(not_found)?;
    let run = match s.store.get_run(run_id).await {
        Ok(Some(run)) => run,
        Ok(None) => return Err(not_found()),
        Err(_) => {
            return Err(
                "Flowgate could not read the approval just now; try again in a moment.".to_string(),
            );
        }
    };
    let (_, approval) = run.approval(approval_id).ok_or_else(not_found)?;
    if approval.status != ApprovalStatus::Pending {
        return Err(format!("This approval is already {}.", approval.status));
    }
    if approval.decisions.iter().any(|d| d.by == by) {
        return Err("You already decided on this approval.".to_string());
    }
    if !approval.allows(by, &[]) {
        let groups = groups_of(s, approval, user).await;
        if !approval.allows(by, &groups) {
            return Err(format!(
                "You are not an approver of {approval_id}; nothing was changed."
            ));
        }
    }
    Ok(())
}

/// An ephemeral reply ("only visible to you"), sent from the queue so the click is answered
/// at once.
async fn reply_privately(s: &Services, approval_id: &str, channel: &str, user: &str, text: String) {
    info!(approval_id, user, reason = %text, "Slack click changed nothing");
    if channel.is_empty() {
        return;
    }
    let message = WorkMessage::Deliver {
        run_id: approval_run_id(approval_id).unwrap_or_default().to_string(),
        delivery: Delivery::SlackEphemeral {
            channel: channel.to_string(),
            user: user.to_string(),
            text,
        },
        attempt: 1,
        not_before: None,
    };
    if let Err(e) = s.queue.send(&message, std::time::Duration::ZERO).await {
        warn!(error = %e, "could not queue the ephemeral reply");
    }
}
