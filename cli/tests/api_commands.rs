//! The API commands against a mock API (wiremock): what they send, what they print, and how
//! they end (outcome, error message, exit code) — through `execute` and through the binary.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Output;
use std::sync::Mutex;
use std::time::Duration;

use clap::Parser;
use flowgate_cli::commands::{
    ApiKey, ApiOptions, CliError, Context, KeySource, Outcome, execute, report_error,
};
use flowgate_cli::{Cli, Command};
use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const KEY: &str = "cli-test-key";
/// The clock the commands see: one minute after every fixture run started.
const NOW: i64 = 1_700_000_060_000;

/// Answers the queued responses in order, then repeats the last one.
struct Sequence(Mutex<VecDeque<ResponseTemplate>>);

impl Sequence {
    fn new(responses: Vec<ResponseTemplate>) -> Self {
        Sequence(Mutex::new(responses.into()))
    }
}

impl Respond for Sequence {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let mut queue = self.0.lock().expect("not poisoned");
        if queue.len() > 1 {
            queue.pop_front().expect("non-empty")
        } else {
            queue.front().cloned().expect("at least one response")
        }
    }
}

fn links(run: &str) -> Value {
    json!({"self": format!("/v1/runs/{run}"), "events": format!("/v1/runs/{run}/events"),
           "cancel": format!("/v1/runs/{run}/cancel"), "messages": format!("/v1/runs/{run}/messages")})
}

fn agent_step(id: &str, status: &str, turns: u32) -> Value {
    json!({"id": id, "kind": "agent", "depends_on": [], "status": status, "attempt": 1,
           "started_at": 1_700_000_000_000_i64,
           "agent": {"workflow": id, "turns": turns, "max_turns": 40, "tokens": 100,
                     "cost_usd": 0.01 * f64::from(turns)}})
}

fn pending_step(id: &str) -> Value {
    json!({"id": id, "kind": "agent", "depends_on": [], "status": "pending", "attempt": 0,
           "agent": {"workflow": id, "turns": 0, "max_turns": 40, "tokens": 0, "cost_usd": 0.0}})
}

fn run_detail(status: &str, steps: Vec<Value>, error: Option<&str>) -> Value {
    let mut run = json!({
        "id": "r-1", "workflow_id": "feature", "workflow_version": 3, "status": status,
        "created_at": 1_700_000_000_000_i64, "started_at": 1_700_000_000_000_i64, "cost_usd": 0.25,
        "inputs": {"topic": "auth"}, "outputs": {}, "steps": steps, "open_approvals": [],
        "updated_at": 1_700_000_001_000_i64, "links": links("r-1")
    });
    if let Some(error) = error {
        run["error"] = json!(error);
    }
    if status == "succeeded" || status == "failed" {
        run["completed_at"] = json!(1_700_000_050_000_i64);
        run["duration_ms"] = json!(50_000);
    }
    run
}

fn started() -> ResponseTemplate {
    ResponseTemplate::new(202).set_body_json(json!({
        "run_id": "r-1", "workflow_id": "feature", "workflow_version": 3, "existing": false,
        "links": links("r-1")
    }))
}

