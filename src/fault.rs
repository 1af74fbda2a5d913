//! Injected faults for demos and tests. Every hook is off unless armed by code
//! (never by network input); armed hooks make a component misbehave on purpose
//! so that supervision, retries and crash recovery can be shown and tested.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};

static CUSTOMER_PANICS: AtomicU32 = AtomicU32::new(0);
static CUSTOMER_SILENT: AtomicBool = AtomicBool::new(false);
/// With `failpoints`: the fsync that fails first (1-based); 0 = none.
static FSYNC_FAIL_AT: AtomicU64 = AtomicU64::new(0);
static FSYNCS: AtomicU64 = AtomicU64::new(0);

/// The next `n` messages handled by any CustomerActor panic.
pub fn arm_customer_panics(n: u32) {
    CUSTOMER_PANICS.store(n, SeqCst);
}

/// Consumes one armed customer panic; true if the caller should panic now.
pub fn take_customer_panic() -> bool {
    CUSTOMER_PANICS
        .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// While set, CustomerActors consume messages without answering.
pub fn set_customer_silent(on: bool) {
    CUSTOMER_SILENT.store(on, SeqCst);
}

/// Whether CustomerActors should stay silent.
pub fn customer_silent() -> bool {
    CUSTOMER_SILENT.load(SeqCst)
}

/// Whether a flush panic is armed (checked without a lock on every flush).
static FLUSH_PANIC_ARMED: AtomicBool = AtomicBool::new(false);
/// The database directory whose next flush panics.
static FLUSH_PANIC_DIR: std::sync::Mutex<Option<std::path::PathBuf>> = std::sync::Mutex::new(None);

/// The next group-commit flush of the database in `dir` panics (as a bug in
/// sled would), once.
pub fn arm_flush_panic(dir: &std::path::Path) {
    *FLUSH_PANIC_DIR.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir.to_owned());
    FLUSH_PANIC_ARMED.store(true, SeqCst);
}

/// Consumes an armed flush panic for `dir`; true if the caller should panic now.
pub fn take_flush_panic(dir: &std::path::Path) -> bool {
    if !FLUSH_PANIC_ARMED.load(SeqCst) {
        return false;
    }
    let mut armed = FLUSH_PANIC_DIR.lock().unwrap_or_else(|e| e.into_inner());
    if armed.as_deref() == Some(dir) {
        *armed = None;
        FLUSH_PANIC_ARMED.store(false, SeqCst);
        return true;
    }
    false
}

/// Whether this fsync should fail (counts fsyncs when a failure is armed).
pub fn fsync_should_fail() -> bool {
    let at = FSYNC_FAIL_AT.load(SeqCst);
    at != 0 && FSYNCS.fetch_add(1, SeqCst) + 1 >= at
}

/// With the `failpoints` feature: reads `DURASAGA_FAIL_FSYNC_AFTER=<n>` and
/// makes the n-th database fsync of this process (and every later one) fail,
/// as a dying disk would. Returns n if armed.
pub fn arm_fsync_failure_from_env() -> Option<u64> {
    #[cfg(feature = "failpoints")]
    {
        let n: u64 = std::env::var("DURASAGA_FAIL_FSYNC_AFTER")
            .ok()?
            .parse()
            .ok()
            .filter(|n| *n > 0)?;
        FSYNC_FAIL_AT.store(n, SeqCst);
        Some(n)
    }
    #[cfg(not(feature = "failpoints"))]
    None
}

/// The named crash points, in the order a message meets them.
pub const CRASH_POINTS: &[&str] = &[
    "after_inbox_append",
    "after_commit_before_flush",
    "after_commit_flush",
    "between_handoff_and_outbox_removal",
    "during_recovery",
    "after_recovery",
    "projector_checkpoint",
];

/// A named crash point (the `fail` crate). Compiled to nothing unless the
/// `failpoints` feature is on; then [`arm_crash_point_from_env`] can make the
/// process abort here — as abruptly as `kill -9` — the N-th time it passes.
#[inline]
pub fn crash_point(name: &str) {
    fail::fail_point!(name);
    let _ = name;
}

/// With the `failpoints` feature: reads `DURASAGA_CRASH_AT=<name>` and
/// `DURASAGA_CRASH_AFTER=<n>` (default 1) and arms that crash point to abort
/// the process. Returns the armed point, if any.
pub fn arm_crash_point_from_env() -> Option<String> {
    #[cfg(feature = "failpoints")]
    {
        let name = std::env::var("DURASAGA_CRASH_AT").ok()?;
        let after: u64 = std::env::var("DURASAGA_CRASH_AFTER")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let passes = std::sync::Arc::new(AtomicU64::new(0));
        let label = name.clone();
        let armed = fail::cfg_callback(name.clone(), move || {
            if passes.fetch_add(1, SeqCst) + 1 >= after {
                eprintln!("durasaga: crash point {label} reached; aborting");
                std::process::abort();
            }
        });
        armed.ok().map(|_| name)
    }
    #[cfg(not(feature = "failpoints"))]
    None
}

/// With the `failpoints` feature and `DURASAGA_TEST_SKIP_DEDUP=1`: a
/// deliberately broken build that skips the inbox dedup check, to show the
/// crash-cycle harness catches duplicate handling.
pub fn skip_dedup() -> bool {
    #[cfg(feature = "failpoints")]
    {
        static SKIP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *SKIP.get_or_init(|| std::env::var("DURASAGA_TEST_SKIP_DEDUP").is_ok_and(|v| v == "1"))
    }
    #[cfg(not(feature = "failpoints"))]
    false
}
