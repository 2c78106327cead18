//! Bad input on every route: one table of requests the API must refuse, each with the exact
//! status, error code and field, the one error shape, and proof that nothing was written (the
//! store and queue snapshot is the same before and after every request).
//!
//! The state the requests run against is not empty: a stored workflow, a succeeded run, a
//! failed run, a live run (its agent step running, its session recorded), so "refused" means
//! refused and not "nothing there to change".

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, StatusCode, header};
use flowgate_shared::api::MAX_BODY_BYTES;
use flowgate_shared::model::RunStatus;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use support::{KEY, TWO_STEPS, TestApi, TestOptions};
use tower::ServiceExt;

/// A webhook trigger with a secret, and one without (`POST /hooks/{trigger_id}`).
const HOOK: &str = "bad-input-hook";
const HOOK_SECRET: &str = "bad-input-hook-secret";
const HOOKED: &str = r#"
id: hooked
inputs:
  task: {type: string, required: true}
steps:
  - id: pause
    kind: wait
    duration: 1s
triggers:
  - {type: webhook, id: bad-input-hook, verify: github, inputs: {task: /task}}
  - {type: webhook, id: unset-hook, verify: github, inputs: {task: /task}}
"#;

/// The session the live run files its agent conversation under.
const SESSION: &str = "bad-input-session";

/// The state every row runs against.
struct Fixture {
    api: TestApi,
    /// A succeeded run of `two-steps`.
    done: String,
    /// A failed one-step run of the agent workflow `architect`.
    failed: String,
    /// A one-step `architect` run whose agent step is running (and never finishes by itself).
    live: String,
    /// A `next_cursor` of `GET /v1/runs?limit=1`.
    cursor: String,
    /// A `next_cursor` of `GET /v1/runs?limit=1&sort=cost` (another query).
    cost_cursor: String,
    /// A webhook subscription (to example.com; nothing is delivered in these tests).
    webhook: String,
}

async fn start(api: &TestApi, body: Value) -> String {
    let started = api.call("POST", "/v1/runs", Some(body)).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{:?}", started.body);
    started.body["run_id"].as_str().expect("run_id").to_string()
}

