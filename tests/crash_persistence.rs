//! Crash test: a real child process writes through the storage layer and is
//! killed with SIGKILL at random moments; after every kill the parent reopens
//! the same data directory and checks that nothing acknowledged was lost,
//! nothing was handled twice, and no record holds state without its outbox
//! (or the reverse).
//!
//! Self-re-exec pattern: `crash_kill9_cycles` runs this very test binary again
//! as `--exact crash_child_writer --nocapture` with `DURASAGA_CRASH_CHILD`
//! set; `crash_child_writer` returns at once unless that variable is set.
//!
//! The child simulates the real data flow with one appender ("relay") task and
//! one handler task per entity, all running concurrently on one database so
//! that their commits share group-commit flushes:
//! - appender: `inbox_append` (unique id), await `durable`, print `ACK <id> <entity>`;
//! - handler: load the record, read the pending entries above `inbox_cursor`,
//!   for each unseen envelope add its id to the state and push one outbox
//!   envelope (`id | 1 << 100`), advance the cursor, `remember` the id, save
//!   ONE record, await `durable`, print `HANDLED <id>`; now and then "deliver"
//!   (trim) part of the outbox, recording the trimmed ids in the state, and
//!   remove consumed inbox entries.
//!
//! The parent only counts lines printed after `durable` returned, so every
//! counted line is a promise the reopened database must keep.

use durasaga::domain::*;
use durasaga::persistence::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "DURASAGA_CRASH_CHILD";
const START_ENV: &str = "DURASAGA_CRASH_START";
const MODE_ENV: &str = "DURASAGA_CRASH_MODE";
const CHILD_TEST: &str = "crash_child_writer";

/// Entity ids chosen to share prefixes ("e/" vs "e-/" vs "e1/" vs "e10/").
const ENTITIES: [&str; 4] = ["e", "e-", "e1", "e10"];
/// Marks the outbox envelope produced by handling input `id`.
const OUT_BIT: u128 = 1 << 100;
/// Kill cycles; each cycle is one child process.
const CYCLES: u64 = 32;
/// Ids of cycle `n` start at `(n + 1) * ID_STRIDE`.
const ID_STRIDE: u64 = 1_000_000_000;
/// A child that is never killed gives up after this long (parent died).
const CHILD_DEADLINE: Duration = Duration::from_secs(30);
const CACHE: u64 = 16 << 20;
/// Appends per entity per child. Bounds the total work (and so the runtime)
/// and keeps every record well below sled's blob threshold (~128 KiB): in
/// `Durability::Fsync` mode, blob files trigger a separate, reported bug
/// (`fsync_mode_survives_sled_deleting_blob_files` in persistence_conformance).
const APPENDS_PER_ENTITY: u64 = 150;

/// The state of one entity: what it handled, and which of its outbox
/// envelopes were trimmed as delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Tally {
    /// Input ids handled, in handling order (a Vec, so a double handling shows).
    handled: Vec<u128>,
    /// Input ids whose outbox envelope was trimmed as delivered.
    delivered: Vec<u128>,
    count: u64,
}

fn input(id: u128, entity: &str) -> Envelope {
    let order_id = OrderId::parse("o-crash").unwrap();
    Envelope {
        id,
        kind: "ApproveOrder".into(),
        schema_version: SCHEMA_VERSION,
        from: Address {
            service: Service::Saga,
            entity: "relay".into(),
        },
        to: Address {
            service: Service::Order,
            entity: entity.to_owned(),
        },
        correlation: format!("c-{id}"),
        reply_to: Some(Address {
            service: Service::Saga,
            entity: "relay".into(),
        }),
        attempt: 1,
        sent_at: id as i64,
        payload: Payload::ApproveOrder { order_id },
    }
}

