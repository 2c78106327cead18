//! `/v1/webhooks`: subscriptions created, listed, read and deleted through the API (the secret
//! shown once), refused input, and a run whose lifecycle events reach a real local receiver
//! signed with the secret the API handed out, each attempt visible in the delivery log.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use flowgate_shared::agent::{AgentClient, AgentClientConfig};
use flowgate_shared::notify::webhooks::Webhooks;
use flowgate_shared::notify::{LinkConfig, Notifier, Outcome};
use flowgate_shared::ports::{RunStore, WorkQueue};
use flowgate_shared::runtime::{Executor, SystemClock};
use flowgate_shared::signing::{WebhookSecret, verify_standard};
use serde_json::{Value, json};
use support::{TWO_STEPS, TestApi};

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// One request: its headers and raw body.
type Request = (Vec<(String, String)>, Vec<u8>);
type Seen = Arc<Mutex<Vec<Request>>>;

/// A local HTTP server that records every request (headers, raw body) and answers `status`.
struct Receiver {
    url: String,
    seen: Seen,
}

async fn receive(
    State((seen, status)): State<(Seen, u16)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let pairs = headers
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap().to_string()))
        .collect();
    seen.lock().unwrap().push((pairs, body.to_vec()));
    StatusCode::from_u16(status).unwrap()
}

impl Receiver {
    async fn start(status: u16) -> Self {
        let seen: Seen = Arc::default();
        let app = Router::new()
            .fallback(receive)
            .with_state((seen.clone(), status));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            url: format!("http://{addr}/hooks"),
            seen,
        }
    }

    fn seen(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }
}

