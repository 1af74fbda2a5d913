//! Conformance tests of the sled storage layer (`durasaga::persistence`)
//! through its public API only: inboxes, entity records with their outbox,
//! deduplication, durability across a reopen, group commit, dead letters and
//! refusal of corrupted bytes.
//!
//! Every test works in its own temporary directory.

use durasaga::domain::*;
use durasaga::persistence::deadletters::DeadLetter;
use durasaga::persistence::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CACHE: u64 = 16 << 20;

/// A small entity state for the tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Counter {
    name: String,
    handled: Vec<u128>,
    total: u64,
}

fn envelope(id: u128, from: &str, to: &str) -> Envelope {
    let order_id = OrderId::parse("o-1").unwrap();
    Envelope {
        id,
        kind: "ApproveOrder".into(),
        schema_version: SCHEMA_VERSION,
        from: Address {
            service: Service::Saga,
            entity: from.to_owned(),
        },
        to: Address {
            service: Service::Order,
            entity: to.to_owned(),
        },
        correlation: format!("corr-{id}"),
        reply_to: Some(Address {
            service: Service::Saga,
            entity: from.to_owned(),
        }),
        attempt: 1,
        sent_at: 1_700_000_000_000 + id as i64,
        payload: Payload::ApproveOrder { order_id },
    }
}

fn reply(id: u128, from: &str, to: &str) -> Envelope {
    let order_id = OrderId::parse("o-1").unwrap();
    Envelope {
        id,
        kind: "OrderRejected".into(),
        schema_version: SCHEMA_VERSION,
        from: Address {
            service: Service::Order,
            entity: from.to_owned(),
        },
        to: Address {
            service: Service::Saga,
            entity: to.to_owned(),
        },
        correlation: "o-1".into(),
        reply_to: None,
        attempt: 2,
        sent_at: 5,
        payload: Payload::OrderRejected {
            order_id,
            reason: RejectionReason::InsufficientCredit,
        },
    }
}

fn open_db(dir: &Path, mode: Durability) -> ServiceDb {
    ServiceDb::open(dir, "order", mode, CACHE).expect("open service db")
}

/// Appends and waits for durability; returns the entry's sequence.
async fn append(db: &ServiceDb, env: &Envelope) -> u64 {
    let (seq, ticket) = db.inbox_append(env).expect("inbox_append");
    db.durable(ticket).await.expect("durable");
    seq
}

fn pending_ids(db: &ServiceDb, entity: &str, after: u64) -> Vec<(u64, u128)> {
    db.inbox_pending(entity, after, usize::MAX)
        .expect("inbox_pending")
        .into_iter()
        .map(|(seq, env)| (seq, env.expect("entry decodes").id))
        .collect()
}

/// Waits until no sled instance holds the lock of any service database under
/// `dir`, by opening each one with plain sled (which fails while it is locked)
/// and dropping it again.
///
/// Needed because `Store::close` does not join the flusher threads: each
/// thread owns a clone of its `sled::Db`, so the lock is released a moment
/// *after* `close` returns (see `reopen_right_after_close`). Simply retrying
/// `Store::open` does not work: an attempt that fails part-way leaks the
/// databases it already opened, which then stay locked for good (see
/// `store_open_failing_part_way_releases_what_it_opened`).
fn wait_until_unlocked(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    // Every service database is a subdirectory holding sled's `db` file.
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.join("db").is_file())
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    for path in paths {
        loop {
            match sled::Config::new().path(&path).open() {
                Ok(db) => {
                    drop(db);
                    break;
                }
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("{} stays locked: {e}", path.display()),
            }
        }
    }
}

/// Closes a store and waits until its flusher threads have finished their
/// final flush and released sled, so that the directory can be reopened or
/// deleted safely. Deleting it earlier makes a `Durability::Fsync` flusher's
/// final fsync fail, which exits the whole test process with status 75 (see
/// `fsync_after_close_does_not_exit_the_process`).
fn close_and_wait(store: Store) {
    let dir = store.dir.clone();
    store.close().expect("close");
    drop(store);
    wait_until_unlocked(&dir);
}

fn close_and_reopen(store: Store, mode: Durability) -> Store {
    let dir = store.dir.clone();
    close_and_wait(store);
    Store::open(&dir, mode, CACHE).expect("reopen")
}

// ---------------------------------------------------------------- inboxes --

#[tokio::test]
async fn inbox_entries_of_one_entity_come_back_in_append_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path(), Durability::Flush);
    let mut seqs = Vec::new();
    // Ids deliberately not monotonic: order must follow the append, not the id.
    let ids: Vec<u128> = (0..300u128)
        .map(|i| (i * 7919) % 1000 + (i << 64))
        .collect();
    for &id in &ids {
        seqs.push(append(&db, &envelope(id, "s-1", "order-1")).await);
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequences must increase: {seqs:?}"
    );
    let got = pending_ids(&db, "order-1", 0);
    assert_eq!(got.iter().map(|p| p.1).collect::<Vec<_>>(), ids);
    assert_eq!(got.iter().map(|p| p.0).collect::<Vec<_>>(), seqs);
    assert_eq!(db.inbox_depth("order-1", 0).unwrap(), ids.len());
    // Full envelopes survive the round trip unchanged.
    let full = db.inbox_pending("order-1", 0, 1).unwrap();
    assert_eq!(
        full[0].1.as_ref().unwrap(),
        &envelope(ids[0], "s-1", "order-1")
    );
}

