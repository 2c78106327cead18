//! The tools over an in-memory stdio-like pipe, against a fake API: the paging of
//! `list_recent_runs` over the API's cursors, argument errors as tool results, and the tool
//! list a key that may not approve gets. (The real API and real clients are exercised by
//! `functions/api/tests/mcp.rs` and `cli/tests/mcp_clients.rs`.)
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns read JSON the same way

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flowgate_mcp::{Connector, FlowgateApi, FlowgateMcp};
use flowgate_shared::api::client::{ClientError, ListApprovalsParams};
use flowgate_shared::api::*;
use rmcp::ServiceExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Eight finished runs (`r0` newest ... `r7`), paged by offset cursors, and whatever `me` says.
#[derive(Debug)]
struct FakeApi {
    may_approve: bool,
    /// The `limit`s `list_runs` was called with.
    limits: Mutex<Vec<Option<u32>>>,
}

fn unsupported<T>() -> Result<T, ClientError> {
    Err(ClientError::InvalidRequest("not in this fake".into()))
}

#[async_trait]
impl FlowgateApi for FakeApi {
    async fn me(&self) -> Result<Identity, ClientError> {
        Ok(Identity {
            principal: "fake".into(),
            may_approve: self.may_approve,
        })
    }
    async fn start_run(&self, _: &StartRunRequest) -> Result<StartRunResponse, ClientError> {
        unsupported()
    }
    async fn list_runs(&self, params: &ListRunsParams) -> Result<RunList, ClientError> {
        self.limits.lock().unwrap().push(params.limit);
        let from: usize = params.cursor.as_deref().unwrap_or("0").parse().unwrap();
        let limit = params.limit.unwrap_or(20) as usize;
        let to = (from + limit).min(8);
        let runs = (from..to)
            .map(|i| {
                serde_json::from_value(json!({
                    "id": format!("r{i}"), "workflow_id": "wf", "workflow_version": 1,
                    "status": "succeeded", "created_at": 1000 - i, "cost_usd": 0.0
                }))
                .unwrap()
            })
            .collect();
        Ok(RunList {
            runs,
            next_cursor: (to < 8).then(|| to.to_string()),
        })
    }
    async fn get_run(&self, _: &str) -> Result<RunDetail, ClientError> {
        Err(ClientError::Api {
            status: 404,
            code: "run_not_found".into(),
            message: "there is no run".into(),
            field: None,
            problems: Vec::new(),
        })
    }
    async fn run_events(
        &self,
        _: &str,
        _: Option<u64>,
        _: Option<u32>,
    ) -> Result<EventList, ClientError> {
        unsupported()
    }
    async fn cancel_run(&self, _: &str, _: &CancelRequest) -> Result<CommandResponse, ClientError> {
        unsupported()
    }
    async fn send_message(
        &self,
        _: &str,
        _: &MessageRequest,
    ) -> Result<CommandResponse, ClientError> {
        unsupported()
    }
    async fn list_workflows(&self) -> Result<WorkflowList, ClientError> {
        Ok(WorkflowList {
            workflows: Vec::new(),
        })
    }
    async fn list_agent_workflows(&self) -> Result<AgentWorkflowList, ClientError> {
        // The agent service is down: the stored workflows still come back.
        Err(ClientError::Api {
            status: 503,
            code: "unavailable".into(),
            message: "the agent service did not answer".into(),
            field: None,
            problems: Vec::new(),
        })
    }
    async fn list_sessions(&self, _: Option<bool>) -> Result<SessionList, ClientError> {
        unsupported()
    }
    async fn get_session(&self, _: &str) -> Result<SessionView, ClientError> {
        unsupported()
    }
    async fn list_approvals(&self, _: &ListApprovalsParams) -> Result<ApprovalList, ClientError> {
        unsupported()
    }
    async fn decide_approval(
        &self,
        _: &str,
        _: &DecisionRequest,
    ) -> Result<DecisionResponse, ClientError> {
        unsupported()
    }
}

#[derive(Debug)]
struct Fake(Arc<FakeApi>);

impl Connector for Fake {
    fn connect(&self, _: Option<&http::request::Parts>) -> Arc<dyn FlowgateApi> {
        self.0.clone()
    }
    fn identity_is_fixed(&self) -> bool {
        true
    }
}

