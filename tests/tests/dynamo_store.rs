//! What the port contract cannot see of `DynamoStore`'s run items: the run stored deflated, the
//! newest decision's audit entries kept in the run item (its tail) and copied to their own item
//! by the next decision, writers that share no cache, a writer that copied a tail and then
//! lost its race, and items written by earlier versions (a native map, one item per audit
//! entry). On the moto server `scripts/test` starts.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use flowgate_shared::adapters::dynamodb::{DynamoStore, attr};
use flowgate_shared::model::{AuditEntry, Run};
use flowgate_shared::ports::RunStore;
use flowgate_tests::contract::{BASE, audit_entry, full_run};
use serde_json::json;

type Item = HashMap<String, AttributeValue>;

async fn table() -> (Client, String) {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run `scripts/test`, which starts moto"
    );
    let config = flowgate_shared::adapters::aws_config(None).await;
    let client = Client::new(&config);
    let table = format!("flowgate-dynstore-{}", uuid::Uuid::new_v4().simple());
    DynamoStore::create_table(&client, &table)
        .await
        .expect("create the table on moto");
    (client, table)
}

fn next(run: &Run, note: &str) -> Run {
    let mut next = run.clone();
    next.version += 1;
    next.updated_at += 1;
    next.outputs.insert("writer".into(), json!(note));
    next
}

fn seqs(entries: &[AuditEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq).collect()
}

/// Every item of the run's partition, by sort key.
async fn partition(client: &Client, table: &str, run_id: &str) -> Vec<(String, Item)> {
    let out = client
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(format!("RUN#{run_id}")))
        .consistent_read(true)
        .send()
        .await
        .expect("query the run's partition");
    out.items()
        .iter()
        .map(|item| {
            let sk = item
                .get("sk")
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default();
            (sk, item.clone())
        })
        .collect()
}

#[tokio::test]
async fn run_is_deflated_and_the_tail_moves_to_its_own_item_on_the_next_decision() {
    let (client, table) = table().await;
    let store = DynamoStore::new(client.clone(), table.clone());
    let run = full_run("r-tail", "wf", BASE);
    let id = run.id.clone();
    store
        .create_run(&run, &[audit_entry(&id, 0, "run.created")])
        .await
        .expect("create");

    let items = partition(&client, &table, &id).await;
    assert_eq!(items.len(), 1, "the first entry rides in the run item");
    let (_, item) = &items[0];
    assert!(
        matches!(item.get(attr::RUN_Z), Some(AttributeValue::B(_))),
        "the run is stored deflated"
    );
    assert!(!item.contains_key(attr::RUN), "and not as a map as well");
    assert!(matches!(
        item.get(attr::AUDIT_TAIL),
        Some(AttributeValue::B(_))
    ));

    // Progress without entries keeps the tail; the next decision with entries copies it out.
    let v1 = next(&run, "progress");
    store.put_run(&v1, 0, &[]).await.expect("progress");
    assert_eq!(partition(&client, &table, &id).await.len(), 1);
    let v2 = next(&v1, "decision");
    store
        .put_run(
            &v2,
            1,
            &[
                audit_entry(&id, 1, "step.started"),
                audit_entry(&id, 2, "x"),
            ],
        )
        .await
        .expect("decision");
    let keys: Vec<String> = partition(&client, &table, &id)
        .await
        .into_iter()
        .map(|(sk, _)| sk)
        .collect();
    assert_eq!(keys, vec![format!("AUDIT#{:020}", 0), "RUN".to_string()]);
    assert_eq!(store.get_run(&id).await.expect("get"), Some(v2));
    assert_eq!(
        seqs(&store.audit(&id, None, 100).await.expect("audit")),
        vec![0, 1, 2]
    );
    assert_eq!(
        seqs(&store.audit(&id, Some(0), 1).await.expect("audit")),
        vec![1],
        "a page that ends inside the tail"
    );
}