async fn create(api: &TestApi, body: Value) -> Value {
    let created = api.call("POST", "/v1/webhooks", Some(body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    created.body
}

#[tokio::test]
async fn a_subscription_is_created_listed_read_and_deleted_and_its_secret_shown_once() {
    let api = TestApi::start().await;
    let empty = api.call("GET", "/v1/webhooks", None).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.body, json!({"webhooks": []}));

    let created = api
        .call(
            "POST",
            "/v1/webhooks",
            Some(json!({
                "url": "https://example.com/hooks",
                "events": ["run.completed", "run.failed"],
                "description": "CI dashboard",
                "workflow": "two-steps",
            })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let body = &created.body;
    let id = body["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("wh_"), "{id}");
    assert_eq!(
        created.headers["location"].to_str().unwrap(),
        format!("/v1/webhooks/{id}")
    );
    let secret = body["secret"].as_str().unwrap();
    WebhookSecret::parse(secret).expect("a Standard Webhooks secret");
    assert_eq!(body["url"], "https://example.com/hooks");
    assert_eq!(body["events"], json!(["run.completed", "run.failed"]));
    assert_eq!(body["description"], "CI dashboard");
    assert_eq!(body["workflow"], "two-steps");
    assert_eq!(body["enabled"], true);
    assert!(body["created_at"].as_i64().unwrap() > 0);

    // Never again: not when read, not when listed.
    let read = api.call("GET", &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(read.status, StatusCode::OK);
    let mut expected = body.clone();
    expected.as_object_mut().unwrap().remove("secret");
    assert_eq!(read.body, expected);
    let listed = api.call("GET", "/v1/webhooks", None).await;
    assert_eq!(listed.body, json!({"webhooks": [expected]}));
    for answer in [&read.body, &listed.body] {
        assert!(!answer.to_string().contains("whsec_"), "{answer}");
    }

    // A given secret is used as is; a second subscription lists after the first.
    let mine = WebhookSecret::generate().expose();
    let second = create(
        &api,
        json!({"url": "http://localhost:9000/x", "events": ["*"], "secret": mine}),
    )
    .await;
    assert_eq!(second["secret"], mine.as_str());
    let listed = api.call("GET", "/v1/webhooks", None).await;
    let ids: Vec<&str> = listed.body["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![id.as_str(), second["id"].as_str().unwrap()]);

    let deliveries = api
        .call("GET", &format!("/v1/webhooks/{id}/deliveries"), None)
        .await;
    assert_eq!(deliveries.status, StatusCode::OK);
    assert_eq!(deliveries.body, json!({"deliveries": []}));

    let deleted = api
        .call("DELETE", &format!("/v1/webhooks/{id}"), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(deleted.body, Value::Null);
    for (method, path) in [
        ("GET", format!("/v1/webhooks/{id}")),
        ("DELETE", format!("/v1/webhooks/{id}")),
        ("GET", format!("/v1/webhooks/{id}/deliveries")),
    ] {
        let gone = api.call(method, &path, None).await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(gone.code(), "webhook_not_found");
    }
    let listed = api.call("GET", "/v1/webhooks", None).await;
    assert_eq!(listed.body["webhooks"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_subscriptions_are_refused_with_the_field_at_fault() {
    let api = TestApi::start().await;
    let ok = "https://example.com/hooks";
    for (body, status, code, field) in [
        (
            json!({"url": "ftp://example.com/x", "events": ["*"]}),
            422,
            "invalid_request",
            Some("url"),
        ),
        (
            json!({"url": "not a url", "events": ["*"]}),
            422,
            "invalid_request",
            Some("url"),
        ),
        (
            json!({"url": "/relative", "events": ["*"]}),
            422,
            "invalid_request",
            Some("url"),
        ),
        (
            json!({"url": ok, "events": []}),
            422,
            "invalid_request",
            Some("events"),
        ),
        (
            json!({"url": ok, "events": ["run.started", "run.exploded"]}),
            422,
            "unknown_event",
            Some("events[1]"),
        ),
        (
            json!({"url": ok, "events": ["*"], "secret": "hunter2"}),
            422,
            "invalid_request",
            Some("secret"),
        ),
        (
            json!({"url": ok, "events": ["*"], "secret": "whsec_c2hvcnQ="}),
            422,
            "invalid_request",
            Some("secret"),
        ),
        (json!({"url": ok}), 422, "invalid_request", Some("events")),
        (
            json!({"events": ["*"]}),
            422,
            "invalid_request",
            Some("url"),
        ),
        (
            json!({"url": ok, "events": "run.started"}),
            422,
            "invalid_request",
            Some("events"),
        ),
        (
            json!({"url": ok, "events": ["*"], "secrte": "x"}),
            422,
            "invalid_request",
            Some("secrte"),
        ),
    ] {
        let answer = api.call("POST", "/v1/webhooks", Some(body.clone())).await;
        assert_eq!(answer.status.as_u16(), status, "{body}: {:?}", answer.body);
        assert_eq!(answer.code(), code, "{body}: {:?}", answer.body);
        assert_eq!(answer.body["error"]["field"].as_str(), field, "{body}");
        // A refused secret is not echoed back.
        assert!(!answer.body.to_string().contains("hunter2"));
    }
    let listed = api.call("GET", "/v1/webhooks", None).await;
    assert_eq!(listed.body, json!({"webhooks": []}), "nothing was stored");

    for (path, status, code) in [
        (
            "/v1/webhooks/wh_00000000000000000000000000000000",
            404,
            "webhook_not_found",
        ),
        ("/v1/webhooks/not-an-id", 404, "webhook_not_found"),
        (
            "/v1/webhooks/not-an-id/deliveries",
            404,
            "webhook_not_found",
        ),
        ("/v1/webhooks/x/deliveries?limit=0", 400, "invalid_query"),
        ("/v1/webhooks/x/deliveries?limit=101", 400, "invalid_query"),
        ("/v1/webhooks/x/deliveries?since=1", 400, "invalid_query"),
    ] {
        let answer = api.call("GET", path, None).await;
        assert_eq!(answer.status.as_u16(), status, "{path}: {:?}", answer.body);
        assert_eq!(answer.code(), code, "{path}");
    }
}

/// Handle queued messages with `executor` until the run has ended and the queue is empty.
async fn pump_all(api: &TestApi, executor: &Executor, run_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let run = api.store.get_run(run_id).await.unwrap().unwrap();
        if run.status.is_terminal() && api.queue.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} did not settle: {run:#?}"
        );
        for received in api
            .queue
            .receive(10, Duration::from_millis(50))
            .await
            .unwrap()
        {
            executor.handle(&received.message).await.unwrap();
            api.queue.ack(&received.receipt).await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_runs_events_reach_the_receiver_signed_with_the_secret_the_api_gave() {
    let api = TestApi::start().await;
    let rx = Receiver::start(200).await;
    let created = create(
        &api,
        json!({"url": rx.url, "events": ["run.started", "step.completed", "run.completed"]}),
    )
    .await;
    let (id, secret) = (
        created["id"].as_str().unwrap(),
        WebhookSecret::parse(created["secret"].as_str().unwrap()).unwrap(),
    );
    // Another workflow's subscriber hears nothing of this run.
    let other = Receiver::start(200).await;
    create(
        &api,
        json!({"url": other.url, "events": ["*"], "workflow": "another"}),
    )
    .await;

    // A worker whose executor sends deliveries (the test API's own logs them only).
    let notifier = Arc::new(Notifier::new(
        api.store.clone(),
        None,
        None,
        LinkConfig::default(),
    ));
    let agent = Arc::new(
        AgentClient::new(
            &api.sim.base_url,
            &api.sim.api_key,
            AgentClientConfig::default(),
        )
        .unwrap(),
    );
    let executor = Executor::new(
        api.store.clone(),
        api.store.clone(),
        api.queue.clone(),
        agent,
        Arc::new(SystemClock),
    )
    .unwrap()
    .with_notifier(notifier);

    assert_eq!(
        api.put_yaml("two-steps", TWO_STEPS).await.status,
        StatusCode::CREATED
    );
    let started = api
        .call(
            "POST",
            "/v1/runs",
            Some(json!({"workflow": "two-steps", "inputs": {"task": "x"}})),
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{:?}", started.body);
    let run_id = started.body["run_id"].as_str().unwrap().to_string();
    pump_all(&api, &executor, &run_id).await;

    let seen = rx.seen();
    let mut events = Vec::new();
    let mut message_ids = Vec::new();
    for (headers, body) in &seen {
        let verified = verify_standard(
            std::slice::from_ref(&secret),
            headers,
            body,
            now_ms() / 1000,
        )
        .expect("every delivery verifies with the secret from POST /v1/webhooks");
        message_ids.push(verified.id);
        let payload: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(payload["data"]["run_id"], run_id.as_str());
        assert_eq!(payload["data"]["workflow_id"], "two-steps");
        events.push((
            payload["type"].as_str().unwrap().to_string(),
            payload["data"]["step"].as_str().map(str::to_string),
        ));
    }
    events.sort();
    assert_eq!(
        events,
        vec![
            ("run.completed".to_string(), None),
            ("run.started".to_string(), None),
            ("step.completed".to_string(), Some("build".to_string())),
            ("step.completed".to_string(), Some("design".to_string())),
        ]
    );
    message_ids.sort();
    message_ids.dedup();
    assert_eq!(message_ids.len(), 4, "one id per message");
    assert!(other.seen().is_empty());

    // The log: one delivered attempt per message, newest first.
    let log = api
        .call("GET", &format!("/v1/webhooks/{id}/deliveries"), None)
        .await;
    assert_eq!(log.status, StatusCode::OK, "{:?}", log.body);
    let entries = log.body["deliveries"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "{entries:#?}");
    for entry in entries {
        assert_eq!(entry["status"], 200);
        assert_eq!(entry["result"], "delivered");
        assert_eq!(entry["attempt"], 1);
    }
    let times: Vec<i64> = entries.iter().map(|e| e["at"].as_i64().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    assert_eq!(entries.last().unwrap()["event"], "run.started");
    let page = api
        .call(
            "GET",
            &format!("/v1/webhooks/{id}/deliveries?limit=2"),
            None,
        )
        .await;
    assert_eq!(
        page.body["deliveries"].as_array().unwrap()[..],
        entries[..2]
    );
}

#[tokio::test]
async fn failed_attempts_show_in_the_delivery_log_with_their_status_and_next_retry() {
    let api = TestApi::start().await;
    let rx = Receiver::start(503).await;
    let created = create(&api, json!({"url": rx.url, "events": ["*"]})).await;
    let id = created["id"].as_str().unwrap();

    // The worker side over the same store, with a short schedule.
    let webhooks = Webhooks::new(api.store.clone())
        .with_backoff(vec![Duration::from_millis(100), Duration::from_millis(200)]);
    let payload = json!({"type": "run.failed", "timestamp": "2024-01-01T00:00:00.000Z",
        "data": {"run_id": "r-1", "workflow_id": "wf"}});
    let message = "msg_00112233445566778899aabbccddeeff";
    let t = now_ms();
    let mut outcomes = Vec::new();
    for attempt in 1..=3 {
        outcomes.push(
            webhooks
                .send(
                    id,
                    message,
                    "run.failed",
                    &payload,
                    attempt,
                    t + i64::from(attempt) * 1000,
                )
                .await,
        );
    }
    assert!(
        matches!(outcomes[0], Outcome::Retry { after, .. } if after == Duration::from_millis(100))
    );
    assert!(
        matches!(outcomes[1], Outcome::Retry { after, .. } if after == Duration::from_millis(200))
    );
    assert!(matches!(outcomes[2], Outcome::GiveUp(_)));
    assert_eq!(rx.seen().len(), 3);

    let log = api
        .call("GET", &format!("/v1/webhooks/{id}/deliveries"), None)
        .await;
    assert_eq!(log.status, StatusCode::OK);
    let summary: Vec<(u64, u64, &str, Option<i64>)> = log.body["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["attempt"].as_u64().unwrap(),
                e["status"].as_u64().unwrap(),
                e["result"].as_str().unwrap(),
                e["next_retry_at"].as_i64(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (3, 503, "gave_up", None),
            (2, 503, "retrying", Some(t + 2000 + 200)),
            (1, 503, "retrying", Some(t + 1000 + 100)),
        ]
    );
    let entry = &log.body["deliveries"][0];
    assert_eq!(entry["message_id"], message);
    assert_eq!(entry["event"], "run.failed");
    assert!(entry["error"].as_str().unwrap().contains("503"));
    assert!(entry["duration_ms"].is_u64());
}
