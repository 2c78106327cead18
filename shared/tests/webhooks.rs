//! Outbound webhooks against a real local receiver (an axum server on 127.0.0.1:0) and the
//! embedded record store: the Standard Webhooks W1 vector (`docs/test-vectors.md` section 4)
//! with our signer, signatures checked by the receiver with `verify_standard`, fan-out
//! matching and determinism, and the delivery rules (2xx done, 410 disables, 3xx fails and is
//! not followed, `Retry-After`, backoff, giving up), each attempt in the delivery log.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use flowgate_shared::adapters::embedded::EmbeddedStore;
use flowgate_shared::model::Run;
use flowgate_shared::notify::webhooks::{
    AttemptResult, DEFAULT_BACKOFF, DeliveryLogEntry, NewSubscription, SUBSCRIPTIONS, Subscription,
    WebhookError, Webhooks,
};
use flowgate_shared::notify::{Delivery, Outcome};
use flowgate_shared::ports::RecordStore;
use flowgate_shared::signing::{
    SignatureError, VerifiedWebhook, WebhookSecret, sign_standard, verify_standard,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// The receiver
// ---------------------------------------------------------------------------------------------

/// What the receiver answers to one request.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    delay: Duration,
}

fn reply(status: u16) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        delay: Duration::ZERO,
    }
}

/// One request the receiver got, and whether its signature verified.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    verified: Result<VerifiedWebhook, SignatureError>,
}

impl Seen {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} header: {:?}", self.headers))
    }
}

#[derive(Default)]
struct Inner {
    secrets: Mutex<Vec<WebhookSecret>>,
    script: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
}

/// A local HTTP server that verifies each request's Standard Webhooks signature against the
/// subscription secret (with the real clock), records it, and answers from a script (200 when
/// the script is empty).
struct Receiver {
    base: String,
    inner: Arc<Inner>,
}

async fn receive(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let secrets = inner.secrets.lock().unwrap().clone();
    let verified = verify_standard(&secrets, &pairs, &body, now_secs());
    inner.seen.lock().unwrap().push(Seen {
        path: uri.path().to_string(),
        headers: pairs,
        body: body.to_vec(),
        verified,
    });
    let next = inner
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(reply(200));
    if !next.delay.is_zero() {
        tokio::time::sleep(next.delay).await;
    }
    let mut response = StatusCode::from_u16(next.status).unwrap().into_response();
    for (name, value) in next.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

impl Receiver {
    async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let app = Router::new().fallback(receive).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            base: format!("http://{addr}"),
            inner,
        }
    }

    fn url(&self) -> String {
        format!("{}/hook", self.base)
    }

    fn trust(&self, secret: &str) {
        self.inner
            .secrets
            .lock()
            .unwrap()
            .push(WebhookSecret::parse(secret).unwrap());
    }

    fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.script.lock().unwrap().extend(replies);
    }

    fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn now_secs() -> i64 {
    now_ms() / 1000
}

struct Fixture {
    webhooks: Webhooks,
    store: Arc<EmbeddedStore>,
    _dir: tempfile::TempDir,
}

/// Webhooks over a fresh embedded store, with a short retry schedule.
fn fixture(backoff: &[u64]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let webhooks = Webhooks::new(store.clone()).with_backoff(
        backoff
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect(),
    );
    Fixture {
        webhooks,
        store,
        _dir: dir,
    }
}

fn run(id: &str, workflow_id: &str) -> Run {
    serde_json::from_value(json!({
        "id": id,
        "workflow_id": workflow_id,
        "workflow_version": 1,
        "status": "running",
        "steps": {},
        "created_at": 1_700_000_000_000_i64,
        "updated_at": 1_700_000_000_000_i64,
        "version": 3,
        "audit_seq": 5,
        "completion_seq": 0,
    }))
    .unwrap()
}

fn new_sub(url: &str, events: &[&str]) -> NewSubscription {
    NewSubscription {
        url: url.to_string(),
        events: events.iter().map(|e| e.to_string()).collect(),
        ..NewSubscription::default()
    }
}