#[tokio::test]
async fn inbox_preserves_per_sender_order_when_senders_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path(), Durability::Flush);
    let senders = ["s-a", "s-b", "s-c", "s-d"];
    let mut next = [0u128; 4];
    // Deterministic but irregular interleaving (xorshift).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..400 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let s = (x % 4) as usize;
        let id = ((s as u128) << 32) | next[s];
        next[s] += 1;
        append(&db, &envelope(id, senders[s], "order-x")).await;
    }
    let got = pending_ids(&db, "order-x", 0);
    assert_eq!(got.len(), 400);
    let mut per_sender: BTreeMap<u128, Vec<u128>> = BTreeMap::new();
    for (_, id) in &got {
        per_sender
            .entry(id >> 32)
            .or_default()
            .push(id & 0xFFFF_FFFF);
    }
    for (s, seen) in per_sender {
        let expected: Vec<u128> = (0..next[s as usize]).collect();
        assert_eq!(seen, expected, "sender {s} out of order");
    }
    // Sender field round-trips too.
    for (_, env) in db.inbox_pending("order-x", 0, 50).unwrap() {
        let env = env.unwrap();
        assert_eq!(env.from.entity, senders[(env.id >> 32) as usize]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inbox_preserves_per_sender_order_with_concurrent_senders() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path(), Durability::Flush);
    let mut tasks = Vec::new();
    for s in 0..8u128 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            // Each sender is sequential (it awaits each append), like a relay
            // draining one outbox in order.
            for i in 0..50u128 {
                append(&db, &envelope((s << 32) | i, &format!("s-{s}"), "order-c")).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = pending_ids(&db, "order-c", 0);
    assert_eq!(got.len(), 400);
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
    let mut per_sender: BTreeMap<u128, Vec<u128>> = BTreeMap::new();
    for (_, id) in &got {
        per_sender
            .entry(id >> 32)
            .or_default()
            .push(id & 0xFFFF_FFFF);
    }
    assert_eq!(per_sender.len(), 8);
    for (s, seen) in per_sender {
        assert_eq!(
            seen,
            (0..50).collect::<Vec<u128>>(),
            "sender {s} out of order"
        );
    }
}

#[tokio::test]
async fn inbox_pending_respects_cursor_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path(), Durability::Flush);
    let mut seqs = Vec::new();
    for id in 0..20u128 {
        seqs.push(append(&db, &envelope(id, "s", "e-1")).await);
    }
    // Limit.
    assert_eq!(pending_ids(&db, "e-1", 0).len(), 20);
    assert_eq!(db.inbox_pending("e-1", 0, 5).unwrap().len(), 5);
    assert!(db.inbox_pending("e-1", 0, 0).unwrap().is_empty());
    // Cursor: strictly above `after`.
    let after = seqs[9];
    let page = db.inbox_pending("e-1", after, 4).unwrap();
    let page: Vec<u64> = page.into_iter().map(|(s, _)| s).collect();
    assert_eq!(page, seqs[10..14].to_vec());
    // Paging through with cursor + limit visits every entry exactly once, in order.
    let mut cursor = 0;
    let mut visited = Vec::new();
    loop {
        let page = db.inbox_pending("e-1", cursor, 3).unwrap();
        if page.is_empty() {
            break;
        }
        for (seq, env) in page {
            visited.push(env.unwrap().id);
            cursor = seq;
        }
    }
    assert_eq!(visited, (0..20).collect::<Vec<u128>>());
    // At / past the head: nothing pending.
    assert!(db
        .inbox_pending("e-1", *seqs.last().unwrap(), 10)
        .unwrap()
        .is_empty());
    assert!(db
        .inbox_pending("e-1", u64::MAX - 1, 10)
        .unwrap()
        .is_empty());
    assert_eq!(db.inbox_depth("e-1", after).unwrap(), 10);
    assert_eq!(db.inbox_depth("e-1", *seqs.last().unwrap()).unwrap(), 0);
    // Unknown entity: empty.
    assert!(db.inbox_pending("nobody", 0, 10).unwrap().is_empty());
}

#[tokio::test]
async fn inbox_remove_consumed_removes_only_up_to_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path(), Durability::Flush);
    let mut seqs = Vec::new();
    for id in 0..10u128 {
        seqs.push(append(&db, &envelope(id, "s", "e-1")).await);
    }
    db.inbox_remove_consumed("e-1", seqs[3]).unwrap();
    let left = pending_ids(&db, "e-1", 0);
    assert_eq!(
        left.iter().map(|p| p.0).collect::<Vec<_>>(),
        seqs[4..].to_vec()
    );
    assert_eq!(
        left.iter().map(|p| p.1).collect::<Vec<_>>(),
        (4..10).collect::<Vec<u128>>()
    );
    // Removing again, or below what is left, is a no-op.
    db.inbox_remove_consumed("e-1", seqs[3]).unwrap();
    db.inbox_remove_consumed("e-1", 0).unwrap();
    assert_eq!(pending_ids(&db, "e-1", 0).len(), 6);
    // A cursor between two sequences removes only the lower ones.
    db.inbox_remove_consumed("e-1", seqs[6] - 1).unwrap();
    assert_eq!(
        pending_ids(&db, "e-1", 0).first().map(|p| p.0),
        Some(seqs[6])
    );
    // Everything.
    db.inbox_remove_consumed("e-1", *seqs.last().unwrap())
        .unwrap();
    assert!(pending_ids(&db, "e-1", 0).is_empty());
    assert!(!db.inbox_heads().unwrap().contains_key("e-1"));
}

#[tokio::test]
async fn inbox_heads_reports_the_lowest_and_highest_sequence_per_entity() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path(), Durability::Flush);
    assert!(db.inbox_heads().unwrap().is_empty());
    let mut spans: BTreeMap<String, InboxSpan> = BTreeMap::new();
    let entities = ["c-1", "c-2", "c-10", "z"];
    for i in 0..40u128 {
        let to = entities[(i as usize * 3) % entities.len()];
        let seq = append(&db, &envelope(i, "s", to)).await;
        spans
            .entry(to.to_owned())
            .and_modify(|s| s.last = seq)
            .or_insert(InboxSpan {
                first: seq,
                last: seq,
            });
    }
    assert_eq!(db.inbox_heads().unwrap(), spans);
    // Removing consumed entries below the head keeps the head and moves the
    // lowest sequence up to the head.
    let head = spans["c-1"].last;
    db.inbox_remove_consumed("c-1", head - 1).unwrap();
    assert_eq!(
        db.inbox_heads().unwrap()["c-1"],
        InboxSpan {
            first: head,
            last: head
        }
    );
    db.inbox_remove_consumed("c-1", head).unwrap();
    spans.remove("c-1");
    assert_eq!(db.inbox_heads().unwrap(), spans);
}

#[tokio::test]
async fn inbox_remove_by_key_removes_exactly_those_entries() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path(), Durability::Flush);
    let mut seqs = Vec::new();
    for i in 0..10u128 {
        seqs.push(append(&db, &envelope(i, "s", "e-1")).await);
        append(&db, &envelope(100 + i, "s", "e-10")).await;
    }
    // Remove the 2nd, 3rd and 7th entries of e-1 (and a sequence that is not there).
    db.inbox_remove("e-1", &[seqs[1], seqs[2], seqs[6], u64::MAX - 7])
        .unwrap();
    let left: Vec<u128> = pending_ids(&db, "e-1", 0)
        .into_iter()
        .map(|p| p.1)
        .collect();
    assert_eq!(left, vec![0, 3, 4, 5, 7, 8, 9]);
    assert_eq!(
        pending_ids(&db, "e-10", 0).len(),
        10,
        "the neighbour is untouched"
    );
}

