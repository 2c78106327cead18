//! A counting proxy in front of the AWS endpoint (moto): the SDK clients of the run under
//! measurement talk to it, it forwards every request unchanged and records what it was
//! (`X-Amz-Target`, e.g. `DynamoDB_20120810.GetItem`) and what DynamoDB bills for it, in read
//! and write request units worked out from the items on the wire (DynamoDB's item-size rules:
//! attribute names plus values, 1 KB per write unit, 4 KB per strongly consistent read unit,
//! half for eventually consistent reads, twice for transactional writes). moto's own
//! `ConsumedCapacity` is a constant, so it is not used.
//!
//! Global secondary indexes are billed too: DynamoDB writes an index entry whenever a table
//! write puts an item into an index, takes it out, changes its index key (a delete and a put)
//! or changes what the index projects (one write), each at 1 KB of the projected entry per
//! unit, not doubled inside transactions. That needs the item as it was, which is not on the
//! wire: the proxy keeps the last version of every item written through it.

use std::collections::{BTreeMap, HashMap};
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
    /// Write units, the table's and its indexes'.
    pub wru: f64,
    /// Of `wru`, the units the global secondary indexes consumed.
    pub index_wru: f64,
}

/// What a global secondary index holds of an item.
#[derive(Debug, Clone, PartialEq)]
pub enum Projection {
    All,
    KeysOnly,
    Include(Vec<String>),
}

/// A global secondary index of the measured table (from `DescribeTable`).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexSpec {
    pub name: String,
    pub hash: String,
    pub range: Option<String>,
    pub projection: Projection,
}

