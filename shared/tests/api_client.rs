//! The Flowgate API client against a real local HTTP server (wiremock): request paths, headers,
//! query strings and bodies, answer decoding, and every kind of error.

use std::time::Duration;

use flowgate_shared::api::client::{
    ClientConfig, ClientError, FlowgateClient, JSON_CONTENT_TYPE, TransportKind, YAML_CONTENT_TYPE,
};
use flowgate_shared::api::{
    CancelRequest, ListRunsParams, MessageKind, MessageRequest, RetryRequest, RollbackRequest,
    StartRunRequest,
};
use flowgate_shared::model::{RunStatus, StepStatus};
use serde_json::{Value, json};
use wiremock::matchers::{body_json, body_string, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "fg-test-key-7c1d";

fn client(server: &MockServer) -> FlowgateClient {
    FlowgateClient::new(&server.uri(), Some(KEY.into())).expect("client builds")
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.expect("recording is on")
}

fn header_of<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

fn links(run: &str) -> Value {
    json!({"self": format!("/v1/runs/{run}"), "events": format!("/v1/runs/{run}/events"),
           "cancel": format!("/v1/runs/{run}/cancel"), "messages": format!("/v1/runs/{run}/messages")})
}

fn run_detail(run: &str) -> Value {
    json!({
        "id": run, "workflow_id": "feature", "workflow_version": 3, "status": "running",
        "created_at": 1_700_000_000_000_i64, "started_at": 1_700_000_000_500_i64, "cost_usd": 0.42,
        "inputs": {"topic": "auth"}, "outputs": {},
        "steps": [
            {"id": "architect", "kind": "agent", "depends_on": [], "status": "succeeded", "attempt": 1,
             "agent": {"workflow": "architect", "turns": 12, "max_turns": 40, "tokens": 1000, "cost_usd": 0.21}},
            {"id": "implement", "kind": "agent", "depends_on": ["architect"], "status": "running", "attempt": 1,
             "agent": {"workflow": "implement", "turns": 3, "max_turns": 40, "tokens": 500, "cost_usd": 0.21}}
        ],
        "open_approvals": [], "updated_at": 1_700_000_001_000_i64, "links": links(run)
    })
}

fn command_answer(run: &str, status: &str) -> Value {
    json!({"run_id": run, "status": status, "links": links(run)})
}

fn workflow_detail(id: &str, version: u64) -> Value {
    json!({"id": id, "version": version, "created_at": 1_700_000_000_000_i64,
           "definition": {"id": id, "steps": []}})
}

fn error_body(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

#[tokio::test]
async fn start_run_sends_the_request_key_and_idempotency_key() {
    let server = MockServer::start().await;
    let expected_body = json!({
        "workflow": "feature", "inputs": {"topic": "auth", "n": 3}, "message": "go",
        "max_turns": 20, "session_name": "s1", "repository_url": "https://github.com/acme/app",
        "git_branch": "main"
    });
    Mock::given(method("POST"))
        .and(path("/v1/runs"))
        .and(header("x-api-key", KEY))
        .and(header("idempotency-key", "idem-1"))
        .and(header("content-type", "application/json"))
        .and(body_json(&expected_body))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({
            "run_id": "r-1", "workflow_id": "feature", "workflow_version": 3,
            "existing": false, "links": links("r-1")
        })))
        .expect(1)
        .mount(&server)
        .await;

    let mut inputs = serde_json::Map::new();
    inputs.insert("topic".into(), json!("auth"));
    inputs.insert("n".into(), json!(3));
    let request = StartRunRequest {
        workflow: "feature".into(),
        inputs,
        message: Some("go".into()),
        max_turns: Some(20),
        session_name: Some("s1".into()),
        continue_session: None,
        repository_url: Some("https://github.com/acme/app".into()),
        git_branch: Some("main".into()),
    };
    let started = client(&server)
        .start_run(&request, Some("idem-1"))
        .await
        .expect("202 decodes");
    assert_eq!(started.run_id, "r-1");
    assert_eq!(started.workflow_version, 3);
    assert!(!started.existing);
    assert_eq!(started.links.self_, "/v1/runs/r-1");
}

