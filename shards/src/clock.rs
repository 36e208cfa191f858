//! Wall-clock time as the engine sees it. Everything that ages (record timestamps, expiry,
//! delete-on-empty deadlines, creation and deletion times) reads one [`Clock`], which tests
//! can move forward so that ages of days take milliseconds to test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Nanoseconds since the Unix epoch, UTC. Persisted in metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixNanos(pub u64);

impl UnixNanos {
    pub fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }
}

/// The system clock, plus however far it has been advanced.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    advanced_ms: Arc<AtomicU64>,
}

impl Clock {
    pub fn system() -> Clock {
        Clock::default()
    }

    fn since_epoch(&self) -> Duration {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            + Duration::from_millis(self.advanced_ms.load(Ordering::Relaxed))
    }

    /// Milliseconds since the Unix epoch: the unit of record timestamps.
    pub fn now_millis(&self) -> u64 {
        self.since_epoch().as_millis() as u64
    }

    pub fn now(&self) -> UnixNanos {
        UnixNanos(self.since_epoch().as_nanos() as u64)
    }

    /// Move this clock (and every copy of it) forward.
    pub fn advance(&self, by: Duration) {
        self.advanced_ms
            .fetch_add(by.as_millis() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_every_copy() {
        let clock = Clock::system();
        let copy = clock.clone();
        let before = copy.now_millis();
        clock.advance(Duration::from_secs(86_400));
        assert!(copy.now_millis() >= before + 86_400_000);
    }
}
