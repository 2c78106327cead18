//! Parsing Slack interaction payloads (button clicks and modal submissions).
//!
//! Call this only after the request's signature was verified over the raw body: the parser
//! trusts nothing about meaning (values are checked against stored state by the caller), but
//! it does assume the bytes came from Slack. It keeps only the fields Flowgate acts on, ignores
//! the rest (Slack adds fields freely), and refuses payloads missing what a command needs, with
//! an error naming the problem and a stable [`InteractionError::code`] for JSON error bodies.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::blocks::DecisionMetadata;

/// Slack's limit on `action_id`, `block_id` and `callback_id`.
pub const MAX_ID_LENGTH: usize = 255;
/// Slack's limit on a button's `value`.
pub const MAX_VALUE_LENGTH: usize = 2000;
/// Slack's limit on a view's `private_metadata`.
pub const MAX_PRIVATE_METADATA_LENGTH: usize = 3000;
/// Generous bound on a text input's value (Slack's own cap is 3000).
pub const MAX_INPUT_LENGTH: usize = 10_000;

/// A parsed interaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Interaction {
    /// A click on a Block Kit element (an approval button).
    BlockActions(BlockActions),
    /// A modal's submit (the reject reason / retry feedback).
    ViewSubmission(ViewSubmission),
    /// Anything else (`view_closed`, `shortcut`, `message_action`, …): acknowledged, not acted on.
    Other { kind: String },
}

impl Interaction {
    /// The payload's `type`.
    pub fn kind(&self) -> &str {
        match self {
            Interaction::BlockActions(_) => "block_actions",
            Interaction::ViewSubmission(_) => "view_submission",
            Interaction::Other { kind } => kind,
        }
    }
}

/// A `block_actions` payload.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockActions {
    pub user_id: String,
    pub user_name: Option<String>,
    pub team_id: Option<String>,
    pub api_app_id: Option<String>,
    /// `channel.id`, else `container.channel_id`.
    pub channel_id: Option<String>,
    /// `container.message_ts`: the message whose button was clicked.
    pub message_ts: Option<String>,
    /// Opens a modal within 3 s of the click.
    pub trigger_id: Option<String>,
    pub response_url: Option<String>,
    /// At least one.
    pub actions: Vec<ActionClick>,
}

/// One element interaction in a `block_actions` payload.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionClick {
    pub action_id: String,
    pub block_id: String,
    /// The button's `value` (or a select's selected option value).
    pub value: Option<String>,
    pub action_ts: Option<String>,
}

/// A `view_submission` payload.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewSubmission {
    pub user_id: String,
    pub team_id: Option<String>,
    pub callback_id: String,
    /// As set when the view was opened (empty when none was).
    pub private_metadata: String,
    /// `block_id` → `action_id` → the text entered. Inputs left empty are absent.
    pub values: BTreeMap<String, BTreeMap<String, String>>,
}

impl ViewSubmission {
    /// The text entered in input `block_id`/`action_id`, if any.
    pub fn value(&self, block_id: &str, action_id: &str) -> Option<&str> {
        self.values
            .get(block_id)
            .and_then(|b| b.get(action_id))
            .map(String::as_str)
    }
}

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InteractionError {
    /// The body is not `application/x-www-form-urlencoded`.
    #[error("the interaction body is not a URL-encoded form: {0}")]
    InvalidForm(String),
    /// The form has no `payload` parameter.
    #[error("the interaction body has no payload parameter (Slack sends payload=<json>)")]
    MissingPayload,
    /// The form has more than one `payload` parameter; which one was signed is ambiguous.
    #[error("the interaction body has more than one payload parameter")]
    DuplicatePayload,
    /// `payload` is not JSON.
    #[error("the interaction payload is not JSON: {0}")]
    PayloadNotJson(String),
    /// `payload` is JSON but a field has the wrong type.
    #[error("the interaction payload has an unexpected shape: {0}")]
    InvalidPayload(String),
    /// A field a command needs is absent or empty.
    #[error("the interaction payload lacks {field}")]
    MissingField { field: String },
    /// A field is longer than Slack allows.
    #[error("{field} is {len} characters long; Slack allows at most {max}")]
    FieldTooLong {
        field: String,
        len: usize,
        max: usize,
    },
}

