//! The agent client against wiremock: retries, error rendering, request shapes and paging.

use std::time::Duration;

use flowgate_shared::agent::{
    AgentCall, AgentClient, AgentClientConfig, AgentError, MessageType, RetryPolicy, RunListQuery,
};
use flowgate_shared::engine::AgentStartSpec;
use flowgate_shared::model::AgentRunStatus;
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "test-key-5f1c";
const BASE: &str = "/api/v1/workflows/claude-code";
const RUN: &str = "3ad13f8d-05c1-47f4-94d6-44ac5f6e01be";

fn config(max_attempts: u32) -> AgentClientConfig {
    AgentClientConfig {
        retry: RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(20),
        },
        request_timeout: Duration::from_secs(5),
        ..AgentClientConfig::default()
    }
}

fn client(server: &MockServer, max_attempts: u32) -> AgentClient {
    AgentClient::new(&server.uri(), KEY, config(max_attempts)).expect("client builds")
}

fn api(rest: &str) -> String {
    format!("{BASE}{rest}")
}

fn spec() -> AgentStartSpec {
    AgentStartSpec {
        workflow: "builder".into(),
        message: "Implement user authentication system with JWT tokens".into(),
        max_turns: Some(50),
        session_name: "flowgate-run1-implement-1".into(),
        session_id: None,
        repository_url: Some("https://github.com/acme/app".into()),
        git_branch: Some("feature/jwt-auth".into()),
        timeout_secs: Some(3600),
    }
}

fn started() -> Value {
    json!({
        "run_id": RUN, "status": "pending",
        "message": "Started builder workflow. Use the status endpoint to track progress.",
        "session_id": "550e8400-e29b-41d4-a716-446655440000", "workflow_name": "builder",
        "started_at": "2025-07-14T21:30:05.123456", "auto_commit_sha": null
    })
}

/// E2 of the reference page: a running run (turns 0, tokens growing).
fn running_status() -> Value {
    json!({
        "run_id": RUN, "status": "running", "workflow_name": "builder",
        "started_at": "2025-07-14T21:30:05.130000", "completed_at": null, "execution_time_seconds": null,
        "progress": {"turns": 0, "max_turns": 50, "current_phase": "running", "phases_completed": [], "is_running": true},
        "metrics": {"cost_usd": 0.0, "tokens": {"total": 18342, "input": 0, "output": 0, "cache_created": 0, "cache_read": 0, "cache_efficiency": 0.0},
                    "tools_used": [], "api_duration_ms": 0, "performance_score": 60.0},
        "result": {"success": false, "completion_type": "running", "message": "Workflow running", "final_output": null,
                   "files_created": [], "git_commits": [], "files_changed": []},
        "debug": {"workflow_run_id": "row-1", "metadata": {"current_turns": 7, "max_turns": 50,
                  "claude_session_id": "9b2f7c1e-0d4a-4a55-9a51-2f0c1d3e4b5a"}}
    })
}

fn run_item(run_id: &str, session_name: &str, started_at: &str) -> Value {
    json!({
        "run_id": run_id, "status": "failed", "workflow_name": "builder",
        "started_at": started_at, "completed_at": started_at, "execution_time": 0.0,
        "total_tokens": 0, "total_cost": null, "turns": null, "tool_calls": null,
        "result": "Processing: x", "input_tokens": 0, "output_tokens": 0, "ai_model": "sonnet",
        "session_name": session_name, "git_repo": null, "git_branch": null, "git_diff_summary": "No changes",
        "tools_used": [], "workspace_path": null, "workspace_persistent": true, "workspace_cleaned_up": false,
        "error_message": format!("failure of {run_id}"), "final_commit_hash": null, "execution_time_seconds": 0.0
    })
}

fn page(runs: Vec<Value>, page: u32, total: u64) -> Value {
    json!({"runs": runs, "total_count": total, "page": page, "page_size": 100,
           "has_next": u64::from(page) * 100 < total})
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.expect("recording is on")
}

