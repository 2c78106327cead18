//! End to end: the real `flowgate` binary serving, a workflow stored and run through the CLI,
//! the server killed (SIGKILL) in the middle of an agent step and started again on the same
//! data directory; the run must finish with every step succeeded.
//!
//! Synchronisation is by signals, never by fixed sleeps: the server's "listening on" log line
//! says when it is up, and run state is read from the API until a deadline.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flowgate_shared::api::RunDetail;
use flowgate_shared::api::client::FlowgateClient;
use flowgate_shared::model::StepStatus;

const BIN: &str = env!("CARGO_BIN_EXE_flowgate");

/// Generous: CI machines are slow, and a failure names what it was waiting for.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
const RUN_DEADLINE: Duration = Duration::from_secs(90);
/// Between two reads of a run's state while waiting for it to change.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// Two agent steps; retries cover an agent run lost with a restarted built-in simulator.
const WORKFLOW: &str = r#"
id: e2e-two-steps
name: Two agent steps
inputs:
  topic:
    type: string
    required: true
steps:
  - id: design
    kind: agent
    workflow: architect
    message: "Design ${{ inputs.topic }}"
    retry:
      max_attempts: 3
      backoff: fixed
      initial_delay: 1s
  - id: build
    kind: agent
    workflow: implement
    depends_on: [design]
    message: "Build it: ${{ steps.design.output }}"
    retry:
      max_attempts: 3
      backoff: fixed
      initial_delay: 1s
"#;

/// Environment variables that would change what the binaries do; the tests set what they need.
const FLOWGATE_ENV: [&str; 12] = [
    "FLOWGATE_URL",
    "FLOWGATE_API_KEY",
    "FLOWGATE_API_KEY_HASHES",
    "FLOWGATE_DATA_DIR",
    "FLOWGATE_ADDR",
    "FLOWGATE_AGENT_URL",
    "FLOWGATE_AGENT_API_KEY",
    "FLOWGATE_WORKERS",
    "FLOWGATE_SWEEP_INTERVAL",
    "FLOWGATE_SIMULATOR_RUN_DURATION",
    "FLOWGATE_LOG_FORMAT",
    "RUST_LOG",
];

fn command(home: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for name in FLOWGATE_ENV {
        cmd.env_remove(name);
    }
    // No colour codes in the lines we parse; a HOME of our own so nothing touches the real one.
    cmd.env("NO_COLOR", "1").env("HOME", home);
    cmd
}

/// A child process whose stderr lines arrive on a channel; killed when dropped.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Everything read so far, for failure messages.
    seen: Vec<String>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start the flowgate binary");
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
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line containing `needle` (already read, or arriving within `deadline`).
    fn wait_for_line(&mut self, needle: &str, deadline: Duration) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let until = Instant::now() + deadline;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no line containing {needle:?} within {deadline:?} ({e}); output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Wait for `<what> listening on http://ADDR` and return `http://ADDR`.
    fn listening_url(&mut self) -> String {
        let line = self.wait_for_line("listening on http://", STARTUP_DEADLINE);
        parse_url(&line).unwrap_or_else(|| panic!("no URL in {line:?}"))
    }

    /// SIGKILL: no graceful shutdown, nothing flushed beyond what was already durable.
    fn kill(&mut self) {
        self.child.kill().expect("kill the process");
        self.child.wait().expect("reap the process");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `http://host:port` after "listening on " in a log line.
fn parse_url(line: &str) -> Option<String> {
    let at = line.find("listening on http://")? + "listening on ".len();
    let url: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || ":/.[]".contains(*c))
        .collect();
    Some(url)
}

/// A `flowgate serve` on a free port and `data_dir`; `extra` adds flags.
fn serve(home: &Path, data_dir: &Path, extra: &[&str]) -> (Proc, String) {
    let mut cmd = command(home);
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(["--simulator-run-duration", "3s", "--sweep-interval", "5s"])
        .args(extra);
    let mut proc = Proc::spawn(cmd);
    let url = proc.listening_url();
    (proc, url)
}

