//! `flowgate approvals`, `decide` and `webhooks` against a mock API (wiremock): what they send,
//! what they print, and how they end — through `execute` and through the binary.
#![allow(clippy::unwrap_used)]

use std::process::Output;
use std::time::Duration;

use clap::Parser;
use flowgate_cli::approvals::{ApprovalCommand, execute};
use flowgate_cli::commands::{
    ApiKey, ApiOptions, CliError, Context, KeySource, Outcome, report_error,
};
use flowgate_cli::{Cli, Command};
use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "cli-approvals-key";
const SECRET: &str = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0";

fn ok(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

fn refused(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"error": {"code": code, "message": message}}))
}

fn approval(id: &str, step: &str, status: &str) -> Value {
    json!({
        "id": id, "run_id": "r-1", "step": step, "kind": "step", "status": status,
        "message": "Ship it?", "approvers": ["alice", "bob"], "required": 1,
        "requested_at": 1_700_000_000_000_i64, "expires_at": 1_700_086_400_000_i64,
        "decisions": []
    })
}

fn subscription(id: &str) -> Value {
    json!({"id": id, "url": "https://hooks.example.com/fg",
           "events": ["run.completed", "step.failed"], "workflow": "feature",
           "description": "team channel", "enabled": true, "created_at": 1_700_000_000_000_i64})
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
fn approval_command(args: &[&str]) -> ApprovalCommand {
    let cli = Cli::try_parse_from(std::iter::once("flowgate").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    match cli.command {
        Command::Approvals(command) => command,
        other => panic!("{args:?} is not an approval command: {other:?}"),
    }
}

/// What a command printed and how it ended.
struct Ran {
    out: String,
    result: Result<Outcome, CliError>,
}

async fn run_cli(server: &MockServer, json: bool, args: &[&str]) -> Ran {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let now = || 1_700_000_060_000;
    let result = {
        let mut ctx = Context {
            out: &mut out,
            err: &mut err,
            tty: false,
            now: &now,
            poll_interval: Duration::from_millis(5),
        };
        execute(
            &options(server, json),
            &given_key(),
            approval_command(args),
            &mut ctx,
        )
        .await
    };
    Ran {
        out: String::from_utf8(out).expect("utf8"),
        result,
    }
}

fn reported(error: &CliError) -> String {
    let mut err = Vec::new();
    report_error(error, Some(&given_key()), &mut err).expect("writes");
    String::from_utf8(err).expect("utf8")
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.expect("recording is on")
}

#[tokio::test]
async fn approvals_lists_a_table_and_passes_the_filters() {
    let server = MockServer::start().await;
    let mut budget = approval("r-1.$budget.1", "", "pending");
    budget["kind"] = json!("budget");
    budget["approvers"] = json!([]);
    budget.as_object_mut().expect("object").remove("expires_at");
    let mut pair = approval("r-1.review.1", "review", "pending");
    pair["required"] = json!(2);
    Mock::given(method("GET"))
        .and(path("/v1/approvals"))
        .and(header("x-api-key", KEY))
        .and(query_param("status", "all"))
        .and(query_param("workflow", "feature"))
        .and(query_param("limit", "5"))
        .respond_with(ok(json!({"approvals": [pair, budget]})))
        .expect(2)
        .mount(&server)
        .await;
    let args = [
        "approvals",
        "--status",
        "all",
        "--workflow",
        "feature",
        "--limit",
        "5",
    ];

    let ran = run_cli(&server, false, &args).await;
    assert!(matches!(ran.result, Ok(Outcome::Success)));
    assert_eq!(
        ran.out,
        "\
ID             RUN  STEP    KIND    STATUS   APPROVERS        REQUESTED             EXPIRES
r-1.review.1   r-1  review  step    pending  2 of alice, bob  2023-11-14T22:13:20Z  2023-11-15T22:13:20Z
r-1.$budget.1  r-1  (run)   budget  pending  anyone           2023-11-14T22:13:20Z
decide with `flowgate decide <id> approve|reject|retry|skip|cancel [--comment TEXT]`
"
    );

    let ran = run_cli(&server, true, &args).await;
    let printed: Value = serde_json::from_str(&ran.out).expect("--json prints JSON");
    assert_eq!(printed["approvals"][0]["id"], "r-1.review.1");
    assert_eq!(printed["approvals"][1]["kind"], "budget");
}

#[tokio::test]
async fn approvals_without_filters_asks_for_the_api_defaults() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/approvals"))
        .respond_with(ok(json!({"approvals": []})))
        .mount(&server)
        .await;
    let ran = run_cli(&server, false, &["approvals"]).await;
    assert!(matches!(ran.result, Ok(Outcome::Success)));
    assert_eq!(ran.out, "no pending approvals\n");
    assert_eq!(requests(&server).await[0].url.query(), None);

    let ran = run_cli(&server, false, &["approvals", "--status", "expired"]).await;
    assert_eq!(ran.out, "no expired approvals\n");
}

#[tokio::test]
async fn decide_sends_the_decision_and_prints_what_happened() {
    let server = MockServer::start().await;
    let mut rejected = approval("r-1.review.1", "review", "rejected");
    rejected["decisions"] = json!([{"by": "alice", "decision": "reject",
                                    "comment": "tests are missing", "at": 1_700_000_030_000_i64}]);
    Mock::given(method("POST"))
        .and(path("/v1/approvals/r-1.review.1/decision"))
        .and(header("x-api-key", KEY))
        .and(body_json(
            json!({"decision": "reject", "comment": "tests are missing"}),
        ))
        .respond_with(ok(
            json!({"approval": rejected, "run_status": "failed", "by": "alice"}),
        ))
        .expect(2)
        .mount(&server)
        .await;
    let args = [
        "decide",
        "r-1.review.1",
        "reject",
        "--comment",
        "tests are missing",
    ];

    let ran = run_cli(&server, false, &args).await;
    assert!(matches!(ran.result, Ok(Outcome::Success)));
    assert_eq!(
        ran.out,
        "reject recorded by alice: approval r-1.review.1 is rejected, run r-1 is failed \
         (follow it with `flowgate status r-1`)\n"
    );

    let ran = run_cli(&server, true, &args).await;
    let printed: Value = serde_json::from_str(&ran.out).expect("--json prints JSON");
    assert_eq!(printed["by"], "alice");
    assert_eq!(printed["approval"]["status"], "rejected");
}

#[tokio::test]
async fn an_approval_that_needs_more_approvers_says_so() {
    let server = MockServer::start().await;
    let mut pending = approval("r-1.review.1", "review", "pending");
    pending["required"] = json!(2);
    pending["decisions"] =
        json!([{"by": "bob", "decision": "approve", "at": 1_700_000_030_000_i64}]);
    Mock::given(method("POST"))
        .and(path("/v1/approvals/r-1.review.1/decision"))
        .and(body_json(json!({"decision": "approve"})))
        .respond_with(ok(
            json!({"approval": pending, "run_status": "running", "by": "bob"}),
        ))
        .mount(&server)
        .await;
    let ran = run_cli(&server, false, &["decide", "r-1.review.1", "approve"]).await;
    assert!(matches!(ran.result, Ok(Outcome::Success)));
    assert_eq!(
        ran.out,
        "approve recorded by bob: approval r-1.review.1 is pending (waiting for 1 more \
         approval(s)), run r-1 is running (follow it with `flowgate status r-1`)\n"
    );
}

#[tokio::test]
async fn refusals_exit_1_with_the_api_message() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/approvals/r-1.review.1/decision"))
        .respond_with(refused(
            403,
            "self_approval",
            "mallory started run r-1 and cannot approve it",
        ))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/approvals/r-1.review.1/decision"))
        .respond_with(refused(
            409,
            "approval_closed",
            "approval r-1.review.1 is already approved",
        ))
        .mount(&server)
        .await;

    let ran = run_cli(&server, false, &["decide", "r-1.review.1", "approve"]).await;
    let err = ran.result.expect_err("403");
    assert_eq!(err.exit_code(), 1);
    assert_eq!(
        reported(&err),
        "flowgate: HTTP 403 self_approval: mallory started run r-1 and cannot approve it\n"
    );
    assert!(ran.out.is_empty());

    let ran = run_cli(&server, false, &["decide", "r-1.review.1", "skip"]).await;
    let err = ran.result.expect_err("409");
    assert_eq!(err.exit_code(), 1);
    assert_eq!(
        reported(&err),
        "flowgate: HTTP 409 approval_closed: approval r-1.review.1 is already approved\n"
    );
}