#[tokio::test]
async fn without_keys_no_auth_or_idempotency_header_is_sent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/runs"))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({
            "run_id": "r-2", "workflow_id": "architect", "workflow_version": 1,
            "existing": true, "links": links("r-2")
        })))
        .mount(&server)
        .await;
    let client = FlowgateClient::new(&server.uri(), None).expect("client builds");
    let request = StartRunRequest {
        workflow: "architect".into(),
        ..StartRunRequest::default()
    };
    let started = client.start_run(&request, None).await.expect("decodes");
    assert!(started.existing);
    let sent = requests(&server).await;
    assert_eq!(sent.len(), 1);
    assert!(header_of(&sent[0], "x-api-key").is_none());
    assert!(header_of(&sent[0], "idempotency-key").is_none());
    assert_eq!(
        serde_json::from_slice::<Value>(&sent[0].body).expect("json body"),
        json!({"workflow": "architect"})
    );
}

#[tokio::test]
async fn a_bad_idempotency_key_is_refused_before_sending() {
    let server = MockServer::start().await;
    let request = StartRunRequest {
        workflow: "w".into(),
        ..StartRunRequest::default()
    };
    for bad in ["", "  ", "line\nbreak"] {
        let err = client(&server)
            .start_run(&request, Some(bad))
            .await
            .expect_err("refused");
        assert!(matches!(err, ClientError::InvalidRequest(_)), "{err}");
    }
    assert!(requests(&server).await.is_empty());
}

#[tokio::test]
async fn list_runs_encodes_every_filter_in_the_query() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/runs"))
        .and(query_param("workflow", "feature"))
        .and(query_param("status", "running,pending"))
        .and(query_param("from", "1000"))
        .and(query_param("to", "2000"))
        .and(query_param("sort", "cost"))
        .and(query_param("order", "asc"))
        .and(query_param("limit", "5"))
        .and(query_param("cursor", "abc=="))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "runs": [{"id": "r-1", "workflow_id": "feature", "workflow_version": 1,
                      "status": "running", "created_at": 1500, "cost_usd": 0.0}],
            "next_cursor": "def"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let params = ListRunsParams {
        workflow: Some("feature".into()),
        status: Some("running,pending".into()),
        from: Some(1000),
        to: Some(2000),
        sort: Some("cost".into()),
        order: Some("asc".into()),
        limit: Some(5),
        cursor: Some("abc==".into()),
    };
    let list = client(&server).list_runs(&params).await.expect("decodes");
    assert_eq!(list.runs.len(), 1);
    assert_eq!(list.runs[0].status, RunStatus::Running);
    assert_eq!(list.next_cursor.as_deref(), Some("def"));

    // No filters: no query string at all.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/runs"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"runs": []})))
        .mount(&server)
        .await;
    client(&server)
        .list_runs(&ListRunsParams::default())
        .await
        .expect("decodes");
    assert_eq!(requests(&server).await[0].url.query(), None);
}

#[tokio::test]
async fn get_run_and_events_decode_and_encode_the_id() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/runs/r-1"))
        .and(header("x-api-key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(run_detail("r-1")))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/runs/r-1/events"))
        .and(query_param("after", "7"))
        .and(query_param("limit", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "events": [
                {"seq": 8, "at": 1, "actor": "engine", "kind": "step_started", "step_id": "a",
                 "attempt": 1, "message": "step a started"},
                {"seq": 9, "at": 2, "actor": "api:alice", "kind": "feedback", "message": "sent",
                 "data": {"content": "hi"}}
            ],
            "next_after": 9
        })))
        .mount(&server)
        .await;
    let client = client(&server);

    let detail = client.get_run("r-1").await.expect("decodes");
    assert_eq!(detail.summary.id, "r-1");
    assert_eq!(detail.summary.cost_usd, 0.42);
    assert_eq!(detail.steps[1].status, StepStatus::Running);
    assert_eq!(
        detail.steps[1]
            .agent
            .as_ref()
            .map(|a| (a.turns, a.max_turns)),
        Some((3, Some(40)))
    );

    let events = client
        .run_events("r-1", Some(7), Some(2))
        .await
        .expect("decodes");
    assert_eq!(events.events.len(), 2);
    assert_eq!(events.next_after, Some(9));
    assert_eq!(events.events[1].data, json!({"content": "hi"}));

    // An id cannot escape its path segment.
    let err = client.get_run("../workflows").await.expect_err("404");
    assert_eq!(err.status(), Some(404));
    let sent = requests(&server).await;
    assert_eq!(
        sent.last().map(|r| r.url.path()),
        Some("/v1/runs/..%2Fworkflows")
    );

    let err = client.get_run(" ").await.expect_err("refused");
    assert!(matches!(err, ClientError::InvalidRequest(_)), "{err}");
}

