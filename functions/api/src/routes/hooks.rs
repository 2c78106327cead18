//! `POST /hooks/{trigger_id}`: start a workflow from an external event (a GitHub delivery, a
//! Standard Webhooks message, or any sender with a shared secret).
//!
//! The trigger lives in a stored workflow's `triggers` (`type: webhook`, `id`, `verify`,
//! `filter`, `inputs`); its secret lives in `FLOWGATE_HOOK_SECRETS` ([`crate::hooks`]). A
//! delivery goes through, in order, each step refusing with nothing written:
//!
//! 1. **Trigger**: the stored workflows are scanned for a webhook trigger with this id (404
//!    when none has it, 409 when two do). A scan, not a cache: one read of the latest
//!    definitions, so a stored or deleted workflow takes effect at the next delivery on every
//!    instance, and webhooks arrive far less often than the API is read.
//! 2. **Signature** over the exact raw bytes (401; a trigger with no secret refuses everything).
//! 3. **Payload**: JSON, or GitHub's form encoding (`payload=<json>`) (400 otherwise).
//! 4. **Filter**: every entry must equal; a key is a JSON pointer into the payload or
//!    `header:<name>` (e.g. `header:x-github-event: issues`). No match: 202 `ignored`.
//! 5. **Inputs**: each mapped input's pointer (or `header:<name>`) must find a value (422
//!    naming the input); the inputs are then checked like any start (422).
//! 6. **Dedupe** by delivery id (`x-github-delivery`, `webhook-id`, for shared secrets
//!    `idempotency-key` or `x-request-id`; else the SHA-256 of the body): a record in
//!    `hook-deliveries.{trigger_id}` for 7 days. A repeated id starts nothing (202 `duplicate`).
//!    The run itself is started with the idempotency key `trigger:{id}:{delivery}`, so a crash
//!    between the record and the start is repaired by the sender's retry, never doubled.
//!
//! The answer is 202 as soon as the run is stored and its start enqueued; the run proceeds
//! from the queue.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use flowgate_shared::api::ErrorBody;
use flowgate_shared::definition::{StoredWorkflow, TriggerDef, WebhookVerify};
use flowgate_shared::runtime::{NewRun, check_run, create_run};
use flowgate_shared::signing::WEBHOOK_ID;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use tracing::{info, warn};

use super::Path;
use super::approvals::signature_error;
use crate::Services;
use crate::body::RawBody;
use crate::error::ApiError;
use crate::hooks::{ENV_HOOK_SECRETS, VerifyError};

/// How long a delivery id is remembered. GitHub redelivers by hand for a few days and Standard
/// Webhooks senders retry for about a day and a half; a week covers both.
const DELIVERY_TTL_MS: i64 = 7 * 24 * 3600 * 1000;

/// Longest accepted delivery id (GitHub's are 36-character GUIDs).
const MAX_DELIVERY_ID: usize = 200;

/// GitHub's delivery GUID header, stable across redeliveries of the same event.
const GITHUB_DELIVERY: &str = "x-github-delivery";

/// Delivery id headers a shared-secret sender may use, in order of preference.
const SHARED_DELIVERY_HEADERS: [&str; 2] = ["idempotency-key", "x-request-id"];

/// Filter keys and input mappings starting with this read a request header instead of the
/// payload.
const HEADER_PREFIX: &str = "header:";

/// What became of a delivery.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub(crate) struct HookAccepted {
    /// The run this delivery started, or, for a duplicate, the run its first delivery started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The run already existed (the start's idempotency key was seen); nothing new started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub existing: Option<bool>,
    /// This delivery id was seen before; nothing new was started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
    /// Why nothing was started: `filtered out`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
    /// Which filter entry did not match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The delivery id used for dedupe (`sha256:…` of the body when the sender sent none).
    pub delivery: String,
}

