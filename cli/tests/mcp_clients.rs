//! Black-box MCP tests: the Python `mcp` SDK's client (what many agents and hosts use) against
//! Flowgate's two MCP servers, both in front of a real `flowgate serve` with the built-in agent
//! simulator:
//!
//! - stdio: the client starts `flowgate mcp` (the real binary) pointed at the serve's URL and key;
//! - Streamable HTTP: the client talks to the serve's `/mcp` with the key in `x-api-key`.
//!
//! The client side is `tests/mcp_client.py` (it prints what it saw as JSON); the assertions are
//! here. Synchronisation is by signals: the serve's "listening on" line, the runs' state read
//! through the tools; every client run is bounded by its own timeout and by a deadline here,
//! so a server that hangs fails the test instead of the suite.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns read JSON the same way

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_flowgate");
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp_client.py");

const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
/// What the Python client is given for a scenario (it stops itself at this point) ...
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(120);
/// ... and when this side kills it anyway.
const PROCESS_DEADLINE: Duration = Duration::from_secs(150);
/// A wrong key must be reported quickly, not after a retry loop or an OAuth wait.
const BAD_KEY_DEADLINE: Duration = Duration::from_secs(20);

/// Environment variables that would change what the binaries do.
const FLOWGATE_ENV: [&str; 14] = [
    "FLOWGATE_URL",
    "FLOWGATE_API_KEY",
    "FLOWGATE_API_KEY_HASHES",
    "FLOWGATE_API_KEY_APPROVERS",
    "FLOWGATE_DATA_DIR",
    "FLOWGATE_ADDR",
    "FLOWGATE_AGENT_URL",
    "FLOWGATE_AGENT_API_KEY",
    "FLOWGATE_WORKERS",
    "FLOWGATE_SWEEP_INTERVAL",
    "FLOWGATE_SIMULATOR_RUN_DURATION",
    "FLOWGATE_LOG_FORMAT",
    "FLOWGATE_MCP_ALLOWED_HOSTS",
    "RUST_LOG",
];

/// The Python interpreter of the test venv (`scripts/test` exports `FLOWGATE_PYTHON`).
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FLOWGATE_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with the `mcp` package: run the tests through scripts/test (it creates .venv \
         from scripts/requirements-test.txt), or set FLOWGATE_PYTHON"
    );
    venv
}

/// A running `flowgate serve`; killed when dropped.
struct Serve {
    child: Child,
    url: String,
    key: String,
    _home: tempfile::TempDir,
}

