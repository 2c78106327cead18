//! `/mcp`: Flowgate's MCP tools over Streamable HTTP, on the same router as the API.
//!
//! The tool set is `flowgate_mcp`'s, the one `flowgate mcp` serves over stdio; what this module
//! adds is how the remote endpoint reaches the API and who may use it:
//!
//! - **Auth**: every request to `/mcp` (initialize, tool lists, tool calls, and the GET/DELETE
//!   rmcp answers 405) must carry an API key that [`Principal`] accepts, the check every API
//!   route makes. A refused key gets 401 with a JSON-RPC error body, because that is what MCP
//!   clients read and show (the Python SDK, for one, turns a 401 without one into a bare
//!   "Server returned an error response").
//! - **Calls**: a tool's API call is handed to the API router in-process ([`RouterApi`]), with
//!   the caller's key headers and nothing else from the MCP request. So a tool call is exactly
//!   an API request, with the same handlers, validation, errors and audit (the caller's
//!   principal), without a network hop back through API Gateway, and the stdio proxy (which
//!   calls the same routes over HTTP) cannot drift from it.
//! - **Hosts**: rmcp accepts only listed `Host` values (DNS-rebinding protection): loopback,
//!   the host of `FLOWGATE_PUBLIC_URL` (the deployment's API Gateway or custom domain) and
//!   `FLOWGATE_MCP_ALLOWED_HOSTS`.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use flowgate_mcp::{Connector, FlowgateApi, Settings};
use flowgate_shared::api::client::{ClientError, ListApprovalsParams};
use flowgate_shared::api::{
    API_KEY_HEADER, AgentWorkflowList, ApprovalList, CancelRequest, CommandResponse,
    DecisionRequest, DecisionResponse, ErrorBody, EventList, Identity, ListRunsParams,
    MAX_BODY_BYTES, MessageRequest, RunDetail, RunList, SessionList, SessionView, StartRunRequest,
    StartRunResponse, WorkflowList,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tower::ServiceExt as _;
use tracing::{debug, info};

use crate::Services;
use crate::auth::Principal;

/// Extra `Host` names `/mcp` accepts besides loopback and the public URL's host
/// (comma-separated; `name` or `name:port`).
pub const ENV_MCP_ALLOWED_HOSTS: &str = "FLOWGATE_MCP_ALLOWED_HOSTS";

/// The path the MCP endpoint is mounted at.
pub const MCP_PATH: &str = "/mcp";

/// JSON-RPC error code of a refused API key (the implementation-defined server error range).
pub const UNAUTHORIZED_RPC_CODE: i64 = -32001;

/// `api` with the MCP endpoint at [`MCP_PATH`]: tool calls go to `api` in-process.
pub(crate) fn mount(api: Router, services: &Services, extra_hosts: Option<&str>) -> Router {
    let hosts = allowed_hosts(services.notifier.links().public_url.as_deref(), extra_hosts);
    let connector = Arc::new(RouterConnector { api: api.clone() });
    let mcp = flowgate_mcp::http::service(connector, hosts, Settings::default());
    let guarded = Router::new()
        .fallback_service(mcp)
        .layer(middleware::from_fn_with_state(
            services.clone(),
            require_key,
        ));
    api.nest_service(MCP_PATH, guarded)
}

/// The public URL's host plus the configured extra hosts (loopback is added by the service).
pub fn allowed_hosts(public_url: Option<&str>, extra: Option<&str>) -> Vec<String> {
    let public = public_url.and_then(host_of).into_iter();
    let extra = extra
        .unwrap_or_default()
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty());
    public.chain(extra).collect()
}

/// The host (and port, when the URL names one) of `url`, without pulling in a URL parser:
/// `https://abc.execute-api.us-east-1.amazonaws.com/prod` gives
/// `abc.execute-api.us-east-1.amazonaws.com`.
fn host_of(url: &str) -> Option<String> {
    let rest = url.trim().split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    (!authority.is_empty()).then(|| authority.to_ascii_lowercase())
}

