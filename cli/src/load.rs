//! Whole runs under load through `flowgate serve`, in-process: N runs of a workflow at once
//! over the HTTP API, agent steps on the built-in simulator, approvals answered by a scripted
//! approver through the API. Used by `cli/examples/runs_load.rs` and the benchmark report.
//!
//! Step-to-step latency is read from each run's audit log (the engine's clock at each
//! decision): for every dependency A → B, from A's `step.succeeded` to the moment B's work
//! began: `agent.started` for an agent step (the agent service accepted the start and it was
//! recorded), `approval.requested` for an approval, `step.started` otherwise. After an agent
//! step that is the next agent start plus a store write; after an approval decided through the
//! API it includes the work-queue hop, because a click's effects go out as a queued message.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::serve::{self, ServeArgs};
use flowgate_shared::definition::{StepKind, parse_definition};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub runs: usize,
    /// Concurrent HTTP requests (starts, and the approver's clicks).
    pub clients: usize,
    /// Work messages the server handles at once.
    pub workers: u16,
    /// How long each simulated agent run takes.
    pub agent_run: Duration,
    pub deadline: Duration,
    /// The workflow (YAML); its approvals name the approver `approver`.
    pub workflow: String,
    /// Where the server's data directory is made (a fresh one inside it); the system's
    /// temporary directory when `None`. `/dev/shm` takes the disk's `fsync` out of the figures.
    pub data_parent: Option<std::path::PathBuf>,
    /// Time between two starts (zero: all at once). Spread starts keep runs from finishing
    /// their steps in lockstep, which measures the path rather than a queue of simultaneous
    /// completions.
    pub stagger: Duration,
}

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub accepted: usize,
    pub succeeded: usize,
    /// Runs that did not succeed, with their status.
    pub not_succeeded: Vec<String>,
    /// From the first start to the last run's end.
    pub elapsed: Duration,
    pub steps_per_run: usize,
    pub approvals_decided: usize,
    /// Step-to-step latencies in ms, by edge (`agent → agent`, `approval → agent`, ...).
    pub hops: BTreeMap<String, Vec<i64>>,
}

impl LoadReport {
    pub fn runs_per_second(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }

    /// p-th percentile (0..=1) of `ms`, nearest rank.
    pub fn percentile(ms: &[i64], p: f64) -> i64 {
        let mut sorted = ms.to_vec();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return 0;
        }
        sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
    }
}

struct Api {
    http: reqwest::Client,
    url: String,
}

