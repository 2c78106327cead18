//! Approvals over HTTP: Slack interactivity (signature checks, button clicks, the reason and
//! feedback modal), the Slack Web API calls that follow (checked on a wiremock server), decisions
//! through the API (API key or Standard Webhooks signature), one-time approval links, and
//! `GET /v1/approvals`. Every run is real: stored workflow, embedded store, in-memory queue, the
//! agent simulator, and an executor with the notifier, so deliveries go out when the queue is
//! pumped.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use flowgate_api::ApprovalSettings;
use flowgate_shared::model::{ApprovalState, ApprovalStatus, Run, RunStatus, StepStatus};
use flowgate_shared::notify::config::NotifyConfig;
use flowgate_shared::ports::RunStore;
use flowgate_shared::runtime::{Clock, ManualClock};
use flowgate_shared::signing::{self, LinkClaims, WebhookSecret};
use flowgate_shared::slack::blocks::{self, ApprovalRequest};
use serde_json::{Value, json};
use support::{Answer, PRINCIPAL, RawAnswer, TestApi, TestOptions};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};

// ----- test vectors (shared/docs/test-vectors.md, S1 and S2) ------------------------------------

const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const DOC_TS: i64 = 1_531_420_618;
const S1_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const S1_SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
const S2_JSON: &str = r#"{"type":"block_actions","user":{"id":"U2CERLKJA","username":"roadrunner","team_id":"T1DC2JH3J"},"api_app_id":"A0FLOWGATE","team":{"id":"T1DC2JH3J","domain":"testteamnow"},"container":{"type":"message","message_ts":"1531420600.000100","channel_id":"G8PSS9T3V","is_ephemeral":false},"trigger_id":"398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c","channel":{"id":"G8PSS9T3V","name":"foobar"},"response_url":"https://hooks.slack.com/actions/T1DC2JH3J/397700885554/96rGlfmibIGlgcZRskXaIFfN","actions":[{"type":"button","action_id":"approve","block_id":"approval-run0001-step4","value":"approve","action_ts":"1531420618.123456"}]}"#;
const S2_BODY: &str = "payload=%7B%22type%22%3A%22block_actions%22%2C%22user%22%3A%7B%22id%22%3A%22U2CERLKJA%22%2C%22username%22%3A%22roadrunner%22%2C%22team_id%22%3A%22T1DC2JH3J%22%7D%2C%22api_app_id%22%3A%22A0FLOWGATE%22%2C%22team%22%3A%7B%22id%22%3A%22T1DC2JH3J%22%2C%22domain%22%3A%22testteamnow%22%7D%2C%22container%22%3A%7B%22type%22%3A%22message%22%2C%22message_ts%22%3A%221531420600.000100%22%2C%22channel_id%22%3A%22G8PSS9T3V%22%2C%22is_ephemeral%22%3Afalse%7D%2C%22trigger_id%22%3A%22398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c%22%2C%22channel%22%3A%7B%22id%22%3A%22G8PSS9T3V%22%2C%22name%22%3A%22foobar%22%7D%2C%22response_url%22%3A%22https%3A%2F%2Fhooks.slack.com%2Factions%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN%22%2C%22actions%22%3A%5B%7B%22type%22%3A%22button%22%2C%22action_id%22%3A%22approve%22%2C%22block_id%22%3A%22approval-run0001-step4%22%2C%22value%22%3A%22approve%22%2C%22action_ts%22%3A%221531420618.123456%22%7D%5D%7D";
const S2_SIGNATURE: &str = "v0=377e8a7d08fe3e8f26a72bcd59e99924bb9d28ca45af6f019d6e6274d8334bc6";
const S2_TRIGGER_ID: &str = "398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
/// W1's secret (Standard Webhooks reference library).
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// W2's secret: a key the server does not hold.
const OTHER_WEBHOOK_SECRET: &str = "whsec_Zmxvd2dhdGUtcm90YXRpb24ta2V5LTAx";

// ----- the installation under test -------------------------------------------------------------

const APPROVER: &str = "U0APPROVER";
const STRANGER: &str = "U0STRANGER";
/// The channel id the Slack mock resolves `#flowgate` to.
const CHANNEL_ID: &str = "C0FLOWGATE";
const BOT_TOKEN: &str = "xoxb-test-token";
const BOB: &str = "bob";
const BOB_KEY: &str = "test-key-bob";
const MALLORY_KEY: &str = "test-key-mallory";
const WEBHOOK_PRINCIPAL: &str = "webhook:ci";
const EMAIL_APPROVER: &str = "email:bob@example.com";
const LINK_KEY: &str = "an-approval-link-key-of-at-least-32-chars";
const PUBLIC_URL: &str = "https://flowgate.example.com";

/// architect → review (approval) → implement. `alice` (the test key's principal) starts the
/// runs and is listed, so she can be refused for approving her own run; `bob` is the API
/// approver; the webhook principal and an email approver decide by signature and by link.
const REVIEWED: &str = r##"
id: reviewed
inputs:
  task: {type: string, required: true}
steps:
  - id: architect
    kind: agent
    workflow: architect
    message: "Design: ${{ inputs.task }}"
  - id: review
    kind: approval
    depends_on: [architect]
    message: "Approve the design for ${{ inputs.task }}?"
    approvers: [U0APPROVER, alice, bob, "webhook:ci", "email:bob@example.com"]
    required: 1
    slack_channel: "#flowgate"
  - id: implement
    kind: agent
    workflow: implement
    depends_on: [review]
    message: "Build: ${{ inputs.task }}"
"##;

fn expiring_workflow() -> String {
    REVIEWED.replace(
        "    required: 1\n",
        "    required: 1\n    expires_in: 1s\n    on_expiry: reject\n",
    )
}

fn now_secs() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

// ----- the Slack Web API on wiremock -----------------------------------------------------------

/// Answers Slack Web API calls: `chat.postMessage` gets a fresh `ts` (1700000000.000001, …002, …
/// in call order) in [`CHANNEL_ID`]; everything else `{"ok": true}`.
#[derive(Default)]
struct SlackApi {
    posted: AtomicU64,
}

impl Respond for SlackApi {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        if request.url.path().ends_with("/chat.postMessage") {
            let n = self.posted.fetch_add(1, Ordering::SeqCst) + 1;
            return ResponseTemplate::new(200).set_body_json(json!({
                "ok": true,
                "channel": CHANNEL_ID,
                "ts": format!("1700000000.{n:06}"),
                "message": {},
            }));
        }
        ResponseTemplate::new(200).set_body_json(json!({"ok": true}))
    }
}

/// One call wiremock received: the Web API method, the JSON body, the Authorization header.
#[derive(Debug, Clone)]
struct SlackCall {
    method: String,
    body: Value,
    auth: String,
}

async fn slack_calls(server: &MockServer) -> Vec<SlackCall> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|r| SlackCall {
            method: r.url.path().rsplit('/').next().unwrap().to_string(),
            body: serde_json::from_slice(&r.body).unwrap_or(Value::Null),
            auth: r
                .headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default(),
        })
        .collect()
}

/// The `ts` the mock gave each posted message, in order.
fn posted_ts(calls: &[SlackCall]) -> Vec<(String, &SlackCall)> {
    calls
        .iter()
        .filter(|c| c.method == "chat.postMessage")
        .enumerate()
        .map(|(i, c)| (format!("1700000000.{:06}", i + 1), c))
        .collect()
}