async fn fixture() -> Fixture {
    let api = TestApi::start_with(TestOptions {
        hooks: flowgate_api::HookSecrets::parse(&format!("{HOOK}={HOOK_SECRET}"))
            .expect("hook secrets"),
        ..TestOptions::default()
    })
    .await;
    let put = api.put_yaml("two-steps", TWO_STEPS).await;
    assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);
    let put = api.put_yaml("hooked", HOOKED).await;
    assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);

    let done = start(
        &api,
        json!({"workflow": "two-steps", "inputs": {"task": "a parser"}}),
    )
    .await;
    assert_eq!(api.pump_to_end(&done).await.status, RunStatus::Succeeded);

    let failed = start(
        &api,
        json!({"workflow": "architect", "message": "design it [fail]"}),
    )
    .await;
    assert_eq!(api.pump_to_end(&failed).await.status, RunStatus::Failed);

    let live = start(
        &api,
        json!({"workflow": "architect", "message": "hold on [timeout]", "session_name": SESSION}),
    )
    .await;
    let run = api
        .pump_until(&live, Duration::from_secs(10), |r| {
            r.steps["architect"]
                .agent
                .as_ref()
                .is_some_and(|a| a.session_id.is_some())
        })
        .await;
    assert_eq!(run.status, RunStatus::Running);
    let session = api
        .call("GET", &format!("/v1/sessions/{SESSION}"), None)
        .await;
    assert_eq!(session.status, StatusCode::OK, "{:?}", session.body);

    let page = api.call("GET", "/v1/runs?limit=1", None).await;
    let cursor = page.body["next_cursor"]
        .as_str()
        .expect("cursor")
        .to_string();
    let page = api.call("GET", "/v1/runs?limit=1&sort=cost", None).await;
    let cost_cursor = page.body["next_cursor"]
        .as_str()
        .expect("cursor")
        .to_string();
    let created = api
        .call(
            "POST",
            "/v1/webhooks",
            Some(json!({"url": "https://example.com/hooks", "events": ["run.completed"]})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let webhook = created.body["id"].as_str().expect("id").to_string();
    Fixture {
        api,
        done,
        failed,
        live,
        cursor,
        cost_cursor,
        webhook,
    }
}

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
enum Payload {
    None,
    /// Bytes with this content type (none when `None`).
    Bytes(Option<&'static str>, Vec<u8>),
    /// Bytes of unknown length (no size hint, like a chunked upload).
    Stream(&'static str, Vec<u8>),
}

struct Case {
    /// The operation (`METHOD /template`) the row exercises; `None` for unknown routes and
    /// methods.
    op: Option<&'static str>,
    what: String,
    method: String,
    uri: String,
    key: bool,
    headers: Vec<(&'static str, HeaderValue)>,
    payload: Payload,
    status: StatusCode,
    code: &'static str,
    field: Option<&'static str>,
    problem: Option<&'static str>,
}

/// A request to operation `op` (e.g. `"POST /v1/runs"`), sent with the test key.
fn on(op: &'static str, uri: impl Into<String>, what: &str) -> Case {
    let method = op.split(' ').next().expect("method").to_string();
    Case {
        op: Some(op),
        ..off(&method, uri, what)
    }
}

/// A request to no operation (an unknown route, or a method the path does not have).
fn off(method: &str, uri: impl Into<String>, what: &str) -> Case {
    Case {
        op: None,
        what: what.to_string(),
        method: method.to_string(),
        uri: uri.into(),
        key: true,
        headers: Vec::new(),
        payload: Payload::None,
        status: StatusCode::IM_A_TEAPOT,
        code: "(unset)",
        field: None,
        problem: None,
    }
}

impl Case {
    fn json(self, body: Value) -> Self {
        self.body("application/json", serde_json::to_vec(&body).expect("json"))
    }

    fn body(mut self, content_type: &'static str, bytes: impl Into<Vec<u8>>) -> Self {
        self.payload = Payload::Bytes(Some(content_type), bytes.into());
        self
    }

    fn untyped(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.payload = Payload::Bytes(None, bytes.into());
        self
    }

    fn stream(mut self, content_type: &'static str, bytes: Vec<u8>) -> Self {
        self.payload = Payload::Stream(content_type, bytes);
        self
    }

    fn no_key(mut self) -> Self {
        self.key = false;
        self
    }

    fn header(mut self, name: &'static str, value: impl AsRef<[u8]>) -> Self {
        let value = HeaderValue::from_bytes(value.as_ref()).expect("header value");
        self.headers.push((name, value));
        self
    }

    fn expect(mut self, status: u16, code: &'static str) -> Self {
        self.status = StatusCode::from_u16(status).expect("status");
        self.code = code;
        self
    }

    fn field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }

    /// The answer lists a problem at this path.
    fn problem(mut self, path: &'static str) -> Self {
        self.problem = Some(path);
        self
    }

    fn request(&self) -> Request<Body> {
        let mut req = Request::builder()
            .method(self.method.as_str())
            .uri(self.uri.as_str());
        if self.key {
            req = req.header("x-api-key", KEY);
        }
        for (name, value) in &self.headers {
            req = req.header(*name, value.clone());
        }
        let body = match &self.payload {
            Payload::None => Body::empty(),
            Payload::Bytes(content_type, bytes) => {
                if let Some(ct) = content_type {
                    req = req.header(header::CONTENT_TYPE, *ct);
                }
                Body::from(bytes.clone())
            }
            Payload::Stream(content_type, bytes) => {
                req = req.header(header::CONTENT_TYPE, *content_type);
                Body::from_stream(Body::from(bytes.clone()).into_data_stream())
            }
        };
        req.body(body).expect("request")
    }

    fn label(&self) -> String {
        format!("{} {} ({})", self.method, self.uri, self.what)
    }
}

/// A JSON document of exactly `len` bytes: `json` padded with trailing spaces.
fn padded(json: &str, len: usize) -> Vec<u8> {
    let mut bytes = json.as_bytes().to_vec();
    assert!(bytes.len() <= len);
    bytes.resize(len, b' ');
    bytes
}

fn too_big_json() -> Vec<u8> {
    padded(r#"{"workflow": "two-steps"}"#, MAX_BODY_BYTES + 1)
}

fn too_big_yaml() -> Vec<u8> {
    let mut yaml = TWO_STEPS.as_bytes().to_vec();
    yaml.push(b'#');
    yaml.resize(MAX_BODY_BYTES + 1, b'x');
    yaml
}

/// One request per protected operation that would succeed with the key: sent without a key
/// and with a wrong one, each must be refused before anything happens.
fn valid_requests(fx: &Fixture) -> Vec<Case> {
    let (done, live, failed) = (&fx.done, &fx.live, &fx.failed);
    vec![
        on("GET /v1/runs", "/v1/runs", "list"),
        on("POST /v1/runs", "/v1/runs", "start")
            .json(json!({"workflow": "two-steps", "inputs": {"task": "x"}})),
        on("GET /v1/runs/{id}", format!("/v1/runs/{done}"), "read"),
        on(
            "GET /v1/runs/{id}/events",
            format!("/v1/runs/{done}/events"),
            "audit",
        ),
        on(
            "POST /v1/runs/{id}/cancel",
            format!("/v1/runs/{live}/cancel"),
            "cancel",
        )
        .json(json!({"force": true})),
        on(
            "POST /v1/runs/{id}/messages",
            format!("/v1/runs/{live}/messages"),
            "feedback",
        )
        .json(json!({"content": "hi"})),
        on(
            "POST /v1/runs/{id}/retry",
            format!("/v1/runs/{failed}/retry"),
            "retry",
        )
        .json(json!({})),
        on(
            "POST /v1/runs/{id}/rollback",
            format!("/v1/runs/{done}/rollback"),
            "rollback",
        )
        .json(json!({})),
        on("GET /v1/workflows", "/v1/workflows", "list"),
        on("GET /v1/workflows/{id}", "/v1/workflows/two-steps", "read"),
        on("PUT /v1/workflows/{id}", "/v1/workflows/two-steps", "store")
            .body("application/yaml", TWO_STEPS),
        on(
            "DELETE /v1/workflows/{id}",
            "/v1/workflows/two-steps",
            "delete",
        ),
        on(
            "POST /v1/workflows/validate",
            "/v1/workflows/validate",
            "validate",
        )
        .body("application/yaml", TWO_STEPS),
        on("GET /v1/agent-workflows", "/v1/agent-workflows", "list"),
        on("GET /v1/sessions", "/v1/sessions", "list"),
        on("GET /v1/me", "/v1/me", "who am I"),
        on("GET /v1/analytics", "/v1/analytics?window=7d", "figures"),
        on(
            "GET /v1/sessions/{name}",
            format!("/v1/sessions/{SESSION}"),
            "read",
        ),
        on("GET /v1/approvals", "/v1/approvals", "list"),
        on(
            "POST /v1/approvals/{id}/decision",
            format!("/v1/approvals/{live}.architect.1/decision"),
            "decide",
        )
        .json(json!({"decision": "approve"})),
        on("POST /v1/webhooks", "/v1/webhooks", "subscribe")
            .json(json!({"url": "https://example.com/other", "events": ["*"]})),
        on("GET /v1/webhooks", "/v1/webhooks", "list"),
        on(
            "GET /v1/webhooks/{id}",
            format!("/v1/webhooks/{}", fx.webhook),
            "read",
        ),
        on(
            "DELETE /v1/webhooks/{id}",
            format!("/v1/webhooks/{}", fx.webhook),
            "delete",
        ),
        on(
            "GET /v1/webhooks/{id}/deliveries",
            format!("/v1/webhooks/{}/deliveries", fx.webhook),
            "delivery log",
        ),
    ]
}

/// Operations that need no key.
/// Operations the API has (a new route fails the coverage check until it has rows).
const ROUTE_COUNT: usize = 31;

const PUBLIC: [&str; 6] = [
    // Authenticated by the trigger's signature or shared secret (see tests/hooks.rs).
    "POST /hooks/{trigger_id}",
    "GET /healthz",
    "GET /openapi.json",
    // Authenticated by Slack's signature and by the signed token (see tests/approvals.rs).
    "POST /slack/interactions",
    "GET /approvals/link/{token}",
    "POST /approvals/link/{token}",
];

#[rustfmt::skip]
fn table(fx: &Fixture) -> Vec<Case> {
    let (done, live, failed) = (fx.done.as_str(), fx.live.as_str(), fx.failed.as_str());
    let mut rows = Vec::new();

    // Authentication: every protected operation, without a key and with a wrong one, refused
    // before the request is looked at.
    for valid in valid_requests(fx) {
        let (op, uri, payload) = (valid.op.expect("op"), valid.uri, valid.payload);
        rows.push(Case { payload: payload.clone(), ..on(op, uri.clone(), "no key").no_key().expect(401, "unauthorized") });
        rows.push(Case { payload, ..on(op, uri, "wrong key").no_key().header("x-api-key", "not-the-key").expect(401, "unauthorized") });
    }
    let runs = "GET /v1/runs";
    rows.extend([
        on(runs, "/v1/runs", "Basic auth").no_key().header("authorization", format!("Basic {KEY}")).expect(401, "unauthorized"),
        on(runs, "/v1/runs", "wrong bearer").no_key().header("authorization", "Bearer not-the-key").expect(401, "unauthorized"),
        on(runs, "/v1/runs", "bearer without a key").no_key().header("authorization", "Bearer").expect(401, "unauthorized"),
        on(runs, "/v1/runs", "right key and a different bearer").header("authorization", "Bearer not-the-key").expect(401, "unauthorized"),
        on(runs, "/v1/runs", "empty key").no_key().header("x-api-key", "").expect(401, "unauthorized"),
        on(runs, "/v1/runs", "non-ASCII key").no_key().header("x-api-key", b"test-key-alic\xe9").expect(401, "unauthorized"),
        on("POST /v1/runs", "/v1/runs", "no key and malformed JSON: 401 first").no_key().body("application/json", "{").expect(401, "unauthorized"),
        on("POST /v1/runs", "/v1/runs", "no key and too large: 401 first").no_key().body("application/json", too_big_json()).expect(401, "unauthorized"),
    ]);

    // Unknown routes and wrong methods.
    rows.extend([
        off("GET", "/ui/nothing.js", "unknown dashboard asset").expect(404, "route_not_found"),
        off("POST", "/", "POST the dashboard").expect(405, "method_not_allowed"),
        off("GET", "/v2/runs", "unknown version").expect(404, "route_not_found"),
        off("GET", "/v1/runs/", "trailing slash").expect(404, "route_not_found"),
        off("GET", format!("/v1/runs/{done}/steps"), "unknown sub-resource").expect(404, "route_not_found"),
        off("GET", "/v1/workflows/two-steps/versions", "unknown sub-resource").expect(404, "route_not_found"),
        off("POST", "/v1/approvals", "POST the approvals list").json(json!({"decision": "approve"})).expect(405, "method_not_allowed"),
        off("GET", "/slack/interactions", "GET Slack interactivity").expect(405, "method_not_allowed"),
        off("PUT", "/approvals/link/{token}", "PUT a link").expect(405, "method_not_allowed"),
        off("GET", "/v1/nothing", "unknown route without a key").no_key().expect(404, "route_not_found"),
        off("POST", "/healthz", "POST health").expect(405, "method_not_allowed"),
        off("DELETE", "/openapi.json", "DELETE the document").expect(405, "method_not_allowed"),
        off("DELETE", "/v1/runs", "DELETE every run").expect(405, "method_not_allowed"),
        off("PUT", format!("/v1/runs/{done}"), "PUT a run").json(json!({"status": "failed"})).expect(405, "method_not_allowed"),
        off("DELETE", format!("/v1/runs/{done}"), "DELETE a run").expect(405, "method_not_allowed"),
        off("POST", format!("/v1/runs/{done}/events"), "POST an event").json(json!({"kind": "run.completed"})).expect(405, "method_not_allowed"),
        off("GET", format!("/v1/runs/{live}/cancel"), "GET cancel").expect(405, "method_not_allowed"),
        off("GET", format!("/v1/runs/{live}/messages"), "GET messages").expect(405, "method_not_allowed"),
        off("GET", format!("/v1/runs/{failed}/retry"), "GET retry").expect(405, "method_not_allowed"),
        off("GET", format!("/v1/runs/{done}/rollback"), "GET rollback").expect(405, "method_not_allowed"),
        off("POST", "/v1/workflows", "POST a workflow to the collection").body("application/yaml", TWO_STEPS).expect(405, "method_not_allowed"),
        off("POST", "/v1/workflows/two-steps", "POST instead of PUT").body("application/yaml", TWO_STEPS).expect(405, "method_not_allowed"),
        off("PATCH", "/v1/workflows/two-steps", "PATCH a workflow").json(json!({"description": "x"})).expect(405, "method_not_allowed"),
        off("GET", "/v1/workflows/validate", "GET validate").expect(405, "method_not_allowed"),
        off("POST", "/v1/agent-workflows", "POST agent workflows").expect(405, "method_not_allowed"),
        off("POST", "/v1/sessions", "POST a session").json(json!({"name": "x"})).expect(405, "method_not_allowed"),
        off("DELETE", format!("/v1/sessions/{SESSION}"), "DELETE a session").expect(405, "method_not_allowed"),
        off("POST", "/v1/me", "POST who am I").json(json!({"principal": "admin"})).expect(405, "method_not_allowed"),
    ]);

    // POST /v1/runs
    let start = "POST /v1/runs";
    let s = |what: &str| on(start, "/v1/runs", what);
    let mut exactly_the_limit = padded(r#"{"workflow": 5}"#, MAX_BODY_BYTES);
    exactly_the_limit[MAX_BODY_BYTES - 1] = b'\n';
    let task = json!({"task": "x"});
    rows.extend([
        s("malformed JSON").body("application/json", r#"{"workflow": "two-steps","#).expect(400, "invalid_json"),
        s("trailing data").body("application/json", r#"{"workflow": "two-steps", "inputs": {"task": "x"}} {}"#).expect(400, "invalid_json"),
        s("byte order mark").body("application/json", b"\xef\xbb\xbf{\"workflow\": \"two-steps\"}".to_vec()).expect(400, "invalid_json"),
        s("invalid UTF-8").body("application/json", b"{\"workflow\": \"two-\xffsteps\"}".to_vec()).expect(400, "invalid_json"),
        s("an array").json(json!([])).expect(422, "invalid_request"),
        s("the fields as an array").json(json!(["two-steps", {"task": "x"}])).expect(422, "invalid_request"),
        s("a string").json(json!("two-steps")).expect(422, "invalid_request"),
        s("null").json(Value::Null).expect(422, "invalid_request"),
        s("workflow is a number").json(json!({"workflow": 5})).expect(422, "invalid_request").field("workflow"),
        s("inputs is an array").json(json!({"workflow": "two-steps", "inputs": [1]})).expect(422, "invalid_request").field("inputs"),
        s("max_turns is a string").json(json!({"workflow": "two-steps", "inputs": task, "max_turns": "ten"})).expect(422, "invalid_request").field("max_turns"),
        s("max_turns is negative").json(json!({"workflow": "two-steps", "inputs": task, "max_turns": -1})).expect(422, "invalid_request").field("max_turns"),
        s("max_turns overflows").json(json!({"workflow": "two-steps", "inputs": task, "max_turns": 4_294_967_296_u64})).expect(422, "invalid_request").field("max_turns"),
        s("max_turns is 0").json(json!({"workflow": "two-steps", "inputs": task, "max_turns": 0})).expect(422, "invalid_request").field("max_turns"),
        s("session_name is a number").json(json!({"workflow": "two-steps", "inputs": task, "session_name": 5})).expect(422, "invalid_request").field("session_name"),
        s("workflow is missing").json(json!({"inputs": task})).expect(422, "invalid_request").field("workflow"),
        s("empty body: workflow is missing").expect(422, "invalid_request").field("workflow"),
        s("unknown field").json(json!({"workflow": "two-steps", "inptus": task})).expect(422, "invalid_request").field("inptus"),
        s("workflow is empty").json(json!({"workflow": "", "inputs": task})).expect(422, "invalid_request").field("workflow"),
        s("workflow is blank").json(json!({"workflow": "  ", "inputs": task})).expect(422, "invalid_request").field("workflow"),
        s("message given twice, differently").json(json!({"workflow": "architect", "message": "a", "inputs": {"message": "b"}})).expect(422, "invalid_request").field("message"),
        s("unknown workflow").json(json!({"workflow": "no-such-workflow", "message": "x"})).expect(422, "unknown_workflow").field("workflow"),
        s("required input missing").json(json!({"workflow": "two-steps"})).expect(422, "invalid_inputs").field("inputs.task").problem("inputs.task"),
        s("input of the wrong type").json(json!({"workflow": "two-steps", "inputs": {"task": 5}})).expect(422, "invalid_inputs").field("inputs.task").problem("inputs.task"),
        s("agent workflow without its message").json(json!({"workflow": "implement"})).expect(422, "invalid_inputs").field("inputs.message").problem("inputs.message"),
        s("unknown session to continue").json(json!({"workflow": "two-steps", "inputs": task, "continue_session": "no-such-session"})).expect(422, "unknown_session").field("continue_session"),
        s("agent workflow, unknown session to continue").json(json!({"workflow": "review", "message": "x", "continue_session": "no-such-session"})).expect(422, "unknown_session").field("continue_session"),
        s("text/plain").body("text/plain", r#"{"workflow": "two-steps", "inputs": {"task": "x"}}"#).expect(415, "unsupported_media_type"),
        s("no content type").untyped(r#"{"workflow": "two-steps", "inputs": {"task": "x"}}"#).expect(415, "unsupported_media_type"),
        s("a form").body("application/x-www-form-urlencoded", "workflow=two-steps").expect(415, "unsupported_media_type"),
        s("YAML").body("application/yaml", "workflow: two-steps\ninputs: {task: x}\n").expect(415, "unsupported_media_type"),
        s("one byte over the limit").body("application/json", too_big_json()).expect(413, "body_too_large"),
        s("over the limit, no length").stream("application/json", too_big_json()).expect(413, "body_too_large"),
        s("exactly the limit is read").body("application/json", exactly_the_limit).expect(422, "invalid_request").field("workflow"),
        s("Idempotency-Key twice").json(json!({"workflow": "two-steps", "inputs": task})).header("idempotency-key", "a").header("idempotency-key", "b").expect(400, "invalid_header").field("Idempotency-Key"),
        s("Idempotency-Key too long").json(json!({"workflow": "two-steps", "inputs": task})).header("idempotency-key", "k".repeat(201)).expect(400, "invalid_header").field("Idempotency-Key"),
        s("Idempotency-Key empty").json(json!({"workflow": "two-steps", "inputs": task})).header("idempotency-key", "").expect(400, "invalid_header").field("Idempotency-Key"),
        s("Idempotency-Key blank").json(json!({"workflow": "two-steps", "inputs": task})).header("idempotency-key", "   ").expect(400, "invalid_header").field("Idempotency-Key"),
        s("Idempotency-Key not ASCII").json(json!({"workflow": "two-steps", "inputs": task})).header("idempotency-key", b"caf\xe9").expect(400, "invalid_header").field("Idempotency-Key"),
    ]);

    // GET /v1/runs
    let l = |query: &str, what: &str| on(runs, format!("/v1/runs?{query}"), what);
    let tampered = tamper_cursor(&fx.cursor);
    rows.extend([
        l("limit=0", "limit 0").expect(400, "invalid_query").field("limit"),
        l("limit=101", "limit over the maximum").expect(400, "invalid_query").field("limit"),
        l("limit=-1", "negative limit").expect(400, "invalid_query"),
        l("limit=ten", "limit not a number").expect(400, "invalid_query"),
        l("limit=1&limit=2", "limit twice").expect(400, "invalid_query"),
        l("sort=bogus", "unknown sort").expect(400, "invalid_query").field("sort"),
        l("order=sideways", "unknown order").expect(400, "invalid_query").field("order"),
        l("status=bogus", "unknown status").expect(400, "invalid_query").field("status"),
        l("status=running,bogus", "one unknown status of two").expect(400, "invalid_query").field("status"),
        l("from=5&to=1", "from after to").expect(400, "invalid_query").field("from"),
        l("from=yesterday", "from not a number").expect(400, "invalid_query"),
        l("colour=red", "unknown parameter").expect(400, "invalid_query"),
        l("cursor=!!!", "cursor not base64url").expect(400, "invalid_cursor").field("cursor"),
        l(&format!("cursor={}", b64url_encode(br#"{"page": 2}"#)), "cursor not made by the store").expect(400, "invalid_cursor").field("cursor"),
        l(&format!("limit=1&cursor={tampered}"), "tampered cursor").expect(400, "invalid_cursor").field("cursor"),
        l(&format!("limit=1&cursor={}", fx.cost_cursor), "cursor of another query").expect(400, "invalid_cursor").field("cursor"),
    ]);

    // GET /v1/runs/{id}
    let get_run = "GET /v1/runs/{id}";
    rows.extend([
        on(get_run, "/v1/runs/no-such-run", "unknown run").expect(404, "run_not_found"),
        on(get_run, "/v1/runs/a%20b%2Fc", "unknown run, escaped").expect(404, "run_not_found"),
        on(get_run, "/v1/runs/%FF", "run id not UTF-8").expect(400, "invalid_path"),
    ]);

    // GET /v1/runs/{id}/events
    let events = "GET /v1/runs/{id}/events";
    let e = |query: &str, what: &str| on(events, format!("/v1/runs/{done}/events?{query}"), what);
    rows.extend([
        on(events, "/v1/runs/no-such-run/events", "unknown run").expect(404, "run_not_found"),
        e("limit=0", "limit 0").expect(400, "invalid_query").field("limit"),
        e("limit=1001", "limit over the maximum").expect(400, "invalid_query").field("limit"),
        e("after=-1", "negative after").expect(400, "invalid_query"),
        e("after=first", "after not a number").expect(400, "invalid_query"),
        e("page=2", "unknown parameter").expect(400, "invalid_query"),
    ]);

    // GET /v1/analytics
    let analytics = "GET /v1/analytics";
    let a = |query: &str, what: &str| on(analytics, format!("/v1/analytics?{query}"), what);
    rows.extend([
        a("window=soon", "window not a duration").expect(400, "invalid_query").field("window"),
        a("window=30s", "window under a minute").expect(400, "invalid_query").field("window"),
        a("window=100d", "window over 90 days").expect(400, "invalid_query").field("window"),
        a("window=24h&window=7d", "window twice").expect(400, "invalid_query"),
        a("since=1h", "unknown parameter").expect(400, "invalid_query"),
    ]);

    // POST /v1/runs/{id}/cancel (the bad bodies go to the live run: it must stay running)
    let cancel = "POST /v1/runs/{id}/cancel";
    let c = |id: &str, what: &str| on(cancel, format!("/v1/runs/{id}/cancel"), what);
    rows.extend([
        c("no-such-run", "unknown run").json(json!({})).expect(404, "run_not_found"),
        c(done, "a succeeded run").expect(409, "conflict"),
        c(failed, "a failed run").json(json!({"reason": "again"})).expect(409, "conflict"),
        c(live, "malformed JSON").body("application/json", "{force: true}").expect(400, "invalid_json"),
        c(live, "force is a string").json(json!({"force": "yes"})).expect(422, "invalid_request").field("force"),
        c(live, "reason is a number").json(json!({"reason": 5})).expect(422, "invalid_request").field("reason"),
        c(live, "unknown field").json(json!({"forse": true})).expect(422, "invalid_request").field("forse"),
        c(live, "an array").json(json!([true])).expect(422, "invalid_request"),
        c(live, "text/plain").body("text/plain", "{}").expect(415, "unsupported_media_type"),
        c(live, "one byte over the limit").body("application/json", padded("{}", MAX_BODY_BYTES + 1)).expect(413, "body_too_large"),
    ]);

    // POST /v1/runs/{id}/messages
    let messages = "POST /v1/runs/{id}/messages";
    let m = |id: &str, what: &str| on(messages, format!("/v1/runs/{id}/messages"), what);
    rows.extend([
        m("no-such-run", "unknown run").json(json!({"content": "hi"})).expect(404, "run_not_found"),
        m(done, "a succeeded run").json(json!({"content": "hi"})).expect(409, "conflict"),
        m(live, "content missing").json(json!({})).expect(422, "invalid_request").field("content"),
        m(live, "empty body: content missing").expect(422, "invalid_request").field("content"),
        m(live, "content empty").json(json!({"content": ""})).expect(422, "invalid_request").field("content"),
        m(live, "content blank").json(json!({"content": " \n\t"})).expect(422, "invalid_request").field("content"),
        m(live, "content is a number").json(json!({"content": 5})).expect(422, "invalid_request").field("content"),
        m(live, "content too long").json(json!({"content": "x".repeat(100_001)})).expect(422, "invalid_request").field("content"),
        m(live, "unknown type").json(json!({"content": "hi", "type": "robot"})).expect(422, "invalid_request").field("type"),
        m(live, "step is a number").json(json!({"content": "hi", "step": 5})).expect(422, "invalid_request").field("step"),
        m(live, "unknown field").json(json!({"content": "hi", "to": "architect"})).expect(422, "invalid_request").field("to"),
        m(live, "unknown step").json(json!({"content": "hi", "step": "nope"})).expect(422, "unknown_step").field("step"),
        m(live, "malformed JSON").body("application/json", r#"{"content": "hi""#).expect(400, "invalid_json"),
        m(live, "invalid UTF-8").body("application/json", b"{\"content\": \"h\xffi\"}".to_vec()).expect(400, "invalid_json"),
        m(live, "text/plain").body("text/plain", "hi").expect(415, "unsupported_media_type"),
        m(live, "one byte over the limit").body("application/json", padded(r#"{"content": "hi"}"#, MAX_BODY_BYTES + 1)).expect(413, "body_too_large"),
    ]);

    // POST /v1/runs/{id}/retry
    let retry = "POST /v1/runs/{id}/retry";
    let r = |id: &str, what: &str| on(retry, format!("/v1/runs/{id}/retry"), what);
    rows.extend([
        r("no-such-run", "unknown run").expect(404, "run_not_found"),
        r(done, "a succeeded run").expect(409, "conflict"),
        r(live, "a running run").json(json!({})).expect(409, "conflict"),
        r(failed, "unknown step").json(json!({"from_step": "nope"})).expect(422, "unknown_step").field("from_step"),
        r(failed, "from_step is a number").json(json!({"from_step": 1})).expect(422, "invalid_request").field("from_step"),
        r(failed, "unknown field").json(json!({"step": "architect"})).expect(422, "invalid_request").field("step"),
        r(failed, "malformed JSON").body("application/json", "{").expect(400, "invalid_json"),
        r(failed, "text/plain").body("text/plain", "{}").expect(415, "unsupported_media_type"),
        r(failed, "one byte over the limit").body("application/json", padded("{}", MAX_BODY_BYTES + 1)).expect(413, "body_too_large"),
    ]);

    // POST /v1/runs/{id}/rollback
    let rollback = "POST /v1/runs/{id}/rollback";
    let b = |id: &str, what: &str| on(rollback, format!("/v1/runs/{id}/rollback"), what);
    rows.extend([
        b("no-such-run", "unknown run").expect(404, "run_not_found"),
        b(done, "nothing to compensate").expect(409, "conflict"),
        b(failed, "nothing to compensate").json(json!({"reason": "undo"})).expect(409, "conflict"),
        b(live, "a running run").expect(409, "conflict"),
        b(done, "reason is a number").json(json!({"reason": 5})).expect(422, "invalid_request").field("reason"),
        b(done, "unknown field").json(json!({"why": "x"})).expect(422, "invalid_request").field("why"),
        b(done, "malformed JSON").body("application/json", "{]").expect(400, "invalid_json"),
        b(done, "text/plain").body("text/plain", "{}").expect(415, "unsupported_media_type"),
        b(done, "one byte over the limit").body("application/json", padded("{}", MAX_BODY_BYTES + 1)).expect(413, "body_too_large"),
    ]);

    // GET /v1/workflows/{id}
    let get_wf = "GET /v1/workflows/{id}";
    rows.extend([
        on(get_wf, "/v1/workflows/no-such-workflow", "unknown workflow").expect(404, "workflow_not_found"),
        on(get_wf, "/v1/workflows/two-steps?version=99", "unknown version").expect(404, "workflow_not_found"),
        on(get_wf, "/v1/workflows/two-steps?version=0", "version 0").expect(404, "workflow_not_found"),
        on(get_wf, "/v1/workflows/two-steps?version=latest", "version not a number").expect(400, "invalid_query"),
        on(get_wf, "/v1/workflows/two-steps?version=-1", "negative version").expect(400, "invalid_query"),
        on(get_wf, "/v1/workflows/two-steps?v=1", "unknown parameter").expect(400, "invalid_query"),
        on(get_wf, "/v1/workflows/%FF", "workflow id not UTF-8").expect(400, "invalid_path"),
    ]);

    // PUT /v1/workflows/{id}
    let put = "PUT /v1/workflows/{id}";
    let p = |id: &str, what: &str| on(put, format!("/v1/workflows/{id}"), what);
    let yaml = "application/yaml";
    rows.extend([
        p("two-steps", "malformed JSON").body("application/json", r#"{"id": "two-steps", "steps": ["#).expect(422, "invalid_definition"),
        p("two-steps", "malformed YAML").body(yaml, "id: two-steps\nsteps: [\n").expect(422, "invalid_definition"),
        p("two-steps", "no steps").body(yaml, "id: two-steps\n").expect(422, "invalid_definition").field("steps").problem("steps"),
        p("two-steps", "steps is a number").json(json!({"id": "two-steps", "steps": 5})).expect(422, "invalid_definition").field("steps").problem("steps"),
        p("two-steps", "unknown step kind").body(yaml, "id: two-steps\nsteps:\n  - id: a\n    kind: teleport\n").expect(422, "invalid_definition").field("steps[0].kind").problem("steps[0].kind"),
        p("two-steps", "duplicate step ids").body(yaml, &*TWO_STEPS.replace("id: build", "id: design")).expect(422, "invalid_definition").field("steps[1].id").problem("steps[1].id"),
        p("two-steps", "depends on an unknown step").body(yaml, &*TWO_STEPS.replace("depends_on: [design]", "depends_on: [nowhere]")).expect(422, "invalid_definition").field("steps[1].depends_on[0]").problem("steps[1].depends_on[0]"),
        p("two-steps", "unknown top-level field").body(yaml, &*format!("{TWO_STEPS}colour: red\n")).expect(422, "invalid_definition").field("colour").problem("colour"),
        p("other-id", "definition id differs from the URL").body(yaml, TWO_STEPS).expect(422, "invalid_definition").field("id"),
        p("two-steps", "URL id differs from the definition").body(yaml, &*TWO_STEPS.replace("id: two-steps", "id: three-steps")).expect(422, "invalid_definition").field("id"),
        p("Bad%20Id", "invalid workflow id").body(yaml, &*TWO_STEPS.replace("id: two-steps", "id: Bad Id")).expect(422, "invalid_definition").field("id").problem("id"),
        p("two-steps", "text/plain").body("text/plain", TWO_STEPS).expect(415, "unsupported_media_type"),
        p("two-steps", "no content type").untyped(TWO_STEPS).expect(415, "unsupported_media_type"),
        p("two-steps", "octet-stream").body("application/octet-stream", TWO_STEPS).expect(415, "unsupported_media_type"),
        p("two-steps", "empty body").body(yaml, "").expect(400, "empty_body"),
        p("two-steps", "no body, no content type").expect(415, "unsupported_media_type"),
        p("two-steps", "invalid UTF-8").body(yaml, [TWO_STEPS.as_bytes(), b"# caf\xe9\n"].concat()).expect(400, "invalid_utf8"),
        p("two-steps", "one byte over the limit").body(yaml, too_big_yaml()).expect(413, "body_too_large"),
        p("two-steps", "over the limit, no length").stream(yaml, too_big_yaml()).expect(413, "body_too_large"),
        p("%FF", "workflow id not UTF-8").body(yaml, TWO_STEPS).expect(400, "invalid_path"),
    ]);

    // DELETE /v1/workflows/{id}
    let delete = "DELETE /v1/workflows/{id}";
    rows.extend([
        on(delete, "/v1/workflows/no-such-workflow", "unknown workflow").expect(404, "workflow_not_found"),
        on(delete, "/v1/workflows/%FF", "workflow id not UTF-8").expect(400, "invalid_path"),
    ]);

    // POST /v1/workflows/validate
    let validate = "POST /v1/workflows/validate";
    let v = |query: &str, what: &str| on(validate, format!("/v1/workflows/validate{query}"), what);
    rows.extend([
        v("", "text/plain").body("text/plain", TWO_STEPS).expect(415, "unsupported_media_type"),
        v("", "no content type").untyped(TWO_STEPS).expect(415, "unsupported_media_type"),
        v("", "empty body").body(yaml, "").expect(400, "empty_body"),
        v("", "invalid UTF-8").body(yaml, b"id: caf\xe9\n".to_vec()).expect(400, "invalid_utf8"),
        v("", "one byte over the limit").body(yaml, too_big_yaml()).expect(413, "body_too_large"),
        v("?strict=maybe", "strict not a boolean").body(yaml, TWO_STEPS).expect(400, "invalid_query"),
        v("?lenient=true", "unknown parameter").body(yaml, TWO_STEPS).expect(400, "invalid_query"),
    ]);

    // GET /v1/sessions, GET /v1/sessions/{name}
    rows.extend([
        on("GET /v1/sessions", "/v1/sessions?active=maybe", "active not a boolean").expect(400, "invalid_query"),
        on("GET /v1/sessions", "/v1/sessions?name=x", "unknown parameter").expect(400, "invalid_query"),
        on("GET /v1/sessions/{name}", "/v1/sessions/no-such-session", "unknown session").expect(404, "session_not_found"),
        on("GET /v1/sessions/{name}", "/v1/sessions/%FF", "session name not UTF-8").expect(400, "invalid_path"),
    ]);

    // Approvals.
    let approvals = "GET /v1/approvals";
    let decide = "POST /v1/approvals/{id}/decision";
    let open = format!("/v1/approvals/{live}.architect.1/decision");
    rows.extend([
        on(approvals, "/v1/approvals?status=maybe", "unknown status").expect(422, "invalid_status").field("status"),
        on(approvals, "/v1/approvals?limit=0", "limit 0").expect(422, "invalid_limit").field("limit"),
        on(approvals, "/v1/approvals?limit=101", "limit 101").expect(422, "invalid_limit").field("limit"),
        on(approvals, "/v1/approvals?limit=x", "limit not a number").expect(400, "invalid_query"),
        on(approvals, "/v1/approvals?color=red", "unknown parameter").expect(400, "invalid_query"),
        on(decide, open.clone(), "no decision").json(json!({})).expect(422, "invalid_request").field("decision"),
        on(decide, open.clone(), "unknown decision").json(json!({"decision": "maybe"})).expect(422, "invalid_request").field("decision"),
        on(decide, open.clone(), "unknown field").json(json!({"decision": "approve", "by": "me"})).expect(422, "invalid_request").field("by"),
        on(decide, open.clone(), "malformed JSON").body("application/json", "{").expect(400, "invalid_json"),
        on(decide, open.clone(), "form body").body("application/x-www-form-urlencoded", "decision=approve").expect(415, "unsupported_media_type"),
        on(decide, open.clone(), "comment too long").json(json!({"decision": "reject", "comment": "x".repeat(3001)})).expect(422, "comment_too_long").field("comment"),
        on(decide, format!("/v1/approvals/{live}.nope.1/decision"), "unknown approval of a live run").json(json!({"decision": "approve"})).expect(404, "approval_not_found"),
        on(decide, "/v1/approvals/no-such-run.review.1/decision", "unknown run").json(json!({"decision": "approve"})).expect(404, "approval_not_found"),
        on(decide, "/v1/approvals/nodots/decision", "malformed id").json(json!({"decision": "approve"})).expect(404, "approval_not_found"),
        on(decide, open.clone(), "bad signature and no key").no_key().header("webhook-id", "msg_1").header("webhook-timestamp", "1").header("webhook-signature", "v1,AAAA").json(json!({"decision": "approve"})).expect(401, "unauthorized"),
        on("POST /slack/interactions", "/slack/interactions", "Slack not configured").no_key().body("application/x-www-form-urlencoded", "payload=%7B%7D").expect(503, "slack_not_configured"),
    ]);

    // Inbound webhook triggers (public: the signature is the credential).
    let hook = "POST /hooks/{trigger_id}";
    let signed = |body: &str| flowgate_shared::signing::sign_github(HOOK_SECRET.as_bytes(), body.as_bytes());
    let h = |what: &str| on(hook, format!("/hooks/{HOOK}"), what).no_key();
    rows.extend([
        off("GET", "/hooks/{trigger_id}", "GET a hook").expect(405, "method_not_allowed"),
        on(hook, "/hooks/no-such-hook", "unknown trigger").no_key().header("x-hub-signature-256", signed("{}")).json(json!({})).expect(404, "trigger_not_found"),
        on(hook, "/hooks/unset-hook", "no secret configured").no_key().header("x-hub-signature-256", signed("{}")).json(json!({})).expect(401, "hook_not_configured"),
        h("bad signature").header("x-hub-signature-256", format!("sha256={}", "0".repeat(64))).json(json!({"task": "x"})).expect(401, "signature_mismatch"),
        h("missing signature header").json(json!({"task": "x"})).expect(401, "missing_header"),
        h("SHA-1 signature").header("x-hub-signature-256", "sha1=0123456789abcdef0123456789abcdef01234567").json(json!({"task": "x"})).expect(401, "malformed_signature"),
        h("signature sent twice").header("x-hub-signature-256", signed("{}")).header("x-hub-signature-256", signed("{}")).json(json!({})).expect(401, "duplicate_header"),
        h("signed, not JSON").header("x-hub-signature-256", signed("not json")).body("application/json", "not json").expect(400, "invalid_json"),
        h("signed, delivery id sent twice").header("x-hub-signature-256", signed("{}")).header("x-github-delivery", "a").header("x-github-delivery", "b").body("application/json", "{}").expect(400, "invalid_header").field("x-github-delivery"),
        h("signed, mapped input missing").header("x-hub-signature-256", signed("{}")).body("application/json", "{}").expect(422, "missing_input").field("inputs.task"),
        h("signed, input of the wrong type").header("x-hub-signature-256", signed(r#"{"task":5}"#)).body("application/json", r#"{"task":5}"#).expect(422, "invalid_inputs").field("inputs.task"),
        h("one byte over the limit").body("application/json", too_big_json()).expect(413, "body_too_large"),
    ]);

    // Webhooks.
    let wh = fx.webhook.as_str();
    let unknown_wh = "wh_00000000000000000000000000000000";
    let c = |what: &str| on("POST /v1/webhooks", "/v1/webhooks", what);
    let hook = "https://example.com/hooks";
    let all = json!(["*"]);
    rows.extend([
        c("malformed JSON").body("application/json", r#"{"url": "#).expect(400, "invalid_json"),
        c("text/plain").body("text/plain", r#"{"url": "https://example.com/hooks", "events": ["*"]}"#).expect(415, "unsupported_media_type"),
        c("no content type").untyped(r#"{"url": "https://example.com/hooks", "events": ["*"]}"#).expect(415, "unsupported_media_type"),
        c("one byte over the limit").body("application/json", too_big_json()).expect(413, "body_too_large"),
        c("empty body: url is missing").expect(422, "invalid_request").field("url"),
        c("url is missing").json(json!({"events": all})).expect(422, "invalid_request").field("url"),
        c("url is a number").json(json!({"url": 5, "events": all})).expect(422, "invalid_request").field("url"),
        c("not a URL").json(json!({"url": "not a url", "events": all})).expect(422, "invalid_request").field("url"),
        c("relative URL").json(json!({"url": "/hooks", "events": all})).expect(422, "invalid_request").field("url"),
        c("ftp URL").json(json!({"url": "ftp://example.com/hooks", "events": all})).expect(422, "invalid_request").field("url"),
        c("events is missing").json(json!({"url": hook})).expect(422, "invalid_request").field("events"),
        c("empty events").json(json!({"url": hook, "events": []})).expect(422, "invalid_request").field("events"),
        c("events is a string").json(json!({"url": hook, "events": "run.started"})).expect(422, "invalid_request").field("events"),
        c("unknown event").json(json!({"url": hook, "events": ["run.started", "run.exploded"]})).expect(422, "unknown_event").field("events[1]"),
        c("secret without whsec_").json(json!({"url": hook, "events": all, "secret": "hunter2"})).expect(422, "invalid_request").field("secret"),
        c("secret key too short").json(json!({"url": hook, "events": all, "secret": "whsec_c2hvcnQ="})).expect(422, "invalid_request").field("secret"),
        c("unknown field").json(json!({"url": hook, "events": all, "filter": "x"})).expect(422, "invalid_request").field("filter"),
        on("GET /v1/webhooks/{id}", format!("/v1/webhooks/{unknown_wh}"), "unknown webhook").expect(404, "webhook_not_found"),
        on("GET /v1/webhooks/{id}", "/v1/webhooks/not-an-id", "not a webhook id").expect(404, "webhook_not_found"),
        on("GET /v1/webhooks/{id}", "/v1/webhooks/%FF", "id not UTF-8").expect(400, "invalid_path"),
        on("DELETE /v1/webhooks/{id}", format!("/v1/webhooks/{unknown_wh}"), "unknown webhook").expect(404, "webhook_not_found"),
        on("DELETE /v1/webhooks/{id}", "/v1/webhooks/%FF", "id not UTF-8").expect(400, "invalid_path"),
        on("GET /v1/webhooks/{id}/deliveries", format!("/v1/webhooks/{unknown_wh}/deliveries"), "unknown webhook").expect(404, "webhook_not_found"),
        on("GET /v1/webhooks/{id}/deliveries", format!("/v1/webhooks/{wh}/deliveries?limit=0"), "limit 0").expect(400, "invalid_query").field("limit"),
        on("GET /v1/webhooks/{id}/deliveries", format!("/v1/webhooks/{wh}/deliveries?limit=101"), "limit over the maximum").expect(400, "invalid_query").field("limit"),
        on("GET /v1/webhooks/{id}/deliveries", format!("/v1/webhooks/{wh}/deliveries?limit=ten"), "limit not a number").expect(400, "invalid_query"),
        on("GET /v1/webhooks/{id}/deliveries", format!("/v1/webhooks/{wh}/deliveries?since=1"), "unknown parameter").expect(400, "invalid_query"),
        off("DELETE", "/v1/webhooks", "DELETE every webhook").expect(405, "method_not_allowed"),
        off("PUT", format!("/v1/webhooks/{wh}"), "PUT a webhook").json(json!({"url": hook, "events": all})).expect(405, "method_not_allowed"),
        off("PATCH", format!("/v1/webhooks/{wh}"), "PATCH a webhook").json(json!({"enabled": true})).expect(405, "method_not_allowed"),
        off("POST", format!("/v1/webhooks/{wh}/deliveries"), "POST a delivery").json(json!({})).expect(405, "method_not_allowed"),
    ]);

    rows
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// Send one row; describe what is wrong with the answer, if anything.
async fn check(api: &TestApi, case: &Case) -> Option<String> {
    let before = api.snapshot().await;
    let res = api
        .app
        .clone()
        .oneshot(case.request())
        .await
        .expect("infallible");
    let status = res.status();
    let content_type = res
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not ASCII)").to_string());
    let bytes: Bytes = res.into_body().collect().await.expect("body").to_bytes();
    let after = api.snapshot().await;

    let text = String::from_utf8_lossy(&bytes);
    let mut wrong = Vec::new();
    if status != case.status {
        wrong.push(format!("status {status}, expected {}", case.status));
    }
    if content_type.as_deref() != Some("application/json") {
        wrong.push(format!("content type {content_type:?}"));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Err(e) => wrong.push(format!("body is not JSON ({e})")),
        Ok(body) => {
            wrong.extend(shape_problems(&body));
            let error = &body["error"];
            if error["code"] != case.code {
                wrong.push(format!("code {}, expected {:?}", error["code"], case.code));
            }
            let field = error["field"].as_str();
            if field != case.field {
                wrong.push(format!("field {field:?}, expected {:?}", case.field));
            }
            if let Some(path) = case.problem {
                let listed = error["problems"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["path"] == path));
                if !listed {
                    wrong.push(format!("no problem at {path:?}"));
                }
            }
            if case.code == "invalid_definition" && error["field"] != "id" {
                let problems = error["problems"].as_array().map_or(0, Vec::len);
                if problems == 0 {
                    wrong.push("an invalid definition lists no problems".to_string());
                }
            }
        }
    }
    if before != after {
        wrong.push(format!(
            "the request changed the state: {}",
            difference(&before, &after)
        ));
    }
    (!wrong.is_empty()).then(|| {
        format!(
            "{}: {}\n    answer: {}",
            case.label(),
            wrong.join("; "),
            text.chars().take(600).collect::<String>()
        )
    })
}

/// Where two snapshots first differ, with some context.
fn difference(before: &str, after: &str) -> String {
    let (before, after): (Vec<char>, Vec<char>) =
        (before.chars().collect(), after.chars().collect());
    let at = before
        .iter()
        .zip(&after)
        .position(|(a, b)| a != b)
        .unwrap_or(before.len().min(after.len()));
    let around = |s: &[char]| -> String {
        s[at.saturating_sub(150).min(s.len())..(at + 150).min(s.len())]
            .iter()
            .collect()
    };
    format!(
        "\n      before: ...{}...\n      after:  ...{}...",
        around(&before),
        around(&after)
    )
}

/// Whatever keeps `body` from being `{"error": {"code", "message", [field], [problems]}}`.
fn shape_problems(body: &Value) -> Vec<String> {
    let mut wrong = Vec::new();
    let Some(top) = body.as_object() else {
        return vec!["the body is not an object".to_string()];
    };
    if top.keys().ne(["error"].iter()) {
        wrong.push(format!(
            "top-level keys {:?}, expected [\"error\"]",
            top.keys()
        ));
    }
    let Some(error) = body["error"].as_object() else {
        wrong.push("error is not an object".to_string());
        return wrong;
    };
    for key in error.keys() {
        if !["code", "message", "field", "problems"].contains(&key.as_str()) {
            wrong.push(format!("unexpected key error.{key}"));
        }
    }
    for key in ["code", "message"] {
        let text = error.get(key).and_then(Value::as_str);
        if text.is_none_or(|s| s.trim().is_empty()) {
            wrong.push(format!("error.{key} is not a non-empty string"));
        }
    }
    if error.get("field").is_some_and(|f| !f.is_string()) {
        wrong.push("error.field is not a string".to_string());
    }
    if let Some(problems) = error.get("problems") {
        let well_formed = problems.as_array().is_some_and(|ps| {
            !ps.is_empty()
                && ps
                    .iter()
                    .all(|p| p["path"].is_string() && p["message"].is_string())
        });
        if !well_formed {
            wrong.push(format!(
                "error.problems is not a list of problems: {problems}"
            ));
        }
    }
    wrong
}

/// Every operation the OpenAPI document lists (`METHOD /template`): the router's own list.
fn operations() -> BTreeSet<String> {
    let doc = serde_json::to_value(flowgate_api::openapi()).expect("openapi");
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
            if item.get(method).is_some() {
                ops.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    ops
}

#[tokio::test]
async fn every_route_refuses_bad_input_with_one_error_shape_and_writes_nothing() {
    let fx = fixture().await;
    let rows = table(&fx);

    // The table covers every route, and every protected route without a key and with a
    // wrong one (a new route fails this until it has rows).
    let ops = operations();
    assert_eq!(ops.len(), ROUTE_COUNT, "{ops:#?}");
    let covered: BTreeSet<String> = rows.iter().filter_map(|c| c.op.map(String::from)).collect();
    let unknown: Vec<_> = covered.difference(&ops).collect();
    assert!(
        unknown.is_empty(),
        "rows name operations the API does not have: {unknown:?}"
    );
    for op in &ops {
        let rows_for = |what: &str| {
            rows.iter()
                .filter(|c| c.op == Some(op.as_str()) && c.what == what)
                .count()
        };
        if PUBLIC.contains(&op.as_str()) {
            assert_eq!(rows_for("no key"), 0, "{op} is public");
            let wrong_method = rows.iter().any(|c| {
                c.op.is_none() && c.code == "method_not_allowed" && op.ends_with(c.uri.as_str())
            });
            assert!(wrong_method, "no row sends {op}'s path with a wrong method");
        } else {
            assert_eq!(rows_for("no key"), 1, "{op} has no missing-key row");
            assert_eq!(rows_for("wrong key"), 1, "{op} has no wrong-key row");
            let others = rows
                .iter()
                .filter(|c| c.op == Some(op.as_str()) && c.status != StatusCode::UNAUTHORIZED)
                .count();
            // These take no input besides the key.
            if !op.ends_with("/v1/workflows")
                && !op.ends_with("/agent-workflows")
                && op != "GET /v1/webhooks"
                && op != "GET /v1/me"
            {
                assert!(
                    others > 0,
                    "{op} has no bad-input rows besides authentication"
                );
            }
        }
    }

    let mut failures = Vec::new();
    for case in &rows {
        if let Some(failure) = check(&fx.api, case).await {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows answered wrongly:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );

    // The live run is still running: nothing above cancelled or fed it.
    let live = fx
        .api
        .call("GET", &format!("/v1/runs/{}", fx.live), None)
        .await;
    assert_eq!(live.body["status"], "running");
}

#[tokio::test]
async fn public_routes_answer_without_a_key_and_ignore_a_wrong_one() {
    let api = TestApi::start().await;
    for path in ["/healthz", "/openapi.json"] {
        for key in [None, Some("not-the-key")] {
            let mut req = Request::get(path);
            if let Some(key) = key {
                req = req.header("x-api-key", key);
            }
            let answer = api.send(req.body(Body::empty()).unwrap()).await;
            assert_eq!(answer.status, StatusCode::OK, "{path} {key:?}");
        }
    }
}

#[tokio::test]
async fn validation_reports_an_unparsable_definition_instead_of_refusing_it() {
    let fx = fixture().await;
    for (content_type, text) in [
        ("application/json", r#"{"id": "two-steps", "steps": ["#),
        ("application/yaml", "id: two-steps\nsteps: [\n"),
        (
            "application/json",
            r#"{"id": "x", "steps": [{"id": "a", "kind": "teleport"}]}"#,
        ),
    ] {
        let before = fx.api.snapshot().await;
        let answer = fx
            .api
            .send(
                Request::post("/v1/workflows/validate")
                    .header("x-api-key", KEY)
                    .header("content-type", content_type)
                    .body(Body::from(text))
                    .unwrap(),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{text}: {:?}", answer.body);
        assert_eq!(answer.body["valid"], false, "{text}");
        assert!(
            !answer.body["problems"].as_array().unwrap().is_empty(),
            "{text}: {:?}",
            answer.body
        );
        assert_eq!(
            fx.api.snapshot().await,
            before,
            "validation wrote something"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Cursor tampering
// ---------------------------------------------------------------------------------------------

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64url_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(B64URL[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

fn b64url_decode(text: &str) -> Vec<u8> {
    let sextets: Vec<u32> = text
        .bytes()
        .map(|c| B64URL.iter().position(|&b| b == c).expect("base64url") as u32)
        .collect();
    let mut out = Vec::new();
    for chunk in sextets.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, s)| n | s << (18 - 6 * i));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// The cursor with its run id changed and its checksum kept: a well-formed cursor that the
/// store did not make.
fn tamper_cursor(cursor: &str) -> String {
    let mut doc: Value = serde_json::from_slice(&b64url_decode(cursor)).expect("cursor JSON");
    let id = doc["id"].as_str().expect("cursor id").to_string();
    doc["id"] = Value::from(format!("{id}0"));
    let tampered = b64url_encode(&serde_json::to_vec(&doc).expect("json"));
    assert_ne!(tampered, cursor);
    tampered
}

#[test]
fn base64url_round_trips() {
    for text in ["", "a", "ab", "abc", "abcd", r#"{"q":1,"id":"r-1"}"#] {
        assert_eq!(
            b64url_decode(&b64url_encode(text.as_bytes())),
            text.as_bytes()
        );
    }
    assert_eq!(b64url_encode(b"\xfb\xff"), "-_8");
}
