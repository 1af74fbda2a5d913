//! Injected faults for demos and tests. Every hook is off unless armed by code
//! (never by network input); armed hooks make a component misbehave on purpose
//! so that supervision, retries and crash recovery can be shown and tested.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};

static CUSTOMER_PANICS: AtomicU32 = AtomicU32::new(0);
static CUSTOMER_SILENT: AtomicBool = AtomicBool::new(false);
static FSYNC_FAILS: AtomicBool = AtomicBool::new(false);

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

/// Makes every later fsync fail (durability `fsync` then stops the process).
pub fn set_fsync_fails(on: bool) {
    FSYNC_FAILS.store(on, SeqCst);
}

/// Whether the next fsync should fail.
pub fn fsync_should_fail() -> bool {
    FSYNC_FAILS.load(SeqCst)
}

/// A named crash point: with the `failpoints` feature and
/// `DURASAGA_CRASH_AT=<name>` in the environment, the process aborts here
/// (as abruptly as `kill -9`) the `DURASAGA_CRASH_AFTER`-th time (default 1)
/// it passes. Without the feature this compiles to nothing.
#[inline]
pub fn crash_point(name: &str) {
    #[cfg(feature = "failpoints")]
    {
        use std::sync::atomic::AtomicU64;
        static PASSES: AtomicU64 = AtomicU64::new(0);
        if std::env::var("DURASAGA_CRASH_AT").ok().as_deref() == Some(name) {
            let after: u64 = std::env::var("DURASAGA_CRASH_AFTER")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            if PASSES.fetch_add(1, SeqCst) + 1 >= after {
                eprintln!("durasaga: crash point {name} reached; aborting");
                std::process::abort();
            }
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
