//! Arbitrary bytes as the JSON body of `POST /customers` and `POST /orders`,
//! through the real router (`durasaga::http::routes`) of a real in-process
//! runtime (actors + sled), driven with `warp::test::request()` — no socket.
//!
//! The runtime is started once per fuzzing process, on a fresh data directory
//! (under `$TMPDIR`, or `$DURASAGA_FUZZ_DATA_DIR` if set), with
//! `durability = "none"` and a small cache: this target fuzzes the request
//! edge (body reading, JSON parsing, DTO validation, the create paths), not
//! durability, so there is no reason to wait for flushes. The body limit is
//! lowered to 2 KiB so that inputs within libFuzzer's default 4 KiB `max_len`
//! also exercise the 413 path.
//!
//! Property: no answer is a server error. Any 5xx is a finding; the panic
//! message carries the route, the status, the response body and the input.
#![no_main]

use durasaga::actors::Runtime;
use durasaga::config::Settings;
use libfuzzer_sys::fuzz_target;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};

struct App {
    tokio: tokio::runtime::Runtime,
    rt: Arc<Runtime>,
    // Kept alive for the life of the process (statics are never dropped;
    // scripts/fuzz.sh points TMPDIR at a directory it removes afterwards).
    _dir: Option<tempfile::TempDir>,
}

static APP: LazyLock<App> = LazyLock::new(|| {
    let (dir, path) = match std::env::var_os("DURASAGA_FUZZ_DATA_DIR") {
        Some(p) => (None, std::path::PathBuf::from(p)),
        None => {
            let d = tempfile::Builder::new()
                .prefix("durasaga-fuzz-http-")
                .tempdir()
                .expect("temp dir");
            let p = d.path().to_path_buf();
            (Some(d), p)
        }
    };
    let settings = Settings::defaults()
        .with(serde_json::json!({
            "storage": {"data_dir": path, "durability": "none", "cache_mb": 16},
            "http": {"bind": "127.0.0.1:0", "max_body_bytes": 2048},
        }))
        .expect("settings");
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let rt = tokio
        .block_on(Runtime::start(settings))
        .expect("durasaga runtime");
    App {
        tokio,
        rt,
        _dir: dir,
    }
});

const ROUTES: [&str; 2] = ["/customers", "/orders"];

/// Answers seen per (route, status), printed at every power-of-two input count
/// when `DURASAGA_FUZZ_STATS` is set, so a run shows that valid bodies do
/// reach the create paths.
static INPUTS: AtomicU64 = AtomicU64::new(0);
static STATS: LazyLock<bool> = LazyLock::new(|| std::env::var_os("DURASAGA_FUZZ_STATS").is_some());
static BY_STATUS: LazyLock<std::sync::Mutex<std::collections::BTreeMap<(usize, u16), u64>>> =
    LazyLock::new(Default::default);

fn stats(route: usize, status: u16) {
    if !*STATS {
        return;
    }
    *BY_STATUS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((route, status))
        .or_default() += 1;
}

fn report(n: u64) {
    if !*STATS || n < 1024 || !n.is_power_of_two() {
        return;
    }
    let by = BY_STATUS.lock().unwrap_or_else(|p| p.into_inner());
    let line: Vec<String> = by
        .iter()
        .map(|((r, s), c)| format!("POST {} {s}: {c}", ROUTES[*r]))
        .collect();
    eprintln!("http_bodies stats after {n} inputs: {}", line.join(", "));
}

fuzz_target!(|data: &[u8]| {
    let app = &*APP;
    let body = bytes::Bytes::copy_from_slice(data);
    for (i, path) in ROUTES.into_iter().enumerate() {
        let filter = durasaga::http::routes(app.rt.clone());
        let resp = app.tokio.block_on(
            warp::test::request()
                .method("POST")
                .path(path)
                .header("content-type", "application/json")
                .body(body.clone())
                .reply(&filter),
        );
        let status = resp.status().as_u16();
        stats(i, status);
        if status >= 500 {
            panic!(
                "POST {path} answered {status}: {}\ninput ({} bytes, hex): {}\ninput (lossy): {:?}",
                String::from_utf8_lossy(resp.body()),
                data.len(),
                hex(data),
                String::from_utf8_lossy(data),
            );
        }
    }
    report(INPUTS.fetch_add(1, Relaxed) + 1);
});

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}
