//! The Slack module: the Web API client against wiremock standing in for Slack, the Block Kit
//! layouts (ids the interaction handler relies on, escaping, limits) and interaction parsing
//! (the S2 vector of `docs/test-vectors.md`, a modal submission, and refusals).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use flowgate_shared::definition::WorkflowDefinition;
use flowgate_shared::model::{
    AgentProgress, ApprovalDecision, ApprovalStatus, DecisionRecord, Run, RunStatus, StepStatus,
};
use flowgate_shared::slack::blocks::{escape, link, mention, slack_date};
use flowgate_shared::slack::{
    ApprovalRequest, ButtonAction, DecisionMetadata, Interaction, InteractionError, PostedMessage,
    SlackClient, SlackConfig, SlackError, approval_closed, approval_id_from_block_id,
    approval_progress, approval_request, decision_modal, event_reply, parse_decision_metadata,
    parse_interaction, run_thread, run_thread_view,
};
use serde_json::{Map, Value, json};
use wiremock::matchers::{body_json, body_string, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "xoxb-test-2f9c41d7";

fn client(server: &MockServer) -> SlackClient {
    SlackClient::new(SlackConfig {
        token: TOKEN.into(),
        base_url: format!("{}/api", server.uri()),
        timeout: Duration::from_secs(2),
    })
    .unwrap()
}

fn ok(extra: Value) -> ResponseTemplate {
    let mut body = json!({ "ok": true });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    ResponseTemplate::new(200).set_body_json(body)
}

fn slack_error(code: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({ "ok": false, "error": code }))
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn post_message_sends_token_json_and_returns_channel_and_ts() {
    let server = MockServer::start().await;
    let blocks = json!([{ "type": "section", "text": { "type": "mrkdwn", "text": "hi" } }]);
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("content-type", "application/json; charset=utf-8"))
        .and(body_json(json!({
            "channel": "#deploys", "text": "hi", "blocks": blocks, "thread_ts": "1700000000.000100"
        })))
        .respond_with(ok(json!({
            "channel": "C0123ABCD", "ts": "1700000001.000200",
            "message": { "text": "hi", "type": "message" }
        })))
        .expect(1)
        .mount(&server)
        .await;
    let posted = client(&server)
        .post_message("#deploys", "hi", Some(&blocks), Some("1700000000.000100"))
        .await
        .unwrap();
    assert_eq!(
        posted,
        PostedMessage {
            channel: "C0123ABCD".into(),
            ts: "1700000001.000200".into()
        }
    );
}

#[tokio::test]
async fn post_message_without_blocks_or_thread_sends_neither_field() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .and(body_json(json!({ "channel": "C1", "text": "plain" })))
        .respond_with(ok(json!({ "channel": "C1", "ts": "1.2" })))
        .expect(1)
        .mount(&server)
        .await;
    let posted = client(&server)
        .post_message("C1", "plain", None, None)
        .await
        .unwrap();
    assert_eq!(posted.ts, "1.2");
}

#[tokio::test]
async fn ok_false_is_an_api_error_with_the_code_and_advice() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .respond_with(slack_error("channel_not_found"))
        .mount(&server)
        .await;
    let err = client(&server)
        .post_message("C404", "hi", None, None)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SlackError::Api {
            method: "chat.postMessage".into(),
            error: "channel_not_found".into()
        }
    );
    assert_eq!(err.api_error(), Some("channel_not_found"));
    assert!(!err.is_retryable());
    assert_eq!(err.retry_after(), None);
    let text = err.to_string();
    assert!(
        text.contains("invite the app to the channel or fix slack_channel"),
        "{text}"
    );
}

#[tokio::test]
async fn slack_side_error_codes_are_retryable() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.update"))
        .respond_with(slack_error("ratelimited"))
        .mount(&server)
        .await;
    let err = client(&server)
        .update_message("C1", "1.2", "x", None)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    for code in [
        "internal_error",
        "service_unavailable",
        "request_timeout",
        "fatal_error",
    ] {
        let e = SlackError::Api {
            method: "chat.update".into(),
            error: code.into(),
        };
        assert!(e.is_retryable(), "{code}");
    }
    for code in [
        "invalid_auth",
        "missing_scope",
        "not_in_channel",
        "invalid_blocks",
    ] {
        let e = SlackError::Api {
            method: "chat.update".into(),
            error: code.into(),
        };
        assert!(!e.is_retryable(), "{code}");
    }
}

#[tokio::test]
async fn http_429_is_rate_limited_with_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "30")
                .set_body_json(json!({ "ok": false, "error": "ratelimited" })),
        )
        .mount(&server)
        .await;
    let err = client(&server)
        .post_message("C1", "hi", None, None)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SlackError::RateLimited {
            retry_after: Some(Duration::from_secs(30))
        }
    );
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
    assert!(err.to_string().contains("30 s"), "{err}");
}

