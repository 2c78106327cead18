//! The router in-process, over the embedded store, the in-process queue and the agent
//! simulator: every route used the way a client would.

mod support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use flowgate_shared::agent::simulator::SimulatorConfig;
use flowgate_shared::model::{RunStatus, StepStatus};
use flowgate_shared::ports::RunStore;
use serde_json::json;
use support::{KEY, PRINCIPAL, TWO_STEPS, TestApi};

#[tokio::test]
async fn health_is_public_and_everything_else_needs_a_key() {
    let api = TestApi::start().await;
    let health = api
        .send(Request::get("/healthz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "ok");

    let missing = api
        .send(Request::get("/v1/runs").body(Body::empty()).unwrap())
        .await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.code(), "unauthorized");
    assert!(
        missing.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-api-key")
    );

    let wrong = api
        .send(
            Request::get("/v1/runs")
                .header("x-api-key", "not-the-key")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(!wrong.body.to_string().contains("not-the-key"));

    let bearer = api
        .send(
            Request::get("/v1/runs")
                .header("authorization", format!("Bearer {KEY}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(bearer.status, StatusCode::OK, "{:?}", bearer.body);
}

#[tokio::test]
async fn a_stored_workflow_runs_to_the_end_and_reads_back() {
    let api = TestApi::start().await;
    let put = api.put_yaml("two-steps", TWO_STEPS).await;
    assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);
    assert_eq!(put.body["version"], 1);
    let again = api.put_yaml("two-steps", TWO_STEPS).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["version"], 2);

    let list = api.call("GET", "/v1/workflows", None).await;
    assert_eq!(list.body["workflows"][0]["id"], "two-steps");
    assert_eq!(list.body["workflows"][0]["version"], 2);
    assert_eq!(list.body["workflows"][0]["steps"], 2);
    let v1 = api
        .call("GET", "/v1/workflows/two-steps?version=1", None)
        .await;
    assert_eq!(v1.body["version"], 1);
    assert_eq!(v1.body["definition"]["steps"][1]["id"], "build");

    let started = api
        .call(
            "POST",
            "/v1/runs",
            Some(json!({"workflow": "two-steps", "inputs": {"task": "a parser"}})),
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{:?}", started.body);
    let run_id = started.body["run_id"].as_str().unwrap().to_string();
    assert_eq!(started.body["workflow_version"], 2);
    assert_eq!(started.body["existing"], false);
    assert_eq!(
        started.headers["location"].to_str().unwrap(),
        format!("/v1/runs/{run_id}")
    );

    let run = api.pump_to_end(&run_id).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");

    let detail = api.call("GET", &format!("/v1/runs/{run_id}"), None).await;
    assert_eq!(detail.status, StatusCode::OK);
    let body = &detail.body;
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["started_by"], PRINCIPAL);
    assert_eq!(body["inputs"]["task"], "a parser");
    assert_eq!(body["steps"][0]["id"], "design");
    assert_eq!(body["steps"][1]["depends_on"], json!(["design"]));
    assert_eq!(body["steps"][1]["agent"]["workflow"], "implement");
    assert_eq!(body["steps"][1]["agent"]["max_turns"], 30);
    assert!(body["steps"][0]["agent"]["turns"].as_u64().unwrap() > 0);
    assert!(body["duration_ms"].as_i64().is_some());
    assert!(body["outputs"]["result"].is_string(), "{body:#}");
    assert_eq!(body["open_approvals"], json!([]));

    let events = api
        .call("GET", &format!("/v1/runs/{run_id}/events"), None)
        .await;
    let kinds: Vec<&str> = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"run.started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"run.completed"), "{kinds:?}");
    let page = api
        .call("GET", &format!("/v1/runs/{run_id}/events?limit=2"), None)
        .await;
    assert_eq!(page.body["events"].as_array().unwrap().len(), 2);
    let after = page.body["next_after"].as_u64().unwrap();
    let rest = api
        .call(
            "GET",
            &format!("/v1/runs/{run_id}/events?after={after}&limit=1000"),
            None,
        )
        .await;
    assert_eq!(
        rest.body["events"].as_array().unwrap().len() + 2,
        kinds.len()
    );

    let listed = api
        .call(
            "GET",
            "/v1/runs?workflow=two-steps&status=succeeded,failed",
            None,
        )
        .await;
    assert_eq!(listed.body["runs"][0]["id"], run_id.as_str());
    let none = api.call("GET", "/v1/runs?status=running", None).await;
    assert_eq!(none.body["runs"], json!([]));
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_run() {
    let api = TestApi::start().await;
    api.put_yaml("two-steps", TWO_STEPS).await;
    let start = || {
        Request::post("/v1/runs")
            .header("x-api-key", KEY)
            .header("content-type", "application/json")
            .header("idempotency-key", "deploy-42")
            .body(Body::from(
                json!({"workflow": "two-steps", "inputs": {"task": "x"}}).to_string(),
            ))
            .unwrap()
    };
    let first = api.send(start()).await;
    let second = api.send(start()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(second.status, StatusCode::ACCEPTED);
    assert_eq!(first.body["run_id"], second.body["run_id"]);
    assert_eq!(second.body["existing"], true);
    let runs = api.call("GET", "/v1/runs", None).await;
    assert_eq!(runs.body["runs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_agent_workflow_runs_directly_as_a_one_step_run() {
    // Long enough for a poll to see the live run and capture its agent session.
    let api = TestApi::with_simulator(SimulatorConfig {
        run_duration: Duration::from_secs(3),
        ..SimulatorConfig::fast()
    })
    .await;
    let started = api
        .call(
            "POST",
            "/v1/runs",
            Some(json!({
                "workflow": "architect",
                "message": "Design a cache",
                "max_turns": 7,
                "repository_url": "https://example.com/repo.git",
                "session_name": "cache-work"
            })),
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{:?}", started.body);
    let run_id = started.body["run_id"].as_str().unwrap().to_string();
    let run = api.pump_to_end(&run_id).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
    let step = &run.steps["architect"];
    assert_eq!(step.agent.as_ref().unwrap().max_turns, Some(7));
    let upstream = step
        .agent
        .as_ref()
        .unwrap()
        .upstream_run_id
        .clone()
        .unwrap();
    let sent = api.sim.start_body(&upstream).expect("start body");
    assert_eq!(sent["max_turns"], 7, "{sent:#}");
    assert!(sent.to_string().contains("Design a cache"), "{sent:#}");
    assert!(
        sent.to_string().contains("https://example.com/repo.git"),
        "{sent:#}"
    );

    let wf = api.call("GET", "/v1/workflows/architect", None).await;
    assert_eq!(wf.status, StatusCode::OK);
    let session = api.call("GET", "/v1/sessions/cache-work", None).await;
    assert_eq!(session.status, StatusCode::OK, "{:?}", session.body);
    assert_eq!(session.body["runs"][0]["run_id"], run_id.as_str());
    assert_eq!(session.body["active"], false);
    let sessions = api.call("GET", "/v1/sessions?active=true", None).await;
    assert_eq!(sessions.body["sessions"], json!([]));
    let all = api.call("GET", "/v1/sessions", None).await;
    assert_eq!(all.body["sessions"][0]["name"], "cache-work");

    // A second run of the same agent workflow reuses the stored one-step definition.
    let again = api
        .call(
            "POST",
            "/v1/runs",
            Some(json!({"workflow": "architect", "message": "again"})),
        )
        .await;
    assert_eq!(again.body["workflow_version"], 1);

    let unknown = api
        .call(
            "POST",
            "/v1/runs",
            Some(json!({"workflow": "no-such-thing", "message": "x"})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(unknown.code(), "unknown_workflow");
    assert_eq!(unknown.body["error"]["field"], "workflow");
    assert!(
        unknown.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("architect")
    );
}

#[tokio::test]
async fn feedback_reaches_the_running_agent_and_cancel_stops_the_run() {
    let api = TestApi::with_simulator(SimulatorConfig {
        run_duration: Duration::from_secs(30),
        ..SimulatorConfig::fast()
    })
    .await;
    api.put_yaml("two-steps", TWO_STEPS).await;
    let started = api
        .call(
            "POST",
            "/v1/runs",
            Some(json!({"workflow": "two-steps", "inputs": {"task": "x"}})),
        )
        .await;
    let run_id = started.body["run_id"].as_str().unwrap().to_string();

    // Before the agent step runs there is nobody to talk to.
    let early = api
        .call(
            "POST",
            &format!("/v1/runs/{run_id}/messages"),
            Some(json!({"content": "hello"})),
        )
        .await;
    assert_eq!(early.status, StatusCode::CONFLICT, "{:?}", early.body);

    let run = api
        .pump_until(&run_id, Duration::from_secs(10), |r| {
            r.steps["design"]
                .agent
                .as_ref()
                .is_some_and(|a| a.upstream_run_id.is_some())
        })
        .await;
    let upstream = run.steps["design"]
        .agent
        .as_ref()
        .unwrap()
        .upstream_run_id
        .clone()
        .unwrap();

    let sent = api
        .call(
            "POST",
            &format!("/v1/runs/{run_id}/messages"),
            Some(json!({"content": "use a trie", "type": "system", "step": "design"})),
        )
        .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{:?}", sent.body);
    assert_eq!(sent.body["status"], "running");
    let delivered = api.sim.messages(&upstream);
    assert!(
        delivered
            .iter()
            .any(|m| format!("{m:?}").contains("use a trie")),
        "{delivered:?}"
    );

    let wrong_step = api
        .call(
            "POST",
            &format!("/v1/runs/{run_id}/messages"),
            Some(json!({"content": "x", "step": "nope"})),
        )
        .await;
    assert_eq!(wrong_step.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(wrong_step.code(), "unknown_step");

    let cancel = api
        .call(
            "POST",
            &format!("/v1/runs/{run_id}/cancel"),
            Some(json!({"force": true, "reason": "changed my mind"})),
        )
        .await;
    assert_eq!(cancel.status, StatusCode::ACCEPTED, "{:?}", cancel.body);
    let run = api.pump_to_end(&run_id).await;
    assert_eq!(run.status, RunStatus::Cancelled);
    assert!(
        api.sim
            .kill_calls()
            .iter()
            .any(|k| format!("{k:?}").contains(&upstream))
    );

    let again = api
        .call("POST", &format!("/v1/runs/{run_id}/cancel"), None)
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.code(), "conflict");
    let missing = api.call("POST", "/v1/runs/nope/cancel", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.code(), "run_not_found");
}

#[tokio::test]
async fn a_failed_run_is_retried_from_its_failed_step() {
    let api = TestApi::start().await;
    api.put_yaml("two-steps", TWO_STEPS).await;
    let started = api
        .call(
            "POST",
            "/v1/runs",
            Some(json!({"workflow": "two-steps", "inputs": {"task": "x"}})),
        )
        .await;
    let run_id = started.body["run_id"].as_str().unwrap().to_string();
    // Once the first step's agent run has started, the next start (the second step's) fails.
    api.pump_until(&run_id, Duration::from_secs(10), |r| {
        r.steps["design"]
            .agent
            .as_ref()
            .is_some_and(|a| a.upstream_run_id.is_some())
    })
    .await;
    api.sim.fail_next_starts(1);
    let run = api.pump_to_end(&run_id).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:#?}");
    assert_eq!(run.steps["design"].status, StepStatus::Succeeded);
    assert_eq!(run.steps["build"].status, StepStatus::Failed);

    let rollback = api
        .call("POST", &format!("/v1/runs/{run_id}/rollback"), None)
        .await;
    assert_eq!(rollback.status, StatusCode::CONFLICT, "{:?}", rollback.body);

    let retry = api
        .call("POST", &format!("/v1/runs/{run_id}/retry"), Some(json!({})))
        .await;
    assert_eq!(retry.status, StatusCode::ACCEPTED, "{:?}", retry.body);
    let run = api.pump_to_end(&run_id).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
    assert_eq!(run.steps["design"].attempt, 1, "finished steps are kept");
}

#[tokio::test]
async fn validation_reports_problems_and_strict_mode_asks_the_agent_service() {
    let api = TestApi::start().await;
    let yaml = TWO_STEPS.replace("workflow: implement", "workflow: implementer");
    let validate = |strict: bool| {
        Request::post(format!("/v1/workflows/validate?strict={strict}"))
            .header("x-api-key", KEY)
            .header("content-type", "application/yaml")
            .body(Body::from(yaml.clone()))
            .unwrap()
    };
    let loose = api.send(validate(false)).await;
    assert_eq!(loose.status, StatusCode::OK);
    assert_eq!(loose.body["valid"], true);
    let strict = api.send(validate(true)).await;
    assert_eq!(strict.body["valid"], false, "{:?}", strict.body);
    assert_eq!(strict.body["problems"][0]["path"], "steps[1].workflow");

    let broken = api
        .send(
            Request::post("/v1/workflows/validate")
                .header("x-api-key", KEY)
                .header("content-type", "application/json")
                .body(Body::from(
                    r#"{"id": "x", "steps": [{"id": "a", "kind": "teleport"}]}"#,
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(broken.body["valid"], false);
    assert!(!broken.body["problems"].as_array().unwrap().is_empty());

    let agents = api.call("GET", "/v1/agent-workflows", None).await;
    let names: Vec<&str> = agents.body["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"implement"), "{names:?}");
}

#[tokio::test]
async fn deleting_a_workflow_stops_new_runs() {
    let api = TestApi::start().await;
    api.put_yaml("two-steps", TWO_STEPS).await;
    let deleted = api.call("DELETE", "/v1/workflows/two-steps", None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = api.call("GET", "/v1/workflows/two-steps", None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.code(), "workflow_not_found");
    let again = api.call("DELETE", "/v1/workflows/two-steps", None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    let start = api
        .call(
            "POST",
            "/v1/runs",
            Some(json!({"workflow": "two-steps", "inputs": {"task": "x"}})),
        )
        .await;
    assert_eq!(start.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(start.code(), "unknown_workflow");
}

/// Polls record an agent's progress every few minutes; reading one run asks the agent service
/// for its running agent steps' figures as of now, writes nothing, and falls back to the
/// recorded figures when the agent service does not answer.
#[tokio::test]
async fn reading_a_run_shows_a_running_agents_progress_live() {
    let api = TestApi::start().await;
    let stored = api
        .put_yaml(
            "live",
            "id: live\nsteps:\n  - id: build\n    kind: agent\n    workflow: builder\n    message: \"[timeout] keep working\"\n",
        )
        .await;
    assert_eq!(stored.status, StatusCode::CREATED, "{:?}", stored.body);
    let started = api
        .call("POST", "/v1/runs", Some(json!({"workflow": "live"})))
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{:?}", started.body);
    let run_id = started.body["run_id"].as_str().unwrap().to_string();
    let recorded = api
        .pump_until(&run_id, Duration::from_secs(10), |r| {
            r.steps["build"]
                .agent
                .as_ref()
                .and_then(|a| a.upstream_status)
                == Some(flowgate_shared::model::AgentRunStatus::Running)
        })
        .await;
    let recorded_tokens = recorded.steps["build"].agent.as_ref().unwrap().tokens;

    // The simulator's tokens grow every 5 ms tick; the read shows them without a poll.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let live = loop {
        let detail = api.call("GET", &format!("/v1/runs/{run_id}"), None).await;
        assert_eq!(detail.status, StatusCode::OK, "{:?}", detail.body);
        let agent = detail.body["steps"][0]["agent"].clone();
        if agent["tokens"].as_u64().unwrap() > recorded_tokens {
            break agent;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the read never showed more than the recorded {recorded_tokens} tokens: {agent}"
        );
    };
    assert!(live["observed_at"].as_i64().is_some(), "{live}");
    assert_eq!(live["status"], "running");
    let after = api.store.get_run(&run_id).await.unwrap().unwrap();
    assert_eq!(after.version, recorded.version, "a read writes nothing");

    // The agent service failing (every retry too): the recorded figures, marked as such.
    api.sim.fail_next(100, 503);
    let detail = api.call("GET", &format!("/v1/runs/{run_id}"), None).await;
    api.sim.clear_faults();
    assert_eq!(detail.status, StatusCode::OK, "{:?}", detail.body);
    let agent = &detail.body["steps"][0]["agent"];
    assert_eq!(agent["tokens"].as_u64(), Some(recorded_tokens), "{agent}");
    assert!(agent.get("observed_at").is_none(), "{agent}");
}