fn output(input_id: u128, entity: &str) -> Envelope {
    let order_id = OrderId::parse("o-crash").unwrap();
    Envelope {
        id: input_id | OUT_BIT,
        kind: "OrderApproved".into(),
        schema_version: SCHEMA_VERSION,
        from: Address {
            service: Service::Order,
            entity: entity.to_owned(),
        },
        to: Address {
            service: Service::Saga,
            entity: "relay".into(),
        },
        correlation: format!("c-{input_id}"),
        reply_to: None,
        attempt: 1,
        sent_at: input_id as i64,
        payload: Payload::OrderApproved { order_id },
    }
}

/// One handler step for `entity`: `Ok(None)` if nothing was pending,
/// otherwise the ids newly handled (durable when this returns).
async fn handle_once(db: &ServiceDb, entity: &str, step: u64) -> Result<Option<Vec<u128>>, String> {
    let mut rec: EntityRecord<Tally> =
        db.load(entity).map_err(|e| format!("load {entity}: {e}"))?;
    let pending = db
        .inbox_pending(entity, rec.inbox_cursor, 16)
        .map_err(|e| format!("inbox_pending {entity}: {e}"))?;
    if pending.is_empty() {
        return Ok(None);
    }
    let mut state = rec.state.take().unwrap_or_default();
    let mut newly = Vec::new();
    for (seq, env) in pending {
        let env = env.map_err(|e| format!("inbox entry {seq} of {entity} does not decode: {e}"))?;
        if env.to.entity != entity {
            return Err(format!(
                "entry {seq} of {entity:?} is addressed to {:?}",
                env.to.entity
            ));
        }
        if seq <= rec.inbox_cursor {
            return Err(format!(
                "pending entry {seq} of {entity} is not above cursor {}",
                rec.inbox_cursor
            ));
        }
        if !rec.has_seen(env.id) {
            state.handled.push(env.id);
            state.count += 1;
            rec.handled += 1;
            rec.outbox.push(output(env.id, entity));
            newly.push(env.id);
        }
        rec.inbox_cursor = seq;
        rec.remember(env.id);
    }
    // Now and then the relay has delivered all but the two newest messages.
    if step.is_multiple_of(3) && rec.outbox.len() > 2 {
        let n = rec.outbox.len() - 2;
        let delivered: HashSet<u128> = rec.outbox[..n].iter().map(|e| e.id).collect();
        state
            .delivered
            .extend(rec.outbox[..n].iter().map(|e| e.id & !OUT_BIT));
        if !rec.trim_outbox(&delivered) {
            return Err("trim_outbox removed nothing".into());
        }
    }
    rec.state = Some(state);
    let ticket = db
        .save(entity, &rec)
        .map_err(|e| format!("save {entity}: {e}"))?;
    db.durable(ticket)
        .await
        .map_err(|e| format!("durable {entity}: {e}"))?;
    if step.is_multiple_of(4) {
        db.inbox_remove_consumed(entity, rec.inbox_cursor)
            .map_err(|e| format!("inbox_remove_consumed {entity}: {e}"))?;
    }
    Ok(Some(newly))
}

/// Waits until no sled instance holds the lock of any service database under
/// `dir` (probing with plain sled, which fails while it is locked), then
/// opens the store.
///
/// `Store::close` does not join its flusher threads, which own `sled::Db`
/// clones, so the lock of a just-closed store is released a moment later; and
/// retrying `Store::open` itself is not an option because an attempt that
/// fails part-way leaks the databases it already opened (they stay locked).
fn open_store(dir: &Path, mode: Durability) -> Store {
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
    Store::open(dir, mode, CACHE)
        .unwrap_or_else(|e| panic!("Store::open({}) failed: {e}", dir.display()))
}

/// Writes one whole line with a single `write` (atomic on a pipe).
fn emit(line: String) {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{line}\n").as_bytes())
        .expect("stdout");
    out.flush().expect("stdout flush");
}

// ------------------------------------------------------------------ child --

/// The child half: a no-op unless started by `crash_kill9_cycles`.
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let start: u64 = std::env::var(START_ENV)
        .expect(START_ENV)
        .parse()
        .expect("start id");
    let mode = match std::env::var(MODE_ENV).as_deref() {
        Ok("fsync") => Durability::Fsync,
        _ => Durability::Flush,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(child_main(PathBuf::from(dir), start, mode));
}