impl InteractionError {
    /// A stable code for JSON error bodies and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            InteractionError::InvalidForm(_) => "invalid_form",
            InteractionError::MissingPayload => "missing_payload",
            InteractionError::DuplicatePayload => "duplicate_payload",
            InteractionError::PayloadNotJson(_) => "payload_not_json",
            InteractionError::InvalidPayload(_) => "invalid_payload",
            InteractionError::MissingField { .. } => "missing_field",
            InteractionError::FieldTooLong { .. } => "field_too_long",
        }
    }
}

#[derive(Deserialize)]
struct RawPayload {
    #[serde(rename = "type")]
    kind: Option<String>,
    user: Option<RawUser>,
    team: Option<RawId>,
    api_app_id: Option<String>,
    channel: Option<RawId>,
    container: Option<RawContainer>,
    trigger_id: Option<String>,
    response_url: Option<String>,
    actions: Option<Vec<RawAction>>,
    view: Option<RawView>,
}

#[derive(Deserialize)]
struct RawUser {
    id: Option<String>,
    username: Option<String>,
    name: Option<String>,
    team_id: Option<String>,
}

#[derive(Deserialize)]
struct RawId {
    id: Option<String>,
}

#[derive(Deserialize)]
struct RawContainer {
    message_ts: Option<String>,
    channel_id: Option<String>,
}

#[derive(Deserialize)]
struct RawAction {
    action_id: Option<String>,
    block_id: Option<String>,
    value: Option<String>,
    action_ts: Option<String>,
    selected_option: Option<RawOption>,
}

#[derive(Deserialize)]
struct RawOption {
    value: Option<String>,
}

#[derive(Deserialize)]
struct RawView {
    callback_id: Option<String>,
    private_metadata: Option<String>,
    state: Option<RawState>,
}

#[derive(Deserialize)]
struct RawState {
    #[serde(default)]
    values: BTreeMap<String, BTreeMap<String, Value>>,
}

/// The form body Slack posts for an interaction: `payload=` and the JSON with every reserved
/// character percent-encoded (what Python's `quote(json, safe="")` gives, as in the signing
/// test vectors). For tests, fixtures and benchmarks that sign requests the way Slack does.
pub fn form_body(payload_json: &str) -> String {
    let mut out = String::with_capacity(payload_json.len() * 2 + 8);
    out.push_str("payload=");
    for b in payload_json.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Parses a verified interaction request body: a form with one `payload` parameter holding JSON.
pub fn parse_interaction(form_body: &[u8]) -> Result<Interaction, InteractionError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(form_body)
        .map_err(|e| InteractionError::InvalidForm(e.to_string()))?;
    let mut payloads = pairs.into_iter().filter(|(k, _)| k == "payload");
    let Some((_, payload)) = payloads.next() else {
        return Err(InteractionError::MissingPayload);
    };
    if payloads.next().is_some() {
        return Err(InteractionError::DuplicatePayload);
    }
    parse_payload(&payload)
}

/// Parses the JSON of a `payload` parameter (already URL-decoded).
pub fn parse_payload(payload: &str) -> Result<Interaction, InteractionError> {
    let value: Value = serde_json::from_str(payload)
        .map_err(|e| InteractionError::PayloadNotJson(e.to_string()))?;
    if !value.is_object() {
        return Err(InteractionError::InvalidPayload(
            "expected a JSON object".to_string(),
        ));
    }
    let mut raw: RawPayload = serde_path_to_error::deserialize(value)
        .map_err(|e| InteractionError::InvalidPayload(format!("at {}: {}", e.path(), e.inner())))?;
    let kind = non_empty(raw.kind.take()).ok_or_else(|| missing("type"))?;
    match kind.as_str() {
        "block_actions" => block_actions(raw).map(Interaction::BlockActions),
        "view_submission" => view_submission(raw).map(Interaction::ViewSubmission),
        _ => Ok(Interaction::Other { kind }),
    }
}

/// Reads the [`DecisionMetadata`] that [`decision_modal`](super::blocks::decision_modal) put in
/// a view's `private_metadata`.
pub fn parse_decision_metadata(
    private_metadata: &str,
) -> Result<DecisionMetadata, InteractionError> {
    if private_metadata.trim().is_empty() {
        return Err(missing("view.private_metadata"));
    }
    let meta: DecisionMetadata = serde_json::from_str(private_metadata)
        .map_err(|e| InteractionError::InvalidPayload(format!("view.private_metadata: {e}")))?;
    for (field, value) in [
        ("view.private_metadata.approval_id", &meta.approval_id),
        ("view.private_metadata.action", &meta.action),
    ] {
        if value.is_empty() {
            return Err(missing(field));
        }
    }
    Ok(meta)
}

