//! `/v1/me`: who the API key belongs to and what it may do. The MCP server asks it to decide
//! whether to offer `decide_approval` (a tool a key may not use is better not shown to a model);
//! a person can check which principal their key maps to.

use axum::Json;
use axum::extract::State;
use flowgate_shared::api::{ErrorBody, Identity};

use crate::Services;
use crate::auth::Principal;

/// The caller's principal (what audit logs and `started_by` show) and whether its key may
/// decide approvals (`FLOWGATE_API_KEY_APPROVERS`).
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "meta",
    responses(
        (status = 200, description = "The key's principal and permissions", body = Identity),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
    )
)]
pub(crate) async fn me(
    State(s): State<Services>,
    Principal(principal): Principal,
) -> Json<Identity> {
    Json(Identity {
        may_approve: s.keys.may_approve(&principal),
        principal,
    })
}
