//! A counting proxy in front of the AWS endpoint (moto): the SDK clients of the run under
//! measurement talk to it, it forwards every request unchanged and records what it was
//! (`X-Amz-Target`, e.g. `DynamoDB_20120810.GetItem`) and what DynamoDB bills for it, in read
//! and write request units worked out from the items on the wire (DynamoDB's item-size rules:
//! attribute names plus values, 1 KB per write unit, 4 KB per strongly consistent read unit,
//! half for eventually consistent reads, twice for transactional writes). moto's own
//! `ConsumedCapacity` is a constant, so it is not used.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::Value;

/// Requests of one kind and the capacity they consumed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpCount {
    pub requests: u64,
    pub rru: f64,
    pub wru: f64,
}

#[derive(Debug, Default)]
struct Tally {
    ops: BTreeMap<String, OpCount>,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    tally: Arc<Mutex<Tally>>,
}

/// A running proxy: its URL and what went through it.
#[derive(Clone)]
pub struct CountingProxy {
    pub url: String,
    tally: Arc<Mutex<Tally>>,
}

impl CountingProxy {
    /// Start on a free loopback port, forwarding to `upstream`.
    pub async fn start(upstream: &str) -> std::io::Result<Self> {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let proxy = Proxy {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            tally: tally.clone(),
        };
        let app = Router::new().fallback(forward).with_state(proxy);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(CountingProxy {
            url: format!("http://{addr}"),
            tally,
        })
    }

    /// Counts so far, by operation.
    pub fn snapshot(&self) -> BTreeMap<String, OpCount> {
        self.tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ops
            .clone()
    }

    /// Forget what was counted (between measured runs).
    pub fn reset(&self) {
        self.tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ops
            .clear();
    }
}

async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return status(StatusCode::BAD_REQUEST);
    };
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| format!("{} {}", parts.method, parts.uri.path()));
    let url = format!(
        "{}{}",
        proxy.upstream,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut upstream = proxy.http.request(parts.method.clone(), url);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            upstream = upstream.header(name, value);
        }
    }
    let Ok(answer) = upstream.body(body.clone()).send().await else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let code = answer.status();
    let headers: HeaderMap = answer.headers().clone();
    let Ok(answer_body) = answer.bytes().await else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let (rru, wru) = capacity(&target, &body, &answer_body);
    {
        let mut tally = proxy.tally.lock().unwrap_or_else(PoisonError::into_inner);
        let op = tally.ops.entry(target).or_default();
        op.requests += 1;
        op.rru += rru;
        op.wru += wru;
    }
    let mut response = Response::new(Body::from(answer_body));
    *response.status_mut() = code;
    for (name, value) in &headers {
        if name != "content-length" && name != "transfer-encoding" {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}

fn status(code: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = code;
    response
}

/// (read units, write units) one DynamoDB request consumed.
pub fn capacity(target: &str, request: &Bytes, answer: &Bytes) -> (f64, f64) {
    let Some(op) = target.strip_prefix("DynamoDB_20120810.") else {
        return (0.0, 0.0);
    };
    let req: Value = serde_json::from_slice(request).unwrap_or(Value::Null);
    let ans: Value = serde_json::from_slice(answer).unwrap_or(Value::Null);
    let consistent = req["ConsistentRead"].as_bool().unwrap_or(false) && req["IndexName"].is_null();
    let read_units = |bytes: usize| {
        let units = (bytes.max(1) as f64 / 4_096.0).ceil();
        if consistent { units } else { units / 2.0 }
    };
    let write_units = |bytes: usize| (bytes.max(1) as f64 / 1_024.0).ceil();
    match op {
        "GetItem" => (read_units(item_size(&ans["Item"])), 0.0),
        "Query" | "Scan" => {
            let total: usize = ans["Items"]
                .as_array()
                .map(|items| items.iter().map(item_size).sum())
                .unwrap_or(0);
            (read_units(total), 0.0)
        }
        "PutItem" => (0.0, write_units(item_size(&req["Item"]))),
        // The old item is not on the wire; a record update is small: one unit.
        "UpdateItem" | "DeleteItem" => (0.0, 1.0),
        "TransactWriteItems" => {
            let units: f64 = req["TransactItems"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|t| match t.get("Put") {
                            Some(put) => write_units(item_size(&put["Item"])),
                            None => 1.0,
                        })
                        .sum()
                })
                .unwrap_or(0.0);
            (0.0, 2.0 * units)
        }
        _ => (0.0, 0.0),
    }
}

/// An item's size by DynamoDB's rules, from its wire form (`{"name": {"S": "..."}}`).
pub fn item_size(item: &Value) -> usize {
    item.as_object()
        .map(|attributes| {
            attributes
                .iter()
                .map(|(name, value)| name.len() + value_size(value))
                .sum()
        })
        .unwrap_or(0)
}

fn value_size(value: &Value) -> usize {
    let Some((kind, inner)) = value.as_object().and_then(|m| m.iter().next()) else {
        return 0;
    };
    match kind.as_str() {
        "S" | "B" => inner.as_str().map_or(0, str::len),
        // Numbers: about one byte per two digits, plus one.
        "N" => inner.as_str().map_or(1, |n| n.len().div_ceil(2) + 1),
        "BOOL" | "NULL" => 1,
        "SS" | "NS" | "BS" => inner.as_array().map_or(0, |a| {
            a.iter().map(|v| v.as_str().map_or(0, str::len)).sum()
        }),
        "L" => {
            3 + inner
                .as_array()
                .map_or(0, |a| a.iter().map(|v| 1 + value_size(v)).sum::<usize>())
        }
        "M" => {
            3 + inner.as_object().map_or(0, |m| {
                m.iter()
                    .map(|(k, v)| 1 + k.len() + value_size(v))
                    .sum::<usize>()
            })
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_sizes_and_units_follow_dynamodb_rules() {
        let item = serde_json::json!({"pk": {"S": "run#1"}, "v": {"N": "12"}});
        assert_eq!(item_size(&item), 2 + 5 + 1 + 2);
        let big = serde_json::json!({"Item": {"x": {"S": "a".repeat(5_000)}}});
        let (r, w) = capacity(
            "DynamoDB_20120810.PutItem",
            &Bytes::from(big.to_string()),
            &Bytes::from("{}"),
        );
        assert_eq!((r, w), (0.0, 5.0), "5,001 bytes are five write units");
        let got = serde_json::json!({"Item": {"x": {"S": "a".repeat(5_000)}}});
        let (r, _) = capacity(
            "DynamoDB_20120810.GetItem",
            &Bytes::from(r#"{"ConsistentRead": true}"#),
            &Bytes::from(got.to_string()),
        );
        assert_eq!(r, 2.0, "a strongly consistent read of 5 KB is two units");
        let tx = serde_json::json!({"TransactItems": [
            {"Put": {"Item": {"a": {"S": "x"}}}},
            {"ConditionCheck": {}}
        ]});
        let (_, w) = capacity(
            "DynamoDB_20120810.TransactWriteItems",
            &Bytes::from(tx.to_string()),
            &Bytes::from("{}"),
        );
        assert_eq!(w, 4.0, "transactional writes cost twice");
    }
}
