//! `durasaga serve`: start the runtime, serve HTTP, and shut down in a fixed
//! order on SIGINT/SIGTERM — stop accepting HTTP, stop actors (bounded), final
//! flush, exit. A second signal exits at once. A failed flush (disk full with
//! `storage.min_free_mb = 0`, an I/O error, a failed fsync) takes the same
//! path without the final flush and exits with status 75 (EX_TEMPFAIL), so a
//! process supervisor restarts it once the storage is healthy again.

use crate::actors::Runtime;
use crate::config::Settings;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// Runs the service until a signal or an escalated failure.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let _ = crate::metrics::prometheus();
    if let Some(point) = crate::fault::arm_crash_point_from_env() {
        tracing::warn!(point, "crash point armed (failpoints build)");
    }
    if let Some(n) = crate::fault::arm_fsync_failure_from_env() {
        tracing::warn!(n, "fsync failure armed (failpoints build)");
    }
    let bind = settings.http.bind.clone();
    let timeout = Duration::from_millis(settings.http.shutdown_timeout_ms);
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {bind}: {e}"))?;
    let addr = listener.local_addr()?;
    let rt = Runtime::start(settings)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // The harnesses read this line to learn the port.
    println!("durasaga listening on http://{addr}");
    tracing::info!(%addr, "listening");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::http::serve(rt.clone(), listener, async move {
        let _ = stop_rx.await;
    }));
    let store = rt.store.clone();
    let mut storage_failure = None;
    let escalated = tokio::select! {
        _ = term.recv() => false,
        _ = int.recv() => false,
        _ = rt.stopped() => true,
        e = store.failed() => {
            storage_failure = Some(e);
            false
        }
    };
    tracing::info!("shutting down: no new requests");
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        eprintln!("durasaga: second signal; exiting now");
        std::process::exit(130);
    });
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(timeout, server).await;
    let stopped = rt.shutdown(timeout).await;
    if let Some(e) = storage_failure {
        eprintln!(
            "durasaga: storage failed ({e}); nothing was acknowledged after it. \
             Exiting with status 75: fix the storage (free space, replace the disk) \
             and start again; recovery resumes every saga."
        );
        std::process::exit(75);
    }
    stopped.map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!("stopped cleanly");
    if escalated {
        anyhow::bail!("the supervision tree gave up (see the errors above)");
    }
    Ok(())
}