#[tokio::test]
async fn writers_without_a_shared_cache_read_the_tail_and_never_lose_entries() {
    let (client, table) = table().await;
    let a = DynamoStore::new(client.clone(), table.clone());
    let b = DynamoStore::new(client.clone(), table.clone());
    let run = full_run("r-two-writers", "wf", BASE);
    let id = run.id.clone();
    a.create_run(&run, &[audit_entry(&id, 0, "run.created")])
        .await
        .expect("create");
    let v1 = next(&run, "a");
    a.put_run(&v1, 0, &[audit_entry(&id, 1, "by.a")])
        .await
        .expect("a writes v1");
    // b never read the run: it learns v1's tail from the table and copies it before writing.
    let v2 = next(&v1, "b");
    b.put_run(&v2, 1, &[audit_entry(&id, 2, "by.b")])
        .await
        .expect("b writes v2");
    // a's cache still says v1: its write from v1 loses without writing anything.
    let stale = next(&v1, "a again");
    let err = a
        .put_run(&stale, 1, &[audit_entry(&id, 2, "stale")])
        .await
        .expect_err("a is behind");
    assert!(err.is_conflict(), "{err:?}");
    let kinds: Vec<String> = b
        .audit(&id, None, 100)
        .await
        .expect("audit")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, vec!["run.created", "by.a", "by.b"]);
    // a catches up by reading, and its next decision copies b's tail.
    let current = a.get_run(&id).await.expect("get").expect("run");
    assert_eq!(current, v2);
    let v3 = next(&current, "a");
    a.put_run(&v3, 2, &[audit_entry(&id, 3, "by.a.later")])
        .await
        .expect("a writes v3");
    assert_eq!(
        seqs(&b.audit(&id, None, 100).await.expect("audit")),
        vec![0, 1, 2, 3]
    );
}

#[tokio::test]
async fn racing_decisions_copy_the_same_tail_and_only_the_winner_is_recorded() {
    let (client, table) = table().await;
    let run = full_run("r-race-tail", "wf", BASE);
    let id = run.id.clone();
    let setup = DynamoStore::new(client.clone(), table.clone());
    setup
        .create_run(&run, &[audit_entry(&id, 0, "run.created")])
        .await
        .expect("create");
    for round in 0..4u64 {
        let a = DynamoStore::new(client.clone(), table.clone());
        let b = DynamoStore::new(client.clone(), table.clone());
        let current = setup.get_run(&id).await.expect("get").expect("run");
        let seq = current.version + 1;
        let (run_a, run_b) = (next(&current, "a"), next(&current, "b"));
        let audit_a = [audit_entry(&id, seq, "writer.a")];
        let audit_b = [audit_entry(&id, seq, "writer.b")];
        let (ra, rb) = tokio::join!(
            a.put_run(&run_a, current.version, &audit_a),
            b.put_run(&run_b, current.version, &audit_b)
        );
        let winner = match (ra, rb) {
            (Ok(()), Err(e)) if e.is_conflict() => "writer.a",
            (Err(e), Ok(())) if e.is_conflict() => "writer.b",
            other => panic!("round {round}: exactly one write wins: {other:?}"),
        };
        let audit = setup.audit(&id, None, 100).await.expect("audit");
        assert_eq!(seqs(&audit), (0..=seq).collect::<Vec<_>>(), "round {round}");
        assert_eq!(audit.last().map(|e| e.kind.as_str()), Some(winner));
    }
    // Nothing a loser wrote is anywhere in the table: every stored entry is a winner's.
    let stored: usize = partition(&client, &table, &id)
        .await
        .iter()
        .filter(|(sk, _)| sk.starts_with("AUDIT#"))
        .count();
    assert_eq!(
        stored, 4,
        "runs 0..4 copied out, the last decision's in the tail"
    );
}