fn block_actions(raw: RawPayload) -> Result<BlockActions, InteractionError> {
    let user = raw.user.ok_or_else(|| missing("user.id"))?;
    let user_id = bounded("user.id", non_empty(user.id), MAX_ID_LENGTH)?;
    let raw_actions = raw.actions.unwrap_or_default();
    if raw_actions.is_empty() {
        return Err(missing("actions"));
    }
    let actions = raw_actions
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            let action_id = bounded(
                &format!("actions[{i}].action_id"),
                non_empty(a.action_id),
                MAX_ID_LENGTH,
            )?;
            let block_id = bounded(
                &format!("actions[{i}].block_id"),
                non_empty(a.block_id),
                MAX_ID_LENGTH,
            )?;
            let value = a.value.or(a.selected_option.and_then(|o| o.value));
            check_len(
                &format!("actions[{i}].value"),
                value.as_deref(),
                MAX_VALUE_LENGTH,
            )?;
            Ok(ActionClick {
                action_id,
                block_id,
                value,
                action_ts: a.action_ts,
            })
        })
        .collect::<Result<Vec<_>, InteractionError>>()?;
    let container = raw.container;
    let team_id = non_empty(raw.team.and_then(|t| t.id)).or(non_empty(user.team_id));
    let channel_id = non_empty(raw.channel.and_then(|c| c.id)).or_else(|| {
        container
            .as_ref()
            .and_then(|c| c.channel_id.clone())
            .filter(|s| !s.is_empty())
    });
    Ok(BlockActions {
        user_id,
        user_name: non_empty(user.username).or(non_empty(user.name)),
        team_id,
        api_app_id: non_empty(raw.api_app_id),
        channel_id,
        message_ts: non_empty(container.and_then(|c| c.message_ts)),
        trigger_id: non_empty(raw.trigger_id),
        response_url: non_empty(raw.response_url),
        actions,
    })
}

fn view_submission(raw: RawPayload) -> Result<ViewSubmission, InteractionError> {
    let user = raw.user.ok_or_else(|| missing("user.id"))?;
    let user_id = bounded("user.id", non_empty(user.id), MAX_ID_LENGTH)?;
    let view = raw.view.ok_or_else(|| missing("view"))?;
    let callback_id = bounded(
        "view.callback_id",
        non_empty(view.callback_id),
        MAX_ID_LENGTH,
    )?;
    let private_metadata = view.private_metadata.unwrap_or_default();
    check_len(
        "view.private_metadata",
        Some(&private_metadata),
        MAX_PRIVATE_METADATA_LENGTH,
    )?;
    let mut values = BTreeMap::new();
    for (block_id, inputs) in view.state.map(|s| s.values).unwrap_or_default() {
        check_len("view.state.values block id", Some(&block_id), MAX_ID_LENGTH)?;
        let mut entries = BTreeMap::new();
        for (action_id, input) in inputs {
            check_len(
                "view.state.values action id",
                Some(&action_id),
                MAX_ID_LENGTH,
            )?;
            // Text inputs (plain_text_input and the typed email/url/number inputs) carry a
            // string `value`; null when left empty. Selects and pickers are not used here.
            let Some(text) = input.get("value").and_then(Value::as_str) else {
                continue;
            };
            check_len(
                &format!("view.state.values.{block_id}.{action_id}"),
                Some(text),
                MAX_INPUT_LENGTH,
            )?;
            entries.insert(action_id, text.to_string());
        }
        if !entries.is_empty() {
            values.insert(block_id, entries);
        }
    }
    Ok(ViewSubmission {
        user_id,
        team_id: non_empty(raw.team.and_then(|t| t.id)).or(non_empty(user.team_id)),
        callback_id,
        private_metadata,
        values,
    })
}

fn missing(field: &str) -> InteractionError {
    InteractionError::MissingField {
        field: field.to_string(),
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|s| !s.is_empty())
}

/// A required field, present and within `max` characters.
fn bounded(field: &str, value: Option<String>, max: usize) -> Result<String, InteractionError> {
    let value = value.ok_or_else(|| missing(field))?;
    check_len(field, Some(&value), max)?;
    Ok(value)
}

fn check_len(field: &str, value: Option<&str>, max: usize) -> Result<(), InteractionError> {
    if let Some(value) = value {
        let len = value.chars().count();
        if len > max {
            return Err(InteractionError::FieldTooLong {
                field: field.to_string(),
                len,
                max,
            });
        }
    }
    Ok(())
}