async fn child_main(dir: PathBuf, start: u64, mode: Durability) {
    let store = open_store(&dir, mode);
    // libtest has printed "test crash_child_writer ... " without a newline.
    emit(String::new());
    emit("READY".into());
    let db = store.order.clone();
    let next_id = Arc::new(AtomicU64::new(start));
    let mut tasks = Vec::new();
    for entity in ENTITIES {
        tasks.push(tokio::spawn(appender(db.clone(), entity, next_id.clone())));
        tasks.push(tokio::spawn(handler(db.clone(), entity)));
    }
    let all = futures::future::select_all(tasks);
    match tokio::time::timeout(CHILD_DEADLINE, all).await {
        Ok((Ok(Err(e)), ..)) => panic!("child task failed: {e}"),
        Ok((Err(e), ..)) => panic!("child task panicked: {e}"),
        Ok((Ok(Ok(())), ..)) => unreachable!("writer loops never end"),
        Err(_) => {
            eprintln!("crash child was never killed; exiting");
            std::process::exit(3);
        }
    }
}

/// The "relay": appends inputs for `entity` and acknowledges each once durable.
async fn appender(
    db: ServiceDb,
    entity: &'static str,
    next_id: Arc<AtomicU64>,
) -> Result<(), String> {
    for _ in 0..APPENDS_PER_ENTITY {
        let id = next_id.fetch_add(1, SeqCst) as u128;
        let (_, ticket) = db
            .inbox_append(&input(id, entity))
            .map_err(|e| format!("append: {e}"))?;
        db.durable(ticket)
            .await
            .map_err(|e| format!("durable append: {e}"))?;
        emit(format!("ACK {id} {entity}"));
        if id.is_multiple_of(7) {
            tokio::task::yield_now().await;
        }
    }
    // Done for this life; idle until killed.
    std::future::pending().await
}

/// The entity's handler: consumes its inbox, reporting each id once durable.
async fn handler(db: ServiceDb, entity: &'static str) -> Result<(), String> {
    let mut step = 0u64;
    loop {
        step += 1;
        match handle_once(&db, entity, step).await? {
            Some(ids) => {
                for id in ids {
                    emit(format!("HANDLED {id}"));
                }
            }
            None => tokio::time::sleep(Duration::from_millis(1)).await,
        }
        // A slower consumer now and then, so that a backlog builds up and
        // kills also hit entities with many pending entries.
        if step.is_multiple_of(8) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

// ----------------------------------------------------------------- parent --

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[derive(Debug, Default)]
struct CycleOutput {
    /// How the kill was timed, for the log.
    how: String,
    acked: Vec<(u128, String)>,
    handled: Vec<u128>,
    ready: bool,
}

fn parse_lines(lines: &[String]) -> CycleOutput {
    let mut out = CycleOutput::default();
    for line in lines {
        let mut words = line.split_whitespace();
        match words.next() {
            _ if line.ends_with("READY") => out.ready = true,
            Some("ACK") => {
                let id = words
                    .next()
                    .and_then(|w| w.parse().ok())
                    .unwrap_or_else(|| panic!("bad line {line:?}"));
                let entity = words.next().unwrap_or_else(|| panic!("bad line {line:?}"));
                out.acked.push((id, entity.to_owned()));
            }
            Some("HANDLED") => {
                let id = words
                    .next()
                    .and_then(|w| w.parse().ok())
                    .unwrap_or_else(|| panic!("bad line {line:?}"));
                out.handled.push(id);
            }
            // libtest's own output ("running 1 test", ...).
            _ => {}
        }
    }
    out
}

/// Runs one child on `data`, kills it with SIGKILL after a random delay and
/// returns its complete stdout lines.
fn run_and_kill(data: &Path, log_dir: &Path, cycle: u64, rng: &mut XorShift) -> CycleOutput {
    let exe = std::env::current_exe().expect("current_exe");
    let stderr_path = log_dir.join(format!("child-{cycle}.stderr"));
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let mode = if cycle % 4 == 3 { "fsync" } else { "flush" };
    let mut child = Command::new(exe)
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, data)
        .env(START_ENV, ((cycle + 1) * ID_STRIDE).to_string())
        .env(MODE_ENV, mode)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut lines = Vec::new();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            // A line cut by the kill (no newline) is not a promise.
            if buf.last() != Some(&b'\n') {
                break;
            }
            let line = String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned();
            if line.ends_with("READY") {
                let _ = ready_tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    let child_stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();

    // One cycle in five is killed early, counted from the spawn (possibly
    // during sled's recovery); the others from the moment it is writing.
    let early = rng.next().is_multiple_of(5);
    let delay = Duration::from_millis(20 + rng.next() % 281);
    if !early {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match ready_rx.recv_timeout(Duration::from_millis(20)) {
                Ok(()) => break,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Some(status) = child.try_wait().unwrap() {
                        panic!(
                            "cycle {cycle}: child exited before READY ({status}); stderr:\n{}",
                            child_stderr()
                        );
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "cycle {cycle}: child never became ready ({e:?}); stderr:\n{}",
                        child_stderr()
                    );
                }
            }
        }
    }
    std::thread::sleep(delay);
    if let Some(status) = child.try_wait().unwrap() {
        panic!(
            "cycle {cycle}: child exited on its own ({status}); stderr:\n{}",
            child_stderr()
        );
    }
    child.kill().expect("SIGKILL child");
    let status = child.wait().expect("wait child");
    assert!(
        !status.success(),
        "cycle {cycle}: a killed child cannot succeed: {status}"
    );
    let lines = reader.join().expect("stdout reader");
    let mut out = parse_lines(&lines);
    let from = if early { "spawn" } else { "ready" };
    out.how = format!("{mode:5} kill {:3}ms after {from}", delay.as_millis());
    out
}

