//! The `flowgate` command line. Each subcommand is a function here so tests can drive it; the
//! binary only parses arguments and maps the outcome to an exit code.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use flowgate_shared::agent::simulator::{Simulator, SimulatorConfig};
use flowgate_shared::definition::parse_definition;
use flowgate_shared::duration::DurationSpec;

pub mod serve;

pub mod approvals;
pub mod commands;
pub mod load;
pub mod mcp;
pub mod output;
pub mod progress;

#[derive(Debug, Parser)]
#[command(
    name = "flowgate",
    version,
    about = "Run AI coding-agent workflows",
    after_help = commands::EXIT_CODES_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Where the API commands connect and how they print (global: before or after the command).
    #[command(flatten)]
    pub api: commands::ApiOptions,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every Flowgate function in one process on 127.0.0.1: the HTTP API, the workers, the
    /// sweeper, an embedded store and (without --agent-url) the built-in agent simulator.
    Serve(serve::ServeArgs),
    /// Serve Flowgate's tools to an MCP client on stdin/stdout (what a desktop assistant
    /// starts), calling the API at --url with --api-key. Logs go to stderr.
    Mcp,
    /// Check workflow definition files (YAML or JSON) and list every problem found.
    Validate {
        /// Definition files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print the result as JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Serve a local stand-in for the Claude Code agent service (same paths, shapes, errors,
    /// auth and quirks), for trying workflows without a real agent service.
    SimulateAgent {
        /// Address to listen on.
        #[arg(
            long,
            default_value = "127.0.0.1:28881",
            env = "FLOWGATE_SIMULATOR_ADDR"
        )]
        addr: SocketAddr,
        /// The API key callers must send in `x-api-key`.
        #[arg(
            long,
            env = "FLOWGATE_SIMULATOR_API_KEY",
            default_value = "simulator-key"
        )]
        api_key: String,
        /// How long a run runs before it completes (`[slow]` in a message makes it 10x longer).
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        run_duration: Duration,
    },
    /// Print the SHA-256 hash of an API key read from standard input, in the form
    /// `FLOWGATE_API_KEY_HASHES` takes (`principal=hash` with --principal). The key is read
    /// from stdin so it stays out of shell history and process lists.
    HashKey {
        /// Name the key's holder (shown in audit logs and as `started_by`).
        #[arg(long)]
        principal: Option<String>,
    },
    /// The commands that call a Flowgate API (`flowgate serve`, or a deployed one).
    #[command(flatten)]
    Api(commands::ApiCommand),
    /// Approvals and webhook subscriptions, through the same API.
    #[command(flatten)]
    Approvals(approvals::ApprovalCommand),
}

/// The `FLOWGATE_API_KEY_HASHES` entry for the key on the first line of `input`.
pub fn hash_key_entry(input: &str, principal: Option<&str>) -> Result<String, String> {
    let key = input.lines().next().unwrap_or_default().trim();
    if key.is_empty() {
        return Err(
            "no key on standard input; pipe it in: printf %s \"$KEY\" | flowgate hash-key".into(),
        );
    }
    let hash = flowgate_api::hash_key(key);
    Ok(match principal {
        Some(p) if !p.trim().is_empty() => format!("{}={hash}", p.trim()),
        _ => hash,
    })
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    DurationSpec::parse(s)
        .map(|d| Duration::from_millis(d.as_millis()))
        .map_err(|e| e.to_string())
}

/// Run the agent-service simulator until Ctrl-C.
pub fn simulate_agent(
    addr: SocketAddr,
    api_key: String,
    run_duration: Duration,
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    rt.block_on(async move {
        let config = SimulatorConfig {
            bind: addr,
            api_key,
            run_duration,
            ..SimulatorConfig::default()
        };
        let handle = Simulator::start(config)
            .await
            .map_err(|e| format!("cannot start the simulator: {e}"))?;
        eprintln!(
            "agent simulator listening on {} (base path /api/v1/workflows/claude-code); Ctrl-C stops it",
            handle.base_url
        );
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
        handle
            .shutdown()
            .await
            .map_err(|e| format!("simulator did not stop cleanly: {e}"))
    })
}

/// Validate each file; write a report; return whether all were valid.
pub fn validate(files: &[PathBuf], json: bool, out: &mut dyn Write) -> std::io::Result<bool> {
    let mut all_ok = true;
    let mut report = Vec::new();
    for file in files {
        let (ok, problems) = check_file(file);
        all_ok &= ok;
        if json {
            report.push(serde_json::json!({"file": file, "valid": ok, "problems": problems}));
        } else if ok {
            writeln!(out, "{}: valid", file.display())?;
        } else {
            writeln!(out, "{}: {} problem(s)", file.display(), problems.len())?;
            for (path, message) in &problems {
                let at = if path.is_empty() { "(document)" } else { path };
                writeln!(out, "  {at}: {message}")?;
            }
        }
    }
    if json {
        writeln!(out, "{}", serde_json::Value::Array(report))?;
    }
    Ok(all_ok)
}

fn check_file(file: &Path) -> (bool, Vec<(String, String)>) {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            return (
                false,
                vec![(String::new(), format!("cannot read the file: {e}"))],
            );
        }
    };
    match parse_definition(&text) {
        Ok(_) => (true, Vec::new()),
        Err(errors) => (
            false,
            errors.0.into_iter().map(|p| (p.path, p.message)).collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_key_entries_match_what_the_api_accepts() {
        let line = hash_key_entry("s3cret\n", Some("ci")).unwrap();
        let keys = flowgate_api::ApiKeys::from_hashes(&line).unwrap();
        assert_eq!(keys.principal_for("s3cret"), Some("ci"));
        assert_eq!(keys.principal_for("s3cret\n"), None);
        let bare = hash_key_entry("s3cret", None).unwrap();
        assert_eq!(bare.len(), 64);
        assert!(!bare.contains("s3cret"));
        assert!(hash_key_entry("\n", None).is_err());
    }

    #[test]
    fn reports_every_problem_and_fails() {
        let dir = std::env::temp_dir().join(format!("flowgate-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let bad = dir.join("bad.yaml");
        std::fs::write(
            &bad,
            "id: x\nsteps:\n  - id: a\n    kind: agent\n    workflow: w\n    message: m\n    depends_on: [nope]\n",
        )
        .expect("write");
        let mut out = Vec::new();
        let ok = validate(std::slice::from_ref(&bad), false, &mut out).expect("io");
        let text = String::from_utf8(out).expect("utf8");
        assert!(!ok);
        assert!(text.contains("steps[0].depends_on[0]"), "{text}");
        let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/nightly-tests.yaml");
        let mut out = Vec::new();
        assert!(validate(&[good], true, &mut out).expect("io"));
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json report");
        assert_eq!(v[0]["valid"], true);
    }
}
