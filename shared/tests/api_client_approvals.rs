//! The API client's approval and webhook routes against a real local HTTP server (wiremock):
//! paths (approval ids keep their dots), query strings, bodies, decoding, and errors.
#![allow(clippy::unwrap_used)]

use flowgate_shared::api::client::{
    ApprovalFilter, ClientError, FlowgateClient, ListApprovalsParams,
};
use flowgate_shared::api::{AttemptResult, CreateWebhookRequest, DecisionRequest};
use flowgate_shared::model::{ApprovalDecision, ApprovalKind, ApprovalStatus, RunStatus};
use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "fg-test-key-approvals";
const APPROVAL: &str = "r-1.review.1";

fn client(server: &MockServer) -> FlowgateClient {
    FlowgateClient::new(&server.uri(), Some(KEY.into())).expect("client builds")
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.expect("recording is on")
}

fn error_body(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

fn approval(status: &str, decisions: Value) -> Value {
    json!({
        "id": APPROVAL, "run_id": "r-1", "step": "review", "kind": "step", "status": status,
        "message": "Ship it?", "approvers": ["alice", "bob"], "required": 1,
        "requested_at": 1_700_000_000_000_i64, "expires_at": 1_700_086_400_000_i64,
        "decisions": decisions
    })
}

fn subscription(id: &str) -> Value {
    json!({"id": id, "url": "https://hooks.example.com/fg", "events": ["run.completed"],
           "enabled": true, "created_at": 1_700_000_000_000_i64})
}

#[tokio::test]
async fn list_approvals_sends_only_the_filters_given() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/approvals"))
        .and(header("x-api-key", KEY))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"approvals": [approval("pending", json!([]))]})),
        )
        .expect(3)
        .mount(&server)
        .await;
    let client = client(&server);

    let list = client
        .list_approvals(&ListApprovalsParams::default())
        .await
        .expect("decodes");
    assert_eq!(list.approvals.len(), 1);
    let a = &list.approvals[0];
    assert_eq!(a.id, APPROVAL);
    assert_eq!(a.kind, ApprovalKind::Step);
    assert_eq!(a.status, ApprovalStatus::Pending);
    assert_eq!(a.expires_at, Some(1_700_086_400_000));

    client
        .list_approvals(&ListApprovalsParams {
            status: Some(ApprovalFilter::All),
            workflow: Some("feature flow".into()),
            limit: Some(5),
        })
        .await
        .expect("decodes");
    client
        .list_approvals(&ListApprovalsParams {
            status: Some(ApprovalFilter::Status(ApprovalStatus::Skipped)),
            ..ListApprovalsParams::default()
        })
        .await
        .expect("decodes");

    let seen = requests(&server).await;
    assert_eq!(seen[0].url.query(), None, "no filter: the API's defaults");
    assert_eq!(
        seen[1].url.query(),
        Some("status=all&workflow=feature+flow&limit=5")
    );
    assert_eq!(seen[2].url.query(), Some("status=skipped"));
}

