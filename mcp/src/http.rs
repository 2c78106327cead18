//! The tools as a Streamable HTTP service (rmcp's tower service), for the api function's
//! `/mcp` route.
//!
//! Stateless (no `Mcp-Session-Id`: a Lambda instance keeps nothing between requests, and any
//! instance may get the next request), JSON answers (switching to an SSE stream for the one
//! request that sends progress notifications), no keep-alive pings. rmcp answers both the
//! initialize-era revisions (2024-11-05 to 2025-11-25) and the stateless 2026-07-28 one.
//!
//! Hosts: rmcp refuses (403) a `Host` that is not listed, against DNS rebinding. The loopback
//! names are always allowed (`flowgate serve`, tests); a deployment adds its API Gateway host
//! (`<api-id>.execute-api.<region>.amazonaws.com`) and any custom domain.

use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use crate::api::Connector;
use crate::server::{FlowgateMcp, Settings};

/// The `Host` names every deployment accepts.
pub const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The Streamable HTTP service.
pub type McpService = StreamableHttpService<FlowgateMcp, NeverSessionManager>;

/// The service over `connector`, accepting the loopback hosts and `hosts` (names, or
/// `name:port` to pin a port; a bare name accepts any port).
pub fn service(
    connector: Arc<dyn Connector>,
    hosts: impl IntoIterator<Item = String>,
    settings: Settings,
) -> McpService {
    let allowed: Vec<String> = LOOPBACK_HOSTS
        .iter()
        .map(|h| h.to_string())
        .chain(hosts.into_iter().map(|h| h.trim().to_ascii_lowercase()))
        .filter(|h| !h.is_empty())
        .collect();
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        // The API's own body limit (1 MiB), not rmcp's 4 MiB default: a tool call's arguments
        // end up in an API request body anyway.
        .with_max_request_body_bytes(flowgate_shared::api::MAX_BODY_BYTES)
        .with_allowed_hosts(allowed);
    let settings = Arc::new(settings);
    StreamableHttpService::new(
        move || {
            Ok(FlowgateMcp::with_settings(
                connector.clone(),
                settings.as_ref().clone(),
            ))
        },
        Arc::new(NeverSessionManager::default()),
        config,
    )
}