#[tokio::test]
async fn inbox_entries_never_leak_between_prefix_sharing_entities() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path(), Durability::Flush);
    // Ids that sort right around "a/" byte-wise: '-' and '.' sort before '/',
    // '0', ':' and letters after it.
    let entities = ["a", "a-", "a.", "a-b", "ab", "a0", "a:", "aa", "b", "A"];
    let mut expected: BTreeMap<&str, Vec<u128>> = BTreeMap::new();
    let mut seqs: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for round in 0..6u128 {
        for (i, e) in entities.iter().enumerate() {
            let id = round * 100 + i as u128;
            let seq = append(&db, &envelope(id, "s", e)).await;
            expected.entry(e).or_default().push(id);
            seqs.entry(e).or_default().push(seq);
        }
    }
    for e in entities {
        let got: Vec<u128> = pending_ids(&db, e, 0).into_iter().map(|p| p.1).collect();
        assert_eq!(got, expected[e], "entity {e:?}");
        assert_eq!(db.inbox_depth(e, 0).unwrap(), 6, "depth of {e:?}");
        for (_, env) in db.inbox_pending(e, 0, usize::MAX).unwrap() {
            assert_eq!(env.unwrap().to.entity, e);
        }
        // With a cursor: still only this entity's entries.
        let from_cursor = pending_ids(&db, e, seqs[e][2]);
        assert_eq!(
            from_cursor.iter().map(|p| p.1).collect::<Vec<_>>(),
            expected[e][3..].to_vec()
        );
    }
    let heads = db.inbox_heads().unwrap();
    assert_eq!(heads.len(), entities.len());
    for e in entities {
        assert_eq!(heads[e].last, *seqs[e].last().unwrap(), "head of {e:?}");
        assert_eq!(heads[e].first, seqs[e][0], "first of {e:?}");
    }
    // Consuming everything of "a" leaves every neighbour untouched.
    db.inbox_remove_consumed("a", u64::MAX - 1).unwrap();
    assert!(pending_ids(&db, "a", 0).is_empty());
    for e in entities.iter().filter(|e| **e != "a") {
        assert_eq!(
            pending_ids(&db, e, 0).len(),
            6,
            "neighbour {e:?} lost entries"
        );
    }
    let heads = db.inbox_heads().unwrap();
    assert!(!heads.contains_key("a"));
    assert_eq!(heads.len(), entities.len() - 1);
    // An entity that is only a prefix of others has nothing.
    assert!(pending_ids(&db, "a-b-", 0).is_empty());
}

/// The module doc promises that "entries of one entity are read in append
/// order". `inbox_append` takes its sequence from `generate_id()` *before* the
/// insert, so with two appenders racing for one entity, the entry with the
/// lower sequence can become visible after the higher one. A consumer that has
/// meanwhile advanced its `inbox_cursor` past the higher sequence then never
/// sees the lower entry: an acknowledged message is skipped forever.
///
/// Fixed: sequence and insert now happen under one lock per database.
#[test]
fn concurrent_appends_to_one_entity_are_never_skipped_by_a_consumer() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path(), Durability::None);
    let done = Arc::new(AtomicBool::new(false));
    let (threads, per) = (4u128, 5_000u128);
    let appenders: Vec<_> = (0..threads)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    db.inbox_append(&envelope(t * per + i, "relay", "hot"))
                        .unwrap();
                }
            })
        })
        .collect();
    let consumer = {
        let (db, done) = (db.clone(), done.clone());
        std::thread::spawn(move || {
            let mut cursor = 0;
            let mut got = BTreeSet::new();
            loop {
                let finished = done.load(SeqCst);
                let page = db.inbox_pending("hot", cursor, 1000).unwrap();
                if page.is_empty() && finished {
                    return got;
                }
                for (seq, env) in page {
                    got.insert(env.unwrap().id);
                    cursor = seq;
                }
            }
        })
    };
    for a in appenders {
        a.join().unwrap();
    }
    done.store(true, SeqCst);
    let got = consumer.join().unwrap();
    let skipped = (threads * per) as usize - got.len();
    assert_eq!(
        skipped, 0,
        "{skipped} appended entries ended up below the consumer's cursor and were never read"
    );
}

// ------------------------------------------------------------------ dedup --

#[test]
fn remember_and_has_seen_keep_a_bounded_window() {
    let mut rec: EntityRecord<Counter> = EntityRecord::default();
    assert!(!rec.has_seen(1));
    rec.remember(1);
    assert!(rec.has_seen(1));
    assert!(!rec.has_seen(2));
    for id in 2..=SEEN_WINDOW as u128 {
        rec.remember(id);
    }
    assert_eq!(rec.seen.len(), SEEN_WINDOW);
    assert!(rec.has_seen(1), "the oldest id is still inside the window");
    rec.remember(SEEN_WINDOW as u128 + 1);
    assert_eq!(rec.seen.len(), SEEN_WINDOW);
    assert!(!rec.has_seen(1), "the oldest id falls out of the window");
    assert!(rec.has_seen(2));
    assert!(rec.has_seen(SEEN_WINDOW as u128 + 1));
    for id in 1000..3000u128 {
        rec.remember(id);
        assert!(rec.seen.len() <= SEEN_WINDOW);
    }
    // Exactly the last SEEN_WINDOW ids, oldest first.
    let expected: Vec<u128> = (3000 - SEEN_WINDOW as u128..3000).collect();
    assert_eq!(rec.seen.iter().copied().collect::<Vec<_>>(), expected);
    assert!(!rec.has_seen(3000 - SEEN_WINDOW as u128 - 1));
}

#[tokio::test]
async fn seen_window_survives_a_save_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path(), Durability::Flush);
    let mut rec: EntityRecord<Counter> = EntityRecord::default();
    for id in 0..(SEEN_WINDOW as u128 + 10) {
        rec.remember(id << 64);
    }
    let t = db.save("d", &rec).unwrap();
    db.durable(t).await.unwrap();
    let back: EntityRecord<Counter> = db.load("d").unwrap();
    assert_eq!(back.seen, rec.seen);
    assert!(back.has_seen((SEEN_WINDOW as u128 + 9) << 64));
    assert!(!back.has_seen(0));
}

// ----------------------------------------------------------------- outbox --

#[tokio::test]
async fn a_record_saved_with_an_outbox_reads_back_with_the_same_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path(), Durability::Flush);
    let rec = EntityRecord {
        state: Some(Counter {
            name: "x".into(),
            handled: vec![1, 2, u128::MAX],
            total: 3,
        }),
        inbox_cursor: 77,
        outbox: vec![
            envelope(10, "o-1", "s-1"),
            reply(11, "o-1", "s-1"),
            envelope(u128::MAX, "a", "b"),
        ],
        seen: [1u128, 2, 3].into_iter().collect(),
        handled: 3,
    };
    let t = db.save("o-1", &rec).unwrap();
    db.durable(t).await.unwrap();
    assert_eq!(db.load::<Counter>("o-1").unwrap(), rec);
    assert_eq!(db.get::<Counter>("o-1").unwrap(), Some(rec.clone()));
    // Missing entities: `load` gives an empty record, `get` gives None.
    assert_eq!(
        db.load::<Counter>("missing").unwrap(),
        EntityRecord::default()
    );
    assert_eq!(db.get::<Counter>("missing").unwrap(), None);
    // Overwrite with a shorter outbox: no stale tail.
    let mut shorter = rec.clone();
    shorter.outbox.truncate(1);
    let t = db.save("o-1", &shorter).unwrap();
    db.durable(t).await.unwrap();
    assert_eq!(db.load::<Counter>("o-1").unwrap().outbox, shorter.outbox);
    // scan sees it.
    let all: Vec<_> = db.scan::<Counter>(None).collect::<Result<_, _>>().unwrap();
    assert_eq!(all, vec![("o-1".to_owned(), shorter)]);
}