#[tokio::test]
async fn http_5xx_is_retryable_and_4xx_is_not() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/views.open"))
        .respond_with(ResponseTemplate::new(500).set_body_string("oops"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postEphemeral"))
        .respond_with(ResponseTemplate::new(404).set_body_string("not here"))
        .mount(&server)
        .await;
    let c = client(&server);
    let err = c.open_view("123.456", &json!({})).await.unwrap_err();
    assert_eq!(err, SlackError::Http { status: 500 });
    assert!(err.is_retryable());
    let err = c.post_ephemeral("C1", "U1", "x").await.unwrap_err();
    assert_eq!(err, SlackError::Http { status: 404 });
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_body_that_is_not_slack_json_is_a_decode_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>proxy</html>"))
        .mount(&server)
        .await;
    let c = client(&server);
    let err = c.post_message("C1", "x", None, None).await.unwrap_err();
    assert!(matches!(err, SlackError::Decode(_)), "{err:?}");
    assert!(!err.is_retryable());
    // ok:true without channel/ts cannot be used to update the message later.
    let server2 = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ok(json!({})))
        .mount(&server2)
        .await;
    let err = client(&server2)
        .post_message("C1", "x", None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, SlackError::Decode(_)), "{err:?}");
}

#[tokio::test]
async fn unreachable_slack_is_a_retryable_transport_error() {
    // A port that was free a moment ago and has nobody listening now.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let c = SlackClient::new(SlackConfig {
        base_url: format!("http://127.0.0.1:{port}/api/"),
        ..SlackConfig::new(TOKEN)
    })
    .unwrap();
    let err = c.post_message("C1", "x", None, None).await.unwrap_err();
    assert!(matches!(err, SlackError::Transport(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("chat.postMessage"), "{err}");
}

#[tokio::test]
async fn update_message_sends_channel_ts_text_and_blocks() {
    let server = MockServer::start().await;
    let blocks = json!([]);
    Mock::given(method("POST"))
        .and(path("/api/chat.update"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(body_json(json!({
            "channel": "C1", "ts": "1700000000.000100", "text": "done", "blocks": []
        })))
        .respond_with(ok(json!({ "channel": "C1", "ts": "1700000000.000100" })))
        .expect(1)
        .mount(&server)
        .await;
    client(&server)
        .update_message("C1", "1700000000.000100", "done", Some(&blocks))
        .await
        .unwrap();
}

#[tokio::test]
async fn open_view_sends_trigger_and_view() {
    let server = MockServer::start().await;
    let view = decision_modal("r-01HX.review.1", "reject", "C1", "1.2");
    Mock::given(method("POST"))
        .and(path("/api/views.open"))
        .and(header("content-type", "application/json; charset=utf-8"))
        .and(body_json(
            json!({ "trigger_id": "398738663015.47445629121.803a", "view": view }),
        ))
        .respond_with(ok(json!({ "view": { "id": "V1" } })))
        .expect(1)
        .mount(&server)
        .await;
    client(&server)
        .open_view("398738663015.47445629121.803a", &view)
        .await
        .unwrap();
}

#[tokio::test]
async fn post_ephemeral_sends_channel_user_text() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postEphemeral"))
        .and(body_json(json!({
            "channel": "C1", "user": "U2CERLKJA", "text": "You are not an approver"
        })))
        .respond_with(ok(json!({ "message_ts": "1.3" })))
        .expect(1)
        .mount(&server)
        .await;
    client(&server)
        .post_ephemeral("C1", "U2CERLKJA", "You are not an approver")
        .await
        .unwrap();
}

#[tokio::test]
async fn usergroup_members_posts_a_form_and_returns_users() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/usergroups.users.list"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string("usergroup=S0614TZR7"))
        .respond_with(ok(json!({ "users": ["U060R4BJ4", "W123A4BC5"] })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/usergroups.users.list"))
        .and(body_string("usergroup=S404"))
        .respond_with(slack_error("no_such_subteam"))
        .mount(&server)
        .await;
    let c = client(&server);
    assert_eq!(
        c.usergroup_members("S0614TZR7").await.unwrap(),
        vec!["U060R4BJ4".to_string(), "W123A4BC5".to_string()]
    );
    let err = c.usergroup_members("S404").await.unwrap_err();
    assert_eq!(err.api_error(), Some("no_such_subteam"));
}

#[tokio::test]
async fn debug_never_shows_the_token() {
    let server = MockServer::start().await;
    let c = client(&server);
    let shown = format!("{c:?}");
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    let config = SlackConfig::new(TOKEN);
    let shown = format!("{config:?}");
    assert!(!shown.contains(TOKEN), "{shown}");
    assert_eq!(config.base_url, "https://slack.com/api/");
    assert_eq!(config.timeout, Duration::from_secs(5));
}

#[test]
fn bad_configuration_is_refused() {
    let err = SlackClient::new(SlackConfig::new("  ")).unwrap_err();
    assert!(matches!(err, SlackError::Config(_)), "{err:?}");
    let err = SlackClient::new(SlackConfig {
        base_url: "ftp://slack.example".into(),
        ..SlackConfig::new(TOKEN)
    })
    .unwrap_err();
    assert!(matches!(err, SlackError::Config(_)), "{err:?}");
    let err = SlackClient::new(SlackConfig::new("xoxb-bad\ntoken")).unwrap_err();
    assert!(!err.to_string().contains("xoxb-bad"), "{err}");
    let c = SlackClient::new(SlackConfig::new(TOKEN)).unwrap();
    assert_eq!(c.base_url(), "https://slack.com/api/");
}

// ---------------------------------------------------------------------------------------------
// Blocks
// ---------------------------------------------------------------------------------------------

fn request() -> ApprovalRequest {
    ApprovalRequest {
        run_id: "r-01HX".into(),
        workflow: "Ship it".into(),
        step: "review".into(),
        approval_id: "r-01HX.review.1".into(),
        message: "Deploy *v2* to production?".into(),
        approvers: vec!["U123ABCDE".into(), "slack:U456ABCDE".into()],
        required: 2,
        expires_at: Some(1_700_000_000_000),
        run_url: Some("https://flowgate.example/v1/runs/r-01HX".into()),
        reminder: false,
    }
}

fn blocks_of(value: &Value) -> &Vec<Value> {
    value.as_array().unwrap()
}

fn actions_block(blocks: &Value) -> Option<&Value> {
    blocks_of(blocks).iter().find(|b| b["type"] == "actions")
}

fn all_text(blocks: &Value) -> String {
    blocks.to_string()
}

fn decision(
    by: &str,
    decision: ApprovalDecision,
    comment: Option<&str>,
    at: i64,
) -> DecisionRecord {
    DecisionRecord {
        by: by.into(),
        decision,
        comment: comment.map(str::to_string),
        at,
    }
}

#[test]
fn approval_request_has_the_five_buttons_under_the_approval_block_id() {
    let (text, blocks) = approval_request(&request());
    assert!(text.contains("r-01HX") && text.contains("review"), "{text}");
    let list = blocks_of(&blocks);
    assert_eq!(list[0]["type"], "section");
    assert_eq!(list[0]["text"]["type"], "mrkdwn");
    assert_eq!(list[0]["text"]["text"], "Deploy *v2* to production?");
    let context = list[1]["elements"][0]["text"].as_str().unwrap();
    assert!(context.contains("`r-01HX`"), "{context}");
    assert!(context.contains("`review`"), "{context}");
    assert!(context.contains("2 of 2 approvers"), "{context}");
    assert!(
        context.contains("<@U123ABCDE>") && context.contains("<@U456ABCDE>"),
        "{context}"
    );
    assert!(
        context.contains("<!date^1700000000^{date_short_pretty} {time}|2023-11-14T22:13:20Z>"),
        "{context}"
    );
    assert!(
        context.contains("<https://flowgate.example/v1/runs/r-01HX|View run>"),
        "{context}"
    );

    let actions = actions_block(&blocks).unwrap();
    assert_eq!(actions["block_id"], "approval:r-01HX.review.1");
    assert_eq!(
        approval_id_from_block_id(actions["block_id"].as_str().unwrap()),
        Some("r-01HX.review.1")
    );
    let buttons = actions["elements"].as_array().unwrap();
    let ids: Vec<&str> = buttons
        .iter()
        .map(|b| b["action_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["approve", "reject", "retry", "skip", "cancel"]);
    for b in buttons {
        assert_eq!(b["type"], "button");
        assert_eq!(b["value"], b["action_id"]);
        assert!(
            b["action_id"]
                .as_str()
                .unwrap()
                .parse::<ButtonAction>()
                .is_ok()
        );
    }
    assert_eq!(buttons[0]["style"], "primary");
    assert_eq!(buttons[1]["style"], "danger");
    assert_eq!(buttons[2]["text"]["text"], "Retry with feedback");
    assert_eq!(buttons[4]["text"]["text"], "Cancel run");
    let confirm = &buttons[4]["confirm"];
    assert!(confirm.is_object(), "{confirm}");
    assert_eq!(confirm["confirm"]["text"], "Cancel run");
    assert!(buttons[0].get("confirm").is_none());
    assert!(ButtonAction::Reject.needs_comment() && ButtonAction::Retry.needs_comment());
    assert!(!ButtonAction::Approve.needs_comment());
}

#[test]
fn the_reminder_keeps_the_buttons() {
    let mut req = request();
    let (_, full) = approval_request(&req);
    req.reminder = true;
    let (text, blocks) = approval_request(&req);
    assert!(text.contains("Reminder"), "{text}");
    assert!(
        all_text(&blocks).contains("Reminder: still waiting for a decision"),
        "{blocks}"
    );
    assert_eq!(actions_block(&blocks), actions_block(&full));
}

#[test]
fn long_messages_are_cut_to_the_section_limit() {
    let mut req = request();
    req.message = "&".repeat(5000);
    let (_, blocks) = approval_request(&req);
    let section = blocks_of(&blocks)[0]["text"]["text"].as_str().unwrap();
    assert!(
        section.chars().count() <= 3000,
        "{}",
        section.chars().count()
    );
    assert!(section.ends_with('…'));
    // Never half an entity before the ellipsis.
    assert!(
        section.trim_end_matches('…').ends_with("&amp;"),
        "{section}"
    );
}

#[test]
fn user_text_is_escaped() {
    let mut req = request();
    req.message = "<script>alert('x')</script> & <!channel>".into();
    req.workflow = "<b>wf</b>".into();
    let (text, blocks) = approval_request(&req);
    let rendered = all_text(&blocks);
    assert!(!rendered.contains("<script>"), "{rendered}");
    assert!(!rendered.contains("<!channel>"), "{rendered}");
    assert!(!text.contains("<b>"), "{text}");
    assert_eq!(
        blocks_of(&blocks)[0]["text"]["text"],
        "&lt;script&gt;alert('x')&lt;/script&gt; &amp; &lt;!channel&gt;"
    );
    assert_eq!(escape("a < b && c > d"), "a &lt; b &amp;&amp; c &gt; d");
    assert_eq!(
        link("https://x.example/?a=1&b=2|3", "<run>"),
        "<https://x.example/?a=1&amp;b=2%7C3|&lt;run&gt;>"
    );
    assert_eq!(mention("slack:U2CERLKJA"), "<@U2CERLKJA>");
    assert_eq!(mention("S0614TZR7"), "<!subteam^S0614TZR7>");
    assert_eq!(mention("api:ci<bot>"), "api:ci&lt;bot&gt;");
    let reply = event_reply(
        "step.failed",
        Some("build"),
        &json!({ "error": "<script>boom</script>" }),
        None,
    );
    assert!(!reply.contains("<script>"), "{reply}");
}

#[test]
fn a_closed_approval_has_no_buttons_and_names_the_outcome_and_decider() {
    let req = request();
    let decisions = [
        decision(
            "slack:U123ABCDE",
            ApprovalDecision::Approve,
            None,
            1_700_000_100_000,
        ),
        decision(
            "slack:U456ABCDE",
            ApprovalDecision::Approve,
            Some("LGTM, ship <it>"),
            1_700_000_200_000,
        ),
    ];
    let (text, blocks) = approval_closed(&req, ApprovalStatus::Approved, &decisions);
    assert!(text.contains("approved"), "{text}");
    assert!(actions_block(&blocks).is_none(), "{blocks}");
    let rendered = all_text(&blocks);
    assert!(
        rendered.contains("Deploy *v2* to production?"),
        "{rendered}"
    );
    assert!(
        rendered.contains("*Approved* by <@U123ABCDE>"),
        "{rendered}"
    );
    assert!(rendered.contains("<@U456ABCDE>"), "{rendered}");
    assert!(
        rendered.contains("<!date^1700000100^{date_short_pretty} {time}|2023-11-14T22:15:00Z>"),
        "{rendered}"
    );
    assert!(rendered.contains("> LGTM, ship &lt;it&gt;"), "{rendered}");
    assert_eq!(
        slack_date(1_700_000_100_000),
        "<!date^1700000100^{date_short_pretty} {time}|2023-11-14T22:15:00Z>"
    );

    let rejected = [decision(
        "U123ABCDE",
        ApprovalDecision::Reject,
        Some("too risky\nsecond line"),
        1_700_000_300_000,
    )];
    let (text, blocks) = approval_closed(&req, ApprovalStatus::Rejected, &rejected);
    assert!(text.contains("rejected"), "{text}");
    assert!(actions_block(&blocks).is_none());
    let rendered = all_text(&blocks);
    assert!(
        rendered.contains("*Rejected* by <@U123ABCDE>"),
        "{rendered}"
    );
    assert!(
        rendered.contains("> too risky\\n> second line"),
        "{rendered}"
    );

    let (_, blocks) = approval_closed(&req, ApprovalStatus::Expired, &[]);
    assert!(actions_block(&blocks).is_none());
    assert!(
        all_text(&blocks).contains("*Expired* without a decision"),
        "{blocks}"
    );
}

#[test]
fn a_partial_decision_keeps_the_buttons_and_counts() {
    let req = request();
    let decisions = [decision(
        "slack:U123ABCDE",
        ApprovalDecision::Approve,
        None,
        1_700_000_100_000,
    )];
    let (text, blocks) = approval_progress(&req, &decisions);
    assert!(text.contains("1 of 2"), "{text}");
    assert_eq!(
        actions_block(&blocks),
        actions_block(&approval_request(&req).1)
    );
    let rendered = all_text(&blocks);
    assert!(
        rendered.contains("1 of 2 approvals: <@U123ABCDE>"),
        "{rendered}"
    );
    assert_eq!(
        approval_closed(&req, ApprovalStatus::Pending, &decisions),
        (text, blocks)
    );
}

#[test]
fn the_decision_modal_carries_the_approval_and_asks_for_text() {
    let view = decision_modal(
        "r-01HX.review.1",
        "reject",
        "C0123ABCD",
        "1700000000.000100",
    );
    assert_eq!(view["type"], "modal");
    assert_eq!(view["callback_id"], "approval_decision");
    assert_eq!(
        view["private_metadata"],
        r#"{"approval_id":"r-01HX.review.1","action":"reject","channel":"C0123ABCD","message_ts":"1700000000.000100"}"#
    );
    assert!(view["title"]["text"].as_str().unwrap().chars().count() <= 24);
    assert_eq!(view["submit"]["type"], "plain_text");
    assert_eq!(view["close"]["type"], "plain_text");
    let input = blocks_of(&view["blocks"])
        .iter()
        .find(|b| b["type"] == "input")
        .unwrap();
    assert_eq!(input["block_id"], "comment");
    assert_eq!(input["label"]["text"], "Reason");
    assert_eq!(input["optional"], false);
    let element = &input["element"];
    assert_eq!(element["type"], "plain_text_input");
    assert_eq!(element["action_id"], "comment");
    assert_eq!(element["multiline"], true);
    assert_eq!(element["max_length"], 3000);

    let retry = decision_modal("r-01HX.review.1", "retry", "C1", "1.2");
    let input = blocks_of(&retry["blocks"])
        .iter()
        .find(|b| b["type"] == "input")
        .unwrap();
    assert_eq!(input["label"]["text"], "Feedback for the agent");
    assert_eq!(input["optional"], false);
    assert!(retry["title"]["text"].as_str().unwrap().chars().count() <= 24);

    let meta = parse_decision_metadata(retry["private_metadata"].as_str().unwrap()).unwrap();
    assert_eq!(
        meta,
        DecisionMetadata {
            approval_id: "r-01HX.review.1".into(),
            action: "retry".into(),
            channel: "C1".into(),
            message_ts: "1.2".into(),
        }
    );
}

fn definition() -> WorkflowDefinition {
    serde_json::from_value(json!({
        "id": "ship",
        "name": "Ship it",
        "steps": [
            { "id": "zeta-plan", "kind": "agent", "workflow": "architect", "message": "plan",
              "max_turns": 10 },
            { "id": "build", "kind": "agent", "workflow": "builder", "message": "build",
              "depends_on": ["zeta-plan"] },
            { "id": "alpha-review", "kind": "approval", "message": "ok?",
              "depends_on": ["build"] }
        ]
    }))
    .unwrap()
}

#[test]
fn run_thread_lists_steps_in_definition_order_with_turns_and_cost() {
    let def = definition();
    let mut run = Run::new("r-01HX", &def, 1, Map::new(), 1_700_000_000_000);
    run.status = RunStatus::Running;
    let plan = run.steps.get_mut("zeta-plan").unwrap();
    plan.status = StepStatus::Running;
    plan.attempt = 1;
    plan.agent = Some(AgentProgress {
        session_name: "flowgate-r-01HX-zeta-plan-1".into(),
        turns: 3,
        cost_usd: 0.42,
        ..AgentProgress::default()
    });
    let view = run_thread_view(
        &run,
        &def,
        Some("https://flowgate.example/v1/runs/r-01HX".into()),
    );
    let ids: Vec<&str> = view.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["zeta-plan", "build", "alpha-review"]);
    assert_eq!(view.steps[0].turns, Some(3));
    assert_eq!(view.steps[0].max_turns, Some(10));
    assert_eq!(view.workflow, "Ship it");

    let (text, blocks) = run_thread(&view);
    assert!(
        text.contains("Ship it") && text.contains("r-01HX") && text.contains("running"),
        "{text}"
    );
    let rendered = all_text(&blocks);
    assert!(rendered.contains("*Ship it* · run `r-01HX`"), "{rendered}");
    assert!(rendered.contains("🔄 *running*"), "{rendered}");
    assert!(
        rendered.contains("🔄 `zeta-plan` running · 3/10 turns · $0.42"),
        "{rendered}"
    );
    assert!(rendered.contains("⚪ `build` pending"), "{rendered}");
    assert!(rendered.contains("⚪ `alpha-review` pending"), "{rendered}");
    let plan_at = rendered.find("zeta-plan").unwrap();
    let review_at = rendered.find("alpha-review").unwrap();
    assert!(plan_at < review_at);
    assert!(
        rendered.contains("<https://flowgate.example/v1/runs/r-01HX|View run in the API>"),
        "{rendered}"
    );

    run.status = RunStatus::Failed;
    run.error = Some("step build failed: <boom>".into());
    let build = run.steps.get_mut("build").unwrap();
    build.status = StepStatus::Failed;
    build.error = Some("tests failed".into());
    let (text, blocks) = run_thread(&run_thread_view(&run, &def, None));
    assert!(text.contains("❌"), "{text}");
    let rendered = all_text(&blocks);
    assert!(
        rendered.contains("❌ `build` failed · tests failed"),
        "{rendered}"
    );
    assert!(
        rendered.contains("> step build failed: &lt;boom&gt;"),
        "{rendered}"
    );
    assert!(!rendered.contains("View run"), "{rendered}");
}

#[test]
fn event_replies_are_one_readable_line() {
    let url = Some("https://flowgate.example/v1/runs/r-01HX");
    let line = event_reply(
        "step.completed",
        Some("build"),
        &json!({ "attempt": 1 }),
        None,
    );
    assert_eq!(line, "✅ Step `build` completed");
    let line = event_reply(
        "step.failed",
        Some("build"),
        &json!({ "error": "exit 1" }),
        url,
    );
    assert_eq!(
        line,
        "❌ Step `build` failed: exit 1 · <https://flowgate.example/v1/runs/r-01HX|View run>"
    );
    let line = event_reply(
        "approval.requested",
        Some("review"),
        &json!({ "approval_id": "r.review.1", "approvers": ["U123ABCDE"], "required": 1 }),
        None,
    );
    assert!(
        line.contains("waiting for approval") && line.contains("<@U123ABCDE>"),
        "{line}"
    );
    let line = event_reply(
        "approval.decided",
        Some("review"),
        &json!({ "decision": "reject", "comment": "no", "by": "slack:U123ABCDE" }),
        None,
    );
    assert!(
        line.contains("<@U123ABCDE> rejected step `review`") && line.contains("> no"),
        "{line}"
    );
    assert!(
        event_reply(
            "run.started",
            None,
            &json!({ "workflow": "ship", "version": 3 }),
            None
        )
        .contains("Run started (ship v3)")
    );
    assert!(event_reply("run.completed", None, &json!({}), None).contains("Run completed"));
    assert!(
        event_reply("run.failed", None, &json!({ "error": "budget" }), None)
            .contains("Run failed: budget")
    );
    assert!(event_reply("run.cancelled", None, &json!({}), None).contains("Run cancelled"));
    let line = event_reply("step.weird", Some("x"), &Value::Null, None);
    assert!(
        line.contains("`step.weird`") && line.contains("`x`"),
        "{line}"
    );
}

// ---------------------------------------------------------------------------------------------
// Interactions
// ---------------------------------------------------------------------------------------------

/// S2 of `docs/test-vectors.md` §1: the raw body, byte for byte (948 bytes).
const S2_BODY: &str = "payload=%7B%22type%22%3A%22block_actions%22%2C%22user%22%3A%7B%22id%22%3A%22U2CERLKJA%22%2C%22username%22%3A%22roadrunner%22%2C%22team_id%22%3A%22T1DC2JH3J%22%7D%2C%22api_app_id%22%3A%22A0FLOWGATE%22%2C%22team%22%3A%7B%22id%22%3A%22T1DC2JH3J%22%2C%22domain%22%3A%22testteamnow%22%7D%2C%22container%22%3A%7B%22type%22%3A%22message%22%2C%22message_ts%22%3A%221531420600.000100%22%2C%22channel_id%22%3A%22G8PSS9T3V%22%2C%22is_ephemeral%22%3Afalse%7D%2C%22trigger_id%22%3A%22398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c%22%2C%22channel%22%3A%7B%22id%22%3A%22G8PSS9T3V%22%2C%22name%22%3A%22foobar%22%7D%2C%22response_url%22%3A%22https%3A%2F%2Fhooks.slack.com%2Factions%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN%22%2C%22actions%22%3A%5B%7B%22type%22%3A%22button%22%2C%22action_id%22%3A%22approve%22%2C%22block_id%22%3A%22approval-run0001-step4%22%2C%22value%22%3A%22approve%22%2C%22action_ts%22%3A%221531420618.123456%22%7D%5D%7D";

fn form(payload: &Value) -> Vec<u8> {
    serde_urlencoded::to_string([("payload", payload.to_string())])
        .unwrap()
        .into_bytes()
}

#[test]
fn the_s2_vector_parses_to_the_expected_fields() {
    assert_eq!(S2_BODY.len(), 948);
    let Interaction::BlockActions(click) = parse_interaction(S2_BODY.as_bytes()).unwrap() else {
        panic!("not block_actions");
    };
    assert_eq!(click.user_id, "U2CERLKJA");
    assert_eq!(click.user_name.as_deref(), Some("roadrunner"));
    assert_eq!(click.team_id.as_deref(), Some("T1DC2JH3J"));
    assert_eq!(click.api_app_id.as_deref(), Some("A0FLOWGATE"));
    assert_eq!(click.channel_id.as_deref(), Some("G8PSS9T3V"));
    assert_eq!(click.message_ts.as_deref(), Some("1531420600.000100"));
    assert_eq!(
        click.trigger_id.as_deref(),
        Some("398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
    );
    assert_eq!(
        click.response_url.as_deref(),
        Some("https://hooks.slack.com/actions/T1DC2JH3J/397700885554/96rGlfmibIGlgcZRskXaIFfN")
    );
    assert_eq!(click.actions.len(), 1);
    let action = &click.actions[0];
    assert_eq!(action.action_id, "approve");
    assert_eq!(action.block_id, "approval-run0001-step4");
    assert_eq!(action.value.as_deref(), Some("approve"));
    assert_eq!(action.action_ts.as_deref(), Some("1531420618.123456"));
}

#[test]
fn a_click_on_our_own_message_round_trips_the_ids() {
    let (_, blocks) = approval_request(&request());
    let actions = actions_block(&blocks).unwrap();
    let payload = json!({
        "type": "block_actions",
        "user": { "id": "U123ABCDE", "name": "ana" },
        "team": null,
        "container": { "type": "message", "message_ts": "1.2", "channel_id": "C1" },
        "actions": [ {
            "type": "button", "action_id": "reject", "block_id": actions["block_id"],
            "value": "reject", "text": { "type": "plain_text", "text": "Reject" }
        } ],
        "some_new_field": { "slack": "adds these" }
    });
    let Interaction::BlockActions(click) = parse_interaction(&form(&payload)).unwrap() else {
        panic!("not block_actions");
    };
    assert_eq!(click.user_name.as_deref(), Some("ana"));
    assert_eq!(click.team_id, None);
    assert_eq!(
        click.channel_id.as_deref(),
        Some("C1"),
        "falls back to the container"
    );
    assert_eq!(
        approval_id_from_block_id(&click.actions[0].block_id),
        Some("r-01HX.review.1")
    );
    assert_eq!(
        click.actions[0].action_id.parse::<ButtonAction>(),
        Ok(ButtonAction::Reject)
    );
}

#[test]
fn a_view_submission_parses_values_and_metadata() {
    let view = decision_modal(
        "r-01HX.review.1",
        "reject",
        "C0123ABCD",
        "1700000000.000100",
    );
    let payload = json!({
        "type": "view_submission",
        "team": { "id": "T1DC2JH3J", "domain": "testteamnow" },
        "user": { "id": "U2CERLKJA", "username": "roadrunner", "team_id": "T1DC2JH3J" },
        "api_app_id": "A0FLOWGATE",
        "trigger_id": "12345.98765.abcd2358fdea",
        "view": {
            "id": "V0PKB1ZFV",
            "type": "modal",
            "callback_id": "approval_decision",
            "private_metadata": view["private_metadata"],
            "state": { "values": {
                "comment": { "comment": { "type": "plain_text_input", "value": "too risky & late" } },
                "extra": { "note": { "type": "plain_text_input", "value": null } }
            } },
            "hash": "156772938.1827394"
        },
        "response_urls": [],
        "is_enterprise_install": false
    });
    let Interaction::ViewSubmission(sub) = parse_interaction(&form(&payload)).unwrap() else {
        panic!("not view_submission");
    };
    assert_eq!(sub.user_id, "U2CERLKJA");
    assert_eq!(sub.team_id.as_deref(), Some("T1DC2JH3J"));
    assert_eq!(sub.callback_id, "approval_decision");
    assert_eq!(sub.value("comment", "comment"), Some("too risky & late"));
    assert_eq!(sub.values["comment"]["comment"], "too risky & late");
    assert!(!sub.values.contains_key("extra"), "empty inputs are absent");
    let meta = parse_decision_metadata(&sub.private_metadata).unwrap();
    assert_eq!(meta.approval_id, "r-01HX.review.1");
    assert_eq!(meta.action, "reject");
    assert_eq!(meta.channel, "C0123ABCD");
    assert_eq!(meta.message_ts, "1700000000.000100");
}

#[test]
fn other_interaction_types_are_passed_through() {
    for kind in ["view_closed", "shortcut", "message_action"] {
        let payload = json!({ "type": kind, "user": { "id": "U1" } });
        let parsed = parse_interaction(&form(&payload)).unwrap();
        assert_eq!(
            parsed,
            Interaction::Other {
                kind: kind.to_string()
            }
        );
        assert_eq!(parsed.kind(), kind);
    }
}

fn refused(body: &[u8]) -> InteractionError {
    parse_interaction(body).unwrap_err()
}

#[test]
fn bad_payloads_are_refused_with_a_named_problem() {
    let err = refused(b"");
    assert_eq!(err, InteractionError::MissingPayload);
    assert_eq!(err.code(), "missing_payload");
    assert!(err.to_string().contains("payload"), "{err}");
    assert_eq!(refused(b"token=x&team_id=T1").code(), "missing_payload");

    let err = refused(b"payload=%7Bnot+json");
    assert_eq!(err.code(), "payload_not_json");
    assert!(err.to_string().contains("not JSON"), "{err}");

    assert_eq!(refused(b"payload=%5B1%5D").code(), "invalid_payload");
    assert_eq!(
        refused(b"payload=%7B%7D&payload=%7B%7D").code(),
        "duplicate_payload"
    );

    let err = refused(&form(&json!({ "user": { "id": "U1" } })));
    assert_eq!(
        err,
        InteractionError::MissingField {
            field: "type".into()
        }
    );

    let click = |user: Value, actions: Value| json!({ "type": "block_actions", "user": user, "actions": actions });
    let one = json!([{ "action_id": "approve", "block_id": "approval:r.s.1", "value": "approve" }]);

    let err = refused(&form(&json!({ "type": "block_actions", "actions": one })));
    assert_eq!(err.code(), "missing_field");
    assert!(err.to_string().contains("user.id"), "{err}");
    let err = refused(&form(&click(json!({ "name": "ana" }), one.clone())));
    assert!(err.to_string().contains("user.id"), "{err}");

    let err = refused(&form(&click(json!({ "id": 42 }), one.clone())));
    assert_eq!(err.code(), "invalid_payload");
    assert!(err.to_string().contains("user.id"), "{err}");

    let err = refused(&form(&click(json!({ "id": "U1" }), json!([]))));
    assert_eq!(
        err,
        InteractionError::MissingField {
            field: "actions".into()
        }
    );

    let err = refused(&form(&click(
        json!({ "id": "U1" }),
        json!([{ "block_id": "approval:r.s.1" }]),
    )));
    assert!(err.to_string().contains("actions[0].action_id"), "{err}");

    let long = "a".repeat(256);
    let err = refused(&form(&click(
        json!({ "id": "U1" }),
        json!([{ "action_id": long, "block_id": "b" }]),
    )));
    assert_eq!(
        err,
        InteractionError::FieldTooLong {
            field: "actions[0].action_id".into(),
            len: 256,
            max: 255
        }
    );
    assert_eq!(err.code(), "field_too_long");
    let err = refused(&form(&click(
        json!({ "id": "U1" }),
        json!([{ "action_id": "approve", "block_id": "b".repeat(300) }]),
    )));
    assert!(err.to_string().contains("actions[0].block_id"), "{err}");
    // Exactly 255 is allowed.
    let ok = parse_interaction(&form(&click(
        json!({ "id": "U1" }),
        json!([{ "action_id": "a".repeat(255), "block_id": "b".repeat(255) }]),
    )));
    assert!(ok.is_ok(), "{ok:?}");

    let err = refused(&form(
        &json!({ "type": "view_submission", "user": { "id": "U1" } }),
    ));
    assert_eq!(
        err,
        InteractionError::MissingField {
            field: "view".into()
        }
    );
    let err = refused(&form(&json!({
        "type": "view_submission", "user": { "id": "U1" }, "view": { "private_metadata": "" }
    })));
    assert!(err.to_string().contains("view.callback_id"), "{err}");

    assert_eq!(
        parse_decision_metadata("").unwrap_err().code(),
        "missing_field"
    );
    assert_eq!(
        parse_decision_metadata("{\"approval_id\":1}")
            .unwrap_err()
            .code(),
        "invalid_payload"
    );
}

/// `form_body` encodes a payload the way Slack does: the S2 JSON gives S2's raw body exactly.
#[test]
fn form_body_reproduces_the_s2_raw_body() {
    let json = r#"{"type":"block_actions","user":{"id":"U2CERLKJA","username":"roadrunner","team_id":"T1DC2JH3J"},"api_app_id":"A0FLOWGATE","team":{"id":"T1DC2JH3J","domain":"testteamnow"},"container":{"type":"message","message_ts":"1531420600.000100","channel_id":"G8PSS9T3V","is_ephemeral":false},"trigger_id":"398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c","channel":{"id":"G8PSS9T3V","name":"foobar"},"response_url":"https://hooks.slack.com/actions/T1DC2JH3J/397700885554/96rGlfmibIGlgcZRskXaIFfN","actions":[{"type":"button","action_id":"approve","block_id":"approval-run0001-step4","value":"approve","action_ts":"1531420618.123456"}]}"#;
    let body = flowgate_shared::slack::interaction::form_body(json);
    assert_eq!(body.len(), 948);
    assert_eq!(body, S2_BODY);
}