fn ok(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

fn options(server: &MockServer, json: bool) -> ApiOptions {
    ApiOptions {
        url: server.uri(),
        api_key: Some(KEY.into()),
        json,
    }
}

fn given_key() -> ApiKey {
    ApiKey {
        value: Some(KEY.into()),
        source: KeySource::Given,
    }
}

/// A command line after `flowgate`, parsed as the binary would.
fn api_command(args: &[&str]) -> flowgate_cli::commands::ApiCommand {
    let cli = Cli::try_parse_from(std::iter::once("flowgate").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    match cli.command {
        Command::Api(command) => command,
        other => panic!("{args:?} is not an API command: {other:?}"),
    }
}

/// What a command printed and how it ended.
struct Ran {
    out: String,
    err: String,
    result: Result<Outcome, CliError>,
}

async fn run_cli(server: &MockServer, json: bool, tty: bool, args: &[&str]) -> Ran {
    run_with_key(&options(server, json), &given_key(), tty, args).await
}

async fn run_with_key(options: &ApiOptions, key: &ApiKey, tty: bool, args: &[&str]) -> Ran {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let now = || NOW;
    let result = {
        let mut ctx = Context {
            out: &mut out,
            err: &mut err,
            tty,
            now: &now,
            poll_interval: Duration::from_millis(5),
        };
        execute(options, key, api_command(args), &mut ctx).await
    };
    Ran {
        out: String::from_utf8(out).expect("utf8"),
        err: String::from_utf8(err).expect("utf8"),
        result,
    }
}

fn reported(error: &CliError, key: &ApiKey) -> String {
    let mut err = Vec::new();
    report_error(error, Some(key), &mut err).expect("writes");
    String::from_utf8(err).expect("utf8")
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.expect("recording is on")
}

#[tokio::test]
async fn run_sends_the_request_and_prints_the_run_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/runs"))
        .and(header("x-api-key", KEY))
        .and(header("idempotency-key", "k-1"))
        .and(body_json(json!({
            "workflow": "feature", "inputs": {"topic": "auth", "n": 3}, "max_turns": 9
        })))
        .respond_with(started())
        .expect(2)
        .mount(&server)
        .await;
    let args = [
        "run",
        "feature",
        "-i",
        "topic=auth",
        "-i",
        "n=3",
        "--max-turns",
        "9",
        "--idempotency-key",
        "k-1",
    ];

    let ran = run_cli(&server, false, false, &args).await;
    assert!(matches!(ran.result, Ok(Outcome::Success)));
    assert_eq!(
        ran.out,
        "started run r-1 (workflow feature v3)\nfollow it with `flowgate status r-1`\n"
    );

    let ran = run_cli(&server, true, false, &args).await;
    let printed: Value = serde_json::from_str(&ran.out).expect("--json prints JSON");
    assert_eq!(printed["run_id"], "r-1");
    assert_eq!(printed["links"]["self"], "/v1/runs/r-1");
}

#[tokio::test]
async fn run_wait_prints_a_line_per_change_and_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/runs"))
        .respond_with(started())
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/runs/r-1"))
        .respond_with(Sequence::new(vec![
            ok(run_detail(
                "pending",
                vec![pending_step("plan"), pending_step("build")],
                None,
            )),
            ok(run_detail(
                "running",
                vec![agent_step("plan", "running", 2), pending_step("build")],
                None,
            )),
            ok(run_detail(
                "running",
                vec![agent_step("plan", "running", 2), pending_step("build")],
                None,
            )),
            // A blip: tolerated, reported, and the wait goes on.
            ResponseTemplate::new(503)
                .set_body_json(json!({"error": {"code": "unavailable", "message": "store busy"}})),
            ok(run_detail(
                "running",
                vec![agent_step("plan", "running", 5), pending_step("build")],
                None,
            )),
            ok(run_detail(
                "succeeded",
                vec![
                    agent_step("plan", "succeeded", 6),
                    agent_step("build", "succeeded", 1),
                ],
                None,
            )),
        ]))
        .mount(&server)
        .await;

    let ran = run_cli(&server, false, false, &["run", "feature", "--wait"]).await;
    assert!(
        matches!(ran.result, Ok(Outcome::Success)),
        "{:?}",
        ran.result
    );
    assert_eq!(
        ran.out,
        "started run r-1 (workflow feature v3)\n\
         run r-1 · feature v3 · pending · 1m 00s · $0.25\n\
         run r-1: running\n\
         ▶ plan: running (turns 2/40, $0.02)\n\
         ▶ plan: running (turns 5/40, $0.05)\n\
         ✓ plan: succeeded (turns 6/40, $0.06, 1m 00s)\n\
         ✓ build: succeeded (turns 1/40, $0.01, 1m 00s)\n\
         run r-1 succeeded in 50s · $0.25\n"
    );
    assert!(
        ran.err
            .contains("HTTP 503 unavailable: store busy (still waiting"),
        "{}",
        ran.err
    );
}

#[tokio::test]
async fn run_wait_on_a_terminal_redraws_in_place() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/runs"))
        .respond_with(started())
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/runs/r-1"))
        .respond_with(Sequence::new(vec![
            ok(run_detail(
                "running",
                vec![agent_step("plan", "running", 1)],
                None,
            )),
            ok(run_detail(
                "succeeded",
                vec![agent_step("plan", "succeeded", 4)],
                None,
            )),
        ]))
        .mount(&server)
        .await;

    let ran = run_cli(&server, false, true, &["run", "feature", "--wait"]).await;
    assert!(matches!(ran.result, Ok(Outcome::Success)));
    // Two frames of two lines each; the second starts by moving back over the first.
    assert_eq!(ran.out.matches("\x1b[2F\x1b[J").count(), 1, "{:?}", ran.out);
    assert!(ran.out.contains("▶  plan  agent  running  turns 1/40"));
    assert!(ran.out.contains("✓  plan  agent  succeeded  turns 4/40"));
    assert!(ran.out.ends_with("run r-1 succeeded in 50s · $0.25\n"));
}