impl Serve {
    fn start(extra: &[&str]) -> Serve {
        let home = tempfile::tempdir().expect("temp dir");
        let data_dir = home.path().join("data");
        let mut cmd = Command::new(BIN);
        for name in FLOWGATE_ENV {
            cmd.env_remove(name);
        }
        cmd.env("NO_COLOR", "1")
            .env("HOME", home.path())
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(["--simulator-run-duration", "3s", "--sweep-interval", "5s"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start flowgate serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let until = Instant::now() + STARTUP_DEADLINE;
        let mut seen = Vec::new();
        let url = loop {
            let left = until.saturating_duration_since(Instant::now());
            let line = lines.recv_timeout(left).unwrap_or_else(|e| {
                panic!(
                    "flowgate serve did not say where it listens ({e}):\n{}",
                    seen.join("\n")
                )
            });
            if let Some(at) = line.find("listening on http://") {
                let rest = &line[at + "listening on ".len()..];
                break rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || ":/.".contains(*c))
                    .collect::<String>();
            }
            seen.push(line);
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let key = std::fs::read_to_string(data_dir.join("api-key"))
            .expect("serve wrote its API key")
            .trim()
            .to_string();
        Serve {
            child,
            url,
            key,
            _home: home,
        }
    }

    /// Runs the Python client's `scenario` over `transport` (and protocol `mode`).
    fn client(&self, scenario: &str, transport: &str, mode: &str) -> Value {
        client(scenario, transport, mode, &self.url, &self.key)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tests/mcp_client.py` and returns the JSON it printed; fails with its output when it
/// fails or outlives [`PROCESS_DEADLINE`].
fn client(scenario: &str, transport: &str, mode: &str, url: &str, key: &str) -> Value {
    let mut child = Command::new(python())
        .arg(CLIENT)
        .arg(scenario)
        .args(["--transport", transport, "--mode", mode, "--url", url])
        .args(["--key", key, "--bin", BIN])
        .args(["--timeout", &SCENARIO_TIMEOUT.as_secs().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Python MCP client");
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("stderr")));
    let until = Instant::now() + PROCESS_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the client") {
            break Some(status);
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    match status {
        Some(s) if s.success() => serde_json::from_str(out.trim()).unwrap_or_else(|e| {
            panic!("the client printed no JSON ({e}):\nstdout: {out}\nstderr: {err}")
        }),
        Some(s) => panic!("{scenario} over {transport} failed ({s}):\n{err}\nstdout: {out}"),
        None => {
            panic!("{scenario} over {transport} did not finish within {PROCESS_DEADLINE:?}:\n{err}")
        }
    }
}

/// The tool list as a comparable value: name -> everything the client got for it.
fn tools(out: &Value) -> Vec<(String, Value)> {
    out["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| (t["name"].as_str().expect("name").to_string(), t.clone()))
        .collect()
}

fn names(out: &Value) -> Vec<String> {
    tools(out).into_iter().map(|(name, _)| name).collect()
}

const ALL_TOOLS: [&str; 10] = [
    "decide_approval",
    "get_session_status",
    "get_workflow_status",
    "kill_workflow",
    "list_pending_approvals",
    "list_recent_runs",
    "list_sessions",
    "list_workflows",
    "run_workflow",
    "send_feedback",
];

/// What the `full` scenario must show on either transport.
fn check_full_flow(transport: &str, out: &Value) {
    let ctx = |what: &str| format!("{transport}: {what}: {out:#}");
    assert_eq!(out["server_name"], "flowgate", "{}", ctx("server name"));
    assert_eq!(names(out), ALL_TOOLS, "{}", ctx("tool names"));
    for (name, tool) in tools(out) {
        assert!(
            tool["inputSchema"].is_object(),
            "{name} has no input schema"
        );
        assert!(
            tool["outputSchema"].is_object(),
            "{name} has no output schema"
        );
        let notes = &tool["annotations"];
        assert!(
            notes["readOnlyHint"].is_boolean() && notes["destructiveHint"].is_boolean(),
            "{name} lacks read-only/destructive annotations: {notes}"
        );
    }

    // run_workflow with a progress token waited for the simulator's run to finish.
    let run = &out["run"];
    assert_eq!(run["is_error"], false, "{}", ctx("run_workflow"));
    let state = &run["structured"];
    let run_id = state["run_id"].as_str().expect("run id");
    assert_eq!(state["status"], "succeeded", "{}", ctx("run status"));
    assert_eq!(state["finished"], true);
    assert_eq!(state["steps"][0]["agent"]["turns"], 4);
    assert!(state["waited_seconds"].as_f64().unwrap() > 0.0);
    assert!(
        run["text"].as_str().unwrap().contains(run_id),
        "{}",
        ctx("readable text names the run")
    );
    let progress = out["progress"].as_array().expect("progress list");
    assert!(
        progress.len() >= 2,
        "{}",
        ctx("progress notifications (a start and an end at least)")
    );
    let values: Vec<f64> = progress
        .iter()
        .map(|p| p["progress"].as_f64().unwrap())
        .collect();
    assert!(
        values.windows(2).all(|w| w[1] > w[0]),
        "{}",
        ctx("progress grows with every notification")
    );
    assert!(
        progress.iter().any(|p| p["message"]
            .as_str()
            .unwrap()
            .contains("step architect (agent)")
            && p["message"].as_str().unwrap().contains("turn ")),
        "{}",
        ctx("a notification names the current step and its turns")
    );
    assert!(
        progress.last().unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("succeeded"),
        "{}",
        ctx("the last notification says how the run ended")
    );

    // get_workflow_status, detailed.
    let status = &out["status"];
    assert_eq!(status["is_error"], false, "{}", ctx("get_workflow_status"));
    assert_eq!(status["structured"]["run_id"], run_id);
    assert_eq!(status["structured"]["status"], "succeeded");
    let kinds: Vec<&str> = status["structured"]["details"]["recent_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"run.completed"), "{kinds:?}");

    // send_feedback reached the running agent; kill_workflow ended the run.
    assert_eq!(
        out["feedback"]["is_error"],
        false,
        "{}",
        ctx("send_feedback")
    );
    assert_eq!(out["kill"]["is_error"], false, "{}", ctx("kill_workflow"));
    assert_eq!(out["killed_status"], "cancelled", "{}", ctx("killed run"));
    let events: Vec<&str> = out["killed_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        events.contains(&"agent.feedback") && events.contains(&"run.cancelled"),
        "{events:?}"
    );

    // Failures are tool results a model can act on.
    let unknown = &out["unknown_run"];
    assert_eq!(unknown["is_error"], true);
    let text = unknown["text"].as_str().unwrap();
    assert!(
        text.contains("run_not_found") && text.contains("list_recent_runs"),
        "{text}"
    );
    let bad_args = &out["bad_args"];
    assert_eq!(bad_args["is_error"], true);
    assert!(
        bad_args["text"].as_str().unwrap().contains("run_id"),
        "{bad_args}"
    );

    // The listing tools answer.
    for tool in ["recent", "workflows", "approvals", "sessions"] {
        assert_eq!(out[tool]["is_error"], false, "{}", ctx(tool));
    }
    let recent = out["recent"]["structured"]["runs"].as_array().unwrap();
    assert!(recent.iter().any(|r| r["run_id"] == run_id));
    let agent_workflows = out["workflows"]["structured"]["agent_workflows"]
        .as_array()
        .unwrap();
    assert!(agent_workflows.iter().any(|w| w["name"] == "architect"));
}

#[test]
fn the_python_sdk_runs_the_tool_flow_over_stdio_and_streamable_http() {
    let serve = Serve::start(&[]);
    let stdio = serve.client("full", "stdio", "auto");
    check_full_flow("stdio", &stdio);
    let http = serve.client("full", "http", "auto");
    check_full_flow("http", &http);
    // The same tools, schemas, annotations and descriptions on both transports.
    assert_eq!(tools(&stdio), tools(&http));
    eprintln!(
        "get_workflow_status round trip: stdio {:.1} ms, http {:.1} ms",
        stdio["status_ms"].as_f64().unwrap(),
        http["status_ms"].as_f64().unwrap()
    );
}

#[test]
fn both_protocol_eras_get_the_same_tools_on_both_transports() {
    let serve = Serve::start(&[]);
    let mut lists = Vec::new();
    for transport in ["stdio", "http"] {
        for (mode, version) in [("legacy", "2025-11-25"), ("auto", "2026-07-28")] {
            let out = serve.client("tools", transport, mode);
            assert_eq!(
                out["protocol_version"], version,
                "{transport} {mode}: {out:#}"
            );
            assert_eq!(names(&out), ALL_TOOLS, "{transport} {mode}");
            lists.push(((transport, mode), tools(&out)));
        }
    }
    for ((which, list), (first, expected)) in lists.iter().zip(std::iter::repeat(&lists[0])) {
        assert_eq!(list, expected, "{which:?} differs from {first:?}");
    }
}

#[test]
fn a_wrong_key_fails_fast_with_a_clear_error() {
    let serve = Serve::start(&[]);
    for mode in ["auto", "legacy"] {
        // HTTP: every request is refused before MCP; the client shows the JSON-RPC error.
        let started = Instant::now();
        let out = client("bad-key", "http", mode, &serve.url, "not-the-key");
        assert!(
            started.elapsed() < BAD_KEY_DEADLINE,
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(out["connected"], false, "{out:#}");
        let error = out["error"].as_str().unwrap();
        assert!(
            error.contains("the API key is not valid") && error.contains("x-api-key"),
            "{error}"
        );

        // stdio: the proxy starts (a host shows its tools), and every call says what is wrong.
        let started = Instant::now();
        let out = client("bad-key", "stdio", mode, &serve.url, "not-the-key");
        assert!(
            started.elapsed() < BAD_KEY_DEADLINE,
            "took {:?}",
            started.elapsed()
        );
        let call = &out["call"];
        assert_eq!(call["is_error"], true, "{out:#}");
        let text = call["text"].as_str().unwrap();
        assert!(
            text.contains("HTTP 401") && text.contains("FLOWGATE_API_KEY"),
            "{text}"
        );
    }
}

#[test]
fn decide_approval_is_offered_only_to_keys_that_may_approve() {
    let serve = Serve::start(&["--api-key-approvers", "someone-else"]);
    for transport in ["stdio", "http"] {
        let out = serve.client("tools", transport, "auto");
        let names = names(&out);
        assert!(!names.iter().any(|n| n == "decide_approval"), "{names:?}");
        assert_eq!(names.len(), ALL_TOOLS.len() - 1, "{names:?}");
    }
}
