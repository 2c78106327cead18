//! Block Kit layouts of Flowgate's Slack messages: approval requests and their closed form, the
//! reason/feedback modal, the per-run thread parent and its replies.
//!
//! Pure functions, so the layouts are tested without Slack and every sender renders the same
//! thing. The ids in here (`approval:{approval_id}` block ids, the button action ids, the modal's
//! `callback_id` and input ids) are the contract with the interaction handler: it reads them back
//! from click and submission payloads, so they are constants and must not drift.
//!
//! Text that comes from users (approval messages, comments, errors, ids) is escaped with
//! [`escape`] so it cannot mention `@channel`, forge links or break the markup.

use std::fmt::Write as _;
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::definition::{StepAction, StepKind, WorkflowDefinition};
use crate::model::{ApprovalStatus, DecisionRecord, Millis, Run, RunStatus, StepState, StepStatus};

/// Prefix of the approval actions block's `block_id`: `approval:{approval_id}`.
pub const APPROVAL_BLOCK_PREFIX: &str = "approval:";
/// `callback_id` of the reject/retry modal.
pub const DECISION_CALLBACK_ID: &str = "approval_decision";
/// `block_id` of the modal's text input.
pub const COMMENT_BLOCK_ID: &str = "comment";
/// `action_id` of the modal's text input.
pub const COMMENT_ACTION_ID: &str = "comment";
/// Slack's limit on a section's text and on a `plain_text_input`'s `max_length`.
pub const SECTION_TEXT_LIMIT: usize = 3000;
/// Longest reason or feedback the modal accepts.
pub const COMMENT_MAX_LENGTH: usize = 3000;

/// How many approvers the context line names before summarising the rest.
const MAX_LISTED_APPROVERS: usize = 10;
/// How much of an error a thread reply quotes; the run page has the rest.
const MAX_ERROR_CHARS: usize = 500;
/// How much of the approval message a reminder repeats.
const REMINDER_MESSAGE_CHARS: usize = 300;

/// The buttons of an approval request. The action id, the button's `value` and the command the
/// interaction handler issues are all this name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ButtonAction {
    Approve,
    Reject,
    Retry,
    Skip,
    Cancel,
}

impl ButtonAction {
    pub const ALL: [ButtonAction; 5] = [
        ButtonAction::Approve,
        ButtonAction::Reject,
        ButtonAction::Retry,
        ButtonAction::Skip,
        ButtonAction::Cancel,
    ];

    /// The `action_id` and `value` of the button.
    pub fn as_str(self) -> &'static str {
        match self {
            ButtonAction::Approve => "approve",
            ButtonAction::Reject => "reject",
            ButtonAction::Retry => "retry",
            ButtonAction::Skip => "skip",
            ButtonAction::Cancel => "cancel",
        }
    }

    /// Whether a click opens the modal first: a rejection needs a reason and a retry needs
    /// feedback for the agent, so those two are only issued from the modal's submission.
    pub fn needs_comment(self) -> bool {
        matches!(self, ButtonAction::Reject | ButtonAction::Retry)
    }

    fn label(self) -> &'static str {
        match self {
            ButtonAction::Approve => "Approve",
            ButtonAction::Reject => "Reject",
            ButtonAction::Retry => "Retry with feedback",
            ButtonAction::Skip => "Skip",
            ButtonAction::Cancel => "Cancel run",
        }
    }
}

impl FromStr for ButtonAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ButtonAction::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown approval action {s:?}; expected approve, reject, retry, skip or cancel"
                )
            })
    }
}

impl std::fmt::Display for ButtonAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `block_id` of an approval's actions block.
pub fn approval_block_id(approval_id: &str) -> String {
    format!("{APPROVAL_BLOCK_PREFIX}{approval_id}")
}

/// The approval id in an actions block's `block_id`, if the block is an approval's.
pub fn approval_id_from_block_id(block_id: &str) -> Option<&str> {
    block_id
        .strip_prefix(APPROVAL_BLOCK_PREFIX)
        .filter(|id| !id.is_empty())
}

