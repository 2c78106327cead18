//! `flowgate mcp`: Flowgate's MCP tools on stdin/stdout, for a desktop assistant to start.
//!
//! It calls the API at `--url` (`FLOWGATE_URL`) with `--api-key` (`FLOWGATE_API_KEY`, else the
//! key file of a local `flowgate serve`, as every API command does). The tools live in
//! `flowgate_mcp`; this is only the wiring: logs to stderr (stdout is the protocol), the key
//! resolved, the exit code.

use std::process::ExitCode;

use flowgate_shared::telemetry::{self, LogFormat};
use tracing::{error, info, warn};

use crate::commands::{ApiOptions, KeySource, data_dir_from_env, key_hint, resolve_api_key};

/// Runs the stdio server until the client closes stdin.
pub fn main(options: &ApiOptions) -> ExitCode {
    telemetry::init(LogFormat::Text);
    let dir = data_dir_from_env();
    let key = match resolve_api_key(options.api_key.as_deref(), dir.as_deref()) {
        Ok(key) => key,
        Err(e) => {
            error!("flowgate mcp: {e}");
            return ExitCode::from(1);
        }
    };
    match &key.source {
        KeySource::Given => info!("flowgate mcp: API key from --api-key / FLOWGATE_API_KEY"),
        KeySource::File(path) => {
            info!("flowgate mcp: API key from {}", path.display())
        }
        missing @ KeySource::Missing { .. } => warn!("flowgate mcp: {}", key_hint(missing)),
    }
    let client = match flowgate_mcp::stdio::client(&options.url, key.value) {
        Ok(client) => client,
        Err(e) => {
            error!("flowgate mcp: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("flowgate mcp: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    info!(api = %options.url, "flowgate mcp: serving MCP on stdin/stdout");
    match runtime.block_on(flowgate_mcp::stdio::serve(client)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("flowgate mcp: {e}");
            ExitCode::from(1)
        }
    }
}