#[tokio::test]
async fn a_5xx_is_retried_until_the_answer_comes() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api(&format!("/run/{RUN}/status"))))
        .respond_with(
            ResponseTemplate::new(503).set_body_json(json!({"detail": "Failed to get status: db"})),
        )
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api(&format!("/run/{RUN}/status"))))
        .respond_with(ResponseTemplate::new(200).set_body_json(running_status()))
        .expect(1)
        .mount(&server)
        .await;

    let status = client(&server, 4)
        .status(RUN, true)
        .await
        .expect("third try answers");
    assert_eq!(status.run_status(), Some(AgentRunStatus::Running));
    assert_eq!(requests(&server).await.len(), 3);
}

#[tokio::test]
async fn persistent_5xx_gives_up_after_max_attempts_and_stays_retryable() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/runs")))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_json(json!({"detail": "Failed to list runs: boom"})),
        )
        .mount(&server)
        .await;

    let err = client(&server, 3)
        .list_runs(&RunListQuery::default())
        .await
        .expect_err("always 500");
    assert_eq!(err.status(), Some(500));
    assert!(err.is_retryable());
    assert!(
        matches!(err, AgentError::Http { attempts: 3, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("list_runs") && text.contains("Failed to list runs: boom"),
        "{text}"
    );
    assert!(text.contains("retry later"), "{text}");
    assert_eq!(requests(&server).await.len(), 3);
}

#[tokio::test]
async fn a_429_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/health")))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "0")
                .set_body_json(json!({"detail": "Too Many Requests"})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api("/health")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": "healthy", "timestamp": "2025-07-14T21:30:05", "agent_available": true,
            "workflows": {"builder": true}, "container_manager": false, "feature_enabled": true,
            "claude_cli_path": "/usr/local/bin/claude"
        })))
        .mount(&server)
        .await;

    let health = client(&server, 3)
        .health()
        .await
        .expect("second try answers");
    assert!(health.is_healthy());
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn a_401_is_not_retried_and_says_to_check_the_key() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api(&format!("/run/{RUN}/status"))))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"detail": "Invalid API Key"})),
        )
        .mount(&server)
        .await;

    let err = client(&server, 4)
        .status(RUN, false)
        .await
        .expect_err("401");
    assert!(matches!(err, AgentError::Unauthorized { .. }), "{err:?}");
    assert_eq!(err.status(), Some(401));
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(text.contains("Invalid API Key"), "{text}");
    assert!(text.contains("check the agent API key"), "{text}");
    assert!(
        !text.contains(KEY),
        "the key must never be in an error: {text}"
    );
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn a_404_carries_the_service_detail_and_is_not_retried() {
    let server = MockServer::start().await;
    let missing = "00000000-0000-0000-0000-000000000000";
    Mock::given(method("GET"))
        .and(path(api(&format!("/run/{missing}/status"))))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"detail": format!("Run {missing} not found")})),
        )
        .mount(&server)
        .await;

    let err = client(&server, 4)
        .status(missing, false)
        .await
        .expect_err("404");
    assert!(err.is_not_found());
    assert!(!err.is_retryable());
    assert_eq!(err.call(), Some(AgentCall::Status));
    let text = err.to_string();
    assert!(text.contains(&format!("Run {missing} not found")), "{text}");
    assert!(text.contains("HTTP 404"), "{text}");
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn a_422_list_detail_is_rendered_readably() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("/run/builder")))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({"detail": [
            {"type": "less_than_equal", "loc": ["body", "max_turns"],
             "msg": "Input should be less than or equal to 200", "input": 500, "ctx": {"le": 200}}
        ]})))
        .mount(&server)
        .await;

    let err = client(&server, 4)
        .start_run(&AgentStartSpec {
            max_turns: Some(500),
            ..spec()
        })
        .await
        .expect_err("422");
    assert_eq!(err.status(), Some(422));
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(
        text.contains("body.max_turns: Input should be less than or equal to 200"),
        "{text}"
    );
    assert!(text.contains("will not help"), "{text}");
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn a_slow_answer_is_a_retryable_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api(&format!("/run/{RUN}/status"))))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(running_status())
                .set_delay(Duration::from_millis(800)),
        )
        .mount(&server)
        .await;
    let client = AgentClient::new(
        &server.uri(),
        KEY,
        AgentClientConfig {
            request_timeout: Duration::from_millis(100),
            ..config(2)
        },
    )
    .expect("client builds");

    let err = client.status(RUN, true).await.expect_err("times out");
    assert!(
        matches!(err, AgentError::Timeout { attempts: 2, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(err.outcome_unknown());
    assert!(err.to_string().contains("no answer within"), "{err}");
}

#[tokio::test]
async fn a_timed_out_start_is_not_resent_and_says_to_look_the_run_up() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("/run/builder")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(started())
                .set_delay(Duration::from_millis(800)),
        )
        .mount(&server)
        .await;
    let client = AgentClient::new(
        &server.uri(),
        KEY,
        AgentClientConfig {
            request_timeout: Duration::from_millis(100),
            ..config(4)
        },
    )
    .expect("client builds");

    let err = client.start_run(&spec()).await.expect_err("times out");
    assert!(
        matches!(err, AgentError::Timeout { attempts: 1, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable() && err.outcome_unknown());
    assert!(
        err.to_string().contains("look it up by session name"),
        "{err}"
    );
    // Give a resent POST time to arrive, were there one.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let posts = requests(&server).await;
    assert_eq!(
        posts.len(),
        1,
        "a start must never be resent after a timeout"
    );
}

#[tokio::test]
async fn a_start_answered_with_5xx_is_not_resent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("/run/builder")))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_json(json!({"detail": "Failed to start workflow: db gone"})),
        )
        .mount(&server)
        .await;

    let err = client(&server, 4)
        .start_run(&spec())
        .await
        .expect_err("500");
    assert_eq!(err.status(), Some(500));
    assert!(err.is_retryable() && err.outcome_unknown());
    let text = err.to_string();
    assert!(text.contains("Failed to start workflow: db gone"), "{text}");
    assert!(text.contains("look it up by session name"), "{text}");
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn a_start_that_could_not_connect_is_retried_because_it_was_never_sent() {
    // A port that was free a moment ago: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let client = AgentClient::new(&format!("http://{addr}"), KEY, config(3)).expect("client");

    let err = client
        .start_run(&spec())
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(err, AgentError::Connect { attempts: 3, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(!err.outcome_unknown());
    assert!(err.to_string().contains("was not sent"), "{err}");
}

#[tokio::test]
async fn malformed_json_is_reported_with_a_snippet() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api(&format!("/run/{RUN}/status"))))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw("<html>502 Bad Gateway</html>", "text/html"),
        )
        .mount(&server)
        .await;

    let err = client(&server, 4)
        .status(RUN, false)
        .await
        .expect_err("not JSON");
    match &err {
        AgentError::MalformedResponse {
            status, snippet, ..
        } => {
            assert_eq!(*status, 200);
            assert!(snippet.contains("502 Bad Gateway"), "{snippet}");
        }
        other => panic!("expected MalformedResponse, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn unknown_fields_and_nulls_are_tolerated_and_mapped() {
    let server = MockServer::start().await;
    let mut body = running_status();
    body["brand_new_field"] = json!({"nested": [1, 2]});
    body["progress"]["eta"] = json!("soon");
    body["metrics"]["cost_usd"] = Value::Null;
    body["metrics"]["tokens"]["reasoning"] = json!(12);
    Mock::given(method("GET"))
        .and(path(api(&format!("/run/{RUN}/status"))))
        .and(query_param("debug", "true"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&server)
        .await;

    let status = client(&server, 1)
        .status(RUN, true)
        .await
        .expect("tolerated");
    let obs = status.observation();
    assert_eq!(obs.status, Some(AgentRunStatus::Running));
    // progress.turns is 0 while running; the live count is debug.metadata.current_turns.
    assert_eq!(status.progress.turns, 0);
    assert_eq!(obs.turns, 7);
    assert_eq!(obs.max_turns, Some(50));
    assert_eq!(obs.tokens, 18342);
    assert_eq!(obs.cost_usd, 0.0);
    assert_eq!(obs.phase.as_deref(), Some("running"));
    assert_eq!(
        obs.session_id.as_deref(),
        Some("9b2f7c1e-0d4a-4a55-9a51-2f0c1d3e4b5a")
    );
    assert_eq!(obs.error, None);
}

#[tokio::test]
async fn the_start_body_is_fixed_up_for_the_service() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("/run/builder")))
        .and(header("x-api-key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(started()))
        .mount(&server)
        .await;
    let client = client(&server, 1);
    let uuid = "550e8400-e29b-41d4-a716-446655440000";

    let cases = [
        (Some(20_000), Some("not-a-uuid"), 7200, None),
        (Some(10), Some(uuid), 60, Some(uuid)),
        (None, None, 7200, None),
        (Some(3600), Some("  "), 3600, None),
    ];
    for (timeout, session_id, _, _) in &cases {
        let response = client
            .start_run(&AgentStartSpec {
                timeout_secs: *timeout,
                session_id: session_id.map(str::to_string),
                ..spec()
            })
            .await
            .expect("started");
        assert_eq!(response.run_id, RUN);
    }

    let received = requests(&server).await;
    assert_eq!(received.len(), cases.len());
    for (request, (_, _, want_timeout, want_session)) in received.iter().zip(&cases) {
        let body: Value = serde_json::from_slice(&request.body).expect("JSON body");
        assert_eq!(body["input_format"], "stream-json", "{body}");
        assert_eq!(body["timeout"], *want_timeout, "{body}");
        assert_eq!(body["session_name"], "flowgate-run1-implement-1");
        assert_eq!(body["max_turns"], 50);
        assert_eq!(body["repository_url"], "https://github.com/acme/app");
        assert_eq!(body["git_branch"], "feature/jwt-auth");
        match want_session {
            Some(id) => assert_eq!(body["session_id"], *id),
            None => assert!(body.get("session_id").is_none(), "{body}"),
        }
        // The key travels in the header only.
        assert!(
            request.url.query().is_none_or(|q| !q.contains(KEY)),
            "{}",
            request.url
        );
    }
}

#[tokio::test]
async fn a_200_with_status_failed_is_a_failed_start() {
    let server = MockServer::start().await;
    let message =
        format!("Failed to start builder workflow: 409: Task for run_id {RUN} is already running");
    let mut body = started();
    body["status"] = json!("failed");
    body["message"] = json!(message);
    Mock::given(method("POST"))
        .and(path(api("/run/builder")))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&server)
        .await;

    let err = client(&server, 4)
        .start_run(&spec())
        .await
        .expect_err("failed start");
    match &err {
        AgentError::StartFailed {
            workflow,
            run_id,
            message: got,
        } => {
            assert_eq!(workflow, "builder");
            assert_eq!(run_id.as_deref(), Some(RUN));
            assert_eq!(got, &message);
        }
        other => panic!("expected StartFailed, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("already running"), "{err}");
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn find_run_by_session_name_pages_until_found() {
    let server = MockServer::start().await;
    let page1: Vec<Value> = (0..100)
        .map(|i| {
            run_item(
                &format!("run-a{i}"),
                &format!("other-{i}"),
                "2025-07-14T21:40:00",
            )
        })
        .collect();
    let page2 = vec![
        run_item("run-b0", "other-b0", "2025-07-14T21:35:00"),
        run_item(
            "run-target",
            "flowgate-run1-implement-1",
            "2025-07-14T21:30:05.123456",
        ),
    ];
    for (n, runs) in [(1u32, page1), (2, page2)] {
        Mock::given(method("GET"))
            .and(path(api("/runs")))
            .and(query_param("page", n.to_string()))
            .and(query_param("page_size", "100"))
            .and(query_param("workflow_name", "builder"))
            .and(query_param("sort_by", "started_at"))
            .and(query_param("sort_order", "desc"))
            .respond_with(ResponseTemplate::new(200).set_body_json(page(runs, n, 350)))
            .expect(1)
            .mount(&server)
            .await;
    }

    let found = client(&server, 1)
        .find_run_by_session_name("builder", "flowgate-run1-implement-1", None)
        .await
        .expect("search works")
        .expect("found on page 2");
    assert_eq!(found.run_id, "run-target");
    assert_eq!(
        found.error_message.as_deref(),
        Some("failure of run-target")
    );
    // Page 3 exists (has_next) but is never read once the run is found.
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn find_run_by_session_name_stops_at_older_runs_and_at_the_last_page() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/runs")))
        .and(query_param("page", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![
                run_item("new", "other", "2025-07-14T21:40:00"),
                run_item("old", "older", "2025-07-14T20:00:00"),
            ],
            1,
            500,
        )))
        .mount(&server)
        .await;
    let client = client(&server, 1);
    // The attempt started at 21:30 UTC; with the default 5 min skew, a 20:00 run is older.
    let attempt_started = 1_752_528_600_000;

    let found = client
        .find_run_by_session_name(
            "builder",
            "flowgate-run1-implement-1",
            Some(attempt_started),
        )
        .await
        .expect("search works");
    assert_eq!(found, None);
    assert_eq!(
        requests(&server).await.len(),
        1,
        "stops at runs older than the attempt"
    );

    let empty = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/runs")))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(vec![], 1, 0)))
        .mount(&empty)
        .await;
    let found = self::client(&empty, 1)
        .find_run_by_session_name("builder", "x", None)
        .await
        .expect("search works");
    assert_eq!(found, None);
    assert_eq!(requests(&empty).await.len(), 1);
}

#[tokio::test]
async fn failure_reason_comes_from_the_run_list() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/runs")))
        .and(query_param("workflow_name", "builder"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![
                run_item("run-x", "s1", "2025-07-14T21:40:00"),
                run_item(RUN, "s2", "2025-07-14T21:30:05"),
            ],
            1,
            2,
        )))
        .mount(&server)
        .await;

    let reason = client(&server, 1)
        .failure_reason("builder", RUN)
        .await
        .expect("list read");
    assert_eq!(reason, Some(format!("failure of {RUN}")));
}