/// A JSON-RPC client on the other end of an in-memory pipe.
struct Session {
    write: tokio::io::WriteHalf<tokio::io::DuplexStream>,
    read: BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
    next_id: u64,
    _server: AbortOnDrop,
}

/// Stops the server task with the session.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Session {
    async fn start(api: Arc<FakeApi>) -> Session {
        let (client, server) = tokio::io::duplex(1 << 20);
        // The server waits for the handshake, which this side sends below.
        let server = tokio::spawn(async move {
            let running = FlowgateMcp::new(Arc::new(Fake(api)))
                .serve(tokio::io::split(server))
                .await
                .expect("the handshake");
            let _ = running.waiting().await;
        });
        let (read, write) = tokio::io::split(client);
        let mut session = Session {
            write,
            read: BufReader::new(read),
            next_id: 1,
            _server: AbortOnDrop(server),
        };
        session
            .request(
                "initialize",
                json!({"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "test", "version": "0"}}),
            )
            .await;
        session
            .send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        session
    }

    async fn send(&mut self, message: Value) {
        let mut line = message.to_string();
        line.push('\n');
        self.write.write_all(line.as_bytes()).await.unwrap();
    }

    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        loop {
            let mut line = String::new();
            let read =
                tokio::time::timeout(Duration::from_secs(10), self.read.read_line(&mut line))
                    .await
                    .expect("an answer within 10 s")
                    .unwrap();
            assert!(read > 0, "the server closed the pipe");
            let message: Value = serde_json::from_str(&line).unwrap();
            if message["id"] == id {
                return message;
            }
        }
    }

    async fn call(&mut self, name: &str, arguments: Value) -> Value {
        let answer = self
            .request("tools/call", json!({"name": name, "arguments": arguments}))
            .await;
        answer["result"].clone()
    }
}

fn fake(may_approve: bool) -> Arc<FakeApi> {
    Arc::new(FakeApi {
        may_approve,
        limits: Mutex::new(Vec::new()),
    })
}

#[tokio::test]
async fn pages_are_cut_from_the_apis_cursor_pages() {
    let api = fake(true);
    let mut s = Session::start(api.clone()).await;
    let page2 = s
        .call("list_recent_runs", json!({"page": 2, "page_size": 3}))
        .await;
    let ids: Vec<&str> = page2["structuredContent"]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r3", "r4", "r5"]);
    assert_eq!(page2["structuredContent"]["has_more"], true);
    assert_eq!(*api.limits.lock().unwrap(), [Some(6)], "one request of 6");

    let page3 = s
        .call("list_recent_runs", json!({"page": 3, "page_size": 3}))
        .await;
    assert_eq!(
        page3["structuredContent"]["runs"].as_array().unwrap().len(),
        2
    );
    assert_eq!(page3["structuredContent"]["has_more"], false);

    let deep = s
        .call("list_recent_runs", json!({"page": 11, "page_size": 100}))
        .await;
    assert_eq!(deep["isError"], true);
    assert!(
        deep["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("narrow")
    );
}

#[tokio::test]
async fn failures_are_tool_results_the_model_can_act_on() {
    let mut s = Session::start(fake(true)).await;
    let unknown = s
        .call("get_workflow_status", json!({"run_id": "r-9"}))
        .await;
    assert_eq!(unknown["isError"], true);
    assert!(unknown.get("structuredContent").is_none());
    let text = unknown["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("HTTP 404 run_not_found") && text.contains("list_recent_runs"),
        "{text}"
    );

    let typo = s.call("get_workflow_status", json!({"runid": "r-9"})).await;
    assert_eq!(typo["isError"], true);
    assert!(
        typo["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("run_id")
    );

    // One source down: the other's answer comes back with a note.
    let catalog = s.call("list_workflows", json!({})).await;
    assert_eq!(catalog["isError"], false, "{catalog}");
    assert!(
        catalog["structuredContent"]["agent_workflows_error"]
            .as_str()
            .unwrap()
            .contains("agent service did not answer")
    );
}

#[tokio::test]
async fn a_key_that_may_not_approve_does_not_see_decide_approval() {
    let mut s = Session::start(fake(false)).await;
    let list = s.request("tools/list", json!({})).await;
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 9, "{names:?}");
    assert!(!names.contains(&"decide_approval"));

    let mut s = Session::start(fake(true)).await;
    let list = s.request("tools/list", json!({})).await;
    assert_eq!(list["result"]["tools"].as_array().unwrap().len(), 10);
}