/// The approval message posted for `approval_id` (a threaded post with its actions block), and
/// the `ts` it got.
fn approval_message<'a>(
    calls: &'a [SlackCall],
    approval_id: &str,
) -> Option<(String, &'a SlackCall)> {
    let block_id = format!("approval:{approval_id}");
    posted_ts(calls).into_iter().find(|(_, c)| {
        c.body["blocks"]
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["block_id"] == block_id.as_str()))
    })
}

fn updates_of<'a>(calls: &'a [SlackCall], ts: &str) -> Vec<&'a SlackCall> {
    calls
        .iter()
        .filter(|c| c.method == "chat.update" && c.body["ts"] == ts)
        .collect()
}

fn calls_named<'a>(calls: &'a [SlackCall], name: &str) -> Vec<&'a SlackCall> {
    calls.iter().filter(|c| c.method == name).collect()
}

/// Pump the queue until the Slack calls satisfy `done`.
async fn pump_until_slack(
    api: &TestApi,
    slack: &MockServer,
    what: &str,
    done: impl Fn(&[SlackCall]) -> bool,
) -> Vec<SlackCall> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let calls = slack_calls(slack).await;
        if done(&calls) {
            return calls;
        }
        assert!(
            Instant::now() < deadline,
            "Slack never saw {what}; calls so far: {calls:#?}"
        );
        api.pump_due(Duration::from_millis(50)).await;
    }
}

// ----- fixtures --------------------------------------------------------------------------------

fn options(slack: &MockServer) -> TestOptions {
    TestOptions {
        notify: NotifyConfig {
            slack_token: Some(BOT_TOKEN.to_string()),
            slack_channel: Some("#general".to_string()),
            slack_api_url: Some(format!("{}/api/", slack.uri())),
            public_url: Some(PUBLIC_URL.to_string()),
            link_key: Some(LINK_KEY.to_string()),
        },
        approvals: ApprovalSettings {
            slack_signing_secret: Some(SIGNING_SECRET.as_bytes().to_vec()),
            webhook_secrets: vec![WebhookSecret::parse(WEBHOOK_SECRET).unwrap()],
            webhook_principal: WEBHOOK_PRINCIPAL.to_string(),
        },
        extra_keys: vec![
            (BOB.to_string(), BOB_KEY.to_string()),
            ("mallory".to_string(), MALLORY_KEY.to_string()),
        ],
        ..TestOptions::default()
    }
}

/// An API with a run of `yaml` (started with the test key, so by `alice`) waiting at `review`.
struct Fixture {
    api: TestApi,
    slack: MockServer,
    run_id: String,
    approval_id: String,
}

async fn slack_server() -> MockServer {
    let slack = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(SlackApi::default())
        .mount(&slack)
        .await;
    slack
}

async fn pending(yaml: &str, api_clock: Option<Arc<dyn Clock>>) -> Fixture {
    let slack = slack_server().await;
    let api = TestApi::start_with(TestOptions {
        api_clock,
        ..options(&slack)
    })
    .await;
    let put = api.put_yaml("reviewed", yaml).await;
    assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);
    let started = api
        .call(
            "POST",
            "/v1/runs",
            Some(json!({"workflow": "reviewed", "inputs": {"task": "a parser"}})),
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{:?}", started.body);
    let run_id = started.body["run_id"].as_str().unwrap().to_string();
    let run = api
        .pump_until(&run_id, Duration::from_secs(20), |r| {
            review(r).is_some_and(|a| a.status == ApprovalStatus::Pending)
        })
        .await;
    assert_eq!(run.started_by.as_deref(), Some(PRINCIPAL));
    assert_eq!(run.steps["architect"].status, StepStatus::Succeeded);
    let approval_id = review(&run).unwrap().id.clone();
    Fixture {
        api,
        slack,
        run_id,
        approval_id,
    }
}

fn review(run: &Run) -> Option<&ApprovalState> {
    run.steps.get("review").and_then(|s| s.approval.as_ref())
}

impl Fixture {
    async fn run(&self) -> Run {
        self.api.store.get_run(&self.run_id).await.unwrap().unwrap()
    }

    async fn approval(&self) -> ApprovalState {
        let run = self.run().await;
        run.approval(&self.approval_id).unwrap().1.clone()
    }

    /// The run and its audit trail: what a refused request must not change.
    async fn run_state(&self) -> String {
        let run = self.run().await;
        let audit = self
            .api
            .store
            .audit(&self.run_id, None, 1000)
            .await
            .unwrap();
        format!("{run:?}\n{audit:?}")
    }

    /// Pump deliveries until the approval message is in Slack; its `ts`.
    async fn approval_posted(&self) -> String {
        let id = self.approval_id.clone();
        let calls = pump_until_slack(&self.api, &self.slack, "the approval message", |c| {
            approval_message(c, &id).is_some()
        })
        .await;
        approval_message(&calls, &self.approval_id).unwrap().0
    }

    /// What the approval message shows, as the notifier renders it for the run as stored now.
    async fn request_view(&self) -> ApprovalRequest {
        let run = self.run().await;
        let def = self.api.executor.definition(&run).await.unwrap();
        let approval = run.approval(&self.approval_id).unwrap().1;
        ApprovalRequest {
            run_id: run.id.clone(),
            workflow: def.display_name().to_string(),
            step: "review".to_string(),
            approval_id: approval.id.clone(),
            message: approval.message.clone(),
            approvers: approval.approvers.clone(),
            required: approval.required,
            expires_at: approval.expires_at,
            run_url: Some(format!("{PUBLIC_URL}/v1/runs/{}", run.id)),
            reminder: false,
        }
    }
}

// ----- Slack requests --------------------------------------------------------------------------

/// A click payload shaped exactly like S2, on `approval_id`'s `action` button, by `user`, on the
/// message at `message_ts` in [`CHANNEL_ID`].
fn click(user: &str, approval_id: &str, action: &str, message_ts: &str) -> String {
    let payload = S2_JSON
        .replace("\"id\":\"U2CERLKJA\"", &format!("\"id\":\"{user}\""))
        .replace("G8PSS9T3V", CHANNEL_ID)
        .replace("1531420600.000100", message_ts)
        .replace(
            "\"action_id\":\"approve\",\"block_id\":\"approval-run0001-step4\",\"value\":\"approve\"",
            &format!(
                "\"action_id\":\"{action}\",\"block_id\":\"approval:{approval_id}\",\"value\":\"{action}\""
            ),
        );
    let parsed: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(
        parsed["actions"][0]["block_id"],
        format!("approval:{approval_id}")
    );
    assert_eq!(parsed["user"]["id"], user);
    form(&payload)
}

/// A `view_submission` of the decision modal: `private_metadata` as the modal was opened with,
/// `comment` typed into its input.
fn submission(user: &str, private_metadata: &str, comment: &str) -> String {
    let payload = json!({
        "type": "view_submission",
        "team": {"id": "T1DC2JH3J", "domain": "testteamnow"},
        "user": {"id": user, "username": "approver", "team_id": "T1DC2JH3J"},
        "api_app_id": "A0FLOWGATE",
        "trigger_id": "398738663015.47445629121.0000000000000000000000000000000f",
        "view": {
            "id": "V0MODAL",
            "type": "modal",
            "callback_id": "approval_decision",
            "private_metadata": private_metadata,
            "state": {"values": {"comment": {"comment": {"type": "plain_text_input", "value": comment}}}},
        },
    });
    form(&payload.to_string())
}