/// Refuses a request without a valid API key before rmcp sees it.
async fn require_key(State(services): State<Services>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    match Principal::from_request_parts(&mut parts, &services).await {
        Ok(Principal(principal)) => {
            debug!(%principal, method = %parts.method, "MCP request");
            next.run(Request::from_parts(parts, body)).await
        }
        Err(refused) => {
            info!(method = %parts.method, "MCP request refused: {}", refused.message);
            // The JSON-RPC id, when the body is a request, so the client can match the error.
            let id = axum::body::to_bytes(body, MAX_BODY_BYTES)
                .await
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
                .and_then(|v| v.get("id").cloned())
                .unwrap_or(Value::Null);
            unauthorized(id, &refused.message)
        }
    }
}

/// 401 with a JSON-RPC error an MCP client can show.
fn unauthorized(id: Value, reason: &str) -> Response {
    let body = json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {
            "code": UNAUTHORIZED_RPC_CODE,
            "message": format!(
                "Flowgate refused the request: {reason}. Send a valid Flowgate API key in the \
                 x-api-key header (or Authorization: Bearer <key>)"
            ),
            "data": {"status": 401, "code": "unauthorized"},
        },
    });
    let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("ApiKey realm=\"flowgate\", header=\"x-api-key\""),
    );
    response
}

// ---------------------------------------------------------------------------------------------
// The API, in-process
// ---------------------------------------------------------------------------------------------

/// Connects each MCP request to the API router with the request's own key.
#[derive(Clone)]
struct RouterConnector {
    api: Router,
}

impl fmt::Debug for RouterConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RouterConnector")
    }
}

impl Connector for RouterConnector {
    fn connect(&self, http: Option<&axum::http::request::Parts>) -> Arc<dyn FlowgateApi> {
        // Only the credentials cross over: the tool's request is the API request, not a copy
        // of the MCP one.
        let mut auth = HeaderMap::new();
        if let Some(parts) = http {
            for name in [
                HeaderName::from_static(API_KEY_HEADER),
                header::AUTHORIZATION,
            ] {
                for value in parts.headers.get_all(&name) {
                    auth.append(name.clone(), value.clone());
                }
            }
        }
        Arc::new(RouterApi {
            api: self.api.clone(),
            auth,
        })
    }

    fn identity_is_fixed(&self) -> bool {
        false
    }
}

/// The API router called in-process, as one caller.
#[derive(Clone)]
pub struct RouterApi {
    api: Router,
    auth: HeaderMap,
}

impl fmt::Debug for RouterApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The headers hold the key: never print them.
        f.debug_struct("RouterApi")
            .field("has_key", &!self.auth.is_empty())
            .finish()
    }
}

/// Where an in-process call says it went, in errors.
const IN_PROCESS: &str = "the in-process Flowgate API";

impl RouterApi {
    /// The API router as the caller with these credential headers.
    pub fn new(api: Router, auth: HeaderMap) -> Self {
        RouterApi { api, auth }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: Option<String>,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let mut path = String::new();
        for segment in segments {
            if segment.trim().is_empty() || matches!(*segment, "." | "..") {
                return Err(ClientError::InvalidRequest(format!(
                    "{segment:?} cannot be part of a URL path; copy the id from a listing"
                )));
            }
            path.push('/');
            path.push_str(&encode_segment(segment));
        }
        let request_line = format!("{method} {path}");
        let uri = match query.filter(|q| !q.is_empty()) {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let mut builder = axum::http::Request::builder().method(method).uri(uri);
        for (name, value) in &self.auth {
            builder = builder.header(name, value);
        }
        let has_body = body.is_some();
        if has_body {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(body.map(Body::from).unwrap_or_else(Body::empty))
            .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
        let response = match self.api.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .map_err(|e| ClientError::Transport {
                kind: flowgate_shared::api::client::TransportKind::Other,
                request: request_line.clone(),
                base_url: IN_PROCESS.to_string(),
                detail: e.to_string(),
            })?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
                request: request_line,
                status: status.as_u16(),
                base_url: IN_PROCESS.to_string(),
                reason: e.to_string(),
                snippet: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            });
        }
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(ErrorBody { error }) => ClientError::Api {
                status: status.as_u16(),
                code: error.code,
                message: error.message,
                field: error.field,
                problems: error.problems,
            },
            Err(_) => ClientError::Api {
                status: status.as_u16(),
                code: format!("http_{}", status.as_u16()),
                message: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
                field: None,
                problems: Vec::new(),
            },
        })
    }

    async fn get<T: DeserializeOwned, Q: Serialize>(
        &self,
        segments: &[&str],
        query: &Q,
    ) -> Result<T, ClientError> {
        let query = serde_urlencoded::to_string(query)
            .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
        self.call(Method::GET, segments, Some(query), None).await
    }

    async fn post<T: DeserializeOwned, B: Serialize>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<T, ClientError> {
        let body =
            serde_json::to_vec(body).map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
        self.call(Method::POST, segments, None, Some(body)).await
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so an id cannot change the
/// path (the HTTP client does the same for the stdio proxy).
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A query with optional fields (the API's own query types where they are public).
#[derive(Serialize)]
struct Opt<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    active: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow: Option<&'a str>,
}

impl Opt<'_> {
    fn none() -> Self {
        Opt {
            active: None,
            after: None,
            limit: None,
            status: None,
            workflow: None,
        }
    }
}

