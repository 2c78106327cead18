//! The remote MCP endpoint (`/mcp`) at the HTTP level, through the router the Lambda and
//! `flowgate serve` run, plus `GET /v1/me` and the approver restriction it reports. (Real MCP
//! clients drive the endpoint end to end in `cli/tests/mcp_clients.rs`.)
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns read JSON the same way

mod support;

use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};
use support::{KEY, PRINCIPAL, RawAnswer, TestApi, TestOptions};

const BOT_KEY: &str = "bot-key";

/// alice (may approve) and bot (may not).
async fn api() -> TestApi {
    TestApi::start_with(TestOptions {
        extra_keys: vec![("bot".into(), BOT_KEY.into())],
        approvers: Some(PRINCIPAL.into()),
        ..TestOptions::default()
    })
    .await
}

/// A JSON-RPC message POSTed to `/mcp` the way a Streamable HTTP client sends it.
fn mcp_post(key: Option<&str>, host: &str, message: &Value) -> Request<Body> {
    let mut req = Request::post("/mcp")
        .header("host", host)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25");
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    req.body(Body::from(message.to_string())).unwrap()
}

fn json_of(answer: &RawAnswer) -> Value {
    serde_json::from_slice(&answer.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", answer.text()))
}

fn request(id: u32, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn initialize() -> Value {
    request(
        1,
        "initialize",
        json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"}
        }),
    )
}

