//! The agent client against the in-process simulator, end to end over real HTTP.
#![cfg(feature = "simulator")]

use std::time::Duration;

use flowgate_shared::agent::simulator::{
    FLOWGATE_WORKFLOWS, SYSTEM_WORKFLOWS, Simulator, SimulatorConfig, SimulatorHandle,
};
use flowgate_shared::agent::{
    AgentClient, AgentClientConfig, AgentError, MessageType, RetryPolicy, RunListQuery,
    StatusResponse,
};
use flowgate_shared::engine::AgentStartSpec;
use flowgate_shared::model::AgentRunStatus;
use serde_json::{Value, json};

const BASE: &str = "/api/v1/workflows/claude-code";

fn sim_config() -> SimulatorConfig {
    SimulatorConfig {
        pending_for: Duration::from_millis(20),
        run_duration: Duration::from_millis(400),
        tick: Duration::from_millis(10),
        ..SimulatorConfig::default()
    }
}

async fn start_sim(config: SimulatorConfig) -> SimulatorHandle {
    Simulator::start(config).await.expect("simulator starts")
}

fn client_config() -> AgentClientConfig {
    AgentClientConfig {
        retry: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(20),
        },
        request_timeout: Duration::from_secs(5),
        ..AgentClientConfig::default()
    }
}

fn client(sim: &SimulatorHandle) -> AgentClient {
    AgentClient::new(&sim.base_url, &sim.api_key, client_config()).expect("client builds")
}

fn spec(workflow: &str, message: &str, session_name: &str) -> AgentStartSpec {
    AgentStartSpec {
        workflow: workflow.into(),
        message: message.into(),
        max_turns: Some(50),
        session_name: session_name.into(),
        session_id: None,
        repository_url: None,
        git_branch: None,
        timeout_secs: Some(1800),
    }
}

/// A raw HTTP client for what the typed client deliberately cannot send.
fn raw() -> reqwest::Client {
    reqwest::Client::new()
}

fn url(sim: &SimulatorHandle, rest: &str) -> String {
    format!("{}{BASE}{rest}", sim.base_url)
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.expect("JSON body");
    (status, body)
}