/// Everything an approval message shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ApprovalRequest {
    pub run_id: String,
    /// The workflow's display name (or id).
    pub workflow: String,
    /// The step id.
    pub step: String,
    /// `{run_id}.{step_id}.{attempt}`.
    pub approval_id: String,
    /// The rendered approval message (mrkdwn; escaped here).
    pub message: String,
    /// Slack user ids (`U…`, `slack:U…`), group ids (`S…`) or API principals.
    pub approvers: Vec<String>,
    /// Approvals needed (N of M).
    pub required: u32,
    /// When the approval expires, if it does.
    pub expires_at: Option<Millis>,
    /// Link to the run in Flowgate's API.
    pub run_url: Option<String>,
    /// Render the short "still waiting" reminder instead of the full request.
    pub reminder: bool,
}

/// What the reject/retry modal carries from the click to its submission, as compact JSON in
/// the view's `private_metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionMetadata {
    pub approval_id: String,
    /// The button clicked (`reject` or `retry`).
    pub action: String,
    /// Where the approval message is, so the submission handler can update it.
    pub channel: String,
    pub message_ts: String,
}

/// Escapes `&`, `<` and `>` as Slack requires for text it should show literally.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        c => out.push(c),
    }
}

/// [`escape`]d text of at most `max` characters, ending in `…` when cut. Never cuts inside an
/// entity, which Slack would show half-escaped.
pub fn escape_truncated(text: &str, max: usize) -> String {
    let escaped = escape(text);
    if escaped.chars().count() <= max {
        return escaped;
    }
    let budget = max.saturating_sub(1);
    let mut out = String::new();
    let mut used = 0;
    let mut piece = String::new();
    for c in text.chars() {
        piece.clear();
        push_escaped(&mut piece, c);
        let n = piece.chars().count();
        if used + n > budget {
            break;
        }
        out.push_str(&piece);
        used += n;
    }
    out.push('…');
    out
}

/// `<url|label>` with both parts escaped; a `|` in the URL is percent-encoded because Slack
/// would read it as the label separator.
pub fn link(url: &str, label: &str) -> String {
    format!("<{}|{}>", escape(url).replace('|', "%7C"), escape(label))
}

/// How a principal is shown: Slack users and groups as mentions, anything else as escaped text.
///
/// Flowgate names Slack principals `slack:U…`; definitions may list bare `U…`/`W…` user ids
/// and `S…` user-group ids.
pub fn mention(principal: &str) -> String {
    let id = principal.strip_prefix("slack:").unwrap_or(principal);
    if looks_like_slack_id(id) {
        if id.starts_with('S') {
            return format!("<!subteam^{id}>");
        }
        if id.starts_with('U') || id.starts_with('W') {
            return format!("<@{id}>");
        }
    }
    escape(principal)
}

fn looks_like_slack_id(id: &str) -> bool {
    id.len() >= 8
        && id.len() <= 20
        && id
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// Slack's date token: shown in each reader's time zone, with an ISO fallback for clients that
/// cannot render it.
pub fn slack_date(at: Millis) -> String {
    let secs = at.div_euclid(1000);
    let iso =
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64));
    format!("<!date^{secs}^{{date_short_pretty}} {{time}}|{iso}>")
}

/// `` `text` `` with the text escaped and backticks removed (they would end the code span).
fn code(text: &str) -> String {
    format!("`{}`", escape(&text.replace('`', "'")))
}

fn plain(text: &str) -> Value {
    json!({ "type": "plain_text", "text": text, "emoji": true })
}

fn section(text: String) -> Value {
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } })
}

fn context(text: String) -> Value {
    json!({ "type": "context", "elements": [ { "type": "mrkdwn", "text": text } ] })
}

