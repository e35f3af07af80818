//! The plan's storage limit on the tenant volume.
//!
//! Walking the volume on every message would cost more than the message, so usage is walked
//! at start-up and every [`RESCAN`], and writes in between are added as they happen.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::Error;

/// How often the volume is walked again to correct the running estimate.
pub const RESCAN: Duration = Duration::from_secs(60);

pub struct Storage {
    dir: PathBuf,
    limit: u64,
    /// Bytes found by the last walk.
    scanned: AtomicU64,
    /// Bytes written since the last walk (shared with the stores that write).
    pub written: Arc<AtomicU64>,
}

impl Storage {
    pub async fn new(dir: &Path, limit: u64) -> Self {
        let s = Storage {
            dir: dir.to_path_buf(),
            limit,
            scanned: AtomicU64::new(0),
            written: Arc::new(AtomicU64::new(0)),
        };
        s.rescan().await;
        s
    }

    pub fn used(&self) -> u64 {
        self.scanned.load(Ordering::Relaxed) + self.written.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether `incoming` more bytes fit.
    pub fn check(&self, incoming: u64) -> Result<(), Error> {
        let used = self.used();
        if used.saturating_add(incoming) > self.limit {
            return Err(Error::StorageFull {
                used,
                limit: self.limit,
            });
        }
        Ok(())
    }

    pub async fn rescan(&self) {
        let dir = self.dir.clone();
        let total = tokio::task::spawn_blocking(move || dir_size(&dir))
            .await
            .unwrap_or(0);
        // Writes that land during the walk may be counted twice until the next walk: erring
        // high is the safe side of a limit.
        self.written.store(0, Ordering::Relaxed);
        self.scanned.store(total, Ordering::Relaxed);
    }
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in rd.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
