//! How background work retries what failed: each failure in a row doubles the wait before
//! the next try, from [`BACKOFF_MIN`] up to [`BACKOFF_MAX`]; a success starts over. Work
//! that is retried this way is stepped past meanwhile (decision 0012), so one item that
//! keeps failing delays only itself.

use std::time::Duration;

/// The wait after a first failure.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest wait between tries, however many failed.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The wait after `failures` failures in a row.
    pub fn after(failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        BACKOFF_MIN.saturating_mul(1 << doublings).min(BACKOFF_MAX)
    }

    /// Count a failure; returns how long to wait before the next try.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        Backoff::after(self.failures)
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_reset_on_success() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..9).map(|_| b.failed().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.failures(), 9);
        b.succeeded();
        assert_eq!(b.failed(), BACKOFF_MIN);
        assert_eq!(Backoff::after(u32::MAX), BACKOFF_MAX);
    }
}