#[tokio::test]
async fn run_wait_fails_when_the_run_does_not_succeed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/runs"))
        .respond_with(started())
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/runs/r-1"))
        .respond_with(ok(run_detail(
            "failed",
            vec![agent_step("plan", "failed", 3)],
            Some("step plan failed: agent run failed"),
        )))
        .mount(&server)
        .await;

    let ran = run_cli(&server, true, false, &["run", "feature", "--wait"]).await;
    let printed: Value = serde_json::from_str(&ran.out).expect("--json prints the final run");
    assert_eq!(printed["status"], "failed");
    let err = ran.result.expect_err("not succeeded");
    assert_eq!(err.exit_code(), 1);
    assert_eq!(
        err.to_string(),
        "run r-1 failed: step plan failed: agent run failed; see `flowgate status r-1` and \
         `flowgate events r-1`, resume it with `flowgate retry r-1`"
    );
}

#[tokio::test]
async fn run_wait_gives_up_after_the_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/runs"))
        .respond_with(started())
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/runs/r-1"))
        .respond_with(ok(run_detail(
            "running",
            vec![agent_step("plan", "running", 1)],
            None,
        )))
        .mount(&server)
        .await;

    let ran = run_cli(
        &server,
        false,
        false,
        &["run", "feature", "--wait", "--timeout", "100ms"],
    )
    .await;
    let err = ran.result.expect_err("timed out");
    assert_eq!(err.exit_code(), 1);
    let text = err.to_string();
    assert!(
        text.starts_with("run r-1 is still running after waiting 100ms"),
        "{text}"
    );
    assert!(text.contains("flowgate cancel r-1"), "{text}");
}

#[tokio::test]
async fn api_errors_name_the_message_and_code() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/runs/nope"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": {
            "code": "run_not_found",
            "message": "there is no run \"nope\"; list runs with GET /v1/runs"
        }})))
        .mount(&server)
        .await;
    let ran = run_cli(&server, false, false, &["status", "nope"]).await;
    let err = ran.result.expect_err("404");
    assert_eq!(err.exit_code(), 1);
    assert_eq!(
        reported(&err, &given_key()),
        "flowgate: HTTP 404 run_not_found: there is no run \"nope\"; list runs with GET /v1/runs\n"
    );
}

#[tokio::test]
async fn a_401_says_where_the_key_came_from() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/workflows"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {
            "code": "unauthorized", "message": "missing API key; send x-api-key"
        }})))
        .mount(&server)
        .await;
    let key = ApiKey {
        value: None,
        source: KeySource::Missing {
            looked_at: Some("/data/api-key".into()),
        },
    };
    let options = ApiOptions {
        url: server.uri(),
        api_key: None,
        json: false,
    };
    let ran = run_with_key(&options, &key, false, &["workflows", "list"]).await;
    let err = ran.result.expect_err("401");
    let text = reported(&err, &key);
    assert!(text.starts_with("flowgate: HTTP 401 unauthorized: missing API key"));
    assert!(
        text.contains("hint: no API key was sent") && text.contains("/data/api-key"),
        "{text}"
    );
    assert!(
        requests(&server).await[0]
            .headers
            .get("x-api-key")
            .is_none()
    );
}