#[tokio::test]
async fn a_copied_tail_whose_writer_crashed_reads_once() {
    let (client, table) = table().await;
    let store = DynamoStore::new(client.clone(), table.clone());
    let run = full_run("r-crash-copy", "wf", BASE);
    let id = run.id.clone();
    store
        .create_run(&run, &[audit_entry(&id, 0, "a"), audit_entry(&id, 1, "b")])
        .await
        .expect("create");
    // A writer copied the tail (entries 0 and 1) and crashed before writing the run: the
    // tail is now both in the run item and in its own item.
    let tail = partition(&client, &table, &id).await[0].1[attr::AUDIT_TAIL].clone();
    client
        .put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S(format!("RUN#{id}")))
        .item("sk", AttributeValue::S(format!("AUDIT#{:020}", 1)))
        .item(attr::ENTRIES_Z, tail)
        .send()
        .await
        .expect("the copy");
    assert_eq!(
        seqs(&store.audit(&id, None, 100).await.expect("audit")),
        vec![0, 1]
    );
    // A fresh writer repeats the copy (same key, same bytes) and goes on.
    let fresh = DynamoStore::new(client.clone(), table.clone());
    fresh
        .put_run(&next(&run, "later"), 0, &[audit_entry(&id, 2, "c")])
        .await
        .expect("write");
    assert_eq!(
        seqs(&fresh.audit(&id, None, 100).await.expect("audit")),
        vec![0, 1, 2]
    );
}

#[tokio::test]
async fn items_of_earlier_versions_are_read_and_upgraded_by_the_next_write() {
    let (client, table) = table().await;
    let store = DynamoStore::new(client.clone(), table.clone());
    let run = full_run("r-legacy", "wf", BASE);
    let id = run.id.clone();
    // The layout before audit tails: the run as a map, one item per audit entry.
    let map = serde_dynamo::aws_sdk_dynamodb_1::to_attribute_value(&run).expect("map");
    let mut item: Item = HashMap::from([
        ("pk".into(), AttributeValue::S(format!("RUN#{id}"))),
        ("sk".into(), AttributeValue::S("RUN".into())),
        (attr::RUN.into(), map),
        (
            attr::VERSION.into(),
            AttributeValue::N(run.version.to_string()),
        ),
        (attr::STATUS.into(), AttributeValue::S("running".into())),
    ]);
    item.insert(attr::KIND.into(), AttributeValue::S("RUN".into()));
    client
        .put_item()
        .table_name(&table)
        .set_item(Some(item))
        .send()
        .await
        .expect("legacy run");
    for seq in 0..2u64 {
        let entry = audit_entry(&id, seq, "legacy");
        client
            .put_item()
            .table_name(&table)
            .item("pk", AttributeValue::S(format!("RUN#{id}")))
            .item("sk", AttributeValue::S(format!("AUDIT#{seq:020}")))
            .item(
                attr::ENTRY,
                serde_dynamo::aws_sdk_dynamodb_1::to_attribute_value(&entry).expect("entry"),
            )
            .send()
            .await
            .expect("legacy entry");
    }
    assert_eq!(store.get_run(&id).await.expect("get"), Some(run.clone()));
    assert_eq!(
        seqs(&store.audit(&id, None, 100).await.expect("audit")),
        vec![0, 1]
    );
    // Reusing a seq of a legacy entry is refused (there is no tail to compare with).
    let err = store
        .put_run(&next(&run, "dup"), 0, &[audit_entry(&id, 1, "dup")])
        .await
        .expect_err("seq 1 exists");
    assert!(format!("{err:?}").contains("already exists"), "{err:?}");

    // A progress write drops the map for the deflated form.
    let v1 = next(&run, "progress");
    store.put_run(&v1, 0, &[]).await.expect("progress");
    let stored = &partition(&client, &table, &id)
        .await
        .into_iter()
        .find(|(sk, _)| sk == "RUN")
        .expect("run item")
        .1;
    assert!(!stored.contains_key(attr::RUN) && stored.contains_key(attr::RUN_Z));
    let v2 = next(&v1, "decision");
    store
        .put_run(&v2, 1, &[audit_entry(&id, 2, "new")])
        .await
        .expect("decision");
    assert_eq!(store.get_run(&id).await.expect("get"), Some(v2));
    assert_eq!(
        seqs(&store.audit(&id, None, 100).await.expect("audit")),
        vec![0, 1, 2]
    );
}