/// Start a workflow from an external event. Authenticated by the trigger's signature or shared
/// secret (see the README's "Inbound webhooks"), not by an API key.
#[utoipa::path(
    post,
    path = "/hooks/{trigger_id}",
    tag = "triggers",
    params(
        ("trigger_id" = String, Path, description = "The `id` of a webhook trigger in a stored workflow"),
        ("x-hub-signature-256" = Option<String>, Header, description = "GitHub triggers: `sha256=` HMAC of the raw body"),
        ("x-github-event" = Option<String>, Header, description = "GitHub's event name (filter on it with `header:x-github-event`)"),
        ("x-github-delivery" = Option<String>, Header, description = "GitHub's delivery id (dedupe)"),
        ("webhook-id" = Option<String>, Header, description = "Standard Webhooks message id (dedupe)"),
        ("webhook-timestamp" = Option<String>, Header, description = "Standard Webhooks signing time (unix seconds, within 300 s)"),
        ("webhook-signature" = Option<String>, Header, description = "Standard Webhooks `v1,<base64>` signatures"),
        ("x-flowgate-secret" = Option<String>, Header, description = "Shared-secret triggers: the secret (another header when configured)"),
    ),
    request_body(content = Object, description = "The event: JSON, or a form with a `payload` field (GitHub's form content type)", content_type = "application/json"),
    security(()),
    responses(
        (status = 202, description = "Accepted: a run was started (`run_id`), the delivery was seen before (`duplicate`), or the filter did not match (`ignored`)", body = HookAccepted),
        (status = 400, description = "The body is not JSON, or a delivery id header is unusable", body = ErrorBody),
        (status = 401, description = "Bad, missing or stale signature, or no secret configured for the trigger", body = ErrorBody),
        (status = 404, description = "No stored workflow has a webhook trigger with this id", body = ErrorBody),
        (status = 409, description = "Two workflows declare this trigger id", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "A mapped input is missing from the payload, or the inputs do not fit the workflow", body = ErrorBody),
        (status = 503, description = "The store is unavailable; retry", body = ErrorBody),
    )
)]
pub(crate) async fn receive_hook(
    State(s): State<Services>,
    Path(trigger_id): Path<String>,
    raw: RawBody,
) -> Result<impl IntoResponse, ApiError> {
    let (stored, hook) = find_trigger(&s, &trigger_id).await?;
    let secrets = s.hooks.get(&trigger_id).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "hook_not_configured",
            format!(
                "webhook trigger {trigger_id} has no secret configured, so every delivery is \
                 refused; add `{trigger_id}=<secret>` to {ENV_HOOK_SECRETS} and restart"
            ),
        )
    })?;
    let headers = raw.header_pairs();
    let verified = secrets
        .verify(hook.verify, &headers, &raw.bytes, s.clock.now_ms() / 1000)
        .map_err(|e| match e {
            VerifyError::Signature(e) => signature_error(&e),
            VerifyError::Unusable(message) => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "hook_not_configured",
                format!("webhook trigger {trigger_id}: {message}"),
            ),
            VerifyError::Header { code, message } => {
                ApiError::new(StatusCode::UNAUTHORIZED, code, message)
            }
        })?;
    let delivery = delivery_id(hook.verify, verified.delivery, &raw)?;
    let payload = payload(&raw)?;

    if let Some(reason) = mismatch(hook.filter, &payload, &raw.headers) {
        info!(trigger_id, workflow_id = %stored.definition.id, delivery, reason, "webhook delivery filtered out");
        return Ok((
            StatusCode::ACCEPTED,
            Json(HookAccepted {
                ignored: Some("filtered out".to_string()),
                reason: Some(reason),
                delivery,
                ..HookAccepted::default()
            }),
        ));
    }
    let inputs = map_inputs(hook.inputs, &payload, &raw.headers)?;
    let new = NewRun {
        workflow_id: stored.definition.id.clone(),
        inputs,
        idempotency_key: Some(format!("trigger:{trigger_id}:{delivery}")),
        started_by: Some(format!("hook:{trigger_id}")),
        ..NewRun::default()
    };
    let checked = check_run(s.store.as_ref(), &stored.definition, new).await?;

    let records = s.notifier.webhooks().records();
    let collection = format!("hook-deliveries.{trigger_id}");
    let now = s.clock.now_ms();
    let record = json!({"workflow_id": stored.definition.id, "received_at": now});
    let expires = Some(now + DELIVERY_TTL_MS);
    let first = records
        .create_record(&collection, &delivery, &record, expires)
        .await?;
    if !first
        && let Some(run_id) = records
            .get_record(&collection, &delivery)
            .await?
            .and_then(|r| r["run_id"].as_str().map(str::to_string))
    {
        info!(
            trigger_id,
            delivery, run_id, "repeated webhook delivery: nothing started"
        );
        return Ok((
            StatusCode::ACCEPTED,
            Json(HookAccepted {
                run_id: Some(run_id),
                duplicate: Some(true),
                delivery,
                ..HookAccepted::default()
            }),
        ));
    }
    // First delivery, or a repeat of one that stopped before its run was noted (a crash, or
    // one still in flight): the idempotency key makes this start at most one run either way.
    let started = create_run(
        s.store.as_ref(),
        s.queue.as_ref(),
        records.as_ref(),
        s.clock.now_ms(),
        &stored,
        checked,
    )
    .await?;
    let mut noted = record;
    noted["run_id"] = Value::from(started.run_id.as_str());
    if let Err(e) = records
        .put_record(&collection, &delivery, &noted, expires)
        .await
    {
        // The run exists; a repeat finds it through the idempotency key instead.
        warn!(trigger_id, delivery, run_id = %started.run_id, error = %e, "could not note the run of a webhook delivery");
    }
    info!(trigger_id, workflow_id = %stored.definition.id, delivery, run_id = %started.run_id, existing = started.existing, "webhook delivery started a run");
    Ok((
        StatusCode::ACCEPTED,
        Json(HookAccepted {
            run_id: Some(started.run_id),
            existing: Some(started.existing),
            duplicate: (!first || started.existing).then_some(true),
            delivery,
            ..HookAccepted::default()
        }),
    ))
}