#[tokio::test]
async fn status_prints_the_run_and_its_steps() {
    let server = MockServer::start().await;
    let mut detail = run_detail(
        "running",
        vec![
            agent_step("plan", "succeeded", 12),
            agent_step("build", "running", 3),
        ],
        None,
    );
    detail["steps"][0]["duration_ms"] = json!(62_000);
    detail["session_name"] = json!("feat-auth");
    detail["open_approvals"] = json!([{
        "id": "a-1", "run_id": "r-1", "step": "review", "status": "pending",
        "kind": "step", "message": "Ship it?", "approvers": ["alice", "bob"], "required": 1,
        "requested_at": 1, "decisions": []
    }]);
    Mock::given(method("GET"))
        .and(path("/v1/runs/r-1"))
        .respond_with(ok(detail.clone()))
        .mount(&server)
        .await;

    let ran = run_cli(&server, false, false, &["status", "r-1"]).await;
    assert!(matches!(ran.result, Ok(Outcome::Success)));
    assert_eq!(
        ran.out,
        "run r-1 · feature v3 · running · 1m 00s · $0.25\n\
         \x20 created  2023-11-14T22:13:20Z\n\
         \x20 started  2023-11-14T22:13:20Z\n\
         \x20 session  feat-auth\n\
         \x20 inputs   {\"topic\":\"auth\"}\n\
         \n\
         \x20  STEP   KIND   STATUS     PROGRESS     COST   TIME    ERROR\n\
         ✓  plan   agent  succeeded  turns 12/40  $0.12  1m 02s\n\
         ▶  build  agent  running    turns 3/40   $0.03  1m 00s\n\
         \n\
         waiting for approval:\n\
         \x20 a-1 (step review): \"Ship it?\", needs 1 of alice, bob\n"
    );

    // --json prints the API's answer, field for field.
    let ran = run_cli(&server, true, false, &["status", "r-1"]).await;
    let printed: Value = serde_json::from_str(&ran.out).expect("json");
    assert_eq!(printed, detail);
}

#[tokio::test]
async fn runs_passes_the_filters_and_shows_the_next_cursor() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/runs"))
        .and(query_param("workflow", "feature"))
        .and(query_param("status", "failed,timed_out"))
        .and(query_param("limit", "2"))
        .and(query_param("sort", "cost"))
        .and(query_param("order", "asc"))
        .respond_with(ok(json!({"runs": [
            {"id": "r-1", "workflow_id": "feature", "workflow_version": 3, "status": "failed",
             "created_at": 1_700_000_000_000_i64, "duration_ms": 5000, "cost_usd": 1.5,
             "error": "step test failed"}
        ], "next_cursor": "c2"})))
        .expect(1)
        .mount(&server)
        .await;
    let ran = run_cli(
        &server,
        false,
        false,
        &[
            "runs",
            "--workflow",
            "feature",
            "--status",
            "failed,timed_out",
            "--limit",
            "2",
            "--sort",
            "cost",
            "--order",
            "asc",
        ],
    )
    .await;
    assert!(matches!(ran.result, Ok(Outcome::Success)));
    assert_eq!(
        ran.out,
        "ID   WORKFLOW    STATUS  CREATED               DURATION  COST   ERROR\n\
         r-1  feature v3  failed  2023-11-14T22:13:20Z  5s        $1.50  step test failed\n\
         more: add --cursor c2 (with the same filters)\n"
    );
}