#[test]
fn trim_outbox_drops_only_delivered_ids() {
    let mut rec: EntityRecord<Counter> = EntityRecord {
        outbox: (1..=6u128).map(|i| envelope(i, "a", "b")).collect(),
        ..Default::default()
    };
    assert!(
        !rec.trim_outbox(&HashSet::new()),
        "nothing delivered: unchanged"
    );
    assert!(
        !rec.trim_outbox(&[100u128, 200].into_iter().collect()),
        "unknown ids: unchanged"
    );
    assert_eq!(rec.outbox.len(), 6);
    assert!(rec.trim_outbox(&[2u128, 4, 100].into_iter().collect()));
    assert_eq!(
        rec.outbox.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![1, 3, 5, 6]
    );
    // The survivors are untouched, in their order.
    assert_eq!(rec.outbox[1], envelope(3, "a", "b"));
    assert!(rec.trim_outbox(&[1u128, 3, 5, 6].into_iter().collect()));
    assert!(rec.outbox.is_empty());
    assert!(!rec.trim_outbox(&[1u128].into_iter().collect()));
}

// ------------------------------------------------------------- durability --

#[tokio::test]
async fn durable_writes_are_there_after_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Durability::Flush, CACHE).unwrap();
    let mut seqs = Vec::new();
    for id in 0..10u128 {
        seqs.push(append(&store.order, &envelope(id, "saga-1", "o-1")).await);
    }
    // The entity consumed the first 4 entries and produced an outbox.
    let mut rec = EntityRecord {
        state: Some(Counter {
            name: "o-1".into(),
            handled: (0..4).collect(),
            total: 4,
        }),
        inbox_cursor: seqs[3],
        outbox: (0..4u128)
            .map(|i| reply(i | 1 << 100, "o-1", "saga-1"))
            .collect(),
        ..Default::default()
    };
    for id in 0..4 {
        rec.remember(id);
    }
    rec.handled = 4;
    let t = store.order.save("o-1", &rec).unwrap();
    store.order.durable(t).await.unwrap();
    // Other services' databases are independent.
    let t = store
        .customer
        .save(
            "c-1",
            &EntityRecord {
                state: Some(7u64),
                ..Default::default()
            },
        )
        .unwrap();
    store.customer.durable(t).await.unwrap();

    let store = close_and_reopen(store, Durability::Flush);
    assert_eq!(store.order.load::<Counter>("o-1").unwrap(), rec);
    assert_eq!(store.customer.load::<u64>("c-1").unwrap().state, Some(7));
    assert_eq!(
        store.order.get::<Counter>("c-1").unwrap(),
        None,
        "no cross-service leakage"
    );
    // Every entry is still there, and exactly the ones above the cursor are pending.
    assert_eq!(pending_ids(&store.order, "o-1", 0).len(), 10);
    let pending = pending_ids(&store.order, "o-1", rec.inbox_cursor);
    assert_eq!(
        pending.iter().map(|p| p.0).collect::<Vec<_>>(),
        seqs[4..].to_vec()
    );
    assert_eq!(store.order.inbox_heads().unwrap()["o-1"].last, seqs[9]);

    // Redelivery: the handler resumes from the cursor after the restart.
    let mut rec: EntityRecord<Counter> = store.order.load("o-1").unwrap();
    for (seq, id) in pending {
        assert!(!rec.has_seen(id));
        let state = rec.state.as_mut().unwrap();
        state.handled.push(id);
        state.total += 1;
        rec.outbox.push(reply(id | 1 << 100, "o-1", "saga-1"));
        rec.inbox_cursor = seq;
        rec.remember(id);
        rec.handled += 1;
    }
    let t = store.order.save("o-1", &rec).unwrap();
    store.order.durable(t).await.unwrap();
    store
        .order
        .inbox_remove_consumed("o-1", rec.inbox_cursor)
        .unwrap();

    // New appends after a restart sort after everything that was there before.
    let after_restart = append(&store.order, &envelope(99, "saga-1", "o-1")).await;
    assert!(
        after_restart > seqs[9],
        "sequence went back after a restart: {after_restart} <= {}",
        seqs[9]
    );

    let store = close_and_reopen(store, Durability::Flush);
    let back: EntityRecord<Counter> = store.order.load("o-1").unwrap();
    assert_eq!(back, rec);
    assert_eq!(
        back.state.as_ref().unwrap().handled,
        (0..10).collect::<Vec<u128>>()
    );
    assert_eq!(back.outbox.len(), 10);
    assert_eq!(
        pending_ids(&store.order, "o-1", back.inbox_cursor),
        vec![(after_restart, 99)]
    );
    assert_eq!(
        pending_ids(&store.order, "o-1", 0).len(),
        1,
        "consumed entries were removed"
    );
    close_and_wait(store);
}

/// Dropping a `Store` (no `close`) and opening the same directory again.
/// Fixed: the flusher thread holds no sender of its own channel, and the
/// last flusher handle joins the thread when it is dropped.
#[tokio::test]
async fn dropping_a_store_releases_the_database() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), Durability::Flush, CACHE).unwrap();
        let t = store
            .order
            .save(
                "o-1",
                &EntityRecord {
                    state: Some(1u8),
                    ..Default::default()
                },
            )
            .unwrap();
        store.order.durable(t).await.unwrap();
    }
    let store = Store::open(dir.path(), Durability::Flush, CACHE).expect("reopen after drop");
    assert_eq!(store.order.load::<u8>("o-1").unwrap().state, Some(1));
}

/// `Store::close` followed at once by `Store::open` of the same directory.
///
/// `close` joins the flusher threads (each holds a `sled::Db` clone and makes
/// a final flush), so the lock is released by the time it returns.
#[tokio::test]
async fn reopen_right_after_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut still_locked = Vec::new();
    for i in 0..30u32 {
        let store = Store::open(dir.path(), Durability::Fsync, CACHE).expect("open");
        let rec = EntityRecord {
            state: Some(i),
            ..Default::default()
        };
        let t = store.order.save("o-1", &rec).unwrap();
        store.order.durable(t).await.unwrap();
        store.close().unwrap();
        drop(store);
        // Right after `close`: is every database released?
        for service in ["customer", "order", "saga", "view"] {
            if let Err(e) = sled::Config::new().path(dir.path().join(service)).open() {
                still_locked.push(format!("round {i}: {service}: {e}"));
            }
        }
        wait_until_unlocked(dir.path());
    }
    assert!(
        still_locked.is_empty(),
        "still locked after close() returned: {still_locked:#?}"
    );
}