/// Polls the status (bounded) until `done` says so; returns every status seen.
async fn poll_until(
    client: &AgentClient,
    run_id: &str,
    done: impl Fn(&StatusResponse) -> bool,
) -> Vec<StatusResponse> {
    let mut seen = Vec::new();
    for _ in 0..600 {
        let status = client.status(run_id, true).await.expect("status");
        let finished = done(&status);
        seen.push(status);
        if finished {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "run {run_id} never reached the expected state; last: {:?}",
        seen.last()
    );
}

fn is(status: AgentRunStatus) -> impl Fn(&StatusResponse) -> bool {
    move |s| s.run_status() == Some(status)
}

#[tokio::test]
async fn a_run_goes_pending_running_completed_with_the_real_services_quirks() {
    let sim = start_sim(SimulatorConfig {
        pending_for: Duration::from_millis(250),
        ..sim_config()
    })
    .await;
    let client = client(&sim);

    let started = client
        .start_run(&spec(
            "implement",
            "Implement the login form [turns=4]",
            "fg-r1-impl-1",
        ))
        .await
        .expect("started");
    assert_eq!(started.status, "pending");
    assert_eq!(started.workflow_name, "implement");
    assert_eq!(
        started.message,
        "Started implement workflow. Use the status endpoint to track progress."
    );
    assert!(uuid::Uuid::parse_str(started.session_id.as_deref().unwrap_or("")).is_ok());
    let first = client.status(&started.run_id, true).await.expect("status");
    assert_eq!(first.run_status(), Some(AgentRunStatus::Pending));
    assert_eq!(first.progress.current_phase.as_deref(), Some("running"));

    let seen = poll_until(&client, &started.run_id, is(AgentRunStatus::Completed)).await;
    let running: Vec<&StatusResponse> = seen
        .iter()
        .filter(|s| s.run_status() == Some(AgentRunStatus::Running))
        .collect();
    assert!(running.len() >= 3, "saw the run running: {}", running.len());
    for s in &running {
        // Quirk 4: progress.turns stays 0 while running; cost and input/output only at the end.
        assert_eq!(s.progress.turns, 0);
        assert!(s.progress.is_running);
        assert_eq!(s.progress.max_turns, Some(50));
        assert_eq!(s.metrics.cost_usd, 0.0);
        assert_eq!(s.metrics.tokens.input, 0);
        assert!(s.metrics.tokens.total > 0);
        // Quirk 3: the real Claude session is only visible while running, in debug metadata.
        assert!(s.observation().session_id.is_some());
    }
    let tokens: Vec<u64> = running.iter().map(|s| s.metrics.tokens.total).collect();
    assert!(
        tokens.windows(2).all(|w| w[0] <= w[1]),
        "tokens never shrink: {tokens:?}"
    );
    assert!(tokens.last() > tokens.first(), "tokens grow: {tokens:?}");
    let live_turns: Vec<u32> = running.iter().map(|s| s.observation().turns).collect();
    assert!(
        live_turns.iter().any(|t| *t > 0),
        "current_turns grows: {live_turns:?}"
    );

    let done = seen.last().expect("completed status");
    let obs = done.observation();
    assert_eq!(obs.status, Some(AgentRunStatus::Completed));
    assert_eq!(obs.turns, 4);
    assert_eq!(obs.max_turns, None, "completion drops max_turns");
    assert!(obs.cost_usd > 0.0);
    assert!(done.metrics.tokens.input > 0 && done.metrics.tokens.output > 0);
    assert!(obs.tokens >= *tokens.last().unwrap_or(&0));
    assert_eq!(obs.session_id, None, "completion overwrites the metadata");
    assert!(
        obs.output
            .as_deref()
            .unwrap_or("")
            .contains("Implement the login form")
    );
    assert_eq!(done.progress.current_phase.as_deref(), Some("completed"));
    assert!(done.result.success);
    assert!(done.completed_at.is_some() && done.execution_time_seconds.is_some());

    let item = client
        .find_run_by_session_name("implement", "fg-r1-impl-1", None)
        .await
        .expect("listed")
        .expect("found");
    assert_eq!(item.run_id, started.run_id);
    assert_eq!(item.turns, Some(4));
    assert_eq!(item.error_message, None);
    assert!(item.total_cost.unwrap_or(0.0) > 0.0);
    assert_eq!(sim.runs_started(), 1);
    sim.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_failed_run_has_its_reason_only_in_the_run_list() {
    let sim = start_sim(sim_config()).await;
    let client = client(&sim);
    let run = client
        .start_run(&spec("test", "Run the suite [fail]", "fg-r2-test-1"))
        .await
        .expect("started");

    poll_until(&client, &run.run_id, is(AgentRunStatus::Failed)).await;
    let (code, status) = json_of(
        raw()
            .get(url(&sim, &format!("/run/{}/status?debug=true", run.run_id)))
            .header("x-api-key", &sim.api_key)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(code, 200);
    let text = status.to_string();
    assert!(
        !text.contains("error_message") && !text.contains("\"error\""),
        "{text}"
    );
    assert_eq!(status["progress"]["current_phase"], "running", "quirk 11");
    assert_eq!(status["result"]["success"], false);

    let reason = client
        .failure_reason("test", &run.run_id)
        .await
        .expect("list read")
        .expect("a reason");
    assert!(reason.contains("simulated failure"), "{reason}");
    let obs = client.observe("test", &run.run_id).await.expect("observed");
    assert_eq!(obs.status, Some(AgentRunStatus::Failed));
    assert_eq!(obs.error.as_deref(), Some(reason.as_str()));
}

#[tokio::test]
async fn runs_without_input_format_or_with_a_long_timeout_fail_after_an_accepted_start() {
    let sim = start_sim(sim_config()).await;
    let client = client(&sim);
    let mut run_ids = Vec::new();
    for body in [
        json!({"message": "Implement it", "session_name": "no-format"}),
        json!({"message": "Implement it", "session_name": "long", "timeout": 7201, "input_format": "stream-json"}),
    ] {
        let (code, started) = json_of(
            raw()
                .post(url(&sim, "/run/builder"))
                .header("x-api-key", &sim.api_key)
                .json(&body)
                .send()
                .await
                .expect("sent"),
        )
        .await;
        assert_eq!(code, 200);
        assert_eq!(started["status"], "pending", "accepted first: {started}");
        run_ids.push(started["run_id"].as_str().expect("run id").to_string());
    }
    for run_id in &run_ids {
        poll_until(&client, run_id, is(AgentRunStatus::Failed)).await;
    }
    let no_format = client
        .failure_reason("builder", &run_ids[0])
        .await
        .expect("read")
        .expect("reason");
    assert!(
        no_format.starts_with(
            "1 validation error for ClaudeCodeRunRequest\ninput_format\n  Value error, Input \
             format must be either \"text\" or \"stream-json\" [type=value_error, \
             input_value=None, input_type=NoneType]"
        ),
        "{no_format}"
    );
    let long = client
        .failure_reason("builder", &run_ids[1])
        .await
        .expect("read")
        .expect("reason");
    assert!(
        long.contains("timeout\n  Input should be less than or equal to 7200"),
        "{long}"
    );

    // The client never lets this happen: it always sends stream-json and a clamped timeout.
    let ok = client
        .start_run(&AgentStartSpec {
            timeout_secs: Some(14_400),
            ..spec("builder", "Fine [turns=1]", "clamped")
        })
        .await
        .expect("started");
    let body = sim.start_body(&ok.run_id).expect("recorded");
    assert_eq!(body["input_format"], "stream-json");
    assert_eq!(body["timeout"], 7200);
    poll_until(&client, &ok.run_id, is(AgentRunStatus::Completed)).await;
}

#[tokio::test]
async fn kill_has_no_state_guard_and_kill_if_active_respects_finished_runs() {
    let sim = start_sim(sim_config()).await;
    let client = client(&sim);

    let endless = client
        .start_run(&spec("review", "Review forever [timeout]", "endless"))
        .await
        .expect("started");
    poll_until(&client, &endless.run_id, is(AgentRunStatus::Running)).await;
    let outcome = client
        .kill_if_active(&endless.run_id, false)
        .await
        .expect("killed");
    assert_eq!(outcome.last_status, Some(AgentRunStatus::Running));
    let kill = outcome.kill.expect("kill sent");
    assert!(kill.success);
    assert_eq!(kill.kill_method.as_deref(), Some("graceful"));
    assert_eq!(
        kill.message.as_deref(),
        Some("Workflow review (gracefully terminated) in 2.03s")
    );
    let status = client.status(&endless.run_id, false).await.expect("status");
    assert_eq!(status.run_status(), Some(AgentRunStatus::Killed));
    assert_eq!(
        client
            .failure_reason("review", &endless.run_id)
            .await
            .expect("read")
            .as_deref(),
        Some("Workflow gracefully terminated")
    );

    let finished = client
        .start_run(&spec("fix", "Fix it [turns=2]", "finished"))
        .await
        .expect("started");
    poll_until(&client, &finished.run_id, is(AgentRunStatus::Completed)).await;
    let outcome = client
        .kill_if_active(&finished.run_id, true)
        .await
        .expect("read");
    assert_eq!(outcome.last_status, Some(AgentRunStatus::Completed));
    assert!(outcome.kill.is_none());
    assert_eq!(sim.kill_calls().len(), 1, "no kill for the completed run");
    assert_eq!(
        client
            .status(&finished.run_id, false)
            .await
            .expect("status")
            .run_status(),
        Some(AgentRunStatus::Completed)
    );

    // Quirk 6: a raw kill of a completed run rewrites it to killed.
    let kill = client
        .kill(&finished.run_id, true)
        .await
        .expect("kill answered");
    assert!(!kill.success, "no process was running");
    assert_eq!(
        client
            .status(&finished.run_id, false)
            .await
            .expect("status")
            .run_status(),
        Some(AgentRunStatus::Killed)
    );
    assert_eq!(
        client
            .failure_reason("fix", &finished.run_id)
            .await
            .expect("read")
            .as_deref(),
        Some("Workflow force killed")
    );
    let calls = sim.kill_calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].status_before, AgentRunStatus::Completed);
    assert!(calls[1].force);
}

#[tokio::test]
async fn messages_are_recorded_delivered_and_refused_after_the_run_ends() {
    let sim = start_sim(sim_config()).await;
    let client = client(&sim);
    let run = client
        .start_run(&spec("implement", "Keep going [timeout]", "chatty"))
        .await
        .expect("started");
    let not_yet = client
        .message_queue(&run.run_id)
        .await
        .expect_err("no queue yet");
    assert!(not_yet.is_not_found());
    assert!(not_yet.to_string().contains(&format!(
        "No message queue found for workflow {}",
        run.run_id
    )));

    let added = client
        .add_message(&run.run_id, MessageType::User, "Add error handling")
        .await
        .expect("queued");
    assert!(added.success);
    assert_eq!(added.message.as_deref(), Some("Message added to queue"));
    assert_eq!(added.queue_size, 1);
    assert_eq!(added.queue_stats.total_added, 1);
    let messages = sim.messages(&run.run_id);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].message_type, "user");
    assert_eq!(messages[0].content, "Add error handling");

    // A stream-json run consumes its queue while running.
    let mut consumed = false;
    for _ in 0..200 {
        let queue = client.message_queue(&run.run_id).await.expect("queue");
        if queue.queue_stats.total_consumed == 1 {
            assert_eq!(queue.queue_stats.current_size, 0);
            assert_eq!(queue.queue_stats.oldest_message_age, None);
            consumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(consumed, "the message was delivered");
    let status = client.status(&run.run_id, true).await.expect("status");
    let metadata = &status.debug.expect("debug").metadata;
    assert_eq!(
        metadata["simulator_messages"],
        json!([{"type": "user", "message": "Add error handling"}])
    );

    let empty = client
        .add_message(&run.run_id, MessageType::System, "   ")
        .await
        .expect_err("empty");
    assert_eq!(empty.status(), Some(400));
    assert!(empty.to_string().contains("content cannot be empty"));
    let (code, body) = json_of(
        raw()
            .post(url(&sim, &format!("/run/{}/add-message", run.run_id)))
            .header("x-api-key", &sim.api_key)
            .json(&json!({"message_type": "assistant", "content": "x"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(
        (code, body),
        (
            400,
            json!({"detail": "message_type must be 'user' or 'system'"})
        )
    );
    let (code, body) = json_of(
        raw()
            .post(url(&sim, &format!("/run/{}/add-message", run.run_id)))
            .header("x-api-key", &sim.api_key)
            .json(&json!({"content": "x"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(body["detail"][0]["loc"], json!(["body", "message_type"]));

    client.kill(&run.run_id, true).await.expect("killed");
    let refused = client
        .add_message(&run.run_id, MessageType::User, "too late")
        .await
        .expect_err("refused");
    assert_eq!(refused.status(), Some(400));
    assert!(!refused.is_retryable());
    assert!(
        refused
            .to_string()
            .contains("Cannot add messages to workflow in killed state"),
        "{refused}"
    );

    let done = client
        .start_run(&spec("implement", "Quick [turns=1]", "quick"))
        .await
        .expect("started");
    poll_until(&client, &done.run_id, is(AgentRunStatus::Completed)).await;
    let refused = client
        .add_message(&done.run_id, MessageType::User, "too late")
        .await
        .expect_err("refused");
    assert!(
        refused
            .to_string()
            .contains("Cannot add messages to workflow in completed state"),
        "{refused}"
    );
    assert_eq!(
        sim.messages(&run.run_id).len(),
        1,
        "refused messages are not recorded"
    );
    let missing = client
        .add_message("nope", MessageType::User, "hello")
        .await
        .expect_err("404");
    assert!(missing.to_string().contains("Workflow run nope not found"));
}

#[tokio::test]
async fn auth_follows_the_services_middleware() {
    let sim = start_sim(sim_config()).await;
    let status_url = url(&sim, "/run/x/status");

    let (code, body) = json_of(raw().get(&status_url).send().await.expect("sent")).await;
    assert_eq!(code, 401);
    assert_eq!(
        body,
        json!({"detail": "API key is missing. Provide via x-api-key header, query parameter, or Authorization: Bearer header"})
    );
    let (code, body) = json_of(
        raw()
            .get(&status_url)
            .header("x-api-key", "wrong")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!((code, body), (401, json!({"detail": "Invalid API Key"})));
    // The query parameter and a bearer token are accepted too (the 404 proves auth passed).
    let (code, _) = json_of(
        raw()
            .get(format!("{status_url}?x-api-key={}", sim.api_key))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(code, 404);
    let (code, body) = json_of(
        raw()
            .get(&status_url)
            .bearer_auth(&sim.api_key)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!((code, body), (404, json!({"detail": "Run x not found"})));
    // Only the root /health is open; the agent's /health needs the key.
    let (code, _) = json_of(
        raw()
            .get(format!("{}/health", sim.base_url))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = json_of(raw().get(url(&sim, "/health")).send().await.expect("sent")).await;
    assert_eq!(code, 401);

    let wrong = AgentClient::new(&sim.base_url, "wrong-key", client_config()).expect("client");
    let err = wrong.health().await.expect_err("401");
    assert!(matches!(err, AgentError::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().contains("Invalid API Key"));
    assert_eq!(sim.requests(), 3, "refused requests never reach the API");
}

#[tokio::test]
async fn workflows_health_and_the_gone_endpoint() {
    let sim = start_sim(sim_config()).await;
    let client = client(&sim);
    let (code, body) = json_of(
        raw()
            .get(url(&sim, "/workflows"))
            .header("x-api-key", &sim.api_key)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!((code, body), (404, json!({"detail": "Not Found"})));

    let names: Vec<String> = client
        .list_workflows()
        .await
        .expect("listed")
        .into_iter()
        .map(|w| w.name)
        .collect();
    for name in SYSTEM_WORKFLOWS.iter().chain(FLOWGATE_WORKFLOWS.iter()) {
        assert!(
            names.iter().any(|n| n == name),
            "{name} missing from {names:?}"
        );
    }

    let health = client.health().await.expect("health");
    assert!(health.is_healthy());
    assert!(health.workflows.contains_key("architect"));
    sim.set_health_status("warning");
    let health = client.health().await.expect("still HTTP 200");
    assert_eq!(health.status, "warning");
    assert!(!health.is_healthy());
}

#[tokio::test]
async fn start_validation_matches_fastapi() {
    let sim = start_sim(sim_config()).await;
    let client = client(&sim);
    let post = |body: Value| {
        raw()
            .post(url(&sim, "/run/builder"))
            .header("x-api-key", &sim.api_key)
            .json(&body)
            .send()
    };

    let (code, body) = json_of(
        post(json!({"message": "x", "max_turns": 500}))
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(
        body,
        json!({"detail": [{"type": "less_than_equal", "loc": ["body", "max_turns"],
            "msg": "Input should be less than or equal to 200", "input": 500, "ctx": {"le": 200}}]})
    );
    let (code, body) = json_of(post(json!({"max_turns": 5})).await.expect("sent")).await;
    assert_eq!(code, 422);
    assert_eq!(
        body,
        json!({"detail": [{"type": "missing", "loc": ["body", "message"], "msg": "Field required",
            "input": {"max_turns": 5}}]})
    );
    let (code, body) = json_of(
        post(json!({"message": "x", "max_turns": 0}))
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(body["detail"][0]["type"], "greater_than_equal");

    let err = client
        .start_run(&AgentStartSpec {
            max_turns: Some(500),
            ..spec("builder", "x", "s")
        })
        .await
        .expect_err("422");
    assert!(
        err.to_string()
            .contains("body.max_turns: Input should be less than or equal to 200"),
        "{err}"
    );

    let (code, body) = json_of(
        raw()
            .post(url(&sim, "/run/nonexistent"))
            .header("x-api-key", &sim.api_key)
            .json(&json!({"message": "x"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(code, 404);
    let detail = body["detail"].as_str().expect("string detail");
    assert!(
        detail.starts_with(
            "Workflow 'nonexistent' not found. Available: ['architect', 'brain', 'builder'"
        ),
        "{detail}"
    );

    let (code, body) = json_of(
        raw()
            .post(url(&sim, "/run/builder?temp_workspace=true"))
            .header("x-api-key", &sim.api_key)
            .json(&json!({"message": "x", "git_branch": "main"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(code, 400);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .starts_with("temp_workspace cannot be used with")
    );
    assert_eq!(sim.runs_started(), 0, "nothing invalid was started");
}

#[tokio::test]
async fn run_list_validation_and_paging() {
    let sim = start_sim(sim_config()).await;
    let client = client(&sim);
    let get = |query: &str| {
        raw()
            .get(url(&sim, &format!("/runs?{query}")))
            .header("x-api-key", &sim.api_key)
            .send()
    };
    for (query, want) in [
        ("status=killed", "Invalid status filter"),
        ("status=bogus", "Invalid status filter"),
        ("page=0", "Page must be >= 1"),
        ("page_size=101", "Page size must be between 1 and 100"),
        ("page_size=0", "Page size must be between 1 and 100"),
        ("sort_by=name", "Invalid sort_by field"),
        ("sort_order=up", "Sort order must be 'asc' or 'desc'"),
    ] {
        let (code, body) = json_of(get(query).await.expect("sent")).await;
        assert_eq!((code, body), (400, json!({"detail": want})), "{query}");
    }
    let (code, body) = json_of(get("page=abc").await.expect("sent")).await;
    assert_eq!(code, 422);
    assert_eq!(body["detail"][0]["loc"], json!(["query", "page"]));

    let before = sim.requests();
    let err = client
        .list_runs(&RunListQuery {
            status: Some(AgentRunStatus::Killed),
            ..RunListQuery::default()
        })
        .await
        .expect_err("refused client-side");
    assert!(matches!(err, AgentError::InvalidRequest { .. }));
    assert_eq!(sim.requests(), before, "nothing was sent");

    // 105 runs: the first one started is on the second page, newest first.
    let mut first = None;
    for i in 0..105 {
        let run = client
            .start_run(&spec(
                "architect",
                "Design [timeout]",
                &format!("design-{i}"),
            ))
            .await
            .expect("started");
        first.get_or_insert(run.run_id);
    }
    let first = first.expect("first run");
    let page1 = client
        .list_runs(&RunListQuery {
            page_size: 100,
            workflow_name: Some("architect".into()),
            ..RunListQuery::default()
        })
        .await
        .expect("page 1");
    assert_eq!(
        (page1.total_count, page1.runs.len(), page1.has_next),
        (105, 100, true)
    );
    assert_eq!(page1.runs[0].session_name.as_deref(), Some("design-104"));
    let found = client
        .find_run_by_session_name("architect", "design-0", None)
        .await
        .expect("searched")
        .expect("found on page 2");
    assert_eq!(found.run_id, first);
    let pending = client
        .list_runs(&RunListQuery {
            status: Some(AgentRunStatus::Completed),
            workflow_name: Some("architect".into()),
            ..RunListQuery::default()
        })
        .await
        .expect("filtered");
    assert_eq!(pending.total_count, 0);
}

#[tokio::test]
async fn sessions_are_named_and_kept_like_the_service_does() {
    let sim = start_sim(sim_config()).await;
    let client = client(&sim);
    let session = "550e8400-e29b-41d4-a716-446655440000";

    let kept = client
        .start_run(&AgentStartSpec {
            session_id: Some(session.into()),
            ..spec("claude", "Continue [timeout]", "continue")
        })
        .await
        .expect("started");
    assert_eq!(kept.session_id.as_deref(), Some(session));
    assert_eq!(
        sim.stored_session_id(&kept.run_id).as_deref(),
        Some(session)
    );
    let seen = poll_until(&client, &kept.run_id, is(AgentRunStatus::Running)).await;
    let last = seen.last().expect("running");
    assert_eq!(last.observation().session_id.as_deref(), Some(session));

    let dropped = client
        .start_run(&AgentStartSpec {
            session_id: Some("my-session".into()),
            ..spec("claude", "New [timeout]", "fresh")
        })
        .await
        .expect("started");
    let body = sim.start_body(&dropped.run_id).expect("recorded");
    assert!(
        body.get("session_id").is_none(),
        "a non-UUID is not sent: {body}"
    );
    assert_eq!(sim.stored_session_id(&dropped.run_id), None);
    let fresh = dropped.session_id.as_deref().unwrap_or("");
    assert!(
        uuid::Uuid::parse_str(fresh).is_ok() && fresh != session,
        "{fresh}"
    );

    let (_, started) = json_of(
        raw()
            .post(url(&sim, "/run/builder"))
            .header("x-api-key", &sim.api_key)
            .json(&json!({"message": "x [timeout]", "input_format": "stream-json"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    let run_id = started["run_id"].as_str().expect("run id");
    let default_name = format!("claude-code-builder-{run_id}");
    let item = client
        .find_run_by_session_name("builder", &default_name, None)
        .await
        .expect("searched")
        .expect("default session name echoed in /runs");
    assert_eq!(item.run_id, run_id);
}

#[tokio::test]
async fn an_ambiguous_start_is_found_by_session_name_instead_of_started_twice() {
    let sim = start_sim(sim_config()).await;
    let impatient = AgentClient::new(
        &sim.base_url,
        &sim.api_key,
        AgentClientConfig {
            request_timeout: Duration::from_millis(100),
            ..client_config()
        },
    )
    .expect("client");
    sim.delay_next(1, Duration::from_millis(600));

    let spec = spec("implement", "Build it [timeout]", "fg-r9-impl-1");
    let err = impatient.start_run(&spec).await.expect_err("timed out");
    assert!(err.outcome_unknown(), "{err:?}");
    let found = impatient
        .find_run_by_session_name(&spec.workflow, &spec.session_name, None)
        .await
        .expect("searched")
        .expect("the start landed");
    assert_eq!(sim.runs_with_session_name(&spec.session_name), 1);
    assert_eq!(sim.start_requests(), 1, "the POST was sent once");
    assert!(
        matches!(
            found.run_status(),
            Some(AgentRunStatus::Pending | AgentRunStatus::Running)
        ),
        "{found:?}"
    );
}

#[tokio::test]
async fn injected_faults_exercise_the_clients_retries() {
    let sim = start_sim(sim_config()).await;
    let client = client(&sim);
    sim.fail_next(2, 503);
    let before = sim.requests();
    let workflows = client.list_workflows().await.expect("third try answers");
    assert!(!workflows.is_empty());
    assert_eq!(sim.requests() - before, 3);

    sim.fail_next(1, 500);
    let err = client
        .start_run(&spec("builder", "x", "once"))
        .await
        .expect_err("a 5xx start is not resent");
    assert_eq!(err.status(), Some(500));
    assert_eq!(sim.runs_started(), 0);

    sim.fail_next_starts(1);
    let err = client
        .start_run(&spec("builder", "x", "failed-start"))
        .await
        .expect_err("200 failed");
    assert!(matches!(err, AgentError::StartFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("is already running"), "{err}");
    assert_eq!(sim.runs_with_session_name("failed-start"), 0);
}

#[tokio::test]
async fn cleanup_refuses_live_runs_unless_forced() {
    let sim = start_sim(sim_config()).await;
    let client = client(&sim);
    let run = client
        .start_run(&spec("shipper", "Ship [timeout]", "ship"))
        .await
        .expect("started");
    poll_until(&client, &run.run_id, is(AgentRunStatus::Running)).await;
    let err = client.cleanup(&run.run_id, false).await.expect_err("live");
    assert_eq!(err.status(), Some(400));
    assert!(
        err.to_string()
            .contains("Workflow is still running. Use force=true to cleanup anyway."),
        "{err}"
    );
    client.kill(&run.run_id, true).await.expect("killed");
    let first = client.cleanup(&run.run_id, false).await.expect("cleaned");
    assert!(first.success && first.cleanup_details.workspace_removed);
    assert!(first.cleanup_details.workspace_path.is_some());
    let again = client.cleanup(&run.run_id, false).await.expect("answered");
    assert!(!again.success, "nothing left to remove");
    let item = client
        .find_run_by_session_name("shipper", "ship", None)
        .await
        .expect("searched")
        .expect("listed");
    assert_eq!(item.workspace_cleaned_up, Some(true));
    let missing = client.cleanup("nope", true).await.expect_err("404");
    assert!(missing.to_string().contains("Workflow run not found: nope"));
}

#[tokio::test]
async fn slow_runs_take_longer_and_endless_runs_never_finish() {
    let sim = start_sim(sim_config()).await;
    let client = client(&sim);
    let slow = client
        .start_run(&spec("guardian", "Check slowly [slow]", "slow"))
        .await
        .expect("started");
    let endless = client
        .start_run(&spec("guardian", "Check forever [timeout]", "endless"))
        .await
        .expect("started");
    let normal = client
        .start_run(&spec("guardian", "Check [turns=2]", "normal"))
        .await
        .expect("started");
    poll_until(&client, &normal.run_id, is(AgentRunStatus::Completed)).await;
    for run in [&slow, &endless] {
        assert_eq!(
            sim.run_status(&run.run_id),
            Some(AgentRunStatus::Running),
            "{}",
            run.run_id
        );
    }
}
