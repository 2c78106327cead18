//! `flowgate mcp`: the tools over stdio, proxied to a Flowgate HTTP API.
//!
//! This is what a desktop assistant starts: it speaks MCP on stdin/stdout and calls the API at
//! a URL with an API key through [`FlowgateClient`]. stdout carries the protocol only; logs go
//! to stderr, which hosts keep as the server's log.

use std::sync::Arc;
use std::time::Duration;

use flowgate_shared::api::client::{ClientConfig, ClientError, FlowgateClient};
use rmcp::ServiceExt;
use rmcp::transport::stdio;
use tracing::{error, info};

use crate::api::{ClientConnector, FlowgateApi};
use crate::server::{FlowgateMcp, Settings};

/// Why `flowgate mcp` could not run.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("the MCP session on stdin/stdout failed: {0}")]
    Session(String),
}

/// The HTTP client the proxy uses: requests bounded well inside a tool call's budget, so an API
/// that does not answer fails the tool instead of the host's own (longer) timeout.
pub fn client(base_url: &str, api_key: Option<String>) -> Result<FlowgateClient, ClientError> {
    let settings = Settings::default();
    FlowgateClient::with_config(
        base_url,
        api_key,
        ClientConfig {
            request_timeout: settings.call_timeout,
            connect_timeout: Duration::from_secs(3),
        },
    )
}

/// Serve the tools on stdin/stdout until the client closes them.
pub async fn serve(client: FlowgateClient) -> Result<(), StdioError> {
    let base_url = client.base_url().to_string();
    let has_key = client.has_api_key();
    // Say early, in the host's log, whether the API and key work; the server runs either way,
    // and each tool call reports the same problem to the model.
    let probe = client.clone();
    tokio::spawn(async move {
        match FlowgateApi::me(&probe).await {
            Ok(id) => info!(
                api = %base_url,
                principal = %id.principal,
                may_approve = id.may_approve,
                "flowgate mcp: connected to the Flowgate API"
            ),
            Err(e) => error!(
                api = %base_url,
                has_key,
                "flowgate mcp: the Flowgate API is not usable yet: {e}"
            ),
        }
    });
    let server = FlowgateMcp::new(Arc::new(ClientConnector::new(client)));
    let running = server
        .serve(stdio())
        .await
        .map_err(|e| StdioError::Session(e.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|e| StdioError::Session(e.to_string()))?;
    Ok(())
}