async fn tool_names(api: &TestApi, key: &str) -> Vec<String> {
    let answer = api
        .send_raw(mcp_post(
            Some(key),
            "localhost",
            &request(2, "tools/list", json!({})),
        ))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    json_of(&answer)["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn me_says_who_the_key_is_and_whether_it_may_approve() {
    let api = api().await;
    let alice = api.call("GET", "/v1/me", None).await;
    assert_eq!(alice.status, 200);
    assert_eq!(
        alice.body,
        json!({"principal": "alice", "may_approve": true})
    );
    let bot = api.call_as(Some(BOT_KEY), "GET", "/v1/me", None).await;
    assert_eq!(bot.body, json!({"principal": "bot", "may_approve": false}));
    let nobody = api.call_as(None, "GET", "/v1/me", None).await;
    assert_eq!(nobody.status, 401);

    // Without a restriction every key may approve (the default before the setting existed).
    let open = TestApi::start().await;
    let me = open.call("GET", "/v1/me", None).await;
    assert_eq!(me.body["may_approve"], true);
}

#[tokio::test]
async fn a_key_that_may_not_approve_is_refused_before_the_approval_is_looked_at() {
    let api = api().await;
    let decision = json!({"decision": "approve"});
    let bot = api
        .call_as(
            Some(BOT_KEY),
            "POST",
            "/v1/approvals/r-1.review.1/decision",
            Some(decision.clone()),
        )
        .await;
    assert_eq!(bot.status, 403);
    assert_eq!(bot.code(), "not_an_approver");
    assert!(
        bot.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("FLOWGATE_API_KEY_APPROVERS")
    );
    let alice = api
        .call(
            "POST",
            "/v1/approvals/r-1.review.1/decision",
            Some(decision),
        )
        .await;
    assert_eq!(alice.status, 404, "{:?}", alice.body);
}

#[tokio::test]
async fn mcp_refuses_a_missing_or_wrong_key_with_a_json_rpc_error() {
    let api = api().await;
    for key in [None, Some("not-the-key")] {
        let answer = api
            .send_raw(mcp_post(key, "localhost", &initialize()))
            .await;
        assert_eq!(answer.status, 401, "{}", answer.text());
        let body = json_of(&answer);
        assert_eq!(body["jsonrpc"], "2.0");
        assert_eq!(body["id"], 1, "the request's id comes back");
        assert_eq!(body["error"]["code"], -32001);
        assert_eq!(body["error"]["data"]["code"], "unauthorized");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("x-api-key"), "{message}");
        assert!(answer.headers.contains_key("www-authenticate"));
    }
    // Also before rmcp's own answers (405 for GET).
    let get = api
        .send_raw(
            Request::get("/mcp")
                .header("host", "localhost")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(get.status, 401);
}

#[tokio::test]
async fn mcp_is_stateless_json_on_allowed_hosts_only() {
    let api = api().await;
    let init = api
        .send_raw(mcp_post(Some(KEY), "localhost:8787", &initialize()))
        .await;
    assert_eq!(init.status, 200, "{}", init.text());
    assert!(
        init.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert!(
        !init.headers.contains_key("mcp-session-id"),
        "stateless: no session"
    );
    let result = &json_of(&init)["result"];
    assert_eq!(result["serverInfo"]["name"], "flowgate");
    assert!(result["capabilities"]["tools"].is_object());

    // No server-to-client stream, no sessions to end.
    for method in ["GET", "DELETE"] {
        let answer = api
            .send_raw(
                Request::builder()
                    .method(method)
                    .uri("/mcp")
                    .header("host", "localhost")
                    .header("x-api-key", KEY)
                    .header("accept", "text/event-stream")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(answer.status, 405, "{method}: {}", answer.text());
    }

    // A Host that is not configured is refused (DNS-rebinding protection).
    let foreign = api
        .send_raw(mcp_post(Some(KEY), "evil.example.com", &initialize()))
        .await;
    assert_eq!(foreign.status, 403, "{}", foreign.text());
}

#[tokio::test]
async fn decide_approval_is_listed_only_for_keys_that_may_approve() {
    let api = api().await;
    let alice = tool_names(&api, KEY).await;
    let bot = tool_names(&api, BOT_KEY).await;
    assert_eq!(alice.len(), 10, "{alice:?}");
    assert!(alice.iter().any(|n| n == "decide_approval"));
    assert_eq!(
        bot,
        alice
            .iter()
            .filter(|n| *n != "decide_approval")
            .cloned()
            .collect::<Vec<_>>()
    );

    // Calling it anyway gets the API's refusal as a tool error.
    let call = api
        .send_raw(mcp_post(
            Some(BOT_KEY),
            "localhost",
            &request(
                3,
                "tools/call",
                json!({"name": "decide_approval",
                       "arguments": {"approval_id": "r-1.review.1", "decision": "approve"}}),
            ),
        ))
        .await;
    let result = &json_of(&call)["result"];
    assert_eq!(result["isError"], true, "{result}");
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("not_an_approver"), "{text}");
}

#[tokio::test]
async fn tool_calls_act_as_the_caller_through_the_api() {
    let api = api().await;
    let call = |key: &'static str, id: u32, name: &str, arguments: Value| {
        mcp_post(
            Some(key),
            "127.0.0.1",
            &request(
                id,
                "tools/call",
                json!({"name": name, "arguments": arguments}),
            ),
        )
    };
    let started = api
        .send_raw(call(
            BOT_KEY,
            1,
            "run_workflow",
            json!({"workflow_name": "architect", "message": "Design a queue"}),
        ))
        .await;
    let result = json_of(&started)["result"].clone();
    assert_eq!(result["isError"], false, "{result}");
    let run_id = result["structuredContent"]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        result["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains(&run_id)
    );

    // The run was started by the key's principal, as a REST call would have been.
    let run = api.call("GET", &format!("/v1/runs/{run_id}"), None).await;
    assert_eq!(run.body["started_by"], "bot");

    // Path-like ids cannot reach another route.
    let odd = api
        .send_raw(call(
            KEY,
            2,
            "get_workflow_status",
            json!({"run_id": "../workflows"}),
        ))
        .await;
    let result = &json_of(&odd)["result"];
    assert_eq!(result["isError"], true, "{result}");
    assert!(
        result["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("run_not_found"),
        "{result}"
    );
}

/// `events/mcp/tools-list.json` through `lambda_http`'s conversions, as on Lambda.
async fn lambda_tools_list(api: &TestApi) -> (axum::http::StatusCode, String) {
    use lambda_http::IntoResponse as _;
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events/mcp/tools-list.json");
    let text = std::fs::read_to_string(&path).expect("the event file");
    let event: lambda_http::request::LambdaRequest =
        serde_json::from_str(&text).expect("an API Gateway event");
    let request: lambda_http::Request = event.into();
    let response = tower::ServiceExt::oneshot(api.app.clone(), request)
        .await
        .expect("infallible")
        .into_response()
        .await;
    let status = response.status();
    let body = match response.into_body() {
        lambda_http::Body::Text(text) => text,
        lambda_http::Body::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        other => format!("{other:?}"),
    };
    (status, body)
}

#[tokio::test]
async fn on_lambda_the_api_gateway_host_is_allowed_through_the_public_url() {
    let deployed = TestApi::start_with(TestOptions {
        notify: flowgate_shared::notify::config::NotifyConfig {
            public_url: Some("https://f1owg8te01.execute-api.eu-west-1.amazonaws.com".into()),
            ..Default::default()
        },
        ..TestOptions::default()
    })
    .await;
    let (status, body) = lambda_tools_list(&deployed).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["id"], 7);
    assert_eq!(answer["result"]["tools"].as_array().unwrap().len(), 10);

    // Without the public URL (or FLOWGATE_MCP_ALLOWED_HOSTS) the gateway's host is refused.
    let unconfigured = TestApi::start().await;
    let (status, body) = lambda_tools_list(&unconfigured).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Host"), "{body}");
}
