//! The routes. Each handler carries its `#[utoipa::path]`; [`router`] registers them through
//! `utoipa_axum::routes!`, which is what puts them in the OpenAPI document.

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use flowgate_shared::api::Health;
use serde::de::DeserializeOwned;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Services;
use crate::error::ApiError;

mod analytics;
mod approvals;
mod hooks;
mod me;
mod runs;
mod sessions;
mod slack;
mod webhooks;
mod workflows;

/// Every route of the API.
pub(crate) fn router() -> OpenApiRouter<Services> {
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(me::me))
        .routes(routes!(runs::start_run, runs::list_runs))
        .routes(routes!(runs::get_run))
        .routes(routes!(runs::run_events))
        .routes(routes!(runs::cancel_run))
        .routes(routes!(runs::send_message))
        .routes(routes!(runs::retry_run))
        .routes(routes!(runs::rollback_run))
        .routes(routes!(analytics::analytics))
        .routes(routes!(workflows::list_workflows))
        .routes(routes!(
            workflows::get_workflow,
            workflows::put_workflow,
            workflows::delete_workflow
        ))
        .routes(routes!(workflows::validate_workflow))
        .routes(routes!(workflows::agent_workflows))
        .routes(routes!(sessions::list_sessions))
        .routes(routes!(sessions::get_session))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(webhooks::get_webhook, webhooks::delete_webhook))
        .routes(routes!(webhooks::webhook_deliveries))
        .merge(approval_router())
        .merge(hook_router())
}

/// The routes the triggers function serves (inbound webhook triggers); the api function and
/// `flowgate serve` serve them too.
pub(crate) fn hook_router() -> OpenApiRouter<Services> {
    OpenApiRouter::new().routes(routes!(hooks::receive_hook))
}

/// The routes the approvals function serves (health, Slack interactivity, decisions, approval
/// links, the list of approvals); the api function serves them too.
pub(crate) fn approval_router() -> OpenApiRouter<Services> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(approvals::list_approvals))
        .routes(routes!(approvals::decide_approval))
        .routes(routes!(approvals::link_page, approvals::link_decide))
        .routes(routes!(slack::slack_interactions))
}

/// Liveness: the process is up and routing (no dependency is called, so a store outage does
/// not make a load balancer drop every instance).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The API is up", body = Health))
)]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

/// This document (OpenAPI 3.1), generated from the routes.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
async fn openapi_json() -> Json<&'static OpenApi> {
    Json(crate::openapi())
}

pub(crate) async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(
        "route_not_found",
        format!(
            "no route {}; the routes are listed at GET /openapi.json",
            uri.path()
        ),
    )
}

pub(crate) async fn method_not_allowed(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not accept this method; see GET /openapi.json",
            uri.path()
        ),
    )
}

/// `axum::extract::Path`, answering a malformed parameter (not UTF-8 once percent-decoded)
/// with the one error shape instead of axum's plain-text 400.
pub(crate) struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|e| {
                ApiError::bad_request("invalid_path", format!("bad URL path: {}", e.body_text()))
            })
    }
}

/// axum's `Query`, answering a bad query string with the API's error shape (400
/// `invalid_query`) instead of axum's plain-text rejection.
#[derive(Debug)]
pub(crate) struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|e| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("bad query string: {}", e.body_text()),
                )
            })
    }
}