#[async_trait]
impl FlowgateApi for RouterApi {
    async fn me(&self) -> Result<Identity, ClientError> {
        self.get(&["v1", "me"], &Opt::none()).await
    }
    async fn start_run(&self, request: &StartRunRequest) -> Result<StartRunResponse, ClientError> {
        self.post(&["v1", "runs"], request).await
    }
    async fn list_runs(&self, params: &ListRunsParams) -> Result<RunList, ClientError> {
        self.get(&["v1", "runs"], params).await
    }
    async fn get_run(&self, run_id: &str) -> Result<RunDetail, ClientError> {
        self.get(&["v1", "runs", run_id], &Opt::none()).await
    }
    async fn run_events(
        &self,
        run_id: &str,
        after: Option<u64>,
        limit: Option<u32>,
    ) -> Result<EventList, ClientError> {
        let query = Opt {
            after,
            limit,
            ..Opt::none()
        };
        self.get(&["v1", "runs", run_id, "events"], &query).await
    }
    async fn cancel_run(
        &self,
        run_id: &str,
        request: &CancelRequest,
    ) -> Result<CommandResponse, ClientError> {
        self.post(&["v1", "runs", run_id, "cancel"], request).await
    }
    async fn send_message(
        &self,
        run_id: &str,
        request: &MessageRequest,
    ) -> Result<CommandResponse, ClientError> {
        self.post(&["v1", "runs", run_id, "messages"], request)
            .await
    }
    async fn list_workflows(&self) -> Result<WorkflowList, ClientError> {
        self.get(&["v1", "workflows"], &Opt::none()).await
    }
    async fn list_agent_workflows(&self) -> Result<AgentWorkflowList, ClientError> {
        self.get(&["v1", "agent-workflows"], &Opt::none()).await
    }
    async fn list_sessions(&self, active: Option<bool>) -> Result<SessionList, ClientError> {
        let query = Opt {
            active,
            ..Opt::none()
        };
        self.get(&["v1", "sessions"], &query).await
    }
    async fn get_session(&self, name: &str) -> Result<SessionView, ClientError> {
        self.get(&["v1", "sessions", name], &Opt::none()).await
    }
    async fn list_approvals(
        &self,
        params: &ListApprovalsParams,
    ) -> Result<ApprovalList, ClientError> {
        let query = Opt {
            status: params.status.map(|s| s.as_str()),
            workflow: params.workflow.as_deref(),
            limit: params.limit,
            ..Opt::none()
        };
        self.get(&["v1", "approvals"], &query).await
    }
    async fn decide_approval(
        &self,
        approval_id: &str,
        request: &DecisionRequest,
    ) -> Result<DecisionResponse, ClientError> {
        self.post(&["v1", "approvals", approval_id, "decision"], request)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_come_from_the_public_url_and_the_list() {
        assert_eq!(
            allowed_hosts(
                Some("https://abc123.execute-api.us-east-1.amazonaws.com/prod/"),
                Some(" Flowgate.Example.com ,, api.example.com:8443")
            ),
            vec![
                "abc123.execute-api.us-east-1.amazonaws.com",
                "flowgate.example.com",
                "api.example.com:8443"
            ]
        );
        assert_eq!(
            allowed_hosts(Some("http://127.0.0.1:8787"), None),
            vec!["127.0.0.1:8787"]
        );
        assert!(allowed_hosts(Some("not a url"), Some("")).is_empty());
    }

    #[test]
    fn segments_cannot_change_the_path() {
        assert_eq!(encode_segment("r-1.review.2"), "r-1.review.2");
        assert_eq!(encode_segment("a/b c?"), "a%2Fb%20c%3F");
    }
}