/// Run the CLI against the server at `url` (key from `data_dir/api-key`, as a user's would be).
fn cli(home: &Path, url: &str, data_dir: &Path, args: &[&str]) -> Output {
    let output = command(home)
        .env("FLOWGATE_URL", url)
        .env("FLOWGATE_DATA_DIR", data_dir)
        .args(args)
        .output()
        .expect("run the flowgate CLI");
    assert!(
        output.status.success(),
        "flowgate {} failed ({}):\nstdout: {}\nstderr: {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn key_of(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("api-key"))
        .expect("serve wrote the API key file")
        .trim()
        .to_string()
}

/// Read the run until `done` holds, or fail after `deadline` with its last state.
async fn wait_for_run(
    client: &FlowgateClient,
    run_id: &str,
    what: &str,
    deadline: Duration,
    done: impl Fn(&RunDetail) -> bool,
) -> RunDetail {
    let until = Instant::now() + deadline;
    loop {
        let last = client.get_run(run_id).await;
        if let Ok(run) = &last
            && done(run)
        {
            return run.clone();
        }
        assert!(
            Instant::now() < until,
            "run {run_id}: {what} did not happen within {deadline:?}; last read: {last:#?}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

fn step<'a>(run: &'a RunDetail, id: &str) -> &'a flowgate_shared::api::StepView {
    run.steps
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("run has no step {id}: {run:#?}"))
}

/// The design step's agent run has started and its id is recorded.
fn design_agent_running(run: &RunDetail) -> bool {
    let design = step(run, "design");
    design.status == StepStatus::Running
        && design
            .agent
            .as_ref()
            .is_some_and(|a| a.upstream_run_id.is_some())
}

/// Store the workflow, start a run with the CLI, return its id.
fn store_and_start(home: &Path, url: &str, data_dir: &Path) -> String {
    let file = home.join("e2e-two-steps.yaml");
    std::fs::write(&file, WORKFLOW).expect("write the workflow file");
    let file = file.to_str().expect("utf-8 path");
    cli(home, url, data_dir, &["workflows", "put", file]);
    let out = cli(
        home,
        url,
        data_dir,
        &["run", "e2e-two-steps", "--input", "topic=a cache", "--json"],
    );
    let started: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("flowgate run --json prints JSON");
    started["run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no run_id in {started}"))
        .to_string()
}

/// The run's final state as `flowgate status --json` prints it.
fn status_json(home: &Path, url: &str, data_dir: &Path, run_id: &str) -> serde_json::Value {
    let out = cli(home, url, data_dir, &["status", run_id, "--json"]);
    serde_json::from_slice(&out.stdout).expect("flowgate status --json prints JSON")
}