/// A subscription to `events` at the receiver, which trusts its secret.
async fn subscribe(fx: &Fixture, rx: &Receiver, events: &[&str]) -> Subscription {
    let (sub, secret) = fx
        .webhooks
        .create(new_sub(&rx.url(), events), now_ms())
        .await
        .unwrap();
    rx.trust(&secret);
    sub
}

struct Message {
    id: String,
    event: String,
    payload: Value,
}

fn message() -> Message {
    Message {
        id: "msg_0123456789abcdef0123456789abcdef".to_string(),
        event: "step.failed".to_string(),
        payload: json!({"type": "step.failed", "timestamp": "2024-01-01T00:00:00.000Z",
            "data": {"run_id": "r-1", "workflow_id": "wf", "step": "build", "error": "boom"}}),
    }
}

async fn send(fx: &Fixture, sub: &Subscription, m: &Message, attempt: u32, now: i64) -> Outcome {
    fx.webhooks
        .send(&sub.id, &m.id, &m.event, &m.payload, attempt, now)
        .await
}

async fn log(fx: &Fixture, sub: &Subscription) -> Vec<DeliveryLogEntry> {
    fx.webhooks.deliveries(&sub.id, 100).await.unwrap()
}

fn retry_after(outcome: &Outcome) -> Duration {
    match outcome {
        Outcome::Retry { after, .. } => *after,
        other => panic!("expected a retry, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Signing
// ---------------------------------------------------------------------------------------------

#[test]
fn the_w1_vector_signs_byte_exact_and_w2_dual_signs() {
    let w1 = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let w2 = WebhookSecret::parse("whsec_Zmxvd2dhdGUtcm90YXRpb24ta2V5LTAx").unwrap();
    let (id, ts, body) = (
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1_614_265_330,
        br#"{"test": 2432232314}"#,
    );
    assert_eq!(
        sign_standard(std::slice::from_ref(&w1), id, ts, body),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
    assert_eq!(
        sign_standard(&[w2, w1], id, ts, body),
        "v1,v4FFLJAFbfBg8niHJE5wa7SfUA4wGb//T/rUB2DJO6w= \
         v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

#[tokio::test]
async fn deliveries_are_signed_and_the_receiver_verifies_them() {
    let fx = fixture(&[100]);
    let rx = Receiver::start().await;
    let sub = subscribe(&fx, &rx, &["run.started"]).await;
    let at = now_ms();
    let deliveries = fx
        .webhooks
        .fan_out(
            &run("r-1", "wf"),
            "run.started",
            None,
            &json!({"inputs": {"task": "x"}}),
            at,
        )
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 1);
    let Delivery::Webhook {
        subscription_id,
        message_id,
        event,
        payload,
    } = &deliveries[0]
    else {
        panic!("not a webhook delivery: {deliveries:?}")
    };
    assert_eq!(subscription_id, &sub.id);

    let outcome = fx
        .webhooks
        .send(subscription_id, message_id, event, payload, 1, now_ms())
        .await;
    assert_eq!(outcome, Outcome::Done);

    let seen = rx.seen();
    assert_eq!(seen.len(), 1);
    let got = &seen[0];
    assert_eq!(got.path, "/hook");
    let verified = got.verified.clone().expect("the signature verifies");
    assert_eq!(&verified.id, message_id);
    assert_eq!(got.header("webhook-id"), message_id);
    assert_eq!(got.header("content-type"), "application/json");
    assert!((now_secs() - got.header("webhook-timestamp").parse::<i64>().unwrap()).abs() <= 5);
    assert!(got.header("webhook-signature").starts_with("v1,"));
    let body: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(&body, payload);
    assert_eq!(body["type"], "run.started");
    assert_eq!(body["data"]["run_id"], "r-1");
    assert_eq!(body["data"]["workflow_id"], "wf");
    assert_eq!(body["data"]["inputs"]["task"], "x");
    assert!(body["data"].get("step").is_none());

    // A receiver holding another secret refuses the same request.
    let other = WebhookSecret::generate();
    assert_eq!(
        verify_standard(&[other], &got.headers, &got.body, now_secs()).unwrap_err(),
        SignatureError::Mismatch
    );

    let entries = log(&fx, &sub).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].status, Some(200));
    assert_eq!(entries[0].result, AttemptResult::Delivered);
    assert_eq!(&entries[0].message_id, message_id);
    assert_eq!(entries[0].next_retry_at, None);
}

// ---------------------------------------------------------------------------------------------
// Fan-out
// ---------------------------------------------------------------------------------------------

fn ids(deliveries: &[Delivery]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = deliveries
        .iter()
        .map(|d| match d {
            Delivery::Webhook {
                subscription_id,
                message_id,
                ..
            } => (subscription_id.clone(), message_id.clone()),
            other => panic!("not a webhook delivery: {other:?}"),
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn fan_out_matches_events_and_the_workflow_filter_and_is_deterministic() {
    let fx = fixture(&[100]);
    let url = "https://example.com/hooks";
    let create = |events: &[&str], workflow: Option<&str>| {
        let mut new = new_sub(url, events);
        new.workflow = workflow.map(str::to_string);
        let webhooks = fx.webhooks.clone();
        async move { webhooks.create(new, 1).await.unwrap().0.id }
    };
    let started = create(&["run.started"], None).await;
    let all = create(&["*"], None).await;
    let _failed_only = create(&["step.failed"], None).await;
    let _other_workflow = create(&["run.started"], Some("other")).await;
    let this_workflow = create(&["step.completed", "run.started"], Some("wf")).await;

    let r = run("r-1", "wf");
    let data = json!({"b": 1, "a": {"y": 2, "x": [1, {"k": "v"}]}});
    let at = 1_700_000_000_123;
    let first = fx
        .webhooks
        .fan_out(&r, "run.started", None, &data, at)
        .await
        .unwrap();
    let mut subs: Vec<String> = ids(&first).into_iter().map(|(s, _)| s).collect();
    subs.sort();
    let mut expected = vec![started.clone(), all.clone(), this_workflow.clone()];
    expected.sort();
    assert_eq!(subs, expected);

    // Message ids: `msg_` + 32 hex, one per subscription, and the same again on a repeat.
    let first_ids = ids(&first);
    for (_, id) in &first_ids {
        let hex = id.strip_prefix("msg_").unwrap();
        assert_eq!(hex.len(), 32, "{id}");
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }
    let distinct: std::collections::BTreeSet<_> = first_ids.iter().map(|(_, m)| m).collect();
    assert_eq!(distinct.len(), 3);
    let again = fx
        .webhooks
        .fan_out(&r, "run.started", None, &data, at)
        .await
        .unwrap();
    assert_eq!(again, first, "a repeated fan-out is identical");

    // Freshly signed approval links do not change the ids; other data, time or run do.
    let mut with_links = data.clone();
    with_links["links"] = json!({"alice": {"approve": "https://x/approvals/link/abc"}});
    let linked = fx
        .webhooks
        .fan_out(&r, "run.started", None, &with_links, at)
        .await
        .unwrap();
    assert_eq!(ids(&linked), first_ids);
    for (other_run, other_data, other_at) in [
        (run("r-2", "wf"), data.clone(), at),
        (r.clone(), json!({"b": 2}), at),
        (r.clone(), data.clone(), at + 1),
    ] {
        let other = fx
            .webhooks
            .fan_out(&other_run, "run.started", None, &other_data, other_at)
            .await
            .unwrap();
        let other_ids = ids(&other);
        assert_eq!(other_ids.len(), 3);
        for pair in &other_ids {
            assert!(!first_ids.iter().any(|f| f.1 == pair.1), "{pair:?} reused");
        }
    }

    // The payload.
    let Delivery::Webhook { payload, event, .. } = &first[0] else {
        unreachable!()
    };
    assert_eq!(event, "run.started");
    assert_eq!(
        payload,
        &json!({
            "type": "run.started",
            "timestamp": "2023-11-14T22:13:20.123Z",
            "data": {"run_id": "r-1", "workflow_id": "wf", "b": 1,
                     "a": {"y": 2, "x": [1, {"k": "v"}]}},
        })
    );

    // A step event carries the step; only `*`, step.failed subscribers... here step.completed.
    let completed = fx
        .webhooks
        .fan_out(
            &r,
            "step.completed",
            Some("build"),
            &json!({"attempt": 1}),
            at,
        )
        .await
        .unwrap();
    let mut subs: Vec<String> = ids(&completed).into_iter().map(|(s, _)| s).collect();
    subs.sort();
    let mut expected = vec![all.clone(), this_workflow.clone()];
    expected.sort();
    assert_eq!(subs, expected);
    let Delivery::Webhook { payload, .. } = &completed[0] else {
        unreachable!()
    };
    assert_eq!(payload["data"]["step"], "build");
    assert_eq!(payload["data"]["attempt"], 1);

    // An event nobody wants.
    let none = fx
        .webhooks
        .fan_out(
            &run("r-3", "other-wf"),
            "run.cancelled",
            None,
            &Value::Null,
            at,
        )
        .await
        .unwrap();
    assert_eq!(ids(&none).len(), 1, "only the `*` subscription");
}

// ---------------------------------------------------------------------------------------------
// Retries, backoff and the log
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_failing_receiver_gets_retries_with_backoff_and_the_log_shows_them() {
    let fx = fixture(&[100, 200, 300]);
    let rx = Receiver::start().await;
    let sub = subscribe(&fx, &rx, &["step.failed"]).await;
    rx.script([reply(500), reply(500), reply(200)]);
    let m = message();

    // Each attempt is made when the previous one said to retry (a virtual clock, so the
    // timestamps differ by whole seconds; all stay within the receiver's replay window).
    let t1 = now_ms();
    let first = send(&fx, &sub, &m, 1, t1).await;
    assert_eq!(retry_after(&first), Duration::from_millis(100));
    let t2 = t1 + 5_000;
    let second = send(&fx, &sub, &m, 2, t2).await;
    assert_eq!(retry_after(&second), Duration::from_millis(200));
    let t3 = t2 + 5_000;
    let third = send(&fx, &sub, &m, 3, t3).await;
    assert_eq!(third, Outcome::Done);

    let seen = rx.seen();
    assert_eq!(seen.len(), 3);
    for got in &seen {
        got.verified.clone().expect("every attempt verifies");
        assert_eq!(
            got.header("webhook-id"),
            m.id,
            "the same id on every attempt"
        );
        assert_eq!(
            got.body,
            serde_json::to_vec(&m.payload).unwrap(),
            "the same body"
        );
    }
    let stamps: Vec<i64> = seen
        .iter()
        .map(|s| s.header("webhook-timestamp").parse().unwrap())
        .collect();
    assert_eq!(
        stamps,
        vec![t1 / 1000, t2 / 1000, t3 / 1000],
        "a timestamp per attempt"
    );
    assert_ne!(
        seen[0].header("webhook-signature"),
        seen[1].header("webhook-signature")
    );

    let entries = log(&fx, &sub).await;
    let summary: Vec<_> = entries
        .iter()
        .map(|e| (e.attempt, e.status, e.result, e.at, e.next_retry_at))
        .collect();
    assert_eq!(
        summary,
        vec![
            (3, Some(200), AttemptResult::Delivered, t3, None),
            (2, Some(500), AttemptResult::Retrying, t2, Some(t2 + 200)),
            (1, Some(500), AttemptResult::Retrying, t1, Some(t1 + 100)),
        ],
        "newest first"
    );
    assert!(
        entries
            .iter()
            .all(|e| e.message_id == m.id && e.event == "step.failed")
    );
    assert!(entries[1].error.as_deref().unwrap().contains("500"));
    assert_eq!(
        fx.webhooks.deliveries(&sub.id, 1).await.unwrap(),
        entries[..1]
    );
}

#[tokio::test]
async fn an_exhausted_schedule_gives_up() {
    let fx = fixture(&[10]);
    let rx = Receiver::start().await;
    let sub = subscribe(&fx, &rx, &["*"]).await;
    rx.script([reply(503), reply(500)]);
    let m = message();
    let t = now_ms();
    assert_eq!(
        retry_after(&send(&fx, &sub, &m, 1, t).await),
        Duration::from_millis(10)
    );
    let last = send(&fx, &sub, &m, 2, t + 1_000).await;
    let Outcome::GiveUp(why) = last else {
        panic!("expected to give up, got {last:?}")
    };
    assert!(why.contains("500") && why.contains("2 attempt"), "{why}");
    let entries = log(&fx, &sub).await;
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].result, AttemptResult::GaveUp);
    assert_eq!(entries[0].next_retry_at, None);
    assert_eq!(entries[1].result, AttemptResult::Retrying);
    // The subscription stays enabled: the next event is tried again.
    assert!(fx.webhooks.get(&sub.id).await.unwrap().unwrap().enabled);
}

#[test]
fn the_default_schedule_is_the_spec_example_after_the_immediate_attempt() {
    let secs: Vec<u64> = DEFAULT_BACKOFF.iter().map(Duration::as_secs).collect();
    let (m, h) = (60, 3600);
    assert_eq!(
        secs,
        vec![
            5,
            5 * m,
            30 * m,
            2 * h,
            5 * h,
            10 * h,
            14 * h,
            20 * h,
            24 * h
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    assert_eq!(Webhooks::new(store).backoff(), DEFAULT_BACKOFF.as_slice());
}

#[tokio::test]
async fn retry_after_is_honoured_on_throttling_when_longer() {
    let fx = fixture(&[100, 100, 100, 100, 100]);
    let rx = Receiver::start().await;
    let sub = subscribe(&fx, &rx, &["*"]).await;
    let with_retry_after = |status: u16, secs: &str| Reply {
        headers: vec![("retry-after", secs.to_string())],
        ..reply(status)
    };
    rx.script([
        with_retry_after(429, "7"),
        with_retry_after(503, "0"),
        with_retry_after(500, "7"),
        with_retry_after(502, "soon"),
        with_retry_after(504, "99999999"),
    ]);
    let m = message();
    let t = now_ms();
    let afters = [
        retry_after(&send(&fx, &sub, &m, 1, t).await),
        retry_after(&send(&fx, &sub, &m, 2, t + 1_000).await),
        retry_after(&send(&fx, &sub, &m, 3, t + 2_000).await),
        retry_after(&send(&fx, &sub, &m, 4, t + 3_000).await),
        retry_after(&send(&fx, &sub, &m, 5, t + 4_000).await),
    ];
    assert_eq!(
        afters,
        [
            Duration::from_secs(7),         // 429: the receiver's longer wait
            Duration::from_millis(100),     // shorter than the schedule: the schedule
            Duration::from_millis(100),     // 500 is not throttling
            Duration::from_millis(100),     // not a number of seconds
            Duration::from_secs(24 * 3600), // capped at a day
        ]
    );
    let entries = log(&fx, &sub).await;
    assert_eq!(entries[4].next_retry_at, Some(t + 7_000));
}

// ---------------------------------------------------------------------------------------------
// 410, 3xx, transport failures, gone subscriptions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn gone_disables_the_subscription() {
    let fx = fixture(&[100]);
    let rx = Receiver::start().await;
    let sub = subscribe(&fx, &rx, &["step.failed"]).await;
    rx.script([reply(410)]);
    let m = message();
    assert_eq!(send(&fx, &sub, &m, 1, now_ms()).await, Outcome::Done);

    let after = fx.webhooks.get(&sub.id).await.unwrap().unwrap();
    assert!(!after.enabled);
    assert!(after.disabled_reason.as_deref().unwrap().contains("410"));
    let entries = log(&fx, &sub).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].status, Some(410));
    assert_eq!(entries[0].result, AttemptResult::Disabled);

    // No more deliveries: none fanned out, and one already queued is dropped unsent.
    let none = fx
        .webhooks
        .fan_out(
            &run("r-1", "wf"),
            "step.failed",
            Some("a"),
            &json!({}),
            now_ms(),
        )
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(send(&fx, &sub, &m, 2, now_ms()).await, Outcome::Done);
    assert_eq!(rx.seen().len(), 1);
}

#[tokio::test]
async fn a_redirect_is_a_failure_and_is_not_followed() {
    let fx = fixture(&[100]);
    let rx = Receiver::start().await;
    let sub = subscribe(&fx, &rx, &["*"]).await;
    for status in [301, 302, 307, 308] {
        rx.script([Reply {
            headers: vec![("location", format!("{}/elsewhere", rx.base))],
            ..reply(status)
        }]);
    }
    let m = message();
    for (i, status) in [301, 302, 307, 308].into_iter().enumerate() {
        let outcome = send(&fx, &sub, &m, 1, now_ms() + i as i64).await;
        let Outcome::Retry { error, .. } = &outcome else {
            panic!("{status}: expected a retry, got {outcome:?}")
        };
        assert!(error.contains(&status.to_string()), "{error}");
    }
    let seen = rx.seen();
    assert_eq!(seen.len(), 4);
    assert!(seen.iter().all(|s| s.path == "/hook"), "never followed");
    let statuses: Vec<Option<u16>> = log(&fx, &sub).await.iter().map(|e| e.status).collect();
    assert_eq!(statuses, vec![Some(308), Some(307), Some(302), Some(301)]);
}

#[tokio::test]
async fn an_unreachable_or_slow_receiver_is_retried() {
    // Nothing listens on a port that was just released.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let fx = fixture(&[100]);
    let (sub, _) = fx
        .webhooks
        .create(new_sub(&format!("http://127.0.0.1:{port}/hook"), &["*"]), 1)
        .await
        .unwrap();
    let m = message();
    let outcome = send(&fx, &sub, &m, 1, now_ms()).await;
    let Outcome::Retry { after, error } = &outcome else {
        panic!("expected a retry, got {outcome:?}")
    };
    assert_eq!(*after, Duration::from_millis(100));
    assert!(error.contains("connect"), "{error}");
    let entries = log(&fx, &sub).await;
    assert_eq!(entries[0].status, None);
    assert!(entries[0].error.as_deref().unwrap().contains("connect"));

    // A replaced client with a short timeout: a receiver slower than it is a failed attempt.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let fx = Fixture {
        webhooks: fx.webhooks.clone().with_http(client),
        ..fx
    };
    let rx = Receiver::start().await;
    let slow = subscribe(&fx, &rx, &["*"]).await;
    rx.script([Reply {
        delay: Duration::from_secs(2),
        ..reply(200)
    }]);
    let outcome = send(&fx, &slow, &m, 1, now_ms()).await;
    let Outcome::Retry { error, .. } = &outcome else {
        panic!("expected a retry, got {outcome:?}")
    };
    assert!(error.contains("in time"), "{error}");
}

#[tokio::test]
async fn a_deleted_subscription_gets_nothing() {
    let fx = fixture(&[100]);
    let rx = Receiver::start().await;
    let sub = subscribe(&fx, &rx, &["*"]).await;
    assert!(fx.webhooks.delete(&sub.id).await.unwrap());
    assert!(!fx.webhooks.delete(&sub.id).await.unwrap());
    assert_eq!(
        send(&fx, &sub, &message(), 1, now_ms()).await,
        Outcome::Done
    );
    assert!(rx.seen().is_empty());
    assert!(fx.webhooks.get(&sub.id).await.unwrap().is_none());
    assert!(fx.webhooks.list().await.unwrap().is_empty());
    // Ids that are not ours never reach the store.
    for id in [
        "",
        "wh_",
        "wh_#",
        "nope",
        &format!("{}0", sub.id),
        &sub.id.to_uppercase(),
    ] {
        assert!(fx.webhooks.get(id).await.unwrap().is_none(), "{id}");
        assert!(!fx.webhooks.delete(id).await.unwrap(), "{id}");
        assert!(
            fx.webhooks.deliveries(id, 10).await.unwrap().is_empty(),
            "{id}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Subscription management
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_validates_its_input_and_names_the_field() {
    let fx = fixture(&[100]);
    let ok = "https://example.com/hooks";
    let cases: Vec<(NewSubscription, &str)> = vec![
        (new_sub("", &["*"]), "url"),
        (new_sub("example.com/hooks", &["*"]), "url"),
        (new_sub("/hooks", &["*"]), "url"),
        (new_sub("ftp://example.com/hooks", &["*"]), "url"),
        (new_sub("file:///etc/passwd", &["*"]), "url"),
        (new_sub("javascript:alert(1)", &["*"]), "url"),
        (new_sub(ok, &[]), "events"),
        (new_sub(ok, &["run.started", "run.exploded"]), "events[1]"),
        (new_sub(ok, &["RUN.STARTED"]), "events[0]"),
        (
            NewSubscription {
                secret: Some("not-a-secret".into()),
                ..new_sub(ok, &["*"])
            },
            "secret",
        ),
        (
            NewSubscription {
                secret: Some("whsec_c2hvcnQ=".into()),
                ..new_sub(ok, &["*"])
            },
            "secret",
        ),
        (
            NewSubscription {
                description: Some("x".repeat(1001)),
                ..new_sub(ok, &["*"])
            },
            "description",
        ),
        (
            NewSubscription {
                workflow: Some("a\nb".into()),
                ..new_sub(ok, &["*"])
            },
            "workflow",
        ),
    ];
    for (new, field) in cases {
        let label = format!("{new:?}");
        let err = fx.webhooks.create(new, 1).await.unwrap_err();
        assert_eq!(err.field().as_deref(), Some(field), "{label}: {err}");
        assert!(!matches!(err, WebhookError::Store(_)));
    }
    assert!(
        fx.webhooks.list().await.unwrap().is_empty(),
        "nothing stored"
    );
}

#[tokio::test]
async fn the_secret_is_stored_for_signing_but_never_shown_again() {
    let fx = fixture(&[100]);
    let given = WebhookSecret::generate().expose();
    let (sub, secret) = fx
        .webhooks
        .create(
            NewSubscription {
                url: " https://Example.com:443/hooks?a=1 ".into(),
                events: vec![
                    "run.failed".into(),
                    "run.completed".into(),
                    "run.failed".into(),
                ],
                secret: Some(format!("{given}\n")),
                description: Some("  CI  ".into()),
                workflow: Some("wf".into()),
            },
            42,
        )
        .await
        .unwrap();
    assert_eq!(secret, given);
    assert!(
        sub.id.starts_with("wh_") && sub.id.len() == 35,
        "{}",
        sub.id
    );
    assert_eq!(sub.url, "https://example.com/hooks?a=1");
    assert_eq!(sub.events, vec!["run.failed", "run.completed"]);
    assert_eq!(sub.description.as_deref(), Some("CI"));
    assert_eq!(sub.workflow.as_deref(), Some("wf"));
    assert!(sub.enabled);
    assert_eq!(sub.created_at, 42);

    let view = serde_json::to_value(&sub).unwrap();
    assert!(view.get("secret").is_none());
    assert!(!view.to_string().contains("whsec_"));
    let read = fx.webhooks.get(&sub.id).await.unwrap().unwrap();
    assert_eq!(read, sub);
    assert_eq!(fx.webhooks.list().await.unwrap(), vec![sub.clone()]);
    let stored = fx
        .store
        .get_record(SUBSCRIPTIONS, &sub.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored["secret"], given.as_str());

    // A generated secret is a valid Standard Webhooks secret.
    let (_, generated) = fx
        .webhooks
        .create(new_sub("http://localhost:8080/x", &["*"]), 43)
        .await
        .unwrap();
    assert_eq!(WebhookSecret::parse(&generated).unwrap().key_len(), 32);
    let listed = fx.webhooks.list().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, sub.id, "oldest first");
}