#[tokio::test]
async fn list_runs_refuses_what_the_service_would_400() {
    let server = MockServer::start().await;
    let client = client(&server, 1);
    for query in [
        RunListQuery {
            status: Some(AgentRunStatus::Killed),
            ..RunListQuery::default()
        },
        RunListQuery {
            page_size: 101,
            ..RunListQuery::default()
        },
        RunListQuery {
            page: 0,
            ..RunListQuery::default()
        },
    ] {
        let err = client.list_runs(&query).await.expect_err("refused");
        assert!(matches!(err, AgentError::InvalidRequest { .. }), "{err:?}");
        assert!(!err.is_retryable());
    }
    let err = client
        .list_runs(&RunListQuery {
            status: Some(AgentRunStatus::Killed),
            ..RunListQuery::default()
        })
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("killed"), "{err}");
    assert!(requests(&server).await.is_empty(), "nothing is sent");
}

#[tokio::test]
async fn kill_if_active_kills_only_pending_or_running_runs() {
    let server = MockServer::start().await;
    let done = "11111111-1111-4111-8111-111111111111";
    let mut completed = running_status();
    completed["run_id"] = json!(done);
    completed["status"] = json!("completed");
    Mock::given(method("GET"))
        .and(path(api(&format!("/run/{done}/status"))))
        .respond_with(ResponseTemplate::new(200).set_body_json(completed))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api(&format!("/run/{RUN}/status"))))
        .respond_with(ResponseTemplate::new(200).set_body_json(running_status()))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(api(&format!("/run/{RUN}/kill"))))
        .and(query_param("force", "true"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "success": true, "run_id": RUN, "workflow_name": "builder",
            "killed_at": "2025-07-14T21:31:10.402113", "kill_method": "force", "kill_duration_ms": 118,
            "cleanup_status": {"session_updated": true, "audit_logged": true, "process_terminated": true},
            "message": "Workflow builder (force killed) in 0.12s"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server, 1);

    let untouched = client.kill_if_active(done, true).await.expect("read");
    assert_eq!(untouched.last_status, Some(AgentRunStatus::Completed));
    assert!(untouched.kill.is_none());

    let killed = client.kill_if_active(RUN, true).await.expect("killed");
    assert_eq!(killed.last_status, Some(AgentRunStatus::Running));
    let kill = killed.kill.expect("a kill was sent");
    assert!(kill.success);
    assert_eq!(kill.kill_method.as_deref(), Some("force"));

    let kills = requests(&server)
        .await
        .into_iter()
        .filter(|r| r.url.path().ends_with("/kill"))
        .count();
    assert_eq!(kills, 1, "the completed run is never killed");
}