#[tokio::test]
async fn run_commands_post_their_bodies() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/runs/r-1/cancel"))
        .and(body_json(json!({"force": true, "reason": "wrong branch"})))
        .respond_with(ResponseTemplate::new(202).set_body_json(command_answer("r-1", "cancelling")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/runs/r-1/messages"))
        .and(body_json(
            json!({"content": "use JWT", "type": "system", "step": "implement"}),
        ))
        .respond_with(ResponseTemplate::new(202).set_body_json(command_answer("r-1", "running")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/runs/r-1/retry"))
        .and(body_json(json!({"from_step": "test"})))
        .respond_with(ResponseTemplate::new(202).set_body_json(command_answer("r-1", "running")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/runs/r-1/rollback"))
        .and(body_json(json!({})))
        .respond_with(
            ResponseTemplate::new(202).set_body_json(command_answer("r-1", "compensating")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);

    let answer = client
        .cancel_run(
            "r-1",
            &CancelRequest {
                force: true,
                reason: Some("wrong branch".into()),
            },
        )
        .await
        .expect("cancel");
    assert_eq!(answer.status, RunStatus::Cancelling);
    client
        .send_message(
            "r-1",
            &MessageRequest {
                content: "use JWT".into(),
                kind: MessageKind::System,
                step: Some("implement".into()),
            },
        )
        .await
        .expect("message");
    client
        .retry_run(
            "r-1",
            &RetryRequest {
                from_step: Some("test".into()),
            },
        )
        .await
        .expect("retry");
    let answer = client
        .rollback_run("r-1", &RollbackRequest::default())
        .await
        .expect("rollback");
    assert_eq!(answer.status, RunStatus::Compensating);
}

#[tokio::test]
async fn workflows_are_sent_as_text_with_the_right_content_type() {
    let server = MockServer::start().await;
    let yaml = "id: feature\nsteps: []\n";
    let json_text = "{\"id\": \"release\", \"steps\": []}";
    Mock::given(method("PUT"))
        .and(path("/v1/workflows/feature"))
        .and(header("content-type", YAML_CONTENT_TYPE))
        .and(body_string(yaml))
        .respond_with(ResponseTemplate::new(201).set_body_json(workflow_detail("feature", 1)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/v1/workflows/release"))
        .and(header("content-type", JSON_CONTENT_TYPE))
        .and(body_string(json_text))
        .respond_with(ResponseTemplate::new(200).set_body_json(workflow_detail("release", 4)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/workflows/validate"))
        .and(query_param("strict", "true"))
        .and(header("content-type", YAML_CONTENT_TYPE))
        .and(body_string(yaml))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "valid": false, "strict": true,
            "problems": [{"path": "steps[0].workflow", "message": "unknown agent workflow \"x\""}]
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/workflows/validate"))
        .and(query_param("strict", "false"))
        .and(header("content-type", JSON_CONTENT_TYPE))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "valid": true, "strict": false, "problems": []
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/workflows/feature"))
        .and(query_param("version", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(workflow_detail("feature", 2)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/workflows"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"workflows": [
                {"id": "feature", "version": 2, "name": "Feature", "steps": 5, "created_at": 1}
            ]})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/v1/workflows/feature"))
        .and(header("x-api-key", KEY))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);

    let put = client.put_workflow("feature", yaml).await.expect("201");
    assert!(put.created);
    assert_eq!(put.workflow.version, 1);
    let put = client
        .put_workflow("release", json_text)
        .await
        .expect("200");
    assert!(!put.created);
    assert_eq!(put.workflow.version, 4);

    let report = client.validate_workflow(yaml, true).await.expect("report");
    assert!(!report.valid);
    assert_eq!(report.problems[0].path, "steps[0].workflow");
    let report = client
        .validate_workflow(json_text, false)
        .await
        .expect("report");
    assert!(report.valid);

    let detail = client.get_workflow("feature", Some(2)).await.expect("get");
    assert_eq!(detail.version, 2);
    let list = client.list_workflows().await.expect("list");
    assert_eq!(list.workflows[0].steps, 5);
    client.delete_workflow("feature").await.expect("204");
}

#[tokio::test]
async fn agent_workflows_sessions_health_and_openapi() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/agent-workflows"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"workflows": [
                {"name": "architect", "description": "Designs", "max_turns": 50}
            ]})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/sessions"))
        .and(query_param("active", "true"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"sessions": [
                {"name": "feat-auth", "active": true, "created_at": 1, "updated_at": 2,
                 "runs": [{"run_id": "r-1", "step_id": "implement", "at": 2}]}
            ]})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/sessions/feat%20auth"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!(
            {"name": "feat auth", "agent_session_id": "u-1", "active": false,
             "created_at": 1, "updated_at": 2, "runs": []}
        )))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/healthz"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"status": "ok", "version": "0.1.0"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/openapi.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"openapi": "3.1.0"})))
        .mount(&server)
        .await;
    let client = client(&server);

    let agents = client.list_agent_workflows().await.expect("agents");
    assert_eq!(agents.workflows[0].max_turns, Some(50));
    let sessions = client.list_sessions(Some(true)).await.expect("sessions");
    assert_eq!(sessions.sessions[0].runs[0].step_id, "implement");
    let session = client.get_session("feat auth").await.expect("session");
    assert_eq!(session.agent_session_id.as_deref(), Some("u-1"));
    assert_eq!(client.health().await.expect("health").status, "ok");
    assert_eq!(client.openapi().await.expect("openapi")["openapi"], "3.1.0");
}

#[tokio::test]
async fn a_path_prefix_in_the_base_url_is_kept() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/prod/v1/sessions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"sessions": []})))
        .expect(1)
        .mount(&server)
        .await;
    let client =
        FlowgateClient::new(&format!("{}/prod", server.uri()), None).expect("client builds");
    client.list_sessions(None).await.expect("list");
    assert_eq!(requests(&server).await[0].url.query(), None);
}

