//! Shared test helpers: an in-process durasaga on port 0 with a fresh data
//! directory per test (zero-to-production's `spawn_app`).
#![allow(dead_code)]

use durasaga::actors::Runtime;
use durasaga::config::Settings;
use durasaga::harness::Client;
use std::sync::Arc;

/// A running in-process app.
pub struct TestApp {
    pub rt: Arc<Runtime>,
    pub client: Client,
    pub url: String,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// Starts durasaga with the defaults plus `patch` (a JSON object of settings).
pub async fn spawn_app_with(patch: serde_json::Value) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = Settings::defaults()
        .with(serde_json::json!({"storage": {"data_dir": dir.path()}, "http": {"bind": "127.0.0.1:0"}}))
        .and_then(|s| s.with(patch))
        .expect("settings");
    let _ = durasaga::metrics::prometheus();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let rt = Runtime::start(settings).await.expect("runtime");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(durasaga::http::serve(rt.clone(), listener, async move {
        let _ = rx.await;
    }));
    TestApp {
        rt,
        client: Client::new(&url),
        url,
        dir,
        stop: Some(tx),
        server: Some(server),
    }
}

/// Starts durasaga with the default settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(serde_json::json!({})).await
}

impl TestApp {
    /// Stops HTTP and the runtime, keeping the data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
        self.rt
            .shutdown(std::time::Duration::from_secs(5))
            .await
            .expect("shutdown");
        self.dir
    }
}
