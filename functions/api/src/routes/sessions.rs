//! `/v1/sessions`: named agent conversations that later runs can continue.

use axum::Json;
use axum::extract::State;
use flowgate_shared::api::{ErrorBody, SessionList, SessionView};
use flowgate_shared::runtime::{live_session, live_sessions};
use serde::Deserialize;

use super::{Path, Query};
use crate::Services;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::views;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionParams {
    /// Only sessions whose last run is still going.
    #[serde(default)]
    active: bool,
}

/// Sessions, most recently used first.
#[utoipa::path(
    get,
    path = "/v1/sessions",
    tag = "sessions",
    params(SessionParams),
    responses(
        (status = 200, description = "Sessions", body = SessionList),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
    )
)]
pub(crate) async fn list_sessions(
    State(s): State<Services>,
    _: Principal,
    Query(params): Query<SessionParams>,
) -> Result<Json<SessionList>, ApiError> {
    // The stored flag narrows the listing (a session stored inactive stays so); whether a
    // session is active now is read from its last run.
    let stored = s.store.list_sessions(params.active).await?;
    let sessions = live_sessions(s.store.as_ref(), stored).await?;
    Ok(Json(SessionList {
        sessions: sessions
            .into_iter()
            .filter(|session| session.active || !params.active)
            .map(views::session_view)
            .collect(),
    }))
}

/// One session: its agent conversation id and the steps that used it.
#[utoipa::path(
    get,
    path = "/v1/sessions/{name}",
    tag = "sessions",
    params(("name" = String, Path, description = "Session name")),
    responses(
        (status = 200, description = "The session", body = SessionView),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
    )
)]
pub(crate) async fn get_session(
    State(s): State<Services>,
    _: Principal,
    Path(name): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    let session = s.store.get_session(&name).await?.ok_or_else(|| {
        ApiError::not_found(
            "session_not_found",
            format!("there is no session {name:?}; list them with GET /v1/sessions"),
        )
    })?;
    let session = live_session(s.store.as_ref(), session).await?;
    Ok(Json(views::session_view(session)))
}
