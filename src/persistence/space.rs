//! The free-space watermark of the data directory.
//!
//! sled's I/O errors are sticky: once a write hits ENOSPC the database fails
//! every later operation until the process restarts. So durasaga refuses new
//! work (503 `STORAGE_FULL`) while the file system holding the data directory
//! has less than `storage.min_free_mb` available, and accepts it again as soon
//! as space is freed. Work already accepted (sagas in flight) goes on and uses
//! the reserve. The free space is read with `statvfs` at most every
//! [`RECHECK`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a free-space reading is trusted.
pub const RECHECK: Duration = Duration::from_millis(100);

/// Tells whether the data directory's file system has room for new work.
pub struct SpaceGuard {
    dir: PathBuf,
    min_free: u64,
    low: AtomicBool,
    available: AtomicU64,
    checked: Mutex<Option<Instant>>,
}

impl SpaceGuard {
    /// A guard for `dir` that wants `min_free` bytes available (0 = off).
    pub fn new(dir: PathBuf, min_free: u64) -> Self {
        Self {
            dir,
            min_free,
            low: AtomicBool::new(false),
            available: AtomicU64::new(u64::MAX),
            checked: Mutex::new(None),
        }
    }

    /// `Err(message)` while less than the watermark is available.
    pub fn check(&self) -> Result<(), String> {
        if self.min_free == 0 {
            return Ok(());
        }
        self.refresh_if_stale();
        if self.low.load(Relaxed) {
            Err(format!(
                "only {} MiB left on the file system of {} (storage.min_free_mb = {}); \
                 new work is refused until space is freed",
                self.available.load(Relaxed) >> 20,
                self.dir.display(),
                self.min_free >> 20
            ))
        } else {
            Ok(())
        }
    }

    fn refresh_if_stale(&self) {
        let Ok(mut checked) = self.checked.try_lock() else {
            return; // another caller is reading it right now
        };
        if checked.is_some_and(|t| t.elapsed() < RECHECK) {
            return;
        }
        *checked = Some(Instant::now());
        match fs2::available_space(&self.dir) {
            Ok(avail) => {
                self.available.store(avail, Relaxed);
                let was_low = self.low.swap(avail < self.min_free, Relaxed);
                if was_low != (avail < self.min_free) {
                    if was_low {
                        tracing::warn!(
                            available_mib = avail >> 20,
                            "free space is back above storage.min_free_mb; accepting new work"
                        );
                    } else {
                        tracing::error!(available_mib = avail >> 20, min_free_mib = self.min_free >> 20,
                            "free space below storage.min_free_mb; refusing new work (503) until space is freed");
                    }
                }
            }
            // Cannot tell (odd file system): do not refuse work on a guess.
            Err(e) => tracing::debug!(error = %e, "cannot read free space"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_impossible_watermark_refuses_and_zero_disables() {
        let dir = std::env::temp_dir();
        let g = SpaceGuard::new(dir.clone(), u64::MAX);
        let err = g
            .check()
            .expect_err("no file system has u64::MAX bytes free");
        assert!(err.contains("storage.min_free_mb"), "{err}");
        assert!(SpaceGuard::new(dir.clone(), 0).check().is_ok());
        assert!(SpaceGuard::new(dir, 1).check().is_ok());
    }
}
