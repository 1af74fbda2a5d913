//! Arbitrary bytes as the JSON body of `POST /customers` and `POST /orders`,
//! through the real router (`durasaga::http::routes`) of a real in-process
//! runtime (actors + sled), driven with `warp::test::request()` — no socket.
//!
//! The runtime is started once per fuzzing process, on a fresh data directory
//! (under `$TMPDIR`, or `$DURASAGA_FUZZ_DATA_DIR` if set), with
//! `durability = "none"` and a small cache: this target fuzzes the request
//! edge (body reading, JSON parsing, DTO validation, the create paths), not
//! durability, so there is no reason to wait for flushes.
//!
//! Property: no answer is a server error. Any 5xx is a finding; the panic
//! message carries the route, the status, the response body and the input.
#![no_main]

use durasaga::actors::Runtime;
use durasaga::config::Settings;
use libfuzzer_sys::fuzz_target;
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
            "http": {"bind": "127.0.0.1:0"},
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

fuzz_target!(|data: &[u8]| {
    let app = &*APP;
    let body = bytes::Bytes::copy_from_slice(data);
    for path in ROUTES {
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
});

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}