/// `payload=` + the JSON, every reserved character percent-encoded.
fn form(payload: &str) -> String {
    serde_urlencoded::to_string([("payload", payload)]).unwrap()
}

fn slack_request(body: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut req = Request::post("/slack/interactions")
        .header("content-type", "application/x-www-form-urlencoded");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Body::from(body.to_string())).unwrap()
}

/// `body` signed with `secret` at `ts`, as Slack sends it.
fn signed_with(secret: &str, ts: i64, body: &str) -> Request<Body> {
    let signature = signing::sign_slack(secret.as_bytes(), ts, body.as_bytes());
    slack_request(
        body,
        &[
            ("x-slack-request-timestamp", &ts.to_string()),
            ("x-slack-signature", &signature),
        ],
    )
}

fn signed(body: &str) -> Request<Body> {
    signed_with(SIGNING_SECRET, now_secs(), body)
}

/// A 401 in the API's one error shape, with `code`.
fn assert_refused(answer: &Answer, code: &str, case: &str) {
    assert_eq!(
        answer.status,
        StatusCode::UNAUTHORIZED,
        "{case}: {:?}",
        answer.body
    );
    let top: Vec<&String> = answer.body.as_object().unwrap().keys().collect();
    assert_eq!(top, ["error"], "{case}: {:?}", answer.body);
    let error = answer.body["error"].as_object().unwrap();
    let mut keys: Vec<&String> = error.keys().collect();
    keys.sort();
    assert_eq!(keys, ["code", "message"], "{case}: {:?}", answer.body);
    assert_eq!(answer.code(), code, "{case}: {:?}", answer.body);
    assert!(
        !error["message"].as_str().unwrap().is_empty(),
        "{case}: {:?}",
        answer.body
    );
}

// ----- 1. Slack signatures ---------------------------------------------------------------------

#[tokio::test]
async fn slack_signatures_are_checked_before_anything_is_written() {
    let clock = Arc::new(ManualClock::starting_now());
    let f = pending(REVIEWED, Some(clock.clone())).await;
    let api = &f.api;
    let message_ts = f.approval_posted().await;
    let before = api.snapshot().await;

    // The doc's vectors, byte for byte, with the API's clock pinned to their timestamp.
    assert_eq!(
        signing::sign_slack(SIGNING_SECRET.as_bytes(), DOC_TS, S1_BODY.as_bytes()),
        S1_SIGNATURE
    );
    assert_eq!(
        signing::sign_slack(SIGNING_SECRET.as_bytes(), DOC_TS, S2_BODY.as_bytes()),
        S2_SIGNATURE
    );
    assert_eq!(form(S2_JSON), S2_BODY);
    let doc = |body: &str, signature: &str, ts: &str| {
        slack_request(
            body,
            &[
                ("x-slack-request-timestamp", ts),
                ("x-slack-signature", signature),
            ],
        )
    };
    let ts = DOC_TS.to_string();
    for skew in [0, 300, -300] {
        clock.set((DOC_TS + skew) * 1000);
        // S2 verifies; its block id is not an approval's, so the click is acknowledged and ignored.
        let s2 = api.send(doc(S2_BODY, S2_SIGNATURE, &ts)).await;
        assert_eq!(
            s2.status,
            StatusCode::OK,
            "S2 at now-ts={skew}: {:?}",
            s2.body
        );
        // S1 verifies too; a slash command is not an interaction payload, so it gets a 400
        // after the signature check, not a 401.
        let s1 = api.send(doc(S1_BODY, S1_SIGNATURE, &ts)).await;
        assert_eq!(
            s1.status,
            StatusCode::BAD_REQUEST,
            "S1 at {skew}: {:?}",
            s1.body
        );
        assert_eq!(s1.code(), "missing_payload");
    }
    for skew in [301, -301] {
        clock.set((DOC_TS + skew) * 1000);
        let s2 = api.send(doc(S2_BODY, S2_SIGNATURE, &ts)).await;
        assert_refused(&s2, "stale_timestamp", &format!("S2 at now-ts={skew}"));
        let s1 = api.send(doc(S1_BODY, S1_SIGNATURE, &ts)).await;
        assert_refused(&s1, "stale_timestamp", &format!("S1 at now-ts={skew}"));
    }
    clock.set(DOC_TS * 1000);
    let tampered_s1 = S1_BODY.replace("&text=&", "&text=x&");
    let answer = api.send(doc(&tampered_s1, S1_SIGNATURE, &ts)).await;
    assert_refused(&answer, "signature_mismatch", "S1 with text=x");
    let answer = api.send(doc(S1_BODY, S1_SIGNATURE, "1531420619")).await;
    assert_refused(
        &answer,
        "signature_mismatch",
        "S1 with timestamp 1531420619",
    );
    let over_decoded = signing::sign_slack(SIGNING_SECRET.as_bytes(), DOC_TS, S2_JSON.as_bytes());
    let answer = api.send(doc(S2_BODY, &over_decoded, &ts)).await;
    assert_refused(
        &answer,
        "signature_mismatch",
        "S2 signed over the decoded JSON",
    );

    // A real approve click for the pending approval, refused every way it can be.
    let now = now_secs();
    clock.set(now * 1000);
    let body = click(APPROVER, &f.approval_id, "approve", &message_ts);
    let good = signing::sign_slack(SIGNING_SECRET.as_bytes(), now, body.as_bytes());
    let now_text = now.to_string();
    let tampered = body.replace("U0APPROVER", "U0APPROVEX");
    let cases: Vec<(&str, Request<Body>, &str)> = vec![
        (
            "tampered body",
            slack_request(
                &tampered,
                &[
                    ("x-slack-request-timestamp", &now_text),
                    ("x-slack-signature", &good),
                ],
            ),
            "signature_mismatch",
        ),
        (
            "wrong secret",
            signed_with("not-the-signing-secret", now, &body),
            "signature_mismatch",
        ),
        (
            "stale (now - 301)",
            signed_with(SIGNING_SECRET, now - 301, &body),
            "stale_timestamp",
        ),
        (
            "future (now + 301)",
            signed_with(SIGNING_SECRET, now + 301, &body),
            "stale_timestamp",
        ),
        (
            "no signature header",
            slack_request(&body, &[("x-slack-request-timestamp", &now_text)]),
            "missing_header",
        ),
        (
            "no timestamp header",
            slack_request(&body, &[("x-slack-signature", &good)]),
            "missing_header",
        ),
        (
            "signature header twice",
            slack_request(
                &body,
                &[
                    ("x-slack-request-timestamp", &now_text),
                    ("x-slack-signature", &good),
                    ("x-slack-signature", &good),
                ],
            ),
            "duplicate_header",
        ),
        (
            "timestamp header twice",
            slack_request(
                &body,
                &[
                    ("x-slack-request-timestamp", &now_text),
                    ("x-slack-request-timestamp", &now_text),
                    ("x-slack-signature", &good),
                ],
            ),
            "duplicate_header",
        ),
        (
            "no v0= prefix",
            slack_request(
                &body,
                &[
                    ("x-slack-request-timestamp", &now_text),
                    ("x-slack-signature", good.strip_prefix("v0=").unwrap()),
                ],
            ),
            "malformed_signature",
        ),
        (
            "timestamp not an integer",
            slack_request(
                &body,
                &[
                    ("x-slack-request-timestamp", &format!("{now}.5")),
                    ("x-slack-signature", &good),
                ],
            ),
            "bad_timestamp",
        ),
    ];
    for (case, request, code) in cases {
        let answer = api.send(request).await;
        assert_refused(&answer, code, case);
    }
    assert_eq!(
        api.snapshot().await,
        before,
        "a refused request wrote something"
    );
    assert!(
        calls_named(&slack_calls(&f.slack).await, "chat.postEphemeral").is_empty(),
        "a refused request was answered in Slack"
    );

    // Exactly at the edges of the window the same click is accepted and decides.
    clock.set((now + 300) * 1000);
    let answer = api.send(signed_with(SIGNING_SECRET, now, &body)).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(f.approval().await.status, ApprovalStatus::Approved);
}