#[tokio::test]
async fn decide_posts_to_the_dotted_id_and_decodes_the_answer() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/approvals/r-1.review.1/decision"))
        .and(header("x-api-key", KEY))
        .and(header("content-type", "application/json"))
        .and(body_json(
            json!({"decision": "retry", "comment": "add tests first"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "approval": approval("retried", json!([
                {"by": "alice", "decision": "retry", "comment": "add tests first",
                 "at": 1_700_000_030_000_i64}
            ])),
            "run_status": "running",
            "by": "alice"
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/approvals/r-1.review.1/decision"))
        .and(body_json(json!({"decision": "approve"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "approval": approval("approved", json!([])), "run_status": "running", "by": "ci"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);

    let answer = client
        .decide_approval(
            APPROVAL,
            &DecisionRequest {
                decision: ApprovalDecision::Retry,
                comment: Some("add tests first".into()),
            },
        )
        .await
        .expect("decodes");
    assert_eq!(answer.by, "alice");
    assert_eq!(answer.run_status, RunStatus::Running);
    assert_eq!(answer.approval.status, ApprovalStatus::Retried);
    assert_eq!(
        answer.approval.decisions[0].comment.as_deref(),
        Some("add tests first")
    );

    // No comment: the field is left out, not sent as null.
    let answer = client
        .decide_approval(
            APPROVAL,
            &DecisionRequest {
                decision: ApprovalDecision::Approve,
                comment: None,
            },
        )
        .await
        .expect("decodes");
    assert_eq!(answer.approval.status, ApprovalStatus::Approved);
}

#[tokio::test]
async fn ids_that_would_change_the_route_are_encoded_or_refused() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(error_body("approval_not_found", "there is no approval")),
        )
        .mount(&server)
        .await;
    let client = client(&server);
    let approve = DecisionRequest {
        decision: ApprovalDecision::Approve,
        comment: None,
    };

    let err = client
        .decide_approval("r-1/../x", &approve)
        .await
        .expect_err("404");
    assert_eq!(err.status(), Some(404));
    assert_eq!(
        requests(&server).await[0].url.path(),
        "/v1/approvals/r-1%2F..%2Fx/decision"
    );

    for bad in ["", " ", ".", ".."] {
        let err = client
            .decide_approval(bad, &approve)
            .await
            .expect_err("refused");
        assert!(matches!(err, ClientError::InvalidRequest(_)), "{bad:?}");
        assert!(!err.is_retryable());
        let err = client.get_webhook(bad).await.expect_err("refused");
        assert!(matches!(err, ClientError::InvalidRequest(_)), "{bad:?}");
    }
    assert_eq!(requests(&server).await.len(), 1, "nothing else was sent");
}

#[tokio::test]
async fn decision_refusals_keep_the_api_message_and_are_final() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/approvals/r-1.review.1/decision"))
        .respond_with(ResponseTemplate::new(403).set_body_json(error_body(
            "not_an_approver",
            "mallory is not an approver of r-1.review.1",
        )))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/approvals/r-1.review.1/decision"))
        .respond_with(ResponseTemplate::new(409).set_body_json(error_body(
            "approval_closed",
            "approval r-1.review.1 is already approved",
        )))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/approvals/r-1.review.1/decision"))
        .respond_with(
            ResponseTemplate::new(503)
                .set_body_json(error_body("unavailable", "the store is unavailable")),
        )
        .mount(&server)
        .await;
    let client = client(&server);
    let approve = DecisionRequest {
        decision: ApprovalDecision::Approve,
        comment: None,
    };

    let forbidden = client
        .decide_approval(APPROVAL, &approve)
        .await
        .expect_err("403");
    assert_eq!(forbidden.code(), Some("not_an_approver"));
    assert!(!forbidden.is_retryable() && !forbidden.outcome_unknown());
    assert_eq!(
        forbidden.to_string(),
        "HTTP 403 not_an_approver: mallory is not an approver of r-1.review.1"
    );

    let closed = client
        .decide_approval(APPROVAL, &approve)
        .await
        .expect_err("409");
    assert_eq!(closed.status(), Some(409));
    assert!(!closed.is_retryable());

    let busy = client
        .decide_approval(APPROVAL, &approve)
        .await
        .expect_err("503");
    assert!(busy.is_retryable() && !busy.outcome_unknown());
}

#[tokio::test]
async fn webhooks_are_created_listed_read_and_deleted() {
    let server = MockServer::start().await;
    let mut created = subscription("wh_1");
    created["secret"] = json!("whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0");
    created["workflow"] = json!("feature");
    Mock::given(method("POST"))
        .and(path("/v1/webhooks"))
        .and(header("x-api-key", KEY))
        .and(body_json(json!({
            "url": "https://hooks.example.com/fg", "events": ["run.completed", "step.failed"],
            "workflow": "feature"
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(&created))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/webhooks"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"webhooks": [subscription("wh_1"), subscription("wh_2")]})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/webhooks/wh_2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(subscription("wh_2")))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/v1/webhooks/wh_2"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/v1/webhooks/wh_gone"))
        .respond_with(ResponseTemplate::new(404).set_body_json(error_body(
            "webhook_not_found",
            "there is no webhook subscription \"wh_gone\"; list them with GET /v1/webhooks",
        )))
        .mount(&server)
        .await;
    let client = client(&server);

    let answer = client
        .create_webhook(&CreateWebhookRequest {
            url: "https://hooks.example.com/fg".into(),
            events: vec!["run.completed".into(), "step.failed".into()],
            workflow: Some("feature".into()),
            ..CreateWebhookRequest::default()
        })
        .await
        .expect("201 decodes");
    assert_eq!(answer.webhook.id, "wh_1");
    assert_eq!(answer.webhook.workflow.as_deref(), Some("feature"));
    assert!(answer.secret.starts_with("whsec_"));
    assert!(
        !format!("{answer:?}").contains("whsec_"),
        "Debug hides the secret"
    );

    let list = client.list_webhooks().await.expect("decodes");
    let ids: Vec<&str> = list.webhooks.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(ids, ["wh_1", "wh_2"]);
    assert!(client.get_webhook("wh_2").await.expect("decodes").enabled);
    client.delete_webhook("wh_2").await.expect("204");

    let err = client.delete_webhook("wh_gone").await.expect_err("404");
    assert_eq!(err.code(), Some("webhook_not_found"));
    assert!(err.to_string().contains("list them with GET /v1/webhooks"));
}

#[tokio::test]
async fn webhook_deliveries_pass_the_limit_and_decode_every_result() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/webhooks/wh_1/deliveries"))
        .and(query_param("limit", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"deliveries": [
            {"message_id": "msg_2", "event": "step.failed", "attempt": 2,
             "at": 1_700_000_100_000_i64, "error": "connection refused", "duration_ms": 12,
             "result": "retrying", "next_retry_at": 1_700_000_400_000_i64},
            {"message_id": "msg_1", "event": "run.completed", "attempt": 1,
             "at": 1_700_000_000_000_i64, "status": 200, "duration_ms": 85, "result": "delivered"}
        ]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/webhooks/wh_1/deliveries"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"deliveries": [
                {"message_id": "msg_3", "event": "run.failed", "attempt": 8,
                 "at": 1_700_000_000_000_i64, "status": 500, "duration_ms": 40, "result": "gave_up"}
            ]})),
        )
        .mount(&server)
        .await;
    let client = client(&server);

    let page = client
        .webhook_deliveries("wh_1", Some(2))
        .await
        .expect("decodes");
    assert_eq!(page.deliveries.len(), 2);
    assert_eq!(page.deliveries[0].result, AttemptResult::Retrying);
    assert_eq!(page.deliveries[0].next_retry_at, Some(1_700_000_400_000));
    assert_eq!(page.deliveries[1].status, Some(200));

    let all = client
        .webhook_deliveries("wh_1", None)
        .await
        .expect("decodes");
    assert_eq!(all.deliveries[0].result, AttemptResult::GaveUp);
    assert_eq!(requests(&server).await[1].url.query(), None);
}

#[tokio::test]
async fn a_create_that_timed_out_may_have_been_applied() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/webhooks"))
        .respond_with(ResponseTemplate::new(502).set_body_string("<html>Bad Gateway</html>"))
        .mount(&server)
        .await;
    let err = client(&server)
        .create_webhook(&CreateWebhookRequest {
            url: "https://hooks.example.com/fg".into(),
            events: vec!["*".into()],
            ..CreateWebhookRequest::default()
        })
        .await
        .expect_err("502");
    assert!(err.is_retryable());
    assert!(
        err.outcome_unknown(),
        "a 502 may hide a created subscription"
    );
    assert_eq!(err.code(), Some("bad_gateway"));
}