/// `Store::open` opens the four service databases one after the other. When
/// one of them cannot be opened (here: its sled lock is held), the error is
/// returned but the databases opened before it are dropped *without stopping
/// their flushers*; each flusher thread keeps its `sled::Db` (and lock)
/// forever. Every later `Store::open` of that directory then fails, even
/// once the original obstacle is gone, until the process exits.
#[tokio::test]
async fn store_open_failing_part_way_releases_what_it_opened() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Durability::Flush, CACHE).unwrap();
    close_and_wait(store);
    // Something else holds the `order` database for a moment.
    let blocker = sled::Config::new()
        .path(dir.path().join("order"))
        .open()
        .unwrap();
    let err = Store::open(dir.path(), Durability::Flush, CACHE)
        .err()
        .expect("order is locked");
    assert!(err.to_string().contains("order"), "{err}");
    drop(blocker);
    wait_until_unlocked_only(&dir.path().join("order"));
    let store = Store::open(dir.path(), Durability::Flush, CACHE)
        .expect("open once the blocker is gone (customer is still held by the leaked flusher)");
    close_and_wait(store);
}

fn wait_until_unlocked_only(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(e) = sled::Config::new().path(path).open() {
        assert!(
            Instant::now() < deadline,
            "{} stays locked: {e}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::test]
async fn durability_none_and_fsync_modes_both_commit() {
    for mode in [Durability::None, Durability::Fsync, Durability::Flush] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), mode, CACHE).unwrap();
        assert_eq!(store.order.flusher.mode(), mode);
        let mut tickets = Vec::new();
        for i in 0..20u32 {
            let rec = EntityRecord {
                state: Some(i),
                inbox_cursor: i as u64,
                ..Default::default()
            };
            tickets.push(store.order.save(&format!("e-{i}"), &rec).unwrap());
        }
        assert!(tickets.windows(2).all(|w| w[0] < w[1]), "tickets increase");
        // Await out of order: the last first, then the rest.
        store.order.durable(*tickets.last().unwrap()).await.unwrap();
        for t in tickets.iter().rev() {
            store.order.durable(*t).await.unwrap();
        }
        let seq = append(&store.saga, &envelope(5, "o", "s-1")).await;
        store.saga.flusher.read_barrier().await.unwrap();
        if mode == Durability::None {
            assert_eq!(
                store
                    .order
                    .flusher
                    .stats()
                    .flushes
                    .load(std::sync::atomic::Ordering::SeqCst),
                0
            );
        } else {
            assert!(
                store
                    .order
                    .flusher
                    .stats()
                    .flushes
                    .load(std::sync::atomic::Ordering::SeqCst)
                    >= 1
            );
        }
        let store = close_and_reopen(store, mode);
        for i in 0..20u32 {
            let rec: EntityRecord<u32> = store.order.load(&format!("e-{i}")).unwrap();
            assert_eq!(
                (rec.state, rec.inbox_cursor),
                (Some(i), i as u64),
                "mode {mode:?}"
            );
        }
        assert_eq!(
            pending_ids(&store.saga, "s-1", 0),
            vec![(seq, 5)],
            "mode {mode:?}"
        );
        close_and_wait(store);
    }
}

// ------------------------------------------------------------ group commit --

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn group_commit_coalesces_concurrent_writers() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path(), Durability::Flush);
    let before = db.flusher.stats().flushes.load(SeqCst);
    let start = Arc::new(tokio::sync::Barrier::new(256));
    let mut tasks = Vec::new();
    for i in 0..256u32 {
        let (db, start) = (db.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let rec = EntityRecord {
                state: Some(Counter {
                    name: format!("e-{i}"),
                    handled: vec![i as u128],
                    total: i as u64,
                }),
                outbox: vec![envelope(i as u128, "a", "b")],
                ..Default::default()
            };
            let t = db.save(&format!("e-{i:03}"), &rec).unwrap();
            db.durable(t).await.unwrap();
            i
        }));
    }
    let mut done = BTreeSet::new();
    for t in tasks {
        done.insert(t.await.unwrap());
    }
    assert_eq!(done.len(), 256, "every writer completed");
    let flushes = db.flusher.stats().flushes.load(SeqCst) - before;
    let waiters = db.flusher.stats().waiters.load(SeqCst);
    assert!(flushes >= 1, "at least one flush happened");
    assert!(
        flushes < 256,
        "no coalescing: {flushes} flushes for 256 writers"
    );
    assert!(waiters <= 256, "{waiters} waiters for 256 writers");
    // Everything written is readable and in key order.
    let all: Vec<(String, EntityRecord<Counter>)> =
        db.scan(None).collect::<Result<_, _>>().unwrap();
    assert_eq!(all.len(), 256);
    for (i, (k, rec)) in all.iter().enumerate() {
        assert_eq!(k, &format!("e-{i:03}"));
        assert_eq!(rec.state.as_ref().unwrap().total, i as u64);
    }
    // scan resumes after a key.
    let rest: Vec<_> = db
        .scan::<Counter>(Some("e-250"))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(
        rest.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
        (251..256).map(|i| format!("e-{i}")).collect::<Vec<_>>()
    );
}

/// Waits (bounded) until `cond` holds.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Turns go in arrival order within a lane; a waiting background flush is
/// overtaken by at most MAX_PASSED saga-lane flushes.
#[test]
fn flush_turns_let_the_saga_lane_overtake_a_background_flush_at_most_three_times() {
    let turns = FlushTurns::default();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let held = turns.take(Lane::Saga);
    let mut threads = Vec::new();
    // Queue, one after the other: the view, then five saga-lane flushes.
    for (name, lane) in [
        ("view", Lane::Background),
        ("s1", Lane::Saga),
        ("s2", Lane::Saga),
        ("s3", Lane::Saga),
        ("s4", Lane::Saga),
        ("s5", Lane::Saga),
    ] {
        let queued = turns.queued();
        let (mine, order) = (turns.clone(), order.clone());
        threads.push(std::thread::spawn(move || {
            let _turn = mine.take(lane);
            order.lock().unwrap().push(name);
        }));
        wait_for(&format!("{name} to queue"), || turns.queued() == queued + 1);
    }
    assert!(
        order.lock().unwrap().is_empty(),
        "nobody flushes while a turn is held"
    );
    drop(held);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        *order.lock().unwrap(),
        vec!["s1", "s2", "s3", "view", "s4", "s5"],
        "saga-lane flushes go first, but at most MAX_PASSED = {MAX_PASSED} of them in a row"
    );
    assert_eq!(turns.queued(), 0);
}