#[tokio::test]
async fn add_message_sends_the_two_fields_and_is_not_resent_after_a_5xx() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api(&format!("/run/{RUN}/add-message"))))
        .and(body_partial_json(
            json!({"message_type": "system", "content": "Add error handling"}),
        ))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({"detail": "busy"})))
        .mount(&server)
        .await;

    let err = client(&server, 4)
        .add_message(RUN, MessageType::System, "Add error handling")
        .await
        .expect_err("503");
    assert_eq!(err.status(), Some(503));
    assert!(err.outcome_unknown());
    assert!(err.to_string().contains("check the message queue"), "{err}");
    let received = requests(&server).await;
    assert_eq!(
        received.len(),
        1,
        "a message is never queued twice by a retry"
    );
    let body: Value = serde_json::from_slice(&received[0].body).expect("JSON");
    assert_eq!(
        body,
        json!({"message_type": "system", "content": "Add error handling"})
    );
}

#[tokio::test]
async fn health_is_judged_by_the_body_and_workflows_come_from_manage() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/health")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": "error", "timestamp": "2025-07-14T21:30:05", "agent_available": false,
            "workflows": {}, "feature_enabled": true, "error": "claude CLI not found"
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api("/manage")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            {"name": "builder", "description": "Builds", "path": "p", "valid": true, "icon": null,
             "mainColour": "#fff", "displayName": "Builder", "category": "system", "capabilities": [],
             "emoji": "x", "maxTurns": 200, "suggestedTurns": 50, "future": true}
        ])))
        .mount(&server)
        .await;
    let client = client(&server, 1);

    let health = client.health().await.expect("HTTP 200");
    assert!(!health.is_healthy());
    assert_eq!(health.error.as_deref(), Some("claude CLI not found"));

    let workflows = client.list_workflows().await.expect("listed");
    assert_eq!(workflows.len(), 1);
    assert_eq!(workflows[0].name, "builder");
    assert_eq!(workflows[0].display_name.as_deref(), Some("Builder"));
    assert_eq!(workflows[0].suggested_turns, Some(50));
    assert!(
        requests(&server)
            .await
            .iter()
            .all(|r| !r.url.path().ends_with("/workflows"))
    );
}

#[tokio::test]
async fn the_key_is_redacted_and_the_base_url_checked() {
    let client = AgentClient::new("http://127.0.0.1:28881/", KEY, AgentClientConfig::default())
        .expect("client builds");
    let debug = format!("{client:?}");
    assert!(!debug.contains(KEY), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");

    for bad in ["not a url", "ftp://host", "http://host/?x-api-key=k"] {
        let err = AgentClient::new(bad, KEY, AgentClientConfig::default()).expect_err(bad);
        assert!(matches!(err, AgentError::Config(_)), "{bad}: {err:?}");
    }
    let err =
        AgentClient::new("http://host", " ", AgentClientConfig::default()).expect_err("empty");
    assert!(err.to_string().contains("key is empty"), "{err}");
}

#[tokio::test]
async fn a_base_url_with_a_path_prefix_is_kept() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/agents{BASE}/manage")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .expect(1)
        .mount(&server)
        .await;
    let client = AgentClient::new(&format!("{}/agents", server.uri()), KEY, config(1))
        .expect("client builds");
    assert!(client.list_workflows().await.expect("listed").is_empty());
}