/// A webhook trigger's settings, detached from its definition.
struct Hook {
    verify: WebhookVerify,
    filter: BTreeMap<String, Value>,
    inputs: BTreeMap<String, String>,
}

/// The stored workflow declaring webhook trigger `id`, by scanning the latest definitions.
async fn find_trigger(s: &Services, id: &str) -> Result<(StoredWorkflow, Hook), ApiError> {
    let mut found: Vec<(StoredWorkflow, Hook)> = Vec::new();
    for stored in s.workflows.list_workflows().await? {
        let hook = stored.definition.triggers.iter().find_map(|t| match t {
            TriggerDef::Webhook {
                id: tid,
                verify,
                filter,
                inputs,
            } if tid == id => Some(Hook {
                verify: *verify,
                filter: filter.clone(),
                inputs: inputs.clone(),
            }),
            _ => None,
        });
        if let Some(hook) = hook {
            found.push((stored, hook));
        }
    }
    match found.len() {
        0 => Err(ApiError::not_found(
            "trigger_not_found",
            format!(
                "no stored workflow has a webhook trigger {id:?}; add `{{type: webhook, id: {id}}}` \
                 to a workflow's triggers and store it with PUT /v1/workflows/{{id}}"
            ),
        )),
        1 => Ok(found.remove(0)),
        _ => {
            let names: Vec<&str> = found
                .iter()
                .map(|(w, _)| w.definition.id.as_str())
                .collect();
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "ambiguous_trigger",
                format!(
                    "workflows {} all declare webhook trigger {id:?}, so nothing is started; \
                     give each its own trigger id",
                    names.join(", ")
                ),
            ))
        }
    }
}

