//! `/v1/webhooks`: outbound webhook subscriptions and their delivery logs.
//!
//! Deliveries themselves are made by the worker (signed per Standard Webhooks, retried with
//! backoff); these routes only manage what is subscribed and show what happened.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use flowgate_shared::api::{
    CreateWebhookRequest, ErrorBody, Subscription, WebhookCreated, WebhookDeliveriesParams,
    WebhookDeliveryList, WebhookList,
};
use flowgate_shared::notify::webhooks::NewSubscription;
use flowgate_shared::ports::MAX_RECORD_PAGE;
use tracing::info;

use super::{Path, Query};
use crate::Services;
use crate::auth::Principal;
use crate::body::JsonBody;
use crate::error::ApiError;

/// Default page of `GET /v1/webhooks/{id}/deliveries`.
const DEFAULT_DELIVERIES: u32 = 20;

/// Subscribe a URL to run lifecycle events. The answer carries the signing secret: it is shown
/// only here.
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    tag = "webhooks",
    request_body = CreateWebhookRequest,
    responses(
        (status = 201, description = "Subscribed; store the secret now, it is not shown again", body = WebhookCreated),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Bad URL, events, secret, description or workflow", body = ErrorBody),
        (status = 503, description = "The store is unavailable; retry", body = ErrorBody),
    )
)]
pub(crate) async fn create_webhook(
    State(s): State<Services>,
    Principal(principal): Principal,
    JsonBody(req): JsonBody<CreateWebhookRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let new = NewSubscription {
        url: req.url,
        events: req.events,
        secret: req.secret,
        description: req.description,
        workflow: req.workflow,
    };
    let (webhook, secret) = s.notifier.webhooks().create(new, s.clock.now_ms()).await?;
    info!(webhook_id = %webhook.id, url = %webhook.url, principal = %principal, "webhook subscription created");
    let location = format!("/v1/webhooks/{}", webhook.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(WebhookCreated { webhook, secret }),
    ))
}

/// Every webhook subscription, oldest first (secrets are never shown).
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "webhooks",
    responses(
        (status = 200, description = "The subscriptions", body = WebhookList),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 503, description = "The store is unavailable; retry", body = ErrorBody),
    )
)]
pub(crate) async fn list_webhooks(
    State(s): State<Services>,
    _: Principal,
) -> Result<Json<WebhookList>, ApiError> {
    let webhooks = s.notifier.webhooks().list().await?;
    Ok(Json(WebhookList { webhooks }))
}

/// One webhook subscription (without its secret).
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "Subscription id (`wh_…`)")),
    responses(
        (status = 200, description = "The subscription", body = Subscription),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such subscription", body = ErrorBody),
    )
)]
pub(crate) async fn get_webhook(
    State(s): State<Services>,
    _: Principal,
    Path(id): Path<String>,
) -> Result<Json<Subscription>, ApiError> {
    let webhook = s
        .notifier
        .webhooks()
        .get(&id)
        .await?
        .ok_or_else(|| webhook_not_found(&id))?;
    Ok(Json(webhook))
}

/// Unsubscribe. Deliveries already queued for the subscription are dropped unsent.
#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "Subscription id (`wh_…`)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such subscription", body = ErrorBody),
    )
)]
pub(crate) async fn delete_webhook(
    State(s): State<Services>,
    Principal(principal): Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if s.notifier.webhooks().delete(&id).await? {
        info!(webhook_id = %id, principal = %principal, "webhook subscription deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(webhook_not_found(&id))
    }
}

/// A subscription's delivery log: one entry per attempt (status or error, duration, next
/// retry), newest first, kept 30 days.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/deliveries",
    tag = "webhooks",
    params(("id" = String, Path, description = "Subscription id (`wh_…`)"), WebhookDeliveriesParams),
    responses(
        (status = 200, description = "Delivery attempts, newest first", body = WebhookDeliveryList),
        (status = 400, description = "Bad limit", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such subscription", body = ErrorBody),
    )
)]
pub(crate) async fn webhook_deliveries(
    State(s): State<Services>,
    _: Principal,
    Path(id): Path<String>,
    Query(params): Query<WebhookDeliveriesParams>,
) -> Result<Json<WebhookDeliveryList>, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_DELIVERIES);
    if limit == 0 || limit as usize > MAX_RECORD_PAGE {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1..={MAX_RECORD_PAGE}, got {limit}"),
        )
        .with_field("limit"));
    }
    let webhooks = s.notifier.webhooks();
    if webhooks.get(&id).await?.is_none() {
        return Err(webhook_not_found(&id));
    }
    let deliveries = webhooks.deliveries(&id, limit as usize).await?;
    Ok(Json(WebhookDeliveryList { deliveries }))
}

fn webhook_not_found(id: &str) -> ApiError {
    ApiError::not_found(
        "webhook_not_found",
        format!("there is no webhook subscription {id:?}; list them with GET /v1/webhooks"),
    )
}