/// Everything the parent has been promised so far.
#[derive(Default)]
struct Promises {
    /// ACKed input id → its entity.
    acked: BTreeMap<u128, String>,
    /// Ids reported HANDLED.
    handled: BTreeSet<u128>,
}

#[derive(Debug, Default)]
struct Observed {
    pending: usize,
    handled: usize,
    outbox: usize,
    delivered: usize,
    /// Largest stored record, in bytes.
    max_record: usize,
}

/// Reopens the store and checks every invariant against the promises.
/// With `drained`, additionally requires that nothing is pending any more.
fn verify(data: &Path, promises: &Promises, drained: bool, context: &str) -> Observed {
    let store = open_store(data, Durability::Flush);
    let db = &store.order;
    let mut obs = Observed::default();

    // Every record decodes, and only known entities have records.
    for item in db.scan::<Tally>(None) {
        let (key, _) = item.unwrap_or_else(|e| panic!("{context}: record does not decode: {e}"));
        assert!(
            ENTITIES.contains(&key.as_str()),
            "{context}: unexpected record {key:?}"
        );
    }
    // Every inbox entry decodes and sits under the entity it is addressed to.
    for item in db.inbox.iter() {
        let (k, v) = item.expect("inbox iter");
        let (entity, seq) = {
            assert!(
                k.len() > 9 && k[k.len() - 9] == b'/',
                "{context}: malformed inbox key {k:?}"
            );
            let entity = std::str::from_utf8(&k[..k.len() - 9]).expect("utf8 entity");
            (
                entity.to_owned(),
                u64::from_be_bytes(k[k.len() - 8..].try_into().unwrap()),
            )
        };
        let env: Envelope = codec::decode(&v).unwrap_or_else(|e| {
            panic!("{context}: inbox entry {entity}/{seq} does not decode: {e}")
        });
        assert_eq!(
            env.to.entity, entity,
            "{context}: entry {seq} under the wrong entity"
        );
    }
    for entity in db.inbox_heads().expect("inbox_heads").keys() {
        assert!(
            ENTITIES.contains(&entity.as_str()),
            "{context}: inbox of unknown entity {entity:?}"
        );
    }

    // Where each id is: (entity, "pending" | "handled").
    let mut location: BTreeMap<u128, (String, &'static str)> = BTreeMap::new();
    let mut place = |id: u128, entity: &str, what: &'static str| {
        if let Some(prev) = location.insert(id, (entity.to_owned(), what)) {
            panic!("{context}: id {id} is present twice: {prev:?} and ({entity:?}, {what:?})");
        }
    };
    for entity in ENTITIES {
        let rec: EntityRecord<Tally> = db
            .load(entity)
            .unwrap_or_else(|e| panic!("{context}: record {entity} does not load: {e}"));
        let raw_len = db
            .entities
            .get(entity)
            .expect("get")
            .map(|v| v.len())
            .unwrap_or(0);
        obs.max_record = obs.max_record.max(raw_len);
        assert!(
            raw_len < 100_000,
            "{context}: record {entity} grew to {raw_len} bytes; lower APPENDS_PER_ENTITY"
        );
        let state = rec.state.clone().unwrap_or_default();
        let handled: BTreeSet<u128> = state.handled.iter().copied().collect();
        assert_eq!(
            handled.len(),
            state.handled.len(),
            "{context}: {entity} handled an id twice"
        );
        assert_eq!(
            state.count as usize,
            state.handled.len(),
            "{context}: {entity} count"
        );
        assert_eq!(
            rec.handled, state.count,
            "{context}: {entity} record.handled"
        );

        // State and outbox go together: handled = outbox ∪ delivered, disjointly.
        let mut outbox = BTreeSet::new();
        for env in &rec.outbox {
            assert!(
                env.id & OUT_BIT != 0,
                "{context}: {entity} outbox holds a non-output id {}",
                env.id
            );
            assert_eq!(
                env,
                &output(env.id & !OUT_BIT, entity),
                "{context}: {entity} outbox envelope changed"
            );
            assert!(
                outbox.insert(env.id & !OUT_BIT),
                "{context}: {entity} outbox holds {} twice",
                env.id
            );
        }
        let delivered: BTreeSet<u128> = state.delivered.iter().copied().collect();
        assert_eq!(
            delivered.len(),
            state.delivered.len(),
            "{context}: {entity} delivered twice"
        );
        assert!(
            outbox.is_disjoint(&delivered),
            "{context}: {entity} both in outbox and delivered"
        );
        let produced: BTreeSet<u128> = outbox.union(&delivered).copied().collect();
        if produced != handled {
            let without_outbox: Vec<_> = handled.difference(&produced).take(5).collect();
            let without_state: Vec<_> = produced.difference(&handled).take(5).collect();
            panic!(
                "{context}: {entity}: state without outbox {without_outbox:?} / outbox without state {without_state:?}"
            );
        }
        for id in &rec.seen {
            assert!(
                handled.contains(id),
                "{context}: {entity} remembers {id} it never handled"
            );
        }

        // Entries at or below the cursor that are still stored were handled;
        // entries above it are pending and were not.
        let all = db
            .inbox_pending(entity, 0, usize::MAX)
            .expect("inbox_pending");
        let mut last_seq = 0;
        for (seq, env) in all {
            assert!(seq > last_seq, "{context}: {entity} sequences out of order");
            last_seq = seq;
            let env = env
                .unwrap_or_else(|e| panic!("{context}: {entity} entry {seq} does not decode: {e}"));
            if seq <= rec.inbox_cursor {
                assert!(
                    handled.contains(&env.id),
                    "{context}: {entity} entry {seq} (id {}) is below cursor {} but was never handled",
                    env.id,
                    rec.inbox_cursor
                );
            } else {
                assert!(
                    !handled.contains(&env.id),
                    "{context}: id {} both pending and handled",
                    env.id
                );
                place(env.id, entity, "pending");
                obs.pending += 1;
            }
        }
        for id in &state.handled {
            place(*id, entity, "handled");
        }
        obs.handled += handled.len();
        obs.outbox += outbox.len();
        obs.delivered += delivered.len();
    }

    for id in location.keys() {
        assert!(
            *id >= ID_STRIDE as u128 && *id < ((CYCLES + 2) * ID_STRIDE) as u128,
            "{context}: stray id {id}"
        );
    }
    for (id, entity) in &promises.acked {
        match location.get(id) {
            Some((e, what)) => {
                assert_eq!(
                    e, entity,
                    "{context}: ACKed id {id} found under {e} ({what}), sent to {entity}"
                );
                if drained {
                    assert_eq!(
                        *what, "handled",
                        "{context}: ACKed id {id} still pending after the drain"
                    );
                }
            }
            None => panic!(
                "{context}: ACKed id {id} (entity {entity}) is lost: neither pending nor handled"
            ),
        }
    }
    for id in &promises.handled {
        assert!(
            matches!(location.get(id), Some((_, "handled"))),
            "{context}: id {id} was reported HANDLED but its state is gone: {:?}",
            location.get(id)
        );
    }
    if drained {
        assert_eq!(obs.pending, 0, "{context}: entries left after the drain");
    }
    store.close().expect("close");
    obs
}