/// A write is not acknowledged while its flusher waits for the turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flusher_that_takes_turns_waits_for_its_turn() {
    let dir = tempfile::tempdir().unwrap();
    let turns = FlushTurns::default();
    let db = ServiceDb::open_with_turns(
        dir.path(),
        "order",
        Durability::Flush,
        CACHE,
        Some((turns.clone(), Lane::Saga)),
    )
    .unwrap();
    let before = db
        .flusher
        .stats()
        .flushes
        .load(std::sync::atomic::Ordering::SeqCst);
    let held = turns.take(Lane::Saga);
    let t = db.save("e-1", &EntityRecord::<Counter>::default()).unwrap();
    let waiting = tokio::spawn({
        let db = db.clone();
        async move { db.durable(t).await }
    });
    let probe = turns.clone();
    tokio::task::spawn_blocking(move || wait_for("the flusher to queue", || probe.queued() == 2))
        .await
        .unwrap();
    assert!(
        !waiting.is_finished(),
        "the write was acknowledged before its flush had a turn"
    );
    drop(held);
    waiting
        .await
        .unwrap()
        .expect("durable once the turn is free");
    let after = db
        .flusher
        .stats()
        .flushes
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(after - before, 1, "one flush, after the turn");
}

/// `Store::open` puts all four flushers on one turn (the view in the
/// background lane); `flush_in_turn = false` gives none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_four_databases_of_a_store_share_one_turn_and_can_be_told_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Durability::Flush, CACHE).unwrap();
    assert_eq!(store.order.flusher.lane(), Some(Lane::Saga));
    assert_eq!(store.saga.flusher.lane(), Some(Lane::Saga));
    assert_eq!(store.customer.flusher.lane(), Some(Lane::Saga));
    assert_eq!(store.view.flusher.lane(), Some(Lane::Background));
    // (A blocking call on a test thread: nothing else holds the turn.)
    let turns = store.turns.clone().expect("turns by default");
    let held = turns.take(Lane::Saga);
    let mut waits = Vec::new();
    for db in [&store.customer, &store.order, &store.saga, &store.view] {
        let t = db.save("e-1", &EntityRecord::<Counter>::default()).unwrap();
        let db = db.clone();
        waits.push(tokio::spawn(async move { db.durable(t).await }));
    }
    let probe = turns.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("all four flushers to queue", || probe.queued() == 5)
    })
    .await
    .unwrap();
    assert!(
        waits.iter().all(|w| !w.is_finished()),
        "a database flushed out of turn"
    );
    drop(held);
    for w in waits {
        w.await.unwrap().expect("durable once it had its turn");
    }
    close_and_wait(store);

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), Durability::Flush, CACHE, false).unwrap();
    assert!(store.turns.is_none());
    assert_eq!(store.order.flusher.lane(), None);
    assert_eq!(store.view.flusher.lane(), None);
}

/// A panic inside sled's flush is a failed flush: nothing is acknowledged,
/// and the failure is reported so that the process stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_inside_a_flush_fails_it_like_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path(), Durability::Flush);
    durasaga::fault::arm_flush_panic(dir.path());
    let t = db.save("e-1", &EntityRecord::<Counter>::default()).unwrap();
    let err = db
        .durable(t)
        .await
        .expect_err("a panicked flush acknowledges nothing");
    assert!(err.to_string().contains("panicked"), "{err}");
    let failure = db
        .flusher
        .failure()
        .expect("reported, so that the process stops");
    assert!(failure.to_string().contains("panicked"), "{failure}");
    let t = db.save("e-2", &EntityRecord::<Counter>::default()).unwrap();
    assert!(
        db.durable(t).await.is_err(),
        "nothing is acknowledged after a failed flush"
    );
}

// -------------------------------------------------------- create, letters --