#[tokio::test]
async fn a_finished_run_item_stays_under_one_write_unit() {
    let (client, table) = table().await;
    let store = DynamoStore::new(client.clone(), table.clone());
    let run = full_run("r-size-0123456789abcdef0123456789abcdef", "wf", BASE);
    let id = run.id.clone();
    let entries: Vec<AuditEntry> = (0..3).map(|s| audit_entry(&id, s, "step.event")).collect();
    store.create_run(&run, &entries).await.expect("create");
    let (_, item) = &partition(&client, &table, &id).await[0];
    let size: usize = item
        .iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(s) => s.len(),
                    AttributeValue::N(n) => n.len().div_ceil(2) + 1,
                    AttributeValue::B(b) => b.as_ref().len(),
                    _ => 1,
                }
        })
        .sum();
    let as_map = serde_json::to_string(&run).expect("json").len();
    assert!(
        as_map > 1_024,
        "the fixture is big enough to matter ({as_map} bytes)"
    );
    assert!(
        size < 1_024,
        "the run item with three audit entries is {size} bytes (the run alone is {as_map} \
         bytes of JSON)"
    );
}

/// Entries that do not compress (random ids), so a decision's tail is several KB.
fn bulky(run_id: &str, seqs: std::ops::Range<u64>) -> Vec<AuditEntry> {
    seqs.map(|seq| {
        let mut entry = audit_entry(run_id, seq, "step.started");
        entry.data = json!({
            "a": uuid::Uuid::new_v4().to_string(),
            "b": uuid::Uuid::new_v4().to_string(),
        });
        entry
    })
    .collect()
}

#[tokio::test]
async fn a_decision_too_big_for_the_run_item_goes_to_group_items_atomically() {
    let (client, table) = table().await;
    let store = DynamoStore::new(client.clone(), table.clone());
    let run = full_run("r-bulky", "wf", BASE);
    let id = run.id.clone();
    store
        .create_run(&run, &bulky(&id, 0..60))
        .await
        .expect("create with 60 entries");
    let run_item = |items: &[(String, Item)]| {
        items
            .iter()
            .find(|(sk, _)| sk == "RUN")
            .expect("run item")
            .1
            .clone()
    };
    let items = partition(&client, &table, &id).await;
    assert!(
        !run_item(&items).contains_key(attr::AUDIT_TAIL),
        "a big tail is not kept in the run item"
    );
    assert_eq!(items.len(), 2, "the entries are one group item");

    // A small decision next: its tail rides in the item; nothing to copy first.
    let v1 = next(&run, "small");
    store
        .put_run(&v1, 0, &[audit_entry(&id, 60, "small")])
        .await
        .expect("small decision");
    // A big one from a stale version loses and writes nothing; from the current one it wins.
    let err = store
        .put_run(&next(&run, "stale"), 0, &bulky(&id, 60..120))
        .await
        .expect_err("stale");
    assert!(err.is_conflict(), "{err:?}");
    let fresh = DynamoStore::new(client.clone(), table.clone());
    let v2 = next(&v1, "big");
    fresh
        .put_run(&v2, 1, &bulky(&id, 61..121))
        .await
        .expect("big decision");
    let items = partition(&client, &table, &id).await;
    assert!(!run_item(&items).contains_key(attr::AUDIT_TAIL));
    let audit = store.audit(&id, None, 1_000).await.expect("audit");
    assert_eq!(seqs(&audit), (0..121).collect::<Vec<_>>());
    assert_eq!(
        audit[60].kind, "small",
        "the small tail was copied out first"
    );
    assert_eq!(
        seqs(&store.audit(&id, Some(59), 3).await.expect("audit")),
        vec![60, 61, 62]
    );
    // Reusing a seq is still refused (no tail to compare with: the group items are read).
    let err = store
        .put_run(&next(&v2, "dup"), 2, &[audit_entry(&id, 100, "dup")])
        .await
        .expect_err("seq 100 exists");
    assert!(format!("{err:?}").contains("already exists"), "{err:?}");
    assert_eq!(store.get_run(&id).await.expect("get"), Some(v2));
}