#[tokio::test]
async fn slack_interactions_are_refused_when_no_signing_secret_is_configured() {
    let api = TestApi::start().await;
    let before = api.snapshot().await;
    let answer = api.send(signed(S2_BODY)).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        answer.body
    );
    assert_eq!(answer.code(), "slack_not_configured");
    assert_eq!(api.snapshot().await, before);
}

// ----- 2. an approve click ---------------------------------------------------------------------

#[tokio::test]
async fn an_approve_click_decides_at_once_and_slack_is_updated_from_the_queue() {
    let f = pending(REVIEWED, None).await;
    let message_ts = f.approval_posted().await;
    let calls_before = slack_calls(&f.slack).await.len();

    let started = Instant::now();
    let answer = f
        .api
        .send_raw(signed(&click(
            APPROVER,
            &f.approval_id,
            "approve",
            &message_ts,
        )))
        .await;
    let took = started.elapsed();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    // Slack shows the user an error unless the click is answered within 3 s.
    assert!(took < Duration::from_secs(3), "the click took {took:?}");
    // Decided before anything is pumped; Slack is not called on the request path.
    let approval = f.approval().await;
    assert_eq!(approval.status, ApprovalStatus::Approved);
    assert_eq!(approval.decisions.len(), 1);
    assert_eq!(approval.decisions[0].by, format!("slack:{APPROVER}"));
    assert_eq!(slack_calls(&f.slack).await.len(), calls_before);

    let run = f
        .api
        .pump_until(&f.run_id, Duration::from_secs(20), |r| {
            r.steps["implement"].status != StepStatus::Pending
        })
        .await;
    assert_eq!(run.steps["review"].status, StepStatus::Succeeded);
    assert!(run.steps["implement"].attempt >= 1, "{run:#?}");

    let calls = pump_until_slack(&f.api, &f.slack, "the approval message updated", |c| {
        !updates_of(c, &message_ts).is_empty()
    })
    .await;
    assert!(
        calls
            .iter()
            .all(|c| c.auth == format!("Bearer {BOT_TOKEN}")),
        "{calls:#?}"
    );

    // The run's thread parent: the first post, in the approval step's channel, not threaded.
    let posts = posted_ts(&calls);
    let (parent_ts, parent) = &posts[0];
    assert_eq!(parent.body["channel"], "#flowgate");
    assert!(parent.body.get("thread_ts").is_none(), "{:#}", parent.body);
    assert!(
        parent.body["text"].as_str().unwrap().contains(&f.run_id),
        "{:#}",
        parent.body
    );

    // The approval request, threaded under the parent, with the five buttons.
    let (ts, request) = approval_message(&calls, &f.approval_id).unwrap();
    assert_eq!(ts, message_ts);
    // Replies go to the channel id Slack resolved for the parent.
    assert_eq!(request.body["channel"], CHANNEL_ID);
    assert_eq!(request.body["thread_ts"], parent_ts.as_str());
    let view = f.request_view().await;
    let (text, expected_blocks) = blocks::approval_request(&view);
    assert_eq!(request.body["text"], text);
    assert_eq!(
        request.body["text"],
        format!("Approval needed: reviewed run {}, step review", f.run_id)
    );
    assert_eq!(request.body["blocks"], expected_blocks);
    let actions: Vec<&Value> = request.body["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "actions")
        .collect();
    assert_eq!(actions.len(), 1);
    assert_eq!(
        actions[0]["block_id"],
        format!("approval:{}", f.approval_id)
    );
    let ids: Vec<&str> = actions[0]["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["approve", "reject", "retry", "skip", "cancel"]);
    assert!(
        request.body["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("Approve the design for a parser?"),
        "{:#}",
        request.body
    );

    // The approval message after the decision: same message, no buttons, who and what.
    let updates = updates_of(&calls, &message_ts);
    let update = updates.last().unwrap();
    assert_eq!(update.body["channel"], CHANNEL_ID);
    let decided = f.approval().await;
    let (text, expected_blocks) =
        blocks::approval_closed(&view, ApprovalStatus::Approved, &decided.decisions);
    assert_eq!(update.body["text"], text);
    assert_eq!(update.body["blocks"], expected_blocks);
    let shown = update.body["blocks"].to_string();
    assert!(
        update.body["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["type"] != "actions"),
        "{shown}"
    );
    assert!(shown.contains("<@U0APPROVER>"), "{shown}");
    assert!(shown.contains("Approved"), "{shown}");
    assert!(!shown.contains("approval:"), "{shown}");
}

// ----- 3. reject with a reason -----------------------------------------------------------------

/// The `views.open` calls seen so far.
async fn views_opened(slack: &MockServer) -> Vec<SlackCall> {
    slack_calls(slack)
        .await
        .into_iter()
        .filter(|c| c.method == "views.open")
        .collect()
}

/// Click `action` (reject or retry): the modal opens (checked against the layout) and nothing is
/// decided. Returns the modal's `private_metadata`.
async fn open_modal(f: &Fixture, action: &str, message_ts: &str) -> String {
    let before = f.api.snapshot().await;
    let answer = f
        .api
        .send_raw(signed(&click(APPROVER, &f.approval_id, action, message_ts)))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert!(answer.body.is_empty(), "{}", answer.text());
    let opened = views_opened(&f.slack).await;
    assert_eq!(opened.len(), 1, "{opened:#?}");
    let call = &opened[0];
    assert_eq!(call.body["trigger_id"], S2_TRIGGER_ID);
    let view = &call.body["view"];
    assert_eq!(
        *view,
        blocks::decision_modal(&f.approval_id, action, CHANNEL_ID, message_ts)
    );
    assert_eq!(view["type"], "modal");
    assert_eq!(view["callback_id"], "approval_decision");
    let metadata: Value = serde_json::from_str(view["private_metadata"].as_str().unwrap()).unwrap();
    assert_eq!(metadata["approval_id"], f.approval_id.as_str());
    assert_eq!(metadata["action"], action);
    assert_eq!(metadata["channel"], CHANNEL_ID);
    assert_eq!(metadata["message_ts"], message_ts);
    let input = view["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "input")
        .unwrap();
    assert_eq!(input["block_id"], "comment");
    assert_eq!(input["element"]["action_id"], "comment");
    assert_eq!(input["optional"], false);
    // Nothing is decided by the click itself.
    assert_eq!(f.api.snapshot().await, before);
    assert_eq!(f.approval().await.status, ApprovalStatus::Pending);
    view["private_metadata"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn reject_asks_for_a_reason_in_a_modal_and_records_it() {
    let f = pending(REVIEWED, None).await;
    let message_ts = f.approval_posted().await;
    let metadata = open_modal(&f, "reject", &message_ts).await;

    let reason = "the schema has no indexes";
    let answer = f
        .api
        .send_raw(signed(&submission(APPROVER, &metadata, reason)))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert!(
        answer.body.is_empty(),
        "an empty 200 closes the modal: {}",
        answer.text()
    );
    let approval = f.approval().await;
    assert_eq!(approval.status, ApprovalStatus::Rejected);
    assert_eq!(approval.decisions[0].by, format!("slack:{APPROVER}"));
    assert_eq!(approval.decisions[0].comment.as_deref(), Some(reason));

    let run = f.api.pump_to_end(&f.run_id).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:#?}");
    assert_eq!(run.steps["review"].status, StepStatus::Failed);
    let error = run.steps["review"].error.as_deref().unwrap();
    assert!(error.contains(reason), "{error}");
    assert!(error.contains("slack:U0APPROVER"), "{error}");
    assert_eq!(run.steps["implement"].attempt, 0, "{run:#?}");

    let calls = pump_until_slack(&f.api, &f.slack, "the rejection shown", |c| {
        !updates_of(c, &message_ts).is_empty()
    })
    .await;
    let update = updates_of(&calls, &message_ts).last().unwrap().body.clone();
    let view = f.request_view().await;
    let (text, expected) = blocks::approval_closed(
        &view,
        ApprovalStatus::Rejected,
        &f.approval().await.decisions,
    );
    assert_eq!(update["text"], text);
    assert_eq!(update["blocks"], expected);
    let shown = update["blocks"].to_string();
    assert!(shown.contains("Rejected"), "{shown}");
    assert!(shown.contains("<@U0APPROVER>"), "{shown}");
    assert!(shown.contains(&format!("> {reason}")), "{shown}");
    assert!(!shown.contains("\"actions\""), "{shown}");
}

// ----- 4. retry with feedback ------------------------------------------------------------------

#[tokio::test]
async fn retry_asks_for_feedback_and_the_agent_step_runs_again_with_it() {
    let f = pending(REVIEWED, None).await;
    let message_ts = f.approval_posted().await;
    let first_session = f.run().await.steps["architect"]
        .agent
        .as_ref()
        .unwrap()
        .session_name
        .clone();
    let metadata = open_modal(&f, "retry", &message_ts).await;

    // Blank feedback keeps the modal open with the engine's reason, and decides nothing.
    let before = f.api.snapshot().await;
    let blank = f
        .api
        .send(signed(&submission(APPROVER, &metadata, "   ")))
        .await;
    assert_eq!(blank.status, StatusCode::OK, "{:?}", blank.body);
    assert_eq!(blank.body["response_action"], "errors");
    assert!(
        blank.body["errors"]["comment"]
            .as_str()
            .unwrap()
            .contains("needs a comment"),
        "{:?}",
        blank.body
    );
    assert_eq!(f.api.snapshot().await, before);

    let answer = f
        .api
        .send_raw(signed(&submission(APPROVER, &metadata, "use postgres")))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert!(answer.body.is_empty(), "{}", answer.text());
    // Recorded at once: architect carries the feedback for its next attempt.
    let run = f.run().await;
    let feedback = run.steps["architect"].feedback.as_ref().unwrap();
    assert_eq!(feedback.text, "use postgres");
    assert_eq!(feedback.by, format!("slack:{APPROVER}"));
    assert!(
        run.approval(&f.approval_id)
            .is_none_or(|(_, a)| a.status == ApprovalStatus::Retried),
        "{run:#?}"
    );

    // architect runs again, then a new approval is asked for.
    let old_id = f.approval_id.clone();
    let run = f
        .api
        .pump_until(&f.run_id, Duration::from_secs(20), |r| {
            review(r).is_some_and(|a| a.id != old_id && a.status == ApprovalStatus::Pending)
        })
        .await;
    let architect = &run.steps["architect"];
    assert_eq!(architect.status, StepStatus::Succeeded);
    assert!(architect.attempt >= 2, "{run:#?}");
    let second_session = architect.agent.as_ref().unwrap().session_name.clone();
    assert_ne!(second_session, first_session);

    // What the agent service was asked: the first attempt without the feedback, the new one
    // with it.
    let start_message = |session: &str| {
        let ids = f.api.sim.run_ids_for_session_name(session);
        assert_eq!(ids.len(), 1, "starts for {session}: {ids:?}");
        f.api.sim.start_body(&ids[0]).unwrap()["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = start_message(&first_session);
    assert!(!first.contains("use postgres"), "{first}");
    let second = start_message(&second_session);
    assert!(second.contains("Design: a parser"), "{second}");
    assert!(second.contains("use postgres"), "{second}");
    assert!(second.contains("slack:U0APPROVER"), "{second}");

    // The new approval is posted in the thread with its own block id.
    let new_id = review(&run).unwrap().id.clone();
    let calls = pump_until_slack(&f.api, &f.slack, "the second approval request", |c| {
        approval_message(c, &new_id).is_some()
    })
    .await;
    let (new_ts, _) = approval_message(&calls, &new_id).unwrap();
    assert_ne!(new_ts, message_ts);
}

#[tokio::test]
async fn a_retried_approval_message_loses_its_buttons_and_shows_the_feedback() {
    let f = pending(REVIEWED, None).await;
    let message_ts = f.approval_posted().await;
    let metadata = open_modal(&f, "retry", &message_ts).await;
    let answer = f
        .api
        .send_raw(signed(&submission(APPROVER, &metadata, "use postgres")))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let old_id = f.approval_id.clone();
    let run = f
        .api
        .pump_until(&f.run_id, Duration::from_secs(20), |r| {
            review(r).is_some_and(|a| a.id != old_id && a.status == ApprovalStatus::Pending)
        })
        .await;
    let new_id = review(&run).unwrap().id.clone();
    // Once the second request is out and the queue is quiet, every delivery of the retry
    // has been handled.
    pump_until_slack(&f.api, &f.slack, "the second approval request", |c| {
        approval_message(c, &new_id).is_some()
    })
    .await;
    f.api.pump_due(Duration::from_millis(100)).await;
    let calls = slack_calls(&f.slack).await;
    // The first request's buttons would otherwise stay clickable (and answer "no open
    // approval") next to the new request.
    let updates = updates_of(&calls, &message_ts);
    assert!(
        !updates.is_empty(),
        "the retried approval's message ({message_ts}) was never updated; Slack calls: {:#?}",
        calls
            .iter()
            .map(|c| format!(
                "{} ts={} thread_ts={}",
                c.method, c.body["ts"], c.body["thread_ts"]
            ))
            .collect::<Vec<_>>()
    );
    let shown = updates.last().unwrap().body["blocks"].to_string();
    assert!(shown.contains("Sent back for a retry"), "{shown}");
    assert!(shown.contains("<@U0APPROVER>"), "{shown}");
    assert!(shown.contains("use postgres"), "{shown}");
    assert!(!shown.contains("\"actions\""), "{shown}");
}

#[tokio::test]
async fn a_late_close_delivery_updates_the_replaced_approvals_message() {
    let f = pending(REVIEWED, None).await;
    let message_ts = f.approval_posted().await;
    let metadata = open_modal(&f, "retry", &message_ts).await;
    let answer = f
        .api
        .send_raw(signed(&submission(APPROVER, &metadata, "use postgres")))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let old_id = f.approval_id.clone();
    // The closed approval as the decision left it: what the close delivery carries.
    let current = f.api.store.get_run(&f.run_id).await.unwrap().unwrap();
    let closed = review(&current).cloned().unwrap();
    assert_eq!(closed.status, ApprovalStatus::Retried);
    let run = f
        .api
        .pump_until(&f.run_id, Duration::from_secs(20), |r| {
            review(r).is_some_and(|a| a.id != old_id && a.status == ApprovalStatus::Pending)
        })
        .await;
    assert!(
        run.approval(&old_id).is_none(),
        "the newer attempt replaced it"
    );
    f.api.pump_due(Duration::from_millis(100)).await;
    let before = updates_of(&slack_calls(&f.slack).await, &message_ts).len();

    // A retry of the close delivery (e.g. after a Slack rate limit) arrives now.
    let late = flowgate_shared::ports::WorkMessage::Deliver {
        run_id: f.run_id.clone(),
        delivery: flowgate_shared::notify::Delivery::ApprovalClosed {
            step: "review".into(),
            approval_id: old_id.clone(),
            status: ApprovalStatus::Retried,
            approval: Some(closed),
        },
        attempt: 2,
        not_before: None,
    };
    f.api.executor.handle(&late).await.unwrap();
    let calls = slack_calls(&f.slack).await;
    let updates = updates_of(&calls, &message_ts);
    assert_eq!(
        updates.len(),
        before + 1,
        "the old message is updated again"
    );
    let shown = updates.last().unwrap().body["blocks"].to_string();
    assert!(shown.contains("Sent back for a retry"), "{shown}");
    assert!(!shown.contains("\"actions\""), "{shown}");
}

// ----- 5. who may decide -----------------------------------------------------------------------

/// `snapshot()` without the queue line (a refused click queues its ephemeral reply).
fn without_queue(snapshot: &str) -> &str {
    snapshot.rsplit_once("\nqueue=").unwrap().0
}

#[tokio::test]
async fn a_click_by_someone_not_listed_changes_nothing_and_is_told_privately() {
    let f = pending(REVIEWED, None).await;
    let message_ts = f.approval_posted().await;
    let before = f.api.snapshot().await;
    let run_before = f.run_state().await;
    let queued = f.api.queue.len();

    for action in ["approve", "skip", "cancel", "reject"] {
        let answer = f
            .api
            .send_raw(signed(&click(
                STRANGER,
                &f.approval_id,
                action,
                &message_ts,
            )))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{action}: {}", answer.text());
        assert_eq!(f.run_state().await, run_before, "{action} by a stranger");
    }
    assert_eq!(
        without_queue(&f.api.snapshot().await),
        without_queue(&before)
    );
    assert_eq!(
        f.api.queue.len(),
        queued + 4,
        "one ephemeral reply per click"
    );
    assert!(
        views_opened(&f.slack).await.is_empty(),
        "no modal for a stranger"
    );

    let calls = pump_until_slack(&f.api, &f.slack, "four ephemeral replies", |c| {
        calls_named(c, "chat.postEphemeral").len() == 4
    })
    .await;
    for reply in calls_named(&calls, "chat.postEphemeral") {
        assert_eq!(reply.body["channel"], CHANNEL_ID);
        assert_eq!(reply.body["user"], STRANGER);
        let text = reply.body["text"].as_str().unwrap();
        assert!(text.contains("not an approver"), "{text}");
        assert!(text.contains(&f.approval_id), "{text}");
    }
    assert_eq!(f.run_state().await, run_before);
    assert_eq!(f.approval().await.status, ApprovalStatus::Pending);
}

#[tokio::test]
async fn a_second_click_by_the_same_approver_is_a_quiet_no_op() {
    let f = pending(REVIEWED, None).await;
    let message_ts = f.approval_posted().await;
    let body = click(APPROVER, &f.approval_id, "approve", &message_ts);
    let first = f.api.send_raw(signed(&body)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    f.api
        .pump_until(&f.run_id, Duration::from_secs(20), |r| {
            r.steps["implement"].status != StepStatus::Pending
        })
        .await;
    pump_until_slack(&f.api, &f.slack, "the approval message updated", |c| {
        !updates_of(c, &message_ts).is_empty()
    })
    .await;

    let before = f.api.snapshot().await;
    let calls = slack_calls(&f.slack).await.len();
    let again = f.api.send_raw(signed(&body)).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    assert!(again.body.is_empty(), "{}", again.text());
    assert_eq!(
        f.api.snapshot().await,
        before,
        "the repeat wrote or queued something"
    );
    assert_eq!(slack_calls(&f.slack).await.len(), calls);
    let approval = f.approval().await;
    assert_eq!(approval.status, ApprovalStatus::Approved);
    assert_eq!(approval.decisions.len(), 1);
}

#[tokio::test]
async fn a_click_on_an_expired_approval_changes_nothing_and_is_told_privately() {
    let f = pending(&expiring_workflow(), None).await;
    let message_ts = f.approval_posted().await;
    let run = f
        .api
        .pump_until(&f.run_id, Duration::from_secs(20), |r| {
            review(r).is_some_and(|a| a.status == ApprovalStatus::Expired) && r.status.is_terminal()
        })
        .await;
    // on_expiry: reject ends the gate as timed out.
    assert_eq!(run.steps["review"].status, StepStatus::TimedOut, "{run:#?}");
    f.api.pump_due(Duration::from_millis(100)).await;
    let run_before = f.run_state().await;
    let ephemeral_before = calls_named(&slack_calls(&f.slack).await, "chat.postEphemeral").len();

    let answer = f
        .api
        .send_raw(signed(&click(
            APPROVER,
            &f.approval_id,
            "approve",
            &message_ts,
        )))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(f.run_state().await, run_before);

    let calls = pump_until_slack(&f.api, &f.slack, "an ephemeral reply", |c| {
        calls_named(c, "chat.postEphemeral").len() > ephemeral_before
    })
    .await;
    let reply = calls_named(&calls, "chat.postEphemeral")
        .last()
        .unwrap()
        .body
        .clone();
    assert_eq!(reply["user"], APPROVER);
    assert_eq!(reply["channel"], CHANNEL_ID);
    let text = reply["text"].as_str().unwrap();
    assert!(text.contains("expired"), "{text}");
    assert_eq!(f.run_state().await, run_before);
    assert_eq!(f.approval().await.status, ApprovalStatus::Expired);
}

#[tokio::test]
async fn the_runs_starter_cannot_approve_it_through_the_api() {
    let f = pending(REVIEWED, None).await;
    let before = f.api.snapshot().await;
    let path = format!("/v1/approvals/{}/decision", f.approval_id);
    for decision in ["approve", "skip"] {
        let answer = f
            .api
            .call("POST", &path, Some(json!({"decision": decision})))
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{:?}", answer.body);
        assert_eq!(answer.code(), "self_approval");
        assert!(
            answer.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(PRINCIPAL),
            "{:?}",
            answer.body
        );
    }
    assert_eq!(f.api.snapshot().await, before);
    assert_eq!(f.approval().await.status, ApprovalStatus::Pending);
}

// ----- 6. API decisions ------------------------------------------------------------------------

#[tokio::test]
async fn api_decisions_check_the_approver_the_comment_and_the_approvals_state() {
    let f = pending(REVIEWED, None).await;
    let api = &f.api;
    let path = format!("/v1/approvals/{}/decision", f.approval_id);
    let before = api.snapshot().await;

    let stranger = api
        .call_as(
            Some(MALLORY_KEY),
            "POST",
            &path,
            Some(json!({"decision": "approve"})),
        )
        .await;
    assert_eq!(
        stranger.status,
        StatusCode::FORBIDDEN,
        "{:?}",
        stranger.body
    );
    assert_eq!(stranger.code(), "not_an_approver");

    let bare_retry = api
        .call_as(
            Some(BOB_KEY),
            "POST",
            &path,
            Some(json!({"decision": "retry"})),
        )
        .await;
    assert_eq!(
        bare_retry.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        bare_retry.body
    );
    assert_eq!(bare_retry.code(), "comment_required");
    assert_eq!(bare_retry.body["error"]["field"], "comment");

    let unknown = api
        .call_as(
            Some(BOB_KEY),
            "POST",
            &format!("/v1/approvals/{}.review.9/decision", f.run_id),
            Some(json!({"decision": "approve"})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{:?}", unknown.body);
    assert_eq!(unknown.code(), "approval_not_found");
    let nonsense = api
        .call_as(
            Some(BOB_KEY),
            "POST",
            "/v1/approvals/no-such-approval/decision",
            Some(json!({"decision": "approve"})),
        )
        .await;
    assert_eq!(
        nonsense.status,
        StatusCode::NOT_FOUND,
        "{:?}",
        nonsense.body
    );

    let unsigned = api
        .call_as(None, "POST", &path, Some(json!({"decision": "approve"})))
        .await;
    assert_eq!(
        unsigned.status,
        StatusCode::UNAUTHORIZED,
        "{:?}",
        unsigned.body
    );
    assert_eq!(
        api.snapshot().await,
        before,
        "a refused decision wrote something"
    );

    let approved = api
        .call_as(
            Some(BOB_KEY),
            "POST",
            &path,
            Some(json!({"decision": "approve", "comment": "looks right"})),
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{:?}", approved.body);
    assert_eq!(approved.body["by"], BOB);
    assert_eq!(approved.body["run_status"], "running");
    assert_eq!(approved.body["approval"]["id"], f.approval_id.as_str());
    assert_eq!(approved.body["approval"]["status"], "approved");
    assert_eq!(approved.body["approval"]["kind"], "step");
    assert_eq!(approved.body["approval"]["step"], "review");
    assert_eq!(approved.body["approval"]["decisions"][0]["by"], BOB);
    assert_eq!(
        approved.body["approval"]["decisions"][0]["comment"],
        "looks right"
    );
    assert_eq!(f.approval().await.status, ApprovalStatus::Approved);

    // The same approver again: recorded already, nothing changes.
    let state = f.run_state().await;
    let repeat = api
        .call_as(
            Some(BOB_KEY),
            "POST",
            &path,
            Some(json!({"decision": "approve"})),
        )
        .await;
    assert_eq!(repeat.status, StatusCode::OK, "{:?}", repeat.body);
    assert_eq!(
        repeat.body["approval"]["decisions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(f.run_state().await, state);

    // Another approver after it closed.
    let closed = api
        .call(
            "POST",
            &path,
            Some(json!({"decision": "reject", "comment": "too late"})),
        )
        .await;
    assert_eq!(closed.status, StatusCode::CONFLICT, "{:?}", closed.body);
    assert_eq!(f.run_state().await, state);

    let run = api
        .pump_until(&f.run_id, Duration::from_secs(20), |r| {
            r.steps["implement"].status != StepStatus::Pending
        })
        .await;
    assert_eq!(run.steps["review"].status, StepStatus::Succeeded);
}

/// A decision signed per Standard Webhooks with `secret`, at `ts`.
fn webhook_signed(approval_id: &str, secret: &str, ts: i64, body: &str) -> Request<Body> {
    let secret = WebhookSecret::parse(secret).unwrap();
    let signature = signing::sign_standard(&[secret], "msg_decision1", ts, body.as_bytes());
    Request::post(format!("/v1/approvals/{approval_id}/decision"))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_decision1")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn signed_decisions_act_as_the_webhook_principal() {
    let f = pending(REVIEWED, None).await;
    let api = &f.api;
    let body = r#"{"decision":"approve","comment":"CI is green"}"#;
    let before = api.snapshot().await;
    let now = now_secs();

    let wrong_key = api
        .send(webhook_signed(
            &f.approval_id,
            OTHER_WEBHOOK_SECRET,
            now,
            body,
        ))
        .await;
    assert_refused(
        &wrong_key,
        "signature_mismatch",
        "signed with another secret",
    );
    let mut tampered = webhook_signed(&f.approval_id, WEBHOOK_SECRET, now, body);
    *tampered.body_mut() = Body::from(body.replace("CI is green", "CI is red"));
    let tampered = api.send(tampered).await;
    assert_refused(
        &tampered,
        "signature_mismatch",
        "body changed after signing",
    );
    let stale = api
        .send(webhook_signed(
            &f.approval_id,
            WEBHOOK_SECRET,
            now - 301,
            body,
        ))
        .await;
    assert_refused(&stale, "stale_timestamp", "signed 301 s ago");
    let future = api
        .send(webhook_signed(
            &f.approval_id,
            WEBHOOK_SECRET,
            now + 301,
            body,
        ))
        .await;
    assert_refused(&future, "stale_timestamp", "signed 301 s ahead");
    assert_eq!(
        api.snapshot().await,
        before,
        "a refused signed decision wrote something"
    );

    let accepted = api
        .send(webhook_signed(&f.approval_id, WEBHOOK_SECRET, now, body))
        .await;
    assert_eq!(accepted.status, StatusCode::OK, "{:?}", accepted.body);
    assert_eq!(accepted.body["by"], WEBHOOK_PRINCIPAL);
    assert_eq!(accepted.body["approval"]["status"], "approved");
    let approval = f.approval().await;
    assert_eq!(approval.status, ApprovalStatus::Approved);
    assert_eq!(approval.decisions[0].by, WEBHOOK_PRINCIPAL);
    assert_eq!(
        approval.decisions[0].comment.as_deref(),
        Some("CI is green")
    );
}

// ----- 7. approval links -----------------------------------------------------------------------

fn link_path(token: &str) -> String {
    format!("/approvals/link/{token}")
}

async fn open_link(api: &TestApi, method: &str, token: &str, comment: Option<&str>) -> RawAnswer {
    let mut req = Request::builder().method(method).uri(link_path(token));
    let body = match comment {
        Some(c) => {
            req = req.header("content-type", "application/x-www-form-urlencoded");
            Body::from(serde_urlencoded::to_string([("comment", c)]).unwrap())
        }
        None => Body::empty(),
    };
    api.send_raw(req.body(body).unwrap()).await
}

#[tokio::test]
async fn approval_links_confirm_first_then_decide_once() {
    let f = pending(REVIEWED, None).await;
    let api = &f.api;

    let detail = api
        .call("GET", &format!("/v1/runs/{}", f.run_id), None)
        .await;
    assert_eq!(detail.status, StatusCode::OK);
    let open = detail.body["open_approvals"].as_array().unwrap();
    assert_eq!(open.len(), 1, "{:#}", detail.body);
    assert_eq!(open[0]["id"], f.approval_id.as_str());
    assert_eq!(open[0]["status"], "pending");

    // The links the notifier would hand out: one pair per approver that is not a Slack user.
    let links = api.executor.notifier().unwrap().links().clone();
    let approval = f.approval().await;
    let minted = flowgate_shared::notify::approval_links(&links, &approval, now_secs()).unwrap();
    assert!(minted.get(APPROVER).is_none(), "{minted:#}");
    let url = minted[EMAIL_APPROVER]["approve"].as_str().unwrap();
    let token = url
        .strip_prefix(&format!("{PUBLIC_URL}/approvals/link/"))
        .unwrap_or_else(|| panic!("{url}"))
        .to_string();
    let claims = signing::verify_link(LINK_KEY.as_bytes(), &token, now_secs()).unwrap();
    assert_eq!(claims.approval_id, f.approval_id);
    assert_eq!(claims.action, "approve");
    assert_eq!(claims.approver, EMAIL_APPROVER);

    let before = api.snapshot().await;

    // Opening the link shows a confirmation and decides nothing.
    let page = open_link(api, "GET", &token, None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text();
    assert!(html.contains("Confirm: approve"), "{html}");
    assert!(html.contains("<form method=\"post\">"), "{html}");
    assert!(html.contains("Approve the design for a parser?"), "{html}");
    assert_eq!(api.snapshot().await, before);

    // Refused links: tampered, expired, another key, another approval.
    let mut flipped = token.clone().into_bytes();
    let last = flipped.last_mut().unwrap();
    *last = if *last == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let (payload, mac) = token.split_once('.').unwrap();
    let forged_claims = LinkClaims::new(&f.approval_id, "approve", "mallory", now_secs() + 600);
    let forged_payload = signing::sign_link(b"not-the-link-key-but-long-enough-32", &forged_claims);
    let spliced = format!("{}.{mac}", forged_payload.split_once('.').unwrap().0);
    assert_ne!(payload, spliced.split_once('.').unwrap().0);
    let expired = signing::sign_link(
        LINK_KEY.as_bytes(),
        &LinkClaims::new(&f.approval_id, "approve", EMAIL_APPROVER, now_secs() - 1),
    );
    let other_key = signing::sign_link(
        b"another-link-key-of-at-least-32-chars!",
        &LinkClaims::new(&f.approval_id, "approve", EMAIL_APPROVER, now_secs() + 600),
    );
    for (case, bad) in [
        ("tampered MAC", &flipped),
        ("claims swapped under a valid MAC", &spliced),
        ("expired", &expired),
        ("signed with another key", &other_key),
    ] {
        for method in ["GET", "POST"] {
            let page = open_link(api, method, bad, None).await;
            assert_eq!(
                page.status,
                StatusCode::UNAUTHORIZED,
                "{case} {method}: {}",
                page.text()
            );
            assert!(page.text().contains("invalid or has expired"), "{case}");
        }
    }
    let elsewhere = signing::sign_link(
        LINK_KEY.as_bytes(),
        &LinkClaims::new(
            format!("{}.review.7", f.run_id),
            "approve",
            EMAIL_APPROVER,
            now_secs() + 600,
        ),
    );
    let page = open_link(api, "POST", &elsewhere, None).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", page.text());
    assert_eq!(
        api.snapshot().await,
        before,
        "a refused link wrote something"
    );
    assert_eq!(f.approval().await.status, ApprovalStatus::Pending);

    // Posting the confirmation decides, as the link's approver, with the comment typed.
    let page = open_link(api, "POST", &token, Some("fine by me")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert!(page.text().contains("Decision recorded"), "{}", page.text());
    let approval = f.approval().await;
    assert_eq!(approval.status, ApprovalStatus::Approved);
    assert_eq!(approval.decisions.len(), 1);
    assert_eq!(approval.decisions[0].by, EMAIL_APPROVER);
    assert_eq!(approval.decisions[0].comment.as_deref(), Some("fine by me"));

    // Using it again changes nothing.
    let state = f.run_state().await;
    let again = open_link(api, "POST", &token, None).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    assert_eq!(f.run_state().await, state);
    let page = open_link(api, "GET", &token, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("Already decided"), "{}", page.text());
    assert_eq!(f.approval().await.decisions.len(), 1);
}

// ----- 8. the list -----------------------------------------------------------------------------

fn ids(answer: &Answer) -> Vec<String> {
    answer.body["approvals"]
        .as_array()
        .unwrap_or_else(|| panic!("{:?}", answer.body))
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_approval_list_filters_by_status() {
    let f = pending(REVIEWED, None).await;
    let api = &f.api;

    let open = api.call("GET", "/v1/approvals", None).await;
    assert_eq!(open.status, StatusCode::OK, "{:?}", open.body);
    assert_eq!(ids(&open), [f.approval_id.as_str()]);
    let listed = &open.body["approvals"][0];
    assert_eq!(listed["kind"], "step");
    assert_eq!(listed["status"], "pending");
    assert_eq!(listed["run_id"], f.run_id.as_str());
    assert_eq!(listed["step"], "review");
    assert_eq!(listed["required"], 1);
    assert_eq!(
        listed["approvers"],
        json!([APPROVER, PRINCIPAL, BOB, WEBHOOK_PRINCIPAL, EMAIL_APPROVER])
    );
    assert_eq!(listed["message"], "Approve the design for a parser?");
    let none_yet = api.call("GET", "/v1/approvals?status=approved", None).await;
    assert_eq!(ids(&none_yet), Vec::<String>::new());

    let decided = api
        .call_as(
            Some(BOB_KEY),
            "POST",
            &format!("/v1/approvals/{}/decision", f.approval_id),
            Some(json!({"decision": "approve"})),
        )
        .await;
    assert_eq!(decided.status, StatusCode::OK, "{:?}", decided.body);

    let open = api.call("GET", "/v1/approvals", None).await;
    assert_eq!(ids(&open), Vec::<String>::new());
    let approved = api.call("GET", "/v1/approvals?status=approved", None).await;
    assert_eq!(ids(&approved), [f.approval_id.as_str()]);
    assert_eq!(approved.body["approvals"][0]["decisions"][0]["by"], BOB);
    let all = api.call("GET", "/v1/approvals?status=all", None).await;
    assert_eq!(ids(&all), [f.approval_id.as_str()]);
    let rejected = api.call("GET", "/v1/approvals?status=rejected", None).await;
    assert_eq!(ids(&rejected), Vec::<String>::new());
    let bad = api.call("GET", "/v1/approvals?status=maybe", None).await;
    assert_eq!(
        bad.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        bad.body
    );
    assert_eq!(bad.code(), "invalid_status");

    // Still listed once the run has moved on and finished.
    let run = api.pump_to_end(&f.run_id).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
    let all = api.call("GET", "/v1/approvals?status=all", None).await;
    assert_eq!(ids(&all), [f.approval_id.as_str()]);
}