impl IndexSpec {
    /// The index entry for `item`, or `None` when the item lacks the index key (sparse).
    fn entry(&self, item: &Value, table_keys: &[&str]) -> Option<Value> {
        let attrs = item.as_object()?;
        let mut keys = vec![self.hash.as_str()];
        keys.extend(self.range.as_deref());
        if keys.iter().any(|k| !attrs.contains_key(*k)) {
            return None;
        }
        keys.extend(table_keys);
        let projected = attrs
            .iter()
            .filter(|(name, _)| match &self.projection {
                Projection::All => true,
                Projection::KeysOnly => keys.contains(&name.as_str()),
                Projection::Include(extra) => {
                    keys.contains(&name.as_str()) || extra.iter().any(|e| e == *name)
                }
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Some(Value::Object(projected))
    }

    fn key_of(&self, entry: &Value) -> (Value, Value) {
        let range = self
            .range
            .as_deref()
            .map_or(Value::Null, |r| entry[r].clone());
        (entry[&self.hash].clone(), range)
    }

    /// Write units this index consumes when an item goes from `old` to `new`.
    pub fn write_units(&self, old: Option<&Value>, new: Option<&Value>, keys: &[&str]) -> f64 {
        let units = write_units;
        let old = old.and_then(|item| self.entry(item, keys));
        let new = new.and_then(|item| self.entry(item, keys));
        match (old, new) {
            (None, None) => 0.0,
            (None, Some(new)) => units(&new),
            (Some(old), None) => units(&old),
            (Some(old), Some(new)) if self.key_of(&old) != self.key_of(&new) => {
                units(&old) + units(&new)
            }
            (Some(old), Some(new)) if old != new => units(&new),
            _ => 0.0,
        }
    }
}

/// The table's key attributes and indexes, and the last version of each item written.
#[derive(Debug, Default)]
struct Shadow {
    table_keys: Vec<String>,
    indexes: Vec<IndexSpec>,
    items: HashMap<String, Value>,
}

impl Shadow {
    fn key(&self, item: &Value) -> String {
        self.table_keys
            .iter()
            .map(|k| item[k].to_string())
            .collect::<Vec<_>>()
            .join("|")
    }

    /// Apply one successful write of `new` (None: a delete of the item with `key_item`'s key)
    /// and return the index write units it cost.
    fn write(&mut self, key_item: &Value, new: Option<&Value>) -> f64 {
        let key = self.key(key_item);
        let old = self.items.get(&key);
        let keys: Vec<&str> = self.table_keys.iter().map(String::as_str).collect();
        let units = self
            .indexes
            .iter()
            .map(|index| index.write_units(old, new, &keys))
            .sum();
        match new {
            Some(item) => self.items.insert(key, item.clone()),
            None => self.items.remove(&key),
        };
        units
    }

    /// Index units for a successful request (puts, deletes, transactions). An `UpdateItem`'s
    /// result is not on the wire: the item is forgotten, and its index writes not counted
    /// (the measured runs make none).
    fn apply(&mut self, op: &str, req: &Value) -> f64 {
        match op {
            "PutItem" => self.write(&req["Item"], Some(&req["Item"])),
            "DeleteItem" => self.write(&req["Key"], None),
            "UpdateItem" => {
                let key = self.key(&req["Key"]);
                self.items.remove(&key);
                0.0
            }
            "TransactWriteItems" => req["TransactItems"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|t| {
                            if let Some(put) = t.get("Put") {
                                self.write(&put["Item"], Some(&put["Item"]))
                            } else if let Some(delete) = t.get("Delete") {
                                self.write(&delete["Key"], None)
                            } else if let Some(update) = t.get("Update") {
                                let key = self.key(&update["Key"]);
                                self.items.remove(&key);
                                0.0
                            } else {
                                0.0
                            }
                        })
                        .sum()
                })
                .unwrap_or(0.0),
            _ => 0.0,
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    ops: BTreeMap<String, OpCount>,
    /// Write units by what was written (see [`item_class`]).
    written: BTreeMap<&'static str, f64>,
    shadow: Shadow,
}

/// What an item is, from its sort key: the run, an audit entry, or anything else.
fn item_class(item: &Value) -> &'static str {
    match item["sk"]["S"].as_str() {
        Some("RUN") => "run item",
        Some(sk) if sk.starts_with("AUDIT#") => "audit entries",
        _ => "other items",
    }
}

/// Write units of one item or index entry: 1 KB a unit, at least one.
fn write_units(item: &Value) -> f64 {
    (item_size(item).max(1) as f64 / 1_024.0).ceil()
}

/// The table's write units of one request, by item class ([`capacity`] sums them):
/// transactional writes cost twice.
fn written_by_class(op: &str, req: &Value) -> Vec<(&'static str, f64)> {
    match op {
        "PutItem" => vec![(item_class(&req["Item"]), write_units(&req["Item"]))],
        "UpdateItem" | "DeleteItem" => vec![(item_class(&req["Key"]), 1.0)],
        "TransactWriteItems" => req["TransactItems"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|t| match t.get("Put") {
                        Some(put) => (item_class(&put["Item"]), 2.0 * write_units(&put["Item"])),
                        None => ("other items", 2.0),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
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
    /// Start on a free loopback port, forwarding to `upstream`, billing index writes for a
    /// table keyed by `table_keys` with `indexes`.
    pub async fn start(
        upstream: &str,
        table_keys: Vec<String>,
        indexes: Vec<IndexSpec>,
    ) -> std::io::Result<Self> {
        let tally = Arc::new(Mutex::new(Tally {
            ops: BTreeMap::new(),
            written: BTreeMap::new(),
            shadow: Shadow {
                table_keys,
                indexes,
                items: HashMap::new(),
            },
        }));
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

    /// Write units so far by what they wrote: the run item, audit entries, index entries,
    /// other items.
    pub fn written(&self) -> BTreeMap<&'static str, f64> {
        self.tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .written
            .clone()
    }

    /// Forget what was counted (between measured runs).
    pub fn reset(&self) {
        let mut tally = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
        tally.ops.clear();
        tally.written.clear();
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
        let mut index_wru = 0.0;
        if let Some(op) = target.strip_prefix("DynamoDB_20120810.") {
            let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            for (class, units) in written_by_class(op, &req) {
                *tally.written.entry(class).or_default() += units;
            }
            if code.is_success() {
                index_wru = tally.shadow.apply(op, &req);
                *tally.written.entry("index entries").or_default() += index_wru;
            }
        }
        let op = tally.ops.entry(target).or_default();
        op.requests += 1;
        op.rru += rru;
        op.wru += wru + index_wru;
        op.index_wru += index_wru;
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
    match op {
        "GetItem" => (read_units(item_size(&ans["Item"])), 0.0),
        "Query" | "Scan" => {
            let total: usize = ans["Items"]
                .as_array()
                .map(|items| items.iter().map(item_size).sum())
                .unwrap_or(0);
            (read_units(total), 0.0)
        }
        // The old item of an update or delete is not on the wire; a record update is small:
        // one unit.
        _ => (0.0, written_by_class(op, &req).iter().map(|(_, u)| u).sum()),
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

    #[test]
    fn index_writes_follow_dynamodb_rules() {
        let keys = ["pk", "sk"];
        let all = IndexSpec {
            name: "all".into(),
            hash: "kind".into(),
            range: Some("at".into()),
            projection: Projection::All,
        };
        let keys_only = IndexSpec {
            projection: Projection::KeysOnly,
            ..all.clone()
        };
        let item = |at: &str, body: &str| {
            serde_json::json!({"pk": {"S": "p"}, "sk": {"S": "s"}, "kind": {"S": "K"},
                "at": {"N": at}, "body": {"S": body}})
        };
        let big = "x".repeat(1_500);
        let (a, b, c) = (item("1", &big), item("1", "changed"), item("2", "changed"));
        assert_eq!(
            all.write_units(None, Some(&a), &keys),
            2.0,
            "a put of 1.5 KB"
        );
        assert_eq!(
            all.write_units(Some(&a), Some(&a), &keys),
            0.0,
            "nothing changed"
        );
        assert_eq!(
            all.write_units(Some(&a), Some(&b), &keys),
            1.0,
            "projection changed"
        );
        assert_eq!(
            all.write_units(Some(&b), Some(&c), &keys),
            2.0,
            "key moved: delete + put"
        );
        assert_eq!(
            all.write_units(Some(&a), None, &keys),
            2.0,
            "a delete of the old entry"
        );
        assert_eq!(
            keys_only.write_units(Some(&a), Some(&b), &keys),
            0.0,
            "keys unchanged"
        );
        assert_eq!(keys_only.write_units(Some(&b), Some(&c), &keys), 2.0);
        let sparse = serde_json::json!({"pk": {"S": "p"}, "sk": {"S": "s"}});
        assert_eq!(
            all.write_units(None, Some(&sparse), &keys),
            0.0,
            "not in the index"
        );

        let mut shadow = Shadow {
            table_keys: vec!["pk".into(), "sk".into()],
            indexes: vec![all.clone(), keys_only.clone()],
            items: HashMap::new(),
        };
        let put = |item: &Value| serde_json::json!({"Item": item});
        assert_eq!(shadow.apply("PutItem", &put(&a)), 3.0);
        assert_eq!(
            shadow.apply("PutItem", &put(&b)),
            1.0,
            "the old item remembered"
        );
        let tx = serde_json::json!({"TransactItems": [{"Put": {"Item": c}}]});
        assert_eq!(shadow.apply("TransactWriteItems", &tx), 4.0, "not doubled");
    }
}
