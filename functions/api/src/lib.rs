//! Lambda function `flowgate-api`, and the router `flowgate serve` hosts: the HTTP API.
//!
//! One axum [`Router`] serves both: on Lambda it runs behind API Gateway through `lambda_http`
//! (see `main.rs`), locally `flowgate serve` binds it to a TCP port. Every route is declared
//! with `#[utoipa::path]` and registered through `utoipa_axum`, so the OpenAPI document at
//! `GET /openapi.json` is built from the same list the router is: a route cannot exist
//! without being documented.
//!
//! Layout: [`auth`] (API keys), [`error`] (the one error shape and every status mapping),
//! [`body`] (JSON/YAML bodies with size and content-type checks), `routes/*` (handlers),
//! [`config`] (the Lambda's environment), [`mcp`] (the MCP endpoint at `/mcp`, which speaks
//! JSON-RPC rather than REST and so is mounted beside the documented routes, not in the
//! OpenAPI document), [`dashboard`] (the web dashboard at `/`, a client of the API whose
//! files are compiled in).

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use flowgate_shared::agent::AgentClient;
use flowgate_shared::api::MAX_BODY_BYTES;
use flowgate_shared::notify::Notifier;
use flowgate_shared::ports::{RunStore, WorkQueue, WorkflowStore};
use flowgate_shared::runtime::{Clock, Executor};
use utoipa::OpenApi as _;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub mod analytics;
pub mod approvals;
pub mod auth;
pub mod body;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod hooks;
pub mod mcp;
mod routes;
mod views;

pub use approvals::ApprovalSettings;
pub use auth::{ApiKeys, hash_key};
pub use error::ApiError;
pub use hooks::HookSecrets;

/// Everything the handlers use. Cheap to clone (all shared).
#[derive(Clone)]
pub struct Services {
    pub store: Arc<dyn RunStore>,
    pub workflows: Arc<dyn WorkflowStore>,
    pub queue: Arc<dyn WorkQueue>,
    /// Applies run commands (cancel, feedback, retry, rollback) synchronously.
    pub executor: Arc<Executor>,
    /// The agent service: its workflow list (one-step runs, strict validation).
    pub agent: Arc<AgentClient>,
    pub clock: Arc<dyn Clock>,
    pub keys: Arc<ApiKeys>,
    /// Slack and outbound webhooks (subscriptions live in its record store).
    pub notifier: Arc<Notifier>,
    /// How approval decisions from Slack, signed webhooks and links are verified.
    pub approvals: Arc<ApprovalSettings>,
    /// Inbound webhook triggers' secrets (`POST /hooks/{trigger_id}`); empty refuses them all.
    pub hooks: Arc<HookSecrets>,
    /// Where `schedule` triggers are kept (EventBridge Scheduler, or records fired by `flowgate
    /// serve`); storing or deleting a workflow syncs them. `None`: schedules are not synced.
    pub scheduler: Option<Arc<dyn flowgate_shared::ports::Scheduler>>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("keys", &self.keys)
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Flowgate API",
        description = "Run AI coding-agent workflows: start runs, watch their progress, send \
                       feedback, cancel, retry, roll back, and manage workflow definitions.",
        license(name = "Apache-2.0")
    ),
    modifiers(&SecurityAddon),
    security(("api_key" = []), ("bearer" = []))
)]
struct ApiDoc;

/// Declares the two ways to send an API key.
struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The routes and their OpenAPI description, from one list.
fn parts() -> (Router<Services>, OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::router())
        .split_for_parts()
}

/// The OpenAPI 3.1 document (the one `GET /openapi.json` serves), built once.
pub fn openapi() -> &'static OpenApi {
    static DOC: OnceLock<OpenApi> = OnceLock::new();
    DOC.get_or_init(|| parts().1)
}

/// The API as one axum router: every route (each handler authenticates through its
/// [`auth::Principal`] argument), JSON 404/405 answers, the body size limit, the MCP
/// endpoint at `/mcp` (see [`mcp`]), whose tools call the other routes in-process, and the
/// web dashboard at `/` (see [`dashboard`]).
pub fn app(services: Services) -> Router {
    app_with_mcp_hosts(services, None)
}

/// [`app`] whose `/mcp` also serves the comma-separated `Host` names in `extra_hosts` (see
/// [`mcp::ENV_MCP_ALLOWED_HOSTS`]; loopback and the public URL's host always).
pub fn app_with_mcp_hosts(services: Services, extra_hosts: Option<&str>) -> Router {
    let api = finish(parts().0.merge(dashboard::router()), services.clone());
    mcp::mount(api, &services, extra_hosts)
}

/// The approvals function's router: Slack interactivity, approval decisions (API key or
/// Standard Webhooks signature), one-time approval links, and `GET /v1/approvals`, with the
/// same error answers and body limit as [`app`].
pub fn approvals_app(services: Services) -> Router {
    let (router, _) = routes::approval_router().split_for_parts();
    finish(router, services)
}

/// The triggers function's router: `POST /hooks/{trigger_id}` (inbound webhook triggers), with
/// the same error answers and body limit as [`app`].
pub fn hooks_app(services: Services) -> Router {
    let (router, _) = routes::hook_router().split_for_parts();
    finish(router, services)
}

fn finish(router: Router<Services>, services: Services) -> Router {
    router
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(services)
}