/// The delivery id: the sender's (verified for Standard Webhooks), else the body's SHA-256.
fn delivery_id(
    how: WebhookVerify,
    verified: Option<String>,
    raw: &RawBody,
) -> Result<String, ApiError> {
    let from_header = match how {
        WebhookVerify::StandardWebhooks => verified.map(|id| (WEBHOOK_ID, id)),
        WebhookVerify::Github => {
            single(&raw.headers, GITHUB_DELIVERY)?.map(|v| (GITHUB_DELIVERY, v))
        }
        WebhookVerify::SharedSecret => {
            let mut found = None;
            for name in SHARED_DELIVERY_HEADERS {
                if let Some(v) = single(&raw.headers, name)? {
                    found = Some((name, v));
                    break;
                }
            }
            found
        }
    };
    match from_header {
        Some((name, id)) => {
            if id.is_empty()
                || id.len() > MAX_DELIVERY_ID
                || !id.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(ApiError::bad_request(
                    "invalid_header",
                    format!(
                        "the {name} header must be 1 to {MAX_DELIVERY_ID} printable ASCII \
                         characters without spaces"
                    ),
                )
                .with_field(name));
            }
            Ok(id)
        }
        None => Ok(format!(
            "sha256:{}",
            hex::encode(Sha256::digest(&raw.bytes))
        )),
    }
}

/// A header's one value, trimmed (`None` when absent; 400 when repeated or not text).
fn single(headers: &HeaderMap, name: &'static str) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::bad_request(
            "invalid_header",
            format!("the {name} header was sent more than once; send it once"),
        )
        .with_field(name));
    }
    let text = value.to_str().map_err(|_| {
        ApiError::bad_request(
            "invalid_header",
            format!("the {name} header must be printable ASCII"),
        )
        .with_field(name)
    })?;
    Ok(Some(text.trim().to_string()))
}

#[derive(Deserialize)]
struct FormPayload {
    payload: String,
}

/// The event as JSON: the body, or its `payload` field when form-encoded (GitHub's
/// `application/x-www-form-urlencoded` content type). Read only after the signature passed.
fn payload(raw: &RawBody) -> Result<Value, ApiError> {
    let not_json = |e: serde_json::Error| {
        ApiError::bad_request(
            "invalid_json",
            format!("the payload is not valid JSON: {e}; send the event as JSON"),
        )
    };
    if raw.media_type().as_deref() == Some("application/x-www-form-urlencoded") {
        let form: FormPayload = serde_urlencoded::from_bytes(&raw.bytes).map_err(|e| {
            ApiError::bad_request(
                "invalid_form",
                format!("the form body has no usable `payload` field ({e}); send the event as JSON or as payload=<json>"),
            )
        })?;
        return serde_json::from_str(&form.payload).map_err(not_json);
    }
    serde_json::from_slice(&raw.bytes).map_err(not_json)
}

/// What a filter key or input mapping names: a request header's one value (as a string), or
/// the value at a JSON pointer in the payload.
fn lookup(key: &str, payload: &Value, headers: &HeaderMap) -> Option<Value> {
    match key.strip_prefix(HEADER_PREFIX) {
        Some(name) => {
            let mut values = headers.get_all(name).iter();
            let value = values.next()?;
            if values.next().is_some() {
                return None;
            }
            value.to_str().ok().map(|v| Value::from(v.trim()))
        }
        None => payload.pointer(key).cloned(),
    }
}

/// The first filter entry the delivery does not satisfy, described; `None` when all match.
fn mismatch(
    filter: BTreeMap<String, Value>,
    payload: &Value,
    headers: &HeaderMap,
) -> Option<String> {
    filter
        .into_iter()
        .find_map(|(key, expected)| match lookup(&key, payload, headers) {
            Some(found) if found == expected => None,
            Some(found) => Some(format!("{key} is {found}, not {expected}")),
            None => Some(format!("{key} is absent, expected {expected}")),
        })
}

/// The run's inputs from the trigger's mapping; a key that finds nothing is refused.
fn map_inputs(
    mapping: BTreeMap<String, String>,
    payload: &Value,
    headers: &HeaderMap,
) -> Result<Map<String, Value>, ApiError> {
    let mut inputs = Map::new();
    for (name, key) in mapping {
        let value = lookup(&key, payload, headers).ok_or_else(|| {
            ApiError::unprocessable(
                "missing_input",
                format!(
                    "input {name:?} is mapped from {key}, which this delivery does not have; \
                     send events that carry it, or narrow the trigger's filter to them"
                ),
            )
            .with_field(format!("inputs.{name}"))
        })?;
        inputs.insert(name, value);
    }
    Ok(inputs)
}
