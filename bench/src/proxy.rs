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
//! wire: the proxy keeps the last version of every item written through it. A write is billed
//! at the larger of the item before and after it (DynamoDB's rule for puts that replace an
//! item, updates and deletes); after an `UpdateItem` the proxy reads the item back from the
//! emulator, uncounted, to learn what the update made of it.

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
        let units = |entry: &Value| write_units_of(item_size(entry));
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

    /// Bill one write request: the table's units by what was written (transactional writes
    /// twice; a failed conditional write is billed too, at the item's size) and, when it
    /// succeeded, the index units, remembering the items it wrote. `updated`: the item after a
    /// successful `UpdateItem`.
    fn bill(
        &mut self,
        op: &str,
        req: &Value,
        ok: bool,
        updated: Option<&Value>,
    ) -> (Vec<(&'static str, f64)>, f64) {
        // (the item's key, the item after the write or None for a delete, unit factor)
        let mut writes: Vec<(Value, Option<Value>, f64)> = Vec::new();
        match op {
            "PutItem" => writes.push((req["Item"].clone(), Some(req["Item"].clone()), 1.0)),
            "DeleteItem" => writes.push((req["Key"].clone(), None, 1.0)),
            "UpdateItem" => {
                let after = updated
                    .cloned()
                    .or_else(|| self.items.get(&self.key(&req["Key"])).cloned());
                writes.push((req["Key"].clone(), after, 1.0));
            }
            "TransactWriteItems" => {
                for t in req["TransactItems"].as_array().into_iter().flatten() {
                    if let Some(put) = t.get("Put") {
                        writes.push((put["Item"].clone(), Some(put["Item"].clone()), 2.0));
                    } else if let Some(delete) = t.get("Delete") {
                        writes.push((delete["Key"].clone(), None, 2.0));
                    } else if let Some(update) = t.get("Update") {
                        let key = update["Key"].clone();
                        let before = self.items.get(&self.key(&key)).cloned();
                        writes.push((key, before, 2.0));
                    } else {
                        // A condition check is billed like a write of a small item.
                        writes.push((Value::Null, None, 2.0));
                    }
                }
            }
            _ => {}
        }
        let keys: Vec<String> = self.table_keys.clone();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut table = Vec::new();
        let mut index = 0.0;
        for (key_item, new, factor) in writes {
            if key_item.is_null() {
                table.push(("other items", factor));
                continue;
            }
            let key = self.key(&key_item);
            let old = self.items.get(&key);
            let size = old
                .map_or(0, item_size)
                .max(new.as_ref().map_or(0, item_size));
            table.push((item_class(&key_item), factor * write_units_of(size)));
            if ok {
                let by_index: Vec<(&str, f64)> = self
                    .indexes
                    .iter()
                    .map(|spec| {
                        (
                            spec.name.as_str(),
                            spec.write_units(old, new.as_ref(), &keys),
                        )
                    })
                    .filter(|(_, units)| *units > 0.0)
                    .collect();
                index += by_index.iter().map(|(_, units)| units).sum::<f64>();
                if trace_writes() {
                    let attr = |name: &str| {
                        new.as_ref()
                            .and_then(|item| item.get(name))
                            .map_or(String::from("-"), |v| v.to_string())
                    };
                    eprintln!(
                        "write {op} {} {}: {} WRU ({size} B), index {by_index:?}, status {} wake_at {}",
                        key_item["sk"],
                        item_class(&key_item),
                        factor * write_units_of(size),
                        attr("status"),
                        attr("wake_at"),
                    );
                }
                match new {
                    Some(item) => self.items.insert(key, item),
                    None => self.items.remove(&key),
                };
            }
        }
        (table, index)
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

/// `FLOWGATE_BENCH_TRACE=1`: print every billed write with its index units, each measured run
/// under a header line (to see where a run's write units go).
pub fn trace_writes() -> bool {
    std::env::var_os("FLOWGATE_BENCH_TRACE").is_some_and(|v| v == "1")
}

/// Write units of an item or index entry of `size` bytes: 1 KB a unit, at least one.
fn write_units_of(size: usize) -> f64 {
    (size.max(1) as f64 / 1_024.0).ceil()
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
    let rru = read_units(&target, &body, &answer_body);
    let op = target
        .strip_prefix("DynamoDB_20120810.")
        .map(str::to_string);
    let req: Value = match op {
        Some(_) => serde_json::from_slice(&body).unwrap_or(Value::Null),
        None => Value::Null,
    };
    let updated = match op.as_deref() {
        Some("UpdateItem") if code.is_success() => read_back(&proxy, &parts.headers, &req).await,
        _ => None,
    };
    {
        let mut tally = proxy.tally.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut wru, mut index_wru) = (0.0, 0.0);
        if let Some(op) = op.as_deref() {
            let (table, index) = tally
                .shadow
                .bill(op, &req, code.is_success(), updated.as_ref());
            for (class, units) in table {
                *tally.written.entry(class).or_default() += units;
                wru += units;
            }
            if index > 0.0 {
                *tally.written.entry("index entries").or_default() += index;
            }
            index_wru = index;
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

/// The item an `UpdateItem` left, read back from the emulator directly (not counted): the
/// update expression's result is not on the wire.
async fn read_back(proxy: &Proxy, headers: &HeaderMap, req: &Value) -> Option<Value> {
    let body = serde_json::json!({
        "TableName": req["TableName"],
        "Key": req["Key"],
        "ConsistentRead": true,
    });
    let mut request = proxy
        .http
        .post(format!("{}/", proxy.upstream))
        .header("x-amz-target", "DynamoDB_20120810.GetItem")
        .header("content-type", "application/x-amz-json-1.0");
    // moto reads the region and account from the (unverified) authorization header.
    if let Some(auth) = headers.get("authorization") {
        request = request.header("authorization", auth);
    }
    let answer: Value = request
        .body(body.to_string())
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    answer.get("Item").cloned()
}

/// Read units one DynamoDB request consumed (writes are billed by [`Shadow::bill`]).
pub fn read_units(target: &str, request: &Bytes, answer: &Bytes) -> f64 {
    let Some(op) = target.strip_prefix("DynamoDB_20120810.") else {
        return 0.0;
    };
    let req: Value = serde_json::from_slice(request).unwrap_or(Value::Null);
    let ans: Value = serde_json::from_slice(answer).unwrap_or(Value::Null);
    let consistent = req["ConsistentRead"].as_bool().unwrap_or(false) && req["IndexName"].is_null();
    let units = |bytes: usize, consistent: bool| {
        let units = (bytes.max(1) as f64 / 4_096.0).ceil();
        if consistent { units } else { units / 2.0 }
    };
    match op {
        "GetItem" => units(item_size(&ans["Item"]), consistent),
        "Query" | "Scan" => {
            let total: usize = ans["Items"]
                .as_array()
                .map(|items| items.iter().map(item_size).sum())
                .unwrap_or(0);
            units(total, consistent)
        }
        // Each item is its own read, eventually consistent unless asked otherwise per table.
        "BatchGetItem" => ans["Responses"]
            .as_object()
            .map(|tables| {
                tables
                    .iter()
                    .map(|(table, items)| {
                        let consistent = req["RequestItems"][table]["ConsistentRead"]
                            .as_bool()
                            .unwrap_or(false);
                        items
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|item| units(item_size(item), consistent))
                            .sum::<f64>()
                    })
                    .sum()
            })
            .unwrap_or(0.0),
        _ => 0.0,
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

/// Decoded length of base64 text.
fn base64_len(text: &str) -> usize {
    let padding = text.bytes().rev().take_while(|b| *b == b'=').count();
    (text.len() / 4 * 3).saturating_sub(padding)
}

fn value_size(value: &Value) -> usize {
    let Some((kind, inner)) = value.as_object().and_then(|m| m.iter().next()) else {
        return 0;
    };
    match kind.as_str() {
        "S" => inner.as_str().map_or(0, str::len),
        // Binary values travel as base64: the item holds the decoded bytes.
        "B" => inner.as_str().map_or(0, base64_len),
        // Numbers: about one byte per two digits, plus one.
        "N" => inner.as_str().map_or(1, |n| n.len().div_ceil(2) + 1),
        "BOOL" | "NULL" => 1,
        "SS" | "NS" => inner.as_array().map_or(0, |a| {
            a.iter().map(|v| v.as_str().map_or(0, str::len)).sum()
        }),
        "BS" => inner.as_array().map_or(0, |a| {
            a.iter().map(|v| v.as_str().map_or(0, base64_len)).sum()
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

    fn shadow(indexes: Vec<IndexSpec>) -> Shadow {
        Shadow {
            table_keys: vec!["pk".into(), "sk".into()],
            indexes,
            items: HashMap::new(),
        }
    }

    fn total(billed: &[(&'static str, f64)]) -> f64 {
        billed.iter().map(|(_, u)| u).sum()
    }

    #[test]
    fn item_sizes_and_units_follow_dynamodb_rules() {
        let item = serde_json::json!({"pk": {"S": "run#1"}, "v": {"N": "12"}});
        assert_eq!(item_size(&item), 2 + 5 + 1 + 2);
        // 6 bytes as base64 ("AAECAwQF"), 5 with one padding character.
        assert_eq!(
            item_size(&serde_json::json!({"b": {"B": "AAECAwQF"}})),
            1 + 6
        );
        assert_eq!(
            item_size(&serde_json::json!({"b": {"B": "AAECAwQ="}})),
            1 + 5
        );

        let mut shadow = shadow(Vec::new());
        let big =
            serde_json::json!({"pk": {"S": "p"}, "sk": {"S": "s"}, "x": {"S": "a".repeat(5_000)}});
        let (table, _) = shadow.bill("PutItem", &serde_json::json!({"Item": big}), true, None);
        assert_eq!(total(&table), 5.0, "5,009 bytes are five write units");
        let small = serde_json::json!({"pk": {"S": "p"}, "sk": {"S": "s"}});
        let (table, _) = shadow.bill("PutItem", &serde_json::json!({"Item": small}), true, None);
        assert_eq!(
            total(&table),
            5.0,
            "a put that replaces an item pays for the larger one"
        );
        let (table, _) = shadow.bill("PutItem", &serde_json::json!({"Item": small}), true, None);
        assert_eq!(total(&table), 1.0);
        let grown =
            serde_json::json!({"pk": {"S": "p"}, "sk": {"S": "s"}, "x": {"S": "a".repeat(1_500)}});
        let key = serde_json::json!({"Key": {"pk": {"S": "p"}, "sk": {"S": "s"}}});
        let (table, _) = shadow.bill("UpdateItem", &key, true, Some(&grown));
        assert_eq!(total(&table), 2.0, "an update pays for the item it leaves");
        let (table, _) = shadow.bill("UpdateItem", &key, false, None);
        assert_eq!(
            total(&table),
            2.0,
            "a failed conditional update is billed too"
        );
        let (table, _) = shadow.bill("DeleteItem", &key, true, None);
        assert_eq!(total(&table), 2.0, "a delete pays for the item it removes");

        let got = serde_json::json!({"Item": {"x": {"S": "a".repeat(5_000)}}});
        let r = read_units(
            "DynamoDB_20120810.GetItem",
            &Bytes::from(r#"{"ConsistentRead": true}"#),
            &Bytes::from(got.to_string()),
        );
        assert_eq!(r, 2.0, "a strongly consistent read of 5 KB is two units");
        let batch = serde_json::json!({"Responses": {"t": [{"x": {"S": "a"}}, {"x": {"S": "b"}}]}});
        let r = read_units(
            "DynamoDB_20120810.BatchGetItem",
            &Bytes::from(r#"{"RequestItems": {"t": {}}}"#),
            &Bytes::from(batch.to_string()),
        );
        assert_eq!(r, 1.0, "two small items read eventually consistently");
        let tx = serde_json::json!({"TransactItems": [
            {"Put": {"Item": {"pk": {"S": "q"}, "sk": {"S": "s"}}}},
            {"ConditionCheck": {}}
        ]});
        let (table, _) = shadow.bill("TransactWriteItems", &tx, true, None);
        assert_eq!(total(&table), 4.0, "transactional writes cost twice");
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

        let mut shadow = shadow(vec![all.clone(), keys_only.clone()]);
        let put = |item: &Value| serde_json::json!({"Item": item});
        assert_eq!(shadow.bill("PutItem", &put(&a), true, None).1, 3.0);
        assert_eq!(
            shadow.bill("PutItem", &put(&b), true, None).1,
            1.0,
            "the old item remembered"
        );
        assert_eq!(
            shadow.bill("PutItem", &put(&c), false, None).1,
            0.0,
            "a failed write touches no index"
        );
        let tx = serde_json::json!({"TransactItems": [{"Put": {"Item": c}}]});
        assert_eq!(
            shadow.bill("TransactWriteItems", &tx, true, None).1,
            4.0,
            "not doubled"
        );
    }
}