fn assert_all_steps_succeeded(status: &serde_json::Value) {
    assert_eq!(status["status"], "succeeded", "{status:#}");
    let steps = status["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "{status:#}");
    for s in steps {
        assert_eq!(s["status"], "succeeded", "{status:#}");
    }
}

/// The agent service outlives the server (as a real one does): after SIGKILL and a restart the
/// same agent run is picked up where it was, with no second start.
#[tokio::test]
async fn a_run_interrupted_mid_agent_step_finishes_after_a_restart() {
    let home = tempfile::tempdir().expect("temp home");
    let data_dir = home.path().join("data");

    let mut sim_cmd = command(home.path());
    sim_cmd.args([
        "simulate-agent",
        "--addr",
        "127.0.0.1:0",
        "--api-key",
        "e2e-agent-key",
        "--run-duration",
        "3s",
    ]);
    let mut simulator = Proc::spawn(sim_cmd);
    let agent_url = simulator.listening_url();
    let agent_flags = [
        "--agent-url",
        agent_url.as_str(),
        "--agent-api-key",
        "e2e-agent-key",
    ];

    let (mut server, url) = serve(home.path(), &data_dir, &agent_flags);
    let key = key_of(&data_dir);

    // Without a key (or with a wrong one) the API answers 401.
    let http = reqwest::Client::new();
    let anonymous = http
        .get(format!("{url}/v1/runs"))
        .send()
        .await
        .expect("GET /v1/runs");
    assert_eq!(anonymous.status(), 401);
    let wrong = http
        .get(format!("{url}/v1/runs"))
        .header("x-api-key", "not-the-key")
        .send()
        .await
        .expect("GET /v1/runs");
    assert_eq!(wrong.status(), 401);

    let run_id = store_and_start(home.path(), &url, &data_dir);
    let client = FlowgateClient::new(&url, Some(key.clone())).expect("client");
    let before = wait_for_run(
        &client,
        &run_id,
        "the design step's agent run starting",
        RUN_DEADLINE,
        design_agent_running,
    )
    .await;
    let upstream = step(&before, "design")
        .agent
        .as_ref()
        .and_then(|a| a.upstream_run_id.clone());

    server.kill();
    let (_server, url) = serve(home.path(), &data_dir, &agent_flags);
    assert_eq!(key_of(&data_dir), key, "the restart reuses the key file");

    let client = FlowgateClient::new(&url, Some(key)).expect("client");
    let after = wait_for_run(
        &client,
        &run_id,
        "the run finishing after the restart",
        RUN_DEADLINE,
        |run| run.summary.status.is_terminal(),
    )
    .await;
    let design = step(&after, "design");
    assert_eq!(
        design.attempt, 1,
        "the interrupted attempt went on: {after:#?}"
    );
    assert_eq!(
        design
            .agent
            .as_ref()
            .and_then(|a| a.upstream_run_id.clone()),
        upstream,
        "the same agent run finished the step: {after:#?}"
    );
    assert_all_steps_succeeded(&status_json(home.path(), &url, &data_dir, &run_id));

    // Exactly one agent run per step: the restart started nothing twice.
    let runs: serde_json::Value = http
        .get(format!(
            "{agent_url}/api/v1/workflows/claude-code/runs?page_size=100"
        ))
        .header("x-api-key", "e2e-agent-key")
        .send()
        .await
        .expect("list the agent runs")
        .json()
        .await
        .expect("agent run list");
    assert_eq!(runs["total_count"], 2, "{runs:#}");
}

/// With no agent URL, serve starts the built-in simulator and says so. Its runs live in memory,
/// so an agent step interrupted by a restart fails (HTTP 404 from the fresh simulator) and its
/// retry policy starts it again: the run still finishes.
#[tokio::test]
async fn the_built_in_simulator_serves_and_a_restart_loses_no_run() {
    let home = tempfile::tempdir().expect("temp home");
    let data_dir = home.path().join("data");
    let (mut server, url) = serve(home.path(), &data_dir, &[]);
    server.wait_for_line("built-in agent simulator at http://", STARTUP_DEADLINE);
    let key_line = server.wait_for_line("API key: generated into", STARTUP_DEADLINE);
    let key = key_of(&data_dir);
    assert!(!key_line.contains(&key), "the key itself is never logged");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(data_dir.join("api-key"))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let run_id = store_and_start(home.path(), &url, &data_dir);
    let client = FlowgateClient::new(&url, Some(key.clone())).expect("client");
    wait_for_run(
        &client,
        &run_id,
        "the design step's agent run starting",
        RUN_DEADLINE,
        design_agent_running,
    )
    .await;

    server.kill();
    let (mut server, url) = serve(home.path(), &data_dir, &[]);
    let line = server.wait_for_line("resumed the runs", STARTUP_DEADLINE);
    assert!(line.contains("agent_polls=1"), "{line}");

    let client = FlowgateClient::new(&url, Some(key)).expect("client");
    wait_for_run(
        &client,
        &run_id,
        "the run finishing after the restart",
        RUN_DEADLINE,
        |run| run.summary.status.is_terminal(),
    )
    .await;
    let status = status_json(home.path(), &url, &data_dir, &run_id);
    assert_all_steps_succeeded(&status);
    let design = status["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == "design"))
        .expect("design step");
    assert_eq!(
        design["attempt"], 2,
        "the lost agent run was retried: {status:#}"
    );

    // SIGTERM stops it gracefully: it drains and exits successfully.
    #[cfg(unix)]
    {
        let term = Command::new("kill")
            .args(["-TERM", &server.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(term.success());
        server.wait_for_line("flowgate_cli::serve: stopped", STARTUP_DEADLINE);
        let exit = server.child.wait().expect("wait for serve to exit");
        assert!(exit.success(), "serve exited with {exit}");
    }
}

#[test]
fn parses_the_listening_line() {
    assert_eq!(
        parse_url("2026-01-01T00:00:00Z  INFO flowgate_cli::serve: flowgate serve listening on http://127.0.0.1:41587 addr=127.0.0.1:41587").as_deref(),
        Some("http://127.0.0.1:41587")
    );
    assert_eq!(parse_url("nothing here"), None);
}