#[tokio::test]
async fn create_refuses_to_overwrite_an_existing_record() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path(), Durability::Flush);
    let first = EntityRecord {
        state: Some(Counter {
            name: "first".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let t = db.create("c-1", &first).unwrap().expect("created");
    db.durable(t).await.unwrap();
    let second = EntityRecord {
        state: Some(Counter {
            name: "second".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(
        db.create("c-1", &second).unwrap().is_none(),
        "second create must be refused"
    );
    assert_eq!(db.load::<Counter>("c-1").unwrap(), first);
    // After a save, create is still refused; a different id works.
    let t = db.save("c-1", &second).unwrap();
    db.durable(t).await.unwrap();
    assert!(db.create("c-1", &first).unwrap().is_none());
    assert_eq!(db.load::<Counter>("c-1").unwrap(), second);
    let t = db.create("c-2", &first).unwrap().expect("other id");
    db.durable(t).await.unwrap();
    assert_eq!(db.load::<Counter>("c-2").unwrap(), first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_one_id_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path(), Durability::Flush);
    let mut tasks = Vec::new();
    for i in 0..32u32 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let rec = EntityRecord {
                state: Some(i),
                ..Default::default()
            };
            match db.create("only", &rec).unwrap() {
                Some(t) => {
                    db.durable(t).await.unwrap();
                    Some(i)
                }
                None => None,
            }
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        winners.extend(t.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    assert_eq!(db.load::<u32>("only").unwrap().state, Some(winners[0]));
}

#[tokio::test]
async fn dead_letters_put_list_take_round_trip_with_pagination() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Durability::Flush, CACHE).unwrap();
    let db = &store.customer;
    assert!(db.deadletter_list(None, 10).unwrap().is_empty());
    // Ids across the whole u128 range, put in a scrambled order.
    let ids: Vec<u128> = vec![
        5,
        1,
        u128::MAX - 1,
        1 << 70,
        3,
        2,
        1 << 64,
        4,
        (1 << 64) - 1,
        0,
    ];
    let mut letters = BTreeMap::new();
    for (n, &id) in ids.iter().enumerate() {
        let dl = DeadLetter {
            id,
            entity: format!("c-{n}"),
            envelope: n
                .is_multiple_of(2)
                .then(|| envelope(id, "s", &format!("c-{n}"))),
            error: format!("boom {n}"),
            attempts: n as u32 + 1,
            at: 1000 + n as i64,
        };
        let t = db.deadletter_put(&dl).unwrap();
        db.durable(t).await.unwrap();
        letters.insert(id, dl);
    }
    let expected: Vec<DeadLetter> = letters.values().cloned().collect();
    assert_eq!(
        db.deadletter_list(None, usize::MAX).unwrap(),
        expected,
        "sorted by id"
    );
    // Pagination with `after` and `limit` visits each exactly once, in order.
    for page_size in [1, 3, 4, 100] {
        let mut after = None;
        let mut seen = Vec::new();
        loop {
            let page = db.deadletter_list(after, page_size).unwrap();
            assert!(page.len() <= page_size);
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            seen.extend(page);
        }
        assert_eq!(seen, expected, "page size {page_size}");
    }
    assert!(db
        .deadletter_list(Some(u128::MAX - 1), 10)
        .unwrap()
        .is_empty());
    assert_eq!(
        db.deadletter_list(Some(2), 2)
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert!(db.deadletter_list(None, 0).unwrap().is_empty());
    // Overwriting the same id replaces it.
    let mut again = letters[&3].clone();
    again.attempts = 99;
    let t = db.deadletter_put(&again).unwrap();
    db.durable(t).await.unwrap();
    assert_eq!(db.deadletter_list(Some(2), 1).unwrap(), vec![again.clone()]);
    letters.insert(3, again);
    // Dead letters survive a reopen.
    let store = close_and_reopen(store, Durability::Flush);
    let db = &store.customer;
    assert_eq!(
        db.deadletter_list(None, usize::MAX).unwrap(),
        letters.values().cloned().collect::<Vec<_>>()
    );
    assert!(
        store.order.deadletter_list(None, 10).unwrap().is_empty(),
        "per-service"
    );
    // Take removes and returns; taking twice gives None.
    assert_eq!(
        db.deadletter_take(1 << 70).unwrap(),
        Some(letters[&(1 << 70)].clone())
    );
    assert_eq!(db.deadletter_take(1 << 70).unwrap(), None);
    assert_eq!(db.deadletter_take(123_456).unwrap(), None);
    letters.remove(&(1 << 70));
    assert_eq!(
        db.deadletter_list(None, usize::MAX).unwrap(),
        letters.values().cloned().collect::<Vec<_>>()
    );
    for id in letters.keys() {
        assert!(db.deadletter_take(*id).unwrap().is_some());
    }
    assert!(db.deadletter_list(None, usize::MAX).unwrap().is_empty());
    close_and_wait(store);
}

// -------------------------------------------------------------- corruption --

#[tokio::test]
async fn corrupted_entity_bytes_make_load_fail_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path(), Durability::Flush);
    let good = EntityRecord {
        state: Some(Counter {
            name: "ok".into(),
            handled: vec![1, 2, 3],
            total: 3,
        }),
        inbox_cursor: 9,
        outbox: vec![envelope(1, "a", "b")],
        seen: [1u128].into_iter().collect(),
        handled: 3,
    };
    let t = db.save("good", &good).unwrap();
    db.durable(t).await.unwrap();
    let bytes = db.entities.get("good").unwrap().unwrap().to_vec();
    assert_eq!(bytes[0], codec::FORMAT_VERSION);

    let mut corruptions: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), vec![]),
        ("only the version byte".into(), vec![codec::FORMAT_VERSION]),
        ("unknown version".into(), {
            let mut b = bytes.clone();
            b[0] = 0xEE;
            b
        }),
        ("version zero".into(), {
            let mut b = bytes.clone();
            b[0] = 0;
            b
        }),
        ("trailing byte".into(), {
            let mut b = bytes.clone();
            b.push(0);
            b
        }),
        ("huge length claim".into(), {
            let mut b = vec![codec::FORMAT_VERSION, 1];
            b.extend_from_slice(&[0xFF; 40]);
            b
        }),
        ("text".into(), b"{\"state\":null}".to_vec()),
    ];
    for cut in [2, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
        corruptions.push((format!("truncated at {cut}"), bytes[..cut].to_vec()));
    }
    let mut x: u64 = 0xDEAD_BEEF_CAFE_F00D;
    for n in 0..50 {
        let mut b = vec![codec::FORMAT_VERSION];
        for _ in 0..(n * 3 + 1) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.push(x as u8);
        }
        corruptions.push((format!("random #{n}"), b));
    }
    for (what, raw) in corruptions {
        let key = format!("bad-{}", what.replace(' ', "-"));
        db.entities.insert(key.as_bytes(), raw).unwrap();
        let loaded =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.load::<Counter>(&key)));
        let loaded = loaded.unwrap_or_else(|_| panic!("load panicked on {what}"));
        assert!(
            loaded.is_err(),
            "load accepted corrupted bytes ({what}): {loaded:?}"
        );
        assert!(
            db.get::<Counter>(&key).is_err(),
            "get accepted corrupted bytes ({what})"
        );
        assert!(
            matches!(loaded, Err(StoreError::Codec(_))),
            "{what}: {loaded:?}"
        );
        db.entities.remove(key.as_bytes()).unwrap();
    }
    // A record of the wrong state type is an error too, not garbage.
    db.entities
        .insert(
            "wrong-type",
            codec::encode(&EntityRecord {
                state: Some(vec![String::from("x"); 3]),
                ..Default::default()
            })
            .unwrap(),
        )
        .unwrap();
    assert!(db.load::<Counter>("wrong-type").is_err());
    // Scan reports the bad record and keeps going with the good ones.
    db.entities
        .insert("bad", vec![codec::FORMAT_VERSION, 0xFF, 0xFF])
        .unwrap();
    let scanned: Vec<_> = db.scan::<Counter>(None).collect();
    assert_eq!(scanned.len(), 3);
    assert!(scanned.iter().filter(|r| r.is_err()).count() == 2);
    assert!(scanned
        .iter()
        .any(|r| matches!(r, Ok((k, rec)) if k == "good" && *rec == good)));
    // The good record is untouched.
    assert_eq!(db.load::<Counter>("good").unwrap(), good);
}

#[tokio::test]
async fn corrupted_inbox_entries_are_reported_per_entry() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path(), Durability::Flush);
    let s1 = append(&db, &envelope(1, "s", "e-1")).await;
    let (s2, _) = db.inbox_append(&envelope(2, "s", "e-1")).unwrap();
    let s3 = append(&db, &envelope(3, "s", "e-1")).await;
    // Overwrite the middle entry with garbage, directly in the tree.
    let mut key = b"e-1/".to_vec();
    key.extend_from_slice(&s2.to_be_bytes());
    assert!(
        db.inbox.get(&key).unwrap().is_some(),
        "key layout: entity '/' seq (u64 BE)"
    );
    db.inbox
        .insert(key, vec![codec::FORMAT_VERSION, 0xFF, 0x00, 0x13])
        .unwrap();
    let got = db.inbox_pending("e-1", 0, 10).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(
        (got[0].0, got[0].1.as_ref().map(|e| e.id).ok()),
        (s1, Some(1))
    );
    assert_eq!(got[1].0, s2);
    assert!(got[1].1.is_err(), "garbage entry must be an error value");
    assert_eq!(
        (got[2].0, got[2].1.as_ref().map(|e| e.id).ok()),
        (s3, Some(3))
    );
    assert_eq!(db.inbox_depth("e-1", 0).unwrap(), 3);
    // A corrupted dead letter is an error, not a panic.
    db.deadletters
        .insert(7u128.to_be_bytes(), vec![codec::FORMAT_VERSION, 9])
        .unwrap();
    assert!(db.deadletter_list(None, 10).is_err());
    assert!(db.deadletter_take(7).is_err());
}

// ------------------------------------------------ fsync-mode process exits --

/// Set in a child process started by the tests below; selects its scenario.
const FSYNC_CHILD_ENV: &str = "DURASAGA_FSYNC_CHILD";

