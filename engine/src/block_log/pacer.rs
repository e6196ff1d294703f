//! Keeps a background reader or copier (compaction, verification) under a byte rate, so it
//! leaves the disk to the users: after each piece of work it sleeps until the bytes done so
//! far are no more than the rate allows since it started.

use std::time::{Duration, Instant};

/// Bytes done since a start, against a rate.
pub(super) struct Pacer {
    started: Instant,
    bytes: u64,
    rate_bytes_per_s: u64,
}

impl Pacer {
    /// A pacer starting now; a rate of 0 never waits.
    pub(super) fn new(rate_bytes_per_s: u64) -> Pacer {
        Pacer {
            started: Instant::now(),
            bytes: 0,
            rate_bytes_per_s,
        }
    }

    /// Counts `bytes` done, then waits as long as the rate asks.
    pub(super) async fn account(&mut self, bytes: u64) {
        self.bytes += bytes;
        if self.rate_bytes_per_s == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate_bytes_per_s as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            glommio::timer::sleep(wait).await;
        }
    }
}