/// Cuts already-built mrkdwn to a section's limit at a line end when possible, so an entity or
/// mention is not cut in half.
fn fit_section(text: String) -> String {
    if text.chars().count() <= SECTION_TEXT_LIMIT {
        return text;
    }
    let mut out = String::new();
    for line in text.lines() {
        if out.chars().count() + line.chars().count() + 2 > SECTION_TEXT_LIMIT {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    if out.is_empty() {
        // One huge line: cut by characters (only our own escaped text gets this long).
        out = text.chars().take(SECTION_TEXT_LIMIT - 1).collect();
    }
    out.push('…');
    out
}

/// Quotes each line of a comment (`> …`), escaped.
fn quote(text: &str, max: usize) -> String {
    escape_truncated(text.trim(), max)
        .lines()
        .map(|line| format!("> {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn approvers_text(approvers: &[String]) -> String {
    let mut names: Vec<String> = approvers
        .iter()
        .take(MAX_LISTED_APPROVERS)
        .map(|a| mention(a))
        .collect();
    if approvers.len() > MAX_LISTED_APPROVERS {
        names.push(format!(
            "and {} more",
            approvers.len() - MAX_LISTED_APPROVERS
        ));
    }
    names.join(", ")
}

/// Run, step, N of M and expiry: the line under the approval message.
fn approval_context(req: &ApprovalRequest) -> String {
    let mut text = format!(
        "Run {} · workflow *{}* · step {}",
        code(&req.run_id),
        escape(&req.workflow),
        code(&req.step)
    );
    let required = req.required.max(1);
    if req.approvers.is_empty() {
        let _ = write!(text, " · needs {required} approval(s)");
    } else {
        let _ = write!(
            text,
            " · needs {required} of {} approvers ({})",
            req.approvers.len(),
            approvers_text(&req.approvers)
        );
    }
    if let Some(at) = req.expires_at {
        let _ = write!(text, " · expires {}", slack_date(at));
    }
    if let Some(url) = &req.run_url {
        let _ = write!(text, " · {}", link(url, "View run"));
    }
    text
}

fn button(action: ButtonAction, run_id: &str) -> Value {
    let mut b = json!({
        "type": "button",
        "action_id": action.as_str(),
        "text": plain(action.label()),
        "value": action.as_str(),
    });
    match action {
        ButtonAction::Approve => b["style"] = json!("primary"),
        ButtonAction::Reject => b["style"] = json!("danger"),
        ButtonAction::Cancel => {
            b["confirm"] = json!({
                "title": plain("Cancel this run?"),
                "text": plain(&format!(
                    "This stops run {} and every step still going. It cannot be undone.",
                    cut_plain(run_id, 200)
                )),
                "confirm": plain("Cancel run"),
                "deny": plain("Keep it running"),
                "style": "danger",
            });
        }
        ButtonAction::Retry | ButtonAction::Skip => {}
    }
    b
}

fn cut_plain(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut out: String = text.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

fn actions_block(req: &ApprovalRequest) -> Value {
    let elements: Vec<Value> = ButtonAction::ALL
        .into_iter()
        .map(|a| button(a, &req.run_id))
        .collect();
    json!({
        "type": "actions",
        "block_id": approval_block_id(&req.approval_id),
        "elements": elements,
    })
}

fn message_section(req: &ApprovalRequest) -> Value {
    let text = if req.message.trim().is_empty() {
        "_(no message)_".to_string()
    } else {
        escape_truncated(&req.message, SECTION_TEXT_LIMIT)
    };
    section(text)
}

fn request_fallback(req: &ApprovalRequest, prefix: &str) -> String {
    format!(
        "{prefix}: {} run {}, step {}",
        escape(&req.workflow),
        escape(&req.run_id),
        escape(&req.step)
    )
}

/// The approval request: the message, a context line and the five buttons in an actions block
/// whose `block_id` is `approval:{approval_id}`.
///
/// With `reminder` set, a short "still waiting" variant with the same buttons (and the same
/// block id, so a click on either message is the same command).
pub fn approval_request(req: &ApprovalRequest) -> (String, Value) {
    if req.reminder {
        let mut text = format!(
            "⏰ *Reminder: still waiting for a decision* on step {} of run {}",
            code(&req.step),
            code(&req.run_id)
        );
        if !req.message.trim().is_empty() {
            let _ = write!(text, "\n{}", quote(&req.message, REMINDER_MESSAGE_CHARS));
        }
        let blocks = json!([
            section(fit_section(text)),
            context(approval_context(req)),
            actions_block(req),
        ]);
        return (
            request_fallback(req, "Reminder: approval still needed"),
            blocks,
        );
    }
    let blocks = json!([
        message_section(req),
        context(approval_context(req)),
        actions_block(req),
    ]);
    (request_fallback(req, "Approval needed"), blocks)
}

/// Shorthand for [`approval_closed`] with [`ApprovalStatus::Pending`]: some approvals are in
/// and more are needed.
pub fn approval_progress(req: &ApprovalRequest, decisions: &[DecisionRecord]) -> (String, Value) {
    approval_closed(req, ApprovalStatus::Pending, decisions)
}

/// The approval message after a decision.
///
/// For a closed approval (approved, rejected, expired, cancelled, …): the same message, no
/// buttons, and a line naming the outcome, who decided and when, with comments quoted. For
/// [`ApprovalStatus::Pending`] (N of M, more needed): the buttons stay and a line says
/// `1 of 2 approvals: <@U123>`.
///
/// Statuses and decisions are matched by name, so outcomes added to the model later (retried,
/// skipped) render sensibly without this function changing in lock-step.
pub fn approval_closed(
    req: &ApprovalRequest,
    status: ApprovalStatus,
    decisions: &[DecisionRecord],
) -> (String, Value) {
    let approvals = decided(decisions, "approve");
    let required = req.required.max(1);
    if status == ApprovalStatus::Pending {
        let mut text = format!(
            "{} of {required} approvals: {}",
            approvals.len(),
            deciders(&approvals)
        );
        push_comments(&mut text, decisions);
        let blocks = json!([
            message_section(req),
            context(approval_context(req)),
            section(fit_section(text)),
            actions_block(req),
        ]);
        let fallback = format!(
            "{} ({} of {required} approvals)",
            request_fallback(req, "Approval needed"),
            approvals.len()
        );
        return (fallback, blocks);
    }
    // The decision that produces each outcome, to name who made it.
    let (emoji, outcome, decision) = match status.as_str() {
        "approved" => ("✅", "Approved", "approve"),
        "rejected" => ("❌", "Rejected", "reject"),
        "retried" => ("🔁", "Sent back for a retry", "retry"),
        "skipped" => ("⏭️", "Skipped", "skip"),
        "cancelled" => ("🚫", "Cancelled", "cancel"),
        "expired" => ("⌛", "Expired", ""),
        other => ("ℹ️", other, ""),
    };
    let mut text = format!("{emoji} *{}*", escape(outcome));
    let by = decided(decisions, decision);
    if by.is_empty() {
        text.push_str(match status.as_str() {
            "expired" => " without a decision",
            _ => " without a decision: the step or run moved on",
        });
    } else {
        let _ = write!(text, " by {}", deciders(&by));
    }
    if decision != "approve" && !approvals.is_empty() {
        let _ = write!(
            text,
            " (after {} of {required} approvals: {})",
            approvals.len(),
            deciders(&approvals)
        );
    }
    push_comments(&mut text, decisions);
    let blocks = json!([
        message_section(req),
        context(closed_context(req)),
        section(fit_section(text)),
    ]);
    (
        request_fallback(req, &format!("Approval {}", status.as_str())),
        blocks,
    )
}

/// The decisions named `decision` (`approve`, `reject`, …), oldest first.
fn decided<'a>(decisions: &'a [DecisionRecord], decision: &str) -> Vec<&'a DecisionRecord> {
    decisions
        .iter()
        .filter(|d| !decision.is_empty() && d.decision.as_str() == decision)
        .collect()
}

/// The context line of a closed approval: no expiry (it no longer matters).
fn closed_context(req: &ApprovalRequest) -> String {
    let mut text = format!(
        "Run {} · workflow *{}* · step {}",
        code(&req.run_id),
        escape(&req.workflow),
        code(&req.step)
    );
    if let Some(url) = &req.run_url {
        let _ = write!(text, " · {}", link(url, "View run"));
    }
    text
}

/// `<@U1> <!date…>, <@U2> <!date…>`.
fn deciders(decisions: &[&DecisionRecord]) -> String {
    if decisions.is_empty() {
        return "nobody yet".to_string();
    }
    decisions
        .iter()
        .map(|d| format!("{} {}", mention(&d.by), slack_date(d.at)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn push_comments(text: &mut String, decisions: &[DecisionRecord]) {
    for d in decisions {
        let Some(comment) = d.comment.as_deref().filter(|c| !c.trim().is_empty()) else {
            continue;
        };
        let verb = match d.decision.as_str() {
            "approve" => "approved",
            "reject" => "rejected",
            "retry" => "asked for a retry",
            "skip" => "skipped",
            "cancel" => "cancelled the run",
            other => other,
        };
        let _ = write!(
            text,
            "\n{} ({verb}):\n{}",
            mention(&d.by),
            quote(comment, 1000)
        );
    }
}

/// The modal that asks for a rejection reason or retry feedback.
///
/// `private_metadata` carries [`DecisionMetadata`] as compact JSON so the submission handler
/// knows which approval, which action, and which message to update. The single multiline input
/// is `comment`/`comment`, required for reject and retry, at most 3000 characters.
pub fn decision_modal(approval_id: &str, action: &str, channel: &str, message_ts: &str) -> Value {
    let metadata = DecisionMetadata {
        approval_id: approval_id.to_string(),
        action: action.to_string(),
        channel: channel.to_string(),
        message_ts: message_ts.to_string(),
    };
    // Serializing four strings cannot fail; the fallback keeps this function total.
    let private_metadata = serde_json::to_string(&metadata).unwrap_or_default();
    let parsed = action.parse::<ButtonAction>().ok();
    let (title, submit, label, placeholder) = match parsed {
        Some(ButtonAction::Reject) => (
            "Reject approval",
            "Reject",
            "Reason",
            "Why is this rejected? The reason is recorded with the decision.",
        ),
        Some(ButtonAction::Retry) => (
            "Retry with feedback",
            "Retry",
            "Feedback for the agent",
            "What should the agent do differently on the next attempt?",
        ),
        _ => ("Confirm", "Submit", "Comment", "Optional comment"),
    };
    let required = parsed.is_some_and(ButtonAction::needs_comment);
    let mut element = json!({
        "type": "plain_text_input",
        "action_id": COMMENT_ACTION_ID,
        "multiline": true,
        "max_length": COMMENT_MAX_LENGTH,
        "placeholder": plain(placeholder),
    });
    if required {
        // Belt and braces with `optional: false`: the engine needs a non-empty reason or
        // feedback, and Slack shows the error in the modal instead of us answering the submit.
        element["min_length"] = json!(1);
    }
    json!({
        "type": "modal",
        "callback_id": DECISION_CALLBACK_ID,
        "private_metadata": private_metadata,
        "title": plain(title),
        "submit": plain(submit),
        "close": plain("Cancel"),
        "blocks": [
            context(format!("Approval {}", code(approval_id))),
            {
                "type": "input",
                "block_id": COMMENT_BLOCK_ID,
                "optional": !required,
                "label": plain(label),
                "element": element,
            },
        ],
    })
}

/// One line of the run thread per step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepLine {
    pub id: String,
    /// The step's display name, when it has one.
    pub name: Option<String>,
    pub kind: StepKind,
    pub status: StepStatus,
    /// Current attempt (0 before the first start).
    pub attempt: u32,
    /// Agent steps: turns so far and the turn cap, when known.
    pub turns: Option<u32>,
    pub max_turns: Option<u32>,
    /// Agent steps: spend of all attempts so far, when any.
    pub cost_usd: Option<f64>,
    pub error: Option<String>,
}

/// What the run thread's parent message shows.
#[derive(Debug, Clone, PartialEq)]
pub struct RunThreadView {
    pub run_id: String,
    /// The workflow's display name.
    pub workflow: String,
    pub status: RunStatus,
    /// In definition order.
    pub steps: Vec<StepLine>,
    pub error: Option<String>,
    /// Spend of the whole run, when any.
    pub cost_usd: Option<f64>,
    pub run_url: Option<String>,
}

/// Fills a [`RunThreadView`] from a run and its (pinned) definition; steps in definition order,
/// then any the run has that the definition lacks.
pub fn run_thread_view(
    run: &Run,
    def: &WorkflowDefinition,
    run_url: Option<String>,
) -> RunThreadView {
    let default_state = StepState::default();
    let mut steps: Vec<StepLine> = def
        .steps
        .iter()
        .map(|d| {
            let state = run.steps.get(&d.id).unwrap_or(&default_state);
            let def_max_turns = match &d.action {
                StepAction::Agent(a) => match (a.max_turns, run.max_turns) {
                    (Some(a), Some(r)) => Some(a.min(r)),
                    (a, r) => a.or(r),
                },
                _ => None,
            };
            step_line(&d.id, d.name.clone(), d.kind(), state, def_max_turns)
        })
        .collect();
    for (id, state) in &run.steps {
        if def.step(id).is_none() {
            let kind = if state.agent.is_some() {
                StepKind::Agent
            } else if state.approval.is_some() {
                StepKind::Approval
            } else {
                StepKind::Http
            };
            steps.push(step_line(id, None, kind, state, None));
        }
    }
    let cost = run.cost_usd();
    RunThreadView {
        run_id: run.id.clone(),
        workflow: def.display_name().to_string(),
        status: run.status,
        steps,
        error: run.error.clone(),
        cost_usd: (cost > 0.0).then_some(cost),
        run_url,
    }
}

fn step_line(
    id: &str,
    name: Option<String>,
    kind: StepKind,
    state: &StepState,
    def_max_turns: Option<u32>,
) -> StepLine {
    let agent = state.agent.as_ref();
    let cost = agent.map(|a| a.cost_usd + a.previous_attempts_cost_usd);
    StepLine {
        id: id.to_string(),
        name,
        kind,
        status: state.status,
        attempt: state.attempt,
        turns: agent.map(|a| a.turns),
        max_turns: agent.and_then(|a| a.max_turns).or(def_max_turns),
        cost_usd: cost.filter(|c| *c > 0.0),
        error: state.error.clone(),
    }
}

/// The emoji of a run status, shown before it everywhere.
pub fn run_status_emoji(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Pending => "⏳",
        RunStatus::Running => "🔄",
        RunStatus::Cancelling => "🛑",
        RunStatus::Compensating => "↩️",
        RunStatus::Succeeded => "✅",
        RunStatus::Failed => "❌",
        RunStatus::Cancelled => "🚫",
        RunStatus::TimedOut => "⌛",
    }
}

/// The emoji of a step status.
pub fn step_status_emoji(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Pending => "⚪",
        StepStatus::Running => "🔄",
        StepStatus::Waiting => "⏸️",
        StepStatus::Retrying => "🔁",
        StepStatus::Succeeded => "✅",
        StepStatus::Failed => "❌",
        StepStatus::TimedOut => "⌛",
        StepStatus::Skipped => "⏭️",
        StepStatus::Cancelled => "🚫",
    }
}

fn format_cost(usd: f64) -> String {
    format!("${usd:.2}")
}

/// `✅ `build` succeeded · 3/10 turns · $0.42`.
fn step_text(step: &StepLine) -> String {
    let mut line = format!(
        "{} {} {}",
        step_status_emoji(step.status),
        code(&step.id),
        step.status
    );
    if let Some(name) = step.name.as_deref().filter(|n| *n != step.id) {
        let _ = write!(line, " ({})", escape(&cut_plain(name, 80)));
    }
    if step.attempt > 1 {
        let _ = write!(line, " · attempt {}", step.attempt);
    }
    if step.kind == StepKind::Agent {
        match (step.turns, step.max_turns) {
            (Some(t), Some(m)) => {
                let _ = write!(line, " · {t}/{m} turns");
            }
            (Some(t), None) => {
                let _ = write!(line, " · {t} turns");
            }
            _ => {}
        }
        if let Some(cost) = step.cost_usd {
            let _ = write!(line, " · {}", format_cost(cost));
        }
    }
    if step.status.is_failure()
        && let Some(error) = &step.error
    {
        let _ = write!(
            line,
            " · {}",
            escape_truncated(error.lines().next().unwrap_or(""), 150)
        );
    }
    line
}

/// The parent message of a run's thread: workflow, run id, status and one line per step.
pub fn run_thread(view: &RunThreadView) -> (String, Value) {
    let emoji = run_status_emoji(view.status);
    let header = format!(
        "*{}* · run {}\n{emoji} *{}*",
        escape(&view.workflow),
        code(&view.run_id),
        view.status
    );
    let mut blocks = vec![section(fit_section(header))];
    // Several sections when the step list is longer than one section may hold.
    let mut chunk = String::new();
    for step in &view.steps {
        let line = step_text(step);
        if !chunk.is_empty()
            && chunk.chars().count() + line.chars().count() + 1 > SECTION_TEXT_LIMIT
        {
            blocks.push(section(std::mem::take(&mut chunk)));
        }
        if !chunk.is_empty() {
            chunk.push('\n');
        }
        chunk.push_str(&line);
    }
    if !chunk.is_empty() {
        blocks.push(section(fit_section(chunk)));
    }
    if let Some(error) = view.error.as_deref().filter(|e| !e.trim().is_empty()) {
        blocks.push(section(quote(error, MAX_ERROR_CHARS)));
    }
    let mut footer = Vec::new();
    if let Some(cost) = view.cost_usd {
        footer.push(format!("Cost so far {}", format_cost(cost)));
    }
    if let Some(url) = &view.run_url {
        footer.push(link(url, "View run in the API"));
    }
    if !footer.is_empty() {
        blocks.push(context(footer.join(" · ")));
    }
    let fallback = format!(
        "{emoji} {} run {}: {}",
        escape(&view.workflow),
        escape(&view.run_id),
        view.status
    );
    (fallback, Value::Array(blocks))
}

/// One readable line for a run event, posted as a reply in the run's thread.
///
/// `data` is the event's payload as the engine emits it (`step.failed` carries `error`,
/// `approval.decided` carries `decision`, `comment`, `approvals`, `required` and, when the
/// emitter adds it, `by`). Unknown events get a generic line rather than nothing.
pub fn event_reply(event: &str, step: Option<&str>, data: &Value, run_url: Option<&str>) -> String {
    let str_field = |key: &str| {
        data.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let u64_field = |key: &str| data.get(key).and_then(Value::as_u64);
    let step_code = step
        .map(code)
        .unwrap_or_else(|| "(unknown step)".to_string());
    let mut line = match event {
        "run.started" => {
            let mut l = "▶️ Run started".to_string();
            if let Some(workflow) = str_field("workflow") {
                let _ = write!(l, " ({}", escape(workflow));
                if let Some(v) = u64_field("version") {
                    let _ = write!(l, " v{v}");
                }
                l.push(')');
            }
            l
        }
        "step.completed" => {
            let mut l = format!("✅ Step {step_code} completed");
            if let Some(attempt) = u64_field("attempt").filter(|a| *a > 1) {
                let _ = write!(l, " on attempt {attempt}");
            }
            l
        }
        "step.failed" => {
            let mut l = format!("❌ Step {step_code} failed");
            if let Some(error) = str_field("error") {
                let _ = write!(l, ": {}", escape_truncated(error, MAX_ERROR_CHARS));
            }
            l
        }
        "approval.requested" => {
            let mut l = format!("✋ Step {step_code} is waiting for approval");
            let required = u64_field("required").unwrap_or(1).max(1);
            let approvers: Vec<String> = data
                .get("approvers")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            if approvers.is_empty() {
                let _ = write!(l, " ({required} needed)");
            } else {
                let _ = write!(
                    l,
                    " ({required} of {}: {})",
                    approvers.len(),
                    approvers_text(&approvers)
                );
            }
            l
        }
        "approval.decided" => {
            let decision = str_field("decision").unwrap_or("decided");
            let (emoji, verb) = match decision {
                "approve" => ("👍", "approved"),
                "reject" => ("👎", "rejected"),
                other => ("🗳️", other),
            };
            let who = str_field("by")
                .map(mention)
                .unwrap_or_else(|| "Someone".into());
            let mut l = format!("{emoji} {who} {} step {step_code}", escape(verb));
            if decision == "approve"
                && let (Some(n), Some(m)) = (u64_field("approvals"), u64_field("required"))
            {
                let _ = write!(l, " ({n} of {m} approvals)");
            }
            if let Some(comment) = str_field("comment") {
                let _ = write!(l, "\n{}", quote(comment, 1000));
            }
            l
        }
        "run.completed" => "🎉 Run completed".to_string(),
        "run.failed" => {
            let mut l = "❌ Run failed".to_string();
            if let Some(error) = str_field("error") {
                let _ = write!(l, ": {}", escape_truncated(error, MAX_ERROR_CHARS));
            }
            l
        }
        "run.cancelled" => "🚫 Run cancelled".to_string(),
        other => {
            let mut l = format!("ℹ️ {}", code(other));
            if let Some(step) = step {
                let _ = write!(l, " on step {}", code(step));
            }
            l
        }
    };
    if let Some(url) = run_url {
        let _ = write!(line, " · {}", link(url, "View run"));
    }
    line
}