/// Handles everything still pending, in-process (redelivery after the crashes).
fn drain(data: &Path) -> usize {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = open_store(data, Durability::Flush);
    let mut handled = 0;
    rt.block_on(async {
        for entity in ENTITIES {
            let mut step = 1;
            while let Some(ids) = handle_once(&store.order, entity, step)
                .await
                .expect("drain")
            {
                handled += ids.len();
                step += 1;
            }
        }
    });
    store.close().expect("close");
    handled
}

#[test]
fn crash_kill9_cycles() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut rng = XorShift(0x5EED_0D0A_5A6A_2024);
    let mut promises = Promises::default();
    let (mut total_acked, mut total_handled, mut ready_cycles) = (0, 0, 0);
    for cycle in 0..CYCLES {
        let out = run_and_kill(&data, tmp.path(), cycle, &mut rng);
        let (how, acked_now, handled_now) = (out.how.clone(), out.acked.len(), out.handled.len());
        ready_cycles += out.ready as usize;
        total_acked += out.acked.len();
        total_handled += out.handled.len();
        for (id, entity) in out.acked {
            assert!(ENTITIES.contains(&entity.as_str()));
            assert!(
                promises.acked.insert(id, entity).is_none(),
                "id {id} ACKed twice"
            );
        }
        for id in out.handled {
            assert!(
                promises.handled.insert(id),
                "id {id} reported HANDLED twice"
            );
        }
        let obs = verify(&data, &promises, false, &format!("after kill #{cycle}"));
        eprintln!(
            "cycle {cycle:2} ({how}): +{acked_now:4} ACK +{handled_now:4} HANDLED | total acked {:6} handled {:6} | stored: pending {:5} handled {:6} outbox {:4} delivered {:6} max record {:6} B | {:.1?}",
            promises.acked.len(),
            promises.handled.len(),
            obs.pending,
            obs.handled,
            obs.outbox,
            obs.delivered,
            obs.max_record,
            started.elapsed()
        );
    }
    let redelivered = drain(&data);
    let obs = verify(&data, &promises, true, "after the final drain");
    eprintln!(
        "{CYCLES} kills, {total_acked} ACKs, {total_handled} HANDLED, {redelivered} handled in the drain, \
         {} handled in total, {:.1?}",
        obs.handled,
        started.elapsed()
    );
    // The test is only meaningful if the children really got to work.
    assert!(
        ready_cycles >= CYCLES as usize / 2,
        "only {ready_cycles} children became ready"
    );
    assert!(
        total_acked >= 200,
        "only {total_acked} ACKs in {CYCLES} cycles"
    );
    assert!(
        total_handled >= 100,
        "only {total_handled} HANDLED in {CYCLES} cycles"
    );
    assert!(obs.handled >= promises.acked.len());
}