impl Api {
    async fn call(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), BoxError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("x-api-key", key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        };
        Ok((status, value))
    }
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Start `flowgate serve` on a fresh data directory and run the load.
pub async fn run(options: &LoadOptions) -> Result<LoadReport, BoxError> {
    let def = parse_definition(&options.workflow)?;
    let workflow_id = def.id.clone();
    let dir = match &options.data_parent {
        Some(parent) => tempfile::tempdir_in(parent)?,
        None => tempfile::tempdir()?,
    };
    let (starter, approver) = (
        "load-starter-key-0123456789",
        "load-approver-key-0123456789",
    );
    let mut args = ServeArgs::with_data_dir(dir.path());
    args.addr = "127.0.0.1:0".parse()?;
    args.api_key_hashes = Some(format!(
        "starter={},approver={}",
        sha256_hex(starter),
        sha256_hex(approver)
    ));
    args.api_key_approvers = Some("approver".into());
    args.workers = options.workers;
    args.simulator_run_duration = options.agent_run;
    let server = serve::start(args).await?;
    let api = Arc::new(Api {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(options.clients * 2)
            .build()?,
        url: server.url(),
    });
    let put = api
        .http
        .put(format!("{}/v1/workflows/{workflow_id}", api.url))
        .header("x-api-key", starter)
        .header("content-type", "application/yaml")
        .body(options.workflow.clone())
        .send()
        .await?;
    if !put.status().is_success() {
        return Err(format!(
            "storing the workflow: {} {}",
            put.status(),
            put.text().await?
        )
        .into());
    }

    let began = Instant::now();
    let gate = Arc::new(Semaphore::new(options.clients.max(1)));
    let mut starts = Vec::new();
    for n in 0..options.runs {
        if !options.stagger.is_zero() && n > 0 {
            tokio::time::sleep(options.stagger).await;
        }
        let (api, gate, workflow_id) = (api.clone(), gate.clone(), workflow_id.clone());
        starts.push(tokio::spawn(async move {
            let _permit = gate.acquire().await?;
            let response = api
                .http
                .post(format!("{}/v1/runs", api.url))
                .header("x-api-key", starter)
                .header("idempotency-key", format!("load-{n}"))
                .json(&json!({"workflow": workflow_id}))
                .send()
                .await?;
            let status = response.status().as_u16();
            let body: Value = response.json().await?;
            if status != 202 {
                return Err::<String, BoxError>(
                    format!("POST /v1/runs answered {status}: {body}").into(),
                );
            }
            Ok(body["run_id"].as_str().unwrap_or_default().to_string())
        }));
    }
    let mut ids = Vec::with_capacity(options.runs);
    for start in starts {
        ids.push(start.await??);
    }
    let accepted: BTreeSet<String> = ids.iter().cloned().collect();

    // The scripted approver answers every pending approval until every run has finished.
    let mut decided = 0usize;
    let elapsed = loop {
        if began.elapsed() > options.deadline {
            server.shutdown().await?;
            return Err(format!("not every run finished within {:?}", options.deadline).into());
        }
        let (_, pending) = api
            .call(
                approver,
                reqwest::Method::GET,
                "/v1/approvals?status=pending&limit=100",
                None,
            )
            .await?;
        let open: Vec<String> = pending["approvals"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut clicks = Vec::new();
        for id in open {
            let (api, gate) = (api.clone(), gate.clone());
            clicks.push(tokio::spawn(async move {
                let _permit = gate.acquire().await?;
                let (status, body) = api
                    .call(
                        approver,
                        reqwest::Method::POST,
                        &format!("/v1/approvals/{id}/decision"),
                        Some(json!({"decision": "approve"})),
                    )
                    .await?;
                if status >= 300 && status != 409 {
                    return Err::<(), BoxError>(format!("deciding {id}: {status} {body}").into());
                }
                Ok(())
            }));
        }
        let clicked = clicks.len();
        for click in clicks {
            click.await??;
        }
        decided += clicked;
        let none = |v: &Value| v["runs"].as_array().is_some_and(Vec::is_empty);
        let (_, running) = api
            .call(
                starter,
                reqwest::Method::GET,
                "/v1/runs?status=running&limit=1",
                None,
            )
            .await?;
        let (_, pending_runs) = api
            .call(
                starter,
                reqwest::Method::GET,
                "/v1/runs?status=pending&limit=1",
                None,
            )
            .await?;
        if none(&running) && none(&pending_runs) {
            break began.elapsed();
        }
        if clicked == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };

    let kinds: BTreeMap<&str, StepKind> = def
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.kind()))
        .collect();
    let mut hops: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut not_succeeded = Vec::new();
    for id in &ids {
        let (_, run) = api
            .call(
                starter,
                reqwest::Method::GET,
                &format!("/v1/runs/{id}"),
                None,
            )
            .await?;
        if run["status"] != "succeeded" {
            not_succeeded.push(format!("{id}: {}", run["status"]));
            continue;
        }
        let (_, events) = api
            .call(
                starter,
                reqwest::Method::GET,
                &format!("/v1/runs/{id}/events?limit=500"),
                None,
            )
            .await?;
        let entries = events["events"].as_array().cloned().unwrap_or_default();
        let at = |kind: &str, step: &str| {
            entries
                .iter()
                .find(|e| e["kind"] == kind && e["step_id"] == step)
                .and_then(|e| e["at"].as_i64())
        };
        for step in &def.steps {
            let began_kind = match step.kind() {
                StepKind::Agent => "agent.started",
                StepKind::Approval => "approval.requested",
                _ => "step.started",
            };
            for dep in &step.depends_on {
                if let (Some(done), Some(start)) =
                    (at("step.succeeded", dep), at(began_kind, &step.id))
                {
                    let label = format!(
                        "{} → {}",
                        kinds.get(dep.as_str()).map_or("?", |k| k.as_str()),
                        step.kind().as_str()
                    );
                    hops.entry(label).or_default().push(start - done);
                }
            }
        }
    }
    server.shutdown().await?;
    Ok(LoadReport {
        accepted: accepted.len(),
        succeeded: ids.len() - not_succeeded.len(),
        not_succeeded,
        elapsed,
        steps_per_run: def.steps.len(),
        approvals_decided: decided,
        hops,
    })
}