#[tokio::test]
async fn retry_without_feedback_is_refused_before_sending() {
    let server = MockServer::start().await;
    for args in [
        &["decide", "r-1.review.1", "retry"][..],
        &["decide", "r-1.review.1", "retry", "--comment", "   "],
    ] {
        let ran = run_cli(&server, false, args).await;
        let err = ran.result.expect_err("no feedback");
        assert_eq!(err.exit_code(), 2, "{args:?}");
        assert!(err.to_string().contains("--comment"), "{err}");
    }
    assert!(requests(&server).await.is_empty(), "nothing was sent");
}

#[tokio::test]
async fn webhooks_create_prints_the_secret_once() {
    let server = MockServer::start().await;
    let mut created = subscription("wh_1");
    created["secret"] = json!(SECRET);
    Mock::given(method("POST"))
        .and(path("/v1/webhooks"))
        .and(header("x-api-key", KEY))
        .and(body_json(json!({
            "url": "https://hooks.example.com/fg", "events": ["run.completed", "step.failed"],
            "workflow": "feature", "description": "team channel"
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(&created))
        .expect(3)
        .mount(&server)
        .await;
    let args = [
        "webhooks",
        "create",
        "https://hooks.example.com/fg",
        "--events",
        "run.completed, step.failed,",
        "--workflow",
        "feature",
        "--description",
        "team channel",
    ];

    let ran = run_cli(&server, false, &args).await;
    assert!(matches!(ran.result, Ok(Outcome::Success)));
    let lines: Vec<&str> = ran.out.lines().collect();
    assert_eq!(
        lines[0],
        "created webhook wh_1 -> https://hooks.example.com/fg (events: run.completed, step.failed)"
    );
    assert_eq!(lines[1], format!("secret: {SECRET}"));
    assert!(
        lines[2].starts_with("store the secret now: it is shown only this once"),
        "{}",
        ran.out
    );

    // --endpoint is the same as the positional address.
    let mut flag_args = args.to_vec();
    flag_args.insert(2, "--endpoint");
    let ran = run_cli(&server, false, &flag_args).await;
    assert!(matches!(ran.result, Ok(Outcome::Success)));

    let ran = run_cli(&server, true, &args).await;
    let printed: Value = serde_json::from_str(&ran.out).expect("--json prints JSON");
    assert_eq!(printed["secret"], SECRET);
    assert_eq!(printed["id"], "wh_1");
}

#[tokio::test]
async fn webhooks_create_sends_a_given_secret_and_refuses_no_events() {
    let server = MockServer::start().await;
    let mut created = subscription("wh_2");
    created["secret"] = json!(SECRET);
    Mock::given(method("POST"))
        .and(path("/v1/webhooks"))
        .and(body_json(json!({
            "url": "https://hooks.example.com/fg", "events": ["*"], "secret": SECRET
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(&created))
        .expect(1)
        .mount(&server)
        .await;
    let ran = run_cli(
        &server,
        false,
        &[
            "webhooks",
            "create",
            "https://hooks.example.com/fg",
            "--events",
            "*",
            "--secret",
            SECRET,
        ],
    )
    .await;
    assert!(matches!(ran.result, Ok(Outcome::Success)));

    let ran = run_cli(
        &server,
        false,
        &[
            "webhooks",
            "create",
            "https://hooks.example.com/fg",
            "--events",
            " , ",
        ],
    )
    .await;
    let err = ran.result.expect_err("no events");
    assert_eq!(err.exit_code(), 2);
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn webhooks_list_get_delete() {
    let server = MockServer::start().await;
    let mut disabled = subscription("wh_2");
    disabled["enabled"] = json!(false);
    disabled["disabled_reason"] = json!("the receiver answered 410 Gone");
    disabled.as_object_mut().expect("object").remove("workflow");
    disabled
        .as_object_mut()
        .expect("object")
        .remove("description");
    Mock::given(method("GET"))
        .and(path("/v1/webhooks"))
        .respond_with(ok(
            json!({"webhooks": [subscription("wh_1"), disabled.clone()]}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/webhooks/wh_2"))
        .respond_with(ok(disabled))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/v1/webhooks/wh_1"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;

    let ran = run_cli(&server, false, &["webhooks", "list"]).await;
    assert_eq!(
        ran.out,
        "\
ID    ENDPOINT                      EVENTS                     WORKFLOW  ENABLED  CREATED               DESCRIPTION
wh_1  https://hooks.example.com/fg  run.completed,step.failed  feature   yes      2023-11-14T22:13:20Z  team channel
wh_2  https://hooks.example.com/fg  run.completed,step.failed  (all)     no       2023-11-14T22:13:20Z
"
    );

    let ran = run_cli(&server, false, &["webhooks", "get", "wh_2"]).await;
    assert_eq!(
        ran.out,
        "\
webhook wh_2 (disabled)
  endpoint  https://hooks.example.com/fg
  events    run.completed, step.failed
  workflow  (all)
  created   2023-11-14T22:13:20Z
  disabled  the receiver answered 410 Gone
see its deliveries with `flowgate webhooks deliveries wh_2`
"
    );

    let ran = run_cli(&server, false, &["webhooks", "delete", "wh_1"]).await;
    assert!(matches!(ran.result, Ok(Outcome::Success)));
    assert_eq!(ran.out, "deleted webhook wh_1\n");
}

#[tokio::test]
async fn webhooks_deliveries_is_a_table() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/webhooks/wh_1/deliveries"))
        .and(query_param("limit", "3"))
        .respond_with(ok(json!({"deliveries": [
            {"message_id": "msg_2", "event": "step.failed", "attempt": 2,
             "at": 1_700_000_100_000_i64, "error": "connection refused", "duration_ms": 12,
             "result": "retrying", "next_retry_at": 1_700_000_400_000_i64},
            {"message_id": "msg_1", "event": "run.completed", "attempt": 1,
             "at": 1_700_000_000_000_i64, "status": 200, "duration_ms": 1_850,
             "result": "delivered"}
        ]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/webhooks/wh_9/deliveries"))
        .respond_with(refused(
            404,
            "webhook_not_found",
            "there is no webhook subscription \"wh_9\"; list them with GET /v1/webhooks",
        ))
        .mount(&server)
        .await;

    let ran = run_cli(
        &server,
        false,
        &["webhooks", "deliveries", "wh_1", "--limit", "3"],
    )
    .await;
    assert!(matches!(ran.result, Ok(Outcome::Success)));
    assert_eq!(
        ran.out,
        "\
AT                    EVENT          MESSAGE  ATTEMPT  RESULT     HTTP  TOOK  NEXT RETRY            ERROR
2023-11-14T22:15:00Z  step.failed    msg_2    2        retrying   -     12ms  2023-11-14T22:20:00Z  connection refused
2023-11-14T22:13:20Z  run.completed  msg_1    1        delivered  200   1s    -
"
    );

    let ran = run_cli(&server, false, &["webhooks", "deliveries", "wh_9"]).await;
    let err = ran.result.expect_err("404");
    assert_eq!(err.exit_code(), 1);
    assert!(reported(&err).contains("list them with GET /v1/webhooks"));
}

// ---------------------------------------------------------------------------------------------
// Through the binary: exit codes and streams
// ---------------------------------------------------------------------------------------------

/// Runs the `flowgate` binary with a clean environment (no key, URL or webhook secret from the
/// caller's shell) and an empty data dir, off the async runtime that serves the mock.
async fn flowgate(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flowgate"));
    command
        .args(args)
        .env_remove("FLOWGATE_API_KEY")
        .env_remove("FLOWGATE_URL")
        .env_remove("FLOWGATE_WEBHOOK_SECRET")
        .env("FLOWGATE_DATA_DIR", dir.path());
    tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("joins")
        .expect("the binary runs")
}

#[tokio::test]
async fn the_binary_exits_0_1_or_2() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/approvals/r-1.review.1/decision"))
        .and(header("x-api-key", KEY))
        .and(body_json(
            json!({"decision": "retry", "comment": "add tests"}),
        ))
        .respond_with(ok(json!({
            "approval": approval("r-1.review.1", "review", "retried"),
            "run_status": "running", "by": "ci"
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/approvals/r-1.other.1/decision"))
        .respond_with(refused(
            403,
            "not_an_approver",
            "ci is not an approver of r-1.other.1",
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/approvals"))
        .respond_with(ok(json!({"approvals": []})))
        .mount(&server)
        .await;
    let url = server.uri();

    let output = flowgate(&[
        "decide",
        "r-1.review.1",
        "retry",
        "--comment",
        "add tests",
        "--url",
        &url,
        "--api-key",
        KEY,
    ])
    .await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .starts_with("retry recorded by ci: approval r-1.review.1 is retried")
    );

    let output = flowgate(&["--url", &url, "decide", "r-1.other.1", "approve"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "flowgate: HTTP 403 not_an_approver: ci is not an approver of r-1.other.1\n"
    );

    let before = requests(&server).await.len();
    let output = flowgate(&["--url", &url, "decide", "r-1.review.1", "retry"]).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("flowgate: retry needs feedback for the agent: add --comment"),
        "{stderr}"
    );
    assert_eq!(requests(&server).await.len(), before, "nothing was sent");

    for usage in [
        &["decide", "r-1.review.1", "maybe"][..],
        &["decide", "r-1.review.1"],
        &["approvals", "--status", "open"],
        &["approvals", "--limit", "0"],
        &["webhooks", "create", "https://h.example.com"],
        &["webhooks", "create", "--events", "run.completed"],
        &["webhooks"],
    ] {
        let mut args = usage.to_vec();
        args.extend(["--url", &url]);
        let output = flowgate(&args).await;
        assert_eq!(output.status.code(), Some(2), "{usage:?}");
    }

    let output = flowgate(&["approvals", "--json", "--url", &url]).await;
    assert_eq!(output.status.code(), Some(0));
    let printed: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(printed, json!({"approvals": []}));
}