#[tokio::test]
async fn api_errors_are_decoded_from_the_error_body() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/runs/nope"))
        .respond_with(ResponseTemplate::new(404).set_body_json(error_body(
            "run_not_found",
            "there is no run \"nope\"; list runs with GET /v1/runs",
        )))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/v1/workflows/bad"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({"error": {
            "code": "invalid_definition", "message": "the definition has 2 problems",
            "field": "steps[0].depends_on[0]",
            "problems": [
                {"path": "steps[0].depends_on[0]", "message": "unknown step \"x\""},
                {"path": "steps[1].kind", "message": "unknown kind \"agnet\""}
            ]
        }})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/runs"))
        .respond_with(
            ResponseTemplate::new(503)
                .set_body_json(error_body("unavailable", "the store is busy; try again")),
        )
        .mount(&server)
        .await;
    let client = client(&server);

    let err = client.get_run("nope").await.expect_err("404");
    match &err {
        ClientError::Api {
            status,
            code,
            message,
            field,
            problems,
        } => {
            assert_eq!(*status, 404);
            assert_eq!(code, "run_not_found");
            assert!(message.starts_with("there is no run"));
            assert!(field.is_none());
            assert!(problems.is_empty());
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "HTTP 404 run_not_found: there is no run \"nope\"; list runs with GET /v1/runs"
    );
    assert!(!err.is_retryable());
    assert_eq!(err.code(), Some("run_not_found"));

    let err = client
        .put_workflow("bad", "id: bad\n")
        .await
        .expect_err("422");
    let ClientError::Api {
        field, problems, ..
    } = &err
    else {
        panic!("expected an API error, got {err:?}");
    };
    assert_eq!(field.as_deref(), Some("steps[0].depends_on[0]"));
    assert_eq!(problems.len(), 2);
    assert!(err.to_string().contains("(field `steps[0].depends_on[0]`)"));

    let err = client
        .start_run(
            &StartRunRequest {
                workflow: "w".into(),
                ..StartRunRequest::default()
            },
            None,
        )
        .await
        .expect_err("503");
    assert!(err.is_retryable());
    assert_eq!(err.code(), Some("unavailable"));
}