/// Child half of the `Durability::Fsync` process-exit tests: a no-op unless
/// started by one of them. Each scenario exits the child with status 75
/// (`flush_once` calls `process::exit(75)` when `fsync_dir_files` fails) if
/// the bug is present, and returns normally (status 0) otherwise.
#[test]
fn fsync_child_scenario() {
    let Ok(scenario) = std::env::var(FSYNC_CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Durability::Fsync, CACHE).unwrap();
        match scenario.as_str() {
            "big-records" => {
                // Records above sled's blob threshold (segment_size / 4, about
                // 128 KiB) live in files under `blobs/`; overwriting them makes
                // sled delete old blob files while the flusher lists and fsyncs
                // that directory.
                let mut tasks = Vec::new();
                for w in 0..4u32 {
                    let db = store.order.clone();
                    tasks.push(tokio::spawn(async move {
                        for i in 0..150u32 {
                            let big = Counter {
                                name: "x".repeat(200_000),
                                handled: vec![i as u128],
                                total: i as u64,
                            };
                            let rec = EntityRecord {
                                state: Some(big),
                                ..Default::default()
                            };
                            let t = db.save(&format!("big-{w}"), &rec).unwrap();
                            db.durable(t).await.unwrap();
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
                close_and_wait(store);
            }
            "close-then-remove" => {
                for i in 0..20u32 {
                    let rec = EntityRecord {
                        state: Some(i),
                        ..Default::default()
                    };
                    let t = store.order.save(&format!("e-{i}"), &rec).unwrap();
                    store.order.durable(t).await.unwrap();
                }
                // The documented shutdown, then the directory goes away (as a
                // temporary directory does); the flusher threads are still
                // running their final flush + fsync.
                store.close().unwrap();
                drop(store);
                drop(dir);
                std::thread::sleep(Duration::from_millis(300));
                return;
            }
            other => panic!("unknown scenario {other}"),
        }
        drop(dir);
    });
}

fn run_fsync_child(scenario: &str) -> std::process::Output {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "fsync_child_scenario",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FSYNC_CHILD_ENV, scenario)
        .output()
        .expect("run child")
}

/// In `Durability::Fsync` mode, `fsync_dir_files` lists the database
/// directory and `blobs/`, then opens each file to fsync it. sled deletes
/// blob files on its own (when a value above its blob threshold is
/// overwritten), so a file listed a moment ago can be gone: `File::open`
/// fails with `NotFound`, which `flush_once` treats as a failed fsync and
/// exits the process with status 75, during normal operation.
///
/// Fixed: a file that vanished between listing and opening has nothing to sync.
#[test]
fn fsync_mode_survives_sled_deleting_blob_files() {
    let out = run_fsync_child("big-records");
    assert!(
        out.status.success(),
        "child exited with {}; stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// After `Store::close` the flusher threads still run a final flush (and, in
/// `Durability::Fsync` mode, fsync every file); `close` does not wait for
/// them. If the directory is removed right after `close` returns, that final
/// fsync fails and the process exits with status 75.
///
/// Fixed: `close` joins the flusher threads.
#[test]
fn fsync_after_close_does_not_exit_the_process() {
    // Racy by nature: a few attempts make it fail reliably when the bug is there.
    for attempt in 0..5 {
        let out = run_fsync_child("close-then-remove");
        assert!(
            out.status.success(),
            "attempt {attempt}: child exited with {}; stderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A SIGKILL while sled writes a snapshot leaves an empty
/// `snap.<lsn>.generating` file, and sled 0.34.7 then refuses to open the
/// database (found by the crash-cycle harness; sled issue #1527). Opening
/// removes such files, and nothing durable is lost.
#[tokio::test]
async fn an_unfinished_sled_snapshot_left_by_a_kill_does_not_block_opening() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Durability::Flush, CACHE).expect("open");
    let seq = append(&store.order, &envelope(7, "s-1", "o-1")).await;
    close_and_wait(store);
    let leftover = dir
        .path()
        .join("order")
        .join("snap.FFFFFFFFFFFFFF00.generating");
    std::fs::File::create(&leftover).expect("create the leftover");

    let store =
        Store::open(dir.path(), Durability::Flush, CACHE).expect("opens despite the leftover");
    assert!(!leftover.exists(), "the unfinished snapshot is removed");
    assert_eq!(pending_ids(&store.order, "o-1", 0), vec![(seq, 7)]);
    close_and_wait(store);
}

// ------------------------------------------------------- recovery index --

#[tokio::test]
async fn the_recovery_index_count_follows_marks_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Durability::Flush, CACHE).unwrap();
    let db = &store.order;
    assert_eq!(db.active_count(), 0);
    db.mark_active("o-1").unwrap();
    db.mark_active("o-1").unwrap();
    db.mark_active("o-2").unwrap();
    db.mark_active("o-3").unwrap();
    assert_eq!(db.active_count(), 3, "a repeated mark counts once");
    db.unmark_active("o-1").unwrap();
    db.unmark_active("o-1").unwrap();
    db.unmark_active("o-9").unwrap();
    assert_eq!(db.active_count(), 2, "only marked ids uncount");
    store.order.flusher.read_barrier().await.unwrap();
    let store = close_and_reopen(store, Durability::Flush);
    assert_eq!(store.order.active_count(), 2, "counted again at open");
    assert_eq!(store.order.active_ids().unwrap(), vec!["o-2", "o-3"]);
    close_and_wait(store);
}

// ------------------------------------------------------------------ parts --

#[tokio::test]
async fn a_part_is_only_replaced_by_a_higher_version() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path(), Durability::Flush);
    let part = |name: &str, version: u64, value: &[u8]| PartWrite {
        part: name.into(),
        version,
        value: value.to_vec(),
    };
    assert!(db.part_put_newer("c-1", &part("o-2", 2, b"two")).unwrap());
    assert!(
        !db.part_put_newer("c-1", &part("o-2", 1, b"one")).unwrap(),
        "older"
    );
    assert!(
        !db.part_put_newer("c-1", &part("o-2", 2, b"again")).unwrap(),
        "same"
    );
    assert!(db.part_put_newer("c-1", &part("o-1", 1, b"first")).unwrap());
    assert!(db
        .part_put_newer("c-10", &part("o-9", 1, b"other"))
        .unwrap());
    assert!(db.part_put_newer("c-1", &part("o-2", 3, b"three")).unwrap());
    assert_eq!(
        db.parts_of("c-1").unwrap(),
        vec![
            ("o-1".to_owned(), 1, b"first".to_vec()),
            ("o-2".to_owned(), 3, b"three".to_vec()),
        ],
        "in name order, newest versions, no other entity's parts"
    );
    db.parts
        .insert(keys::part("c-2", "bad"), &[1u8, 2][..])
        .unwrap();
    assert!(
        db.parts_of("c-2").is_err(),
        "a truncated part is an error, not a panic"
    );
}