#[tokio::test]
async fn events_reads_every_page() {
    let server = MockServer::start().await;
    let event = |seq: u64| {
        json!({"seq": seq, "at": 1_700_000_000_000_i64, "actor": "engine",
               "kind": "step_started", "step_id": "plan", "attempt": 1,
               "message": format!("event {seq}")})
    };
    Mock::given(method("GET"))
        .and(path("/v1/runs/r-1/events"))
        .and(query_param("after", "2"))
        .respond_with(ok(json!({"events": [event(3)]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/runs/r-1/events"))
        .respond_with(ok(json!({"events": [event(1), event(2)], "next_after": 2})))
        .mount(&server)
        .await;
    let ran = run_cli(&server, true, false, &["events", "r-1"]).await;
    let printed: Value = serde_json::from_str(&ran.out).expect("json");
    let seqs: Vec<u64> = printed["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert!(printed.get("next_after").is_none());

    let ran = run_cli(&server, false, false, &["events", "r-1", "--limit", "2"]).await;
    assert!(
        ran.out
            .contains("1    2023-11-14T22:13:20Z  engine  step_started  plan#1  event 1")
    );
    assert!(ran.out.ends_with("more: add --after 2\n"), "{}", ran.out);
}

#[tokio::test]
async fn run_commands_send_their_bodies() {
    let server = MockServer::start().await;
    let answer =
        |status: &str| ok(json!({"run_id": "r-1", "status": status, "links": links("r-1")}));
    Mock::given(method("POST"))
        .and(path("/v1/runs/r-1/cancel"))
        .and(body_json(json!({"force": true, "reason": "oops"})))
        .respond_with(answer("cancelling"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/runs/r-1/messages"))
        .and(body_json(
            json!({"content": "use JWT", "type": "system", "step": "build"}),
        ))
        .respond_with(answer("running"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/runs/r-1/retry"))
        .and(body_json(json!({"from_step": "build"})))
        .respond_with(answer("running"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/runs/r-1/rollback"))
        .and(body_json(json!({"reason": "bad deploy"})))
        .respond_with(answer("compensating"))
        .expect(1)
        .mount(&server)
        .await;

    let ran = run_cli(
        &server,
        false,
        false,
        &["cancel", "r-1", "--force", "--reason", "oops"],
    )
    .await;
    assert_eq!(
        ran.out,
        "cancel requested: run r-1 is cancelling (follow it with `flowgate status r-1`)\n"
    );
    let ran = run_cli(
        &server,
        false,
        false,
        &[
            "send", "r-1", "use JWT", "--type", "system", "--step", "build",
        ],
    )
    .await;
    assert!(ran.out.starts_with("message sent: run r-1 is running"));
    let ran = run_cli(
        &server,
        false,
        false,
        &["retry", "r-1", "--from-step", "build"],
    )
    .await;
    assert!(ran.out.starts_with("retry started"));
    let ran = run_cli(
        &server,
        true,
        false,
        &["rollback", "r-1", "--reason", "bad deploy"],
    )
    .await;
    let printed: Value = serde_json::from_str(&ran.out).expect("json");
    assert_eq!(printed["status"], "compensating");
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let file = dir.join(name);
    std::fs::write(&file, text).expect("write");
    file.display().to_string()
}

#[tokio::test]
async fn workflows_put_checks_locally_then_stores_under_the_file_id() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let good_text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/nightly-tests.yaml"),
    )
    .expect("example");
    let id = flowgate_shared::definition::parse_definition(&good_text)
        .expect("example is valid")
        .id;
    let good = write(dir.path(), "good.yaml", &good_text);
    let bad = write(
        dir.path(),
        "bad.yaml",
        "id: x\nsteps:\n  - id: a\n    kind: agent\n    workflow: w\n    message: m\n    depends_on: [nope]\n",
    );
    Mock::given(method("PUT"))
        .and(path(format!("/v1/workflows/{id}")))
        .and(header("content-type", "application/yaml"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": id, "version": 1, "created_at": 1, "definition": {"id": id}
        })))
        .expect(1)
        .mount(&server)
        .await;

    let ran = run_cli(&server, false, false, &["workflows", "put", &bad]).await;
    let err = ran.result.expect_err("invalid");
    assert_eq!(err.exit_code(), 1);
    assert!(ran.err.contains("1 problem(s)"), "{}", ran.err);
    assert!(
        ran.err.contains("  steps[0].depends_on[0]: "),
        "{}",
        ran.err
    );
    assert!(err.to_string().contains("nothing was sent"));
    assert!(requests(&server).await.is_empty(), "nothing was sent");

    let ran = run_cli(&server, false, false, &["workflows", "put", &good]).await;
    assert!(
        matches!(ran.result, Ok(Outcome::Success)),
        "{:?}",
        ran.result
    );
    assert_eq!(
        ran.out,
        format!("stored workflow {id} version 1 (a new workflow)\n")
    );
}

#[tokio::test]
async fn workflows_validate_get_list_delete() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(dir.path(), "w.json", "{\"id\": \"w\", \"steps\": []}");
    Mock::given(method("POST"))
        .and(path("/v1/workflows/validate"))
        .and(query_param("strict", "true"))
        .and(header("content-type", "application/json"))
        .respond_with(ok(json!({"valid": false, "strict": true, "problems": [
            {"path": "steps", "message": "a workflow needs at least one step"}
        ]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/workflows/w"))
        .and(query_param("version", "2"))
        .respond_with(ok(json!({"id": "w", "version": 2, "created_at": 1_700_000_000_000_i64,
                                "definition": {"id": "w", "steps": [{"id": "a", "kind": "wait", "duration": "1s"}]}})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/workflows"))
        .respond_with(ok(json!({"workflows": [
            {"id": "w", "version": 2, "name": "Wait a bit", "steps": 1, "created_at": 1_700_000_000_000_i64}
        ]})))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/v1/workflows/w"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;

    let ran = run_cli(
        &server,
        false,
        false,
        &["workflows", "validate", &file, "--strict"],
    )
    .await;
    assert!(matches!(ran.result, Ok(Outcome::Failure)));
    assert_eq!(
        ran.out,
        format!("{file}: 1 problem(s)\n  steps: a workflow needs at least one step\n")
    );

    let ran = run_cli(
        &server,
        false,
        false,
        &["workflows", "get", "w", "--version", "2"],
    )
    .await;
    assert!(
        ran.out
            .starts_with("# workflow w, version 2, stored 2023-11-14T22:13:20Z\n"),
        "{}",
        ran.out
    );
    let yaml: Value = serde_norway::from_str(ran.out.split_once('\n').map_or("", |(_, rest)| rest))
        .expect("the rest is YAML");
    assert_eq!(yaml["steps"][0]["duration"], "1s");

    let ran = run_cli(&server, false, false, &["workflows", "list"]).await;
    assert_eq!(
        ran.out,
        "ID  VERSION  STEPS  CREATED               NAME\n\
         w   2        1      2023-11-14T22:13:20Z  Wait a bit\n"
    );

    let ran = run_cli(&server, false, false, &["workflows", "delete", "w"]).await;
    assert_eq!(ran.out, "deleted workflow w\n");
}

#[tokio::test]
async fn sessions_and_agent_workflows() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/sessions"))
        .and(query_param("active", "true"))
        .respond_with(ok(json!({"sessions": [
            {"name": "feat-auth", "active": true, "created_at": 1, "updated_at": 1_700_000_000_000_i64,
             "runs": [{"run_id": "r-1", "step_id": "plan", "at": 1}, {"run_id": "r-2", "step_id": "build", "at": 2}]}
        ]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/agent-workflows"))
        .respond_with(ok(json!({"workflows": [
            {"name": "architect", "description": "Designs the change", "max_turns": 50}
        ]})))
        .mount(&server)
        .await;

    let ran = run_cli(&server, false, false, &["sessions", "--active"]).await;
    assert_eq!(
        ran.out,
        "NAME       ACTIVE  RUNS  UPDATED               LAST RUN\n\
         feat-auth  yes     2     2023-11-14T22:13:20Z  r-2\n"
    );
    let ran = run_cli(&server, false, false, &["agent-workflows"]).await;
    assert_eq!(
        ran.out,
        "NAME       MAX TURNS  DESCRIPTION\narchitect  50         Designs the change\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Through the binary: exit codes and stderr
// ---------------------------------------------------------------------------------------------

/// Runs the `flowgate` binary with a clean environment (no key, no URL from the caller's
/// shell) and an empty data dir.
async fn flowgate(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flowgate"));
    command
        .args(args)
        .env_remove("FLOWGATE_API_KEY")
        .env_remove("FLOWGATE_URL")
        .env("FLOWGATE_DATA_DIR", dir.path());
    output_of(command).await
}

/// Waits for the process off the async runtime, which keeps serving the mock.
async fn output_of(mut command: std::process::Command) -> Output {
    tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("joins")
        .expect("the binary runs")
}

#[tokio::test]
async fn the_binary_exits_0_1_or_2() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/runs/r-1"))
        .respond_with(ok(run_detail(
            "succeeded",
            vec![agent_step("plan", "succeeded", 2)],
            None,
        )))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/runs/nope"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": {
            "code": "run_not_found", "message": "there is no run \"nope\""
        }})))
        .mount(&server)
        .await;
    let url = server.uri();

    let output = flowgate(&["status", "r-1", "--url", &url]).await;
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("run r-1 · feature v3"));

    let output = flowgate(&["--url", &url, "status", "nope"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "flowgate: HTTP 404 run_not_found: there is no run \"nope\"\n"
    );

    let output = flowgate(&["status"]).await;
    assert_eq!(output.status.code(), Some(2), "missing argument");
    let output = flowgate(&["runs", "--status", "finished"]).await;
    assert_eq!(output.status.code(), Some(2), "bad status");

    // Nothing listening: exit 1 and a message that says what to check.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let output = flowgate(&["runs", "--url", &format!("http://127.0.0.1:{port}")]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is `flowgate serve` running"), "{stderr}");

    let output = flowgate(&["--help"]).await;
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("Exit codes:"));
}

#[tokio::test]
async fn the_binary_sends_the_key_from_the_serve_key_file() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/agent-workflows"))
        .and(header("x-api-key", "from-the-file"))
        .respond_with(ok(json!({"workflows": []})))
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("api-key"), "from-the-file\n").expect("write key");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flowgate"));
    command
        .args(["agent-workflows", "--json", "--url", &server.uri()])
        .env_remove("FLOWGATE_API_KEY")
        .env("FLOWGATE_DATA_DIR", dir.path());
    let output = output_of(command).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(printed, json!({"workflows": []}));
}