#[tokio::test]
async fn error_bodies_of_other_shapes_fall_back_gracefully() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/runs/html"))
        .respond_with(
            ResponseTemplate::new(502)
                .set_body_raw("<html><body>Bad Gateway</body></html>", "text/html"),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/runs/gateway"))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({"message": "Forbidden"})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/runs/empty"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let client = client(&server);

    let err = client.get_run("html").await.expect_err("502");
    let ClientError::Api {
        status,
        code,
        message,
        ..
    } = &err
    else {
        panic!("expected an API error, got {err:?}");
    };
    assert_eq!((*status, code.as_str()), (502, "bad_gateway"));
    assert!(message.contains("Bad Gateway</body>"), "{message}");
    assert!(message.contains("not a Flowgate API error"), "{message}");
    assert!(err.is_retryable());

    let err = client.get_run("gateway").await.expect_err("403");
    assert_eq!(err.code(), Some("forbidden"));
    assert!(err.to_string().contains("\"Forbidden\""), "{err}");

    let err = client.get_run("empty").await.expect_err("401");
    assert_eq!(err.code(), Some("unauthorized"));
    assert!(err.to_string().contains("empty body"), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_success_with_an_unexpected_body_is_a_decode_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/runs/r-1"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("<html>login</html>", "text/html"))
        .mount(&server)
        .await;
    let err = client(&server).get_run("r-1").await.expect_err("decode");
    let ClientError::Decode {
        request,
        status,
        snippet,
        ..
    } = &err
    else {
        panic!("expected a decode error, got {err:?}");
    };
    assert_eq!(request, "GET /v1/runs/r-1");
    assert_eq!(*status, 200);
    assert_eq!(snippet, "<html>login</html>");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error_that_names_the_server() {
    // Bind then drop a listener: the port is (almost certainly) closed afterwards.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let client = FlowgateClient::new(&url, Some(KEY.into())).expect("client builds");
    let err = client.list_workflows().await.expect_err("nothing listens");
    let ClientError::Transport { kind, .. } = &err else {
        panic!("expected a transport error, got {err:?}");
    };
    assert_eq!(*kind, TransportKind::Connect);
    let text = err.to_string();
    assert!(text.contains(&url), "{text}");
    assert!(text.contains("is `flowgate serve` running"), "{text}");
    assert!(!text.contains(KEY), "{text}");
    assert!(!format!("{err:?}").contains(KEY));
    assert!(err.is_retryable());
    assert!(!err.outcome_unknown());
}

#[tokio::test]
async fn a_slow_answer_is_a_timeout_with_an_unknown_outcome() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/runs/r-1/cancel"))
        .respond_with(
            ResponseTemplate::new(202)
                .set_body_json(command_answer("r-1", "cancelling"))
                .set_delay(Duration::from_secs(2)),
        )
        .mount(&server)
        .await;
    let client = FlowgateClient::with_config(
        &server.uri(),
        None,
        ClientConfig {
            request_timeout: Duration::from_millis(200),
            ..ClientConfig::default()
        },
    )
    .expect("client builds");
    let err = client
        .cancel_run("r-1", &CancelRequest::default())
        .await
        .expect_err("times out");
    let ClientError::Transport { kind, request, .. } = &err else {
        panic!("expected a transport error, got {err:?}");
    };
    assert_eq!(*kind, TransportKind::Timeout);
    assert_eq!(request, "POST /v1/runs/r-1/cancel");
    assert!(err.is_retryable());
    assert!(err.outcome_unknown());
    assert!(err.to_string().contains("200ms"), "{err}");
}
