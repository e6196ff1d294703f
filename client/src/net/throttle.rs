//! Bandwidth caps (`--up-limit`, `--down-limit`): a byte budget shared by every worker.
//!
//! Requests carry whole batches, so the cap is kept on average: a transfer spends its bytes
//! and the caller sleeps until the budget has caught up with them. Over a few batches the
//! rate holds; one batch may go out at full speed. Idle time buys almost nothing, as on a
//! real link: only the last [`IDLE_CREDIT`] counts, which covers the gaps between requests
//! (a response read, the next request sent) so that back-to-back transfers keep the cap's
//! pace, while a pause does not buy a burst.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Idle time a transfer may make up for.
const IDLE_CREDIT: Duration = Duration::from_millis(100);

/// A shared bytes-per-second budget; 0 means unlimited.
#[derive(Clone)]
pub struct Throttle {
    bytes_per_s: u64,
    /// When the bytes spent so far will have been paid for.
    paid_until: Arc<Mutex<Instant>>,
}

impl Throttle {
    /// A budget of `bytes_per_s` (0: unlimited).
    pub fn new(bytes_per_s: u64) -> Throttle {
        Throttle {
            bytes_per_s,
            paid_until: Arc::new(Mutex::new(Instant::now())),
        }
    }

    /// Whether there is a budget at all.
    pub fn limited(&self) -> bool {
        self.bytes_per_s != 0
    }

    /// How long `bytes` take at the budget's rate.
    fn cost(&self, bytes: u64) -> Duration {
        Duration::from_secs_f64(bytes as f64 / self.bytes_per_s as f64)
    }

    /// Spends `bytes` and sleeps until they are within the budget.
    pub fn spend(&self, bytes: u64) {
        if self.bytes_per_s == 0 || bytes == 0 {
            return;
        }
        let wake = {
            let mut paid = self.paid_until.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let start = (*paid).max(now.checked_sub(IDLE_CREDIT).unwrap_or(now));
            *paid = start + self.cost(bytes);
            *paid
        };
        let now = Instant::now();
        if wake > now {
            std::thread::sleep(wake - now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spending_past_the_budget_waits() {
        let t = Throttle::new(1 << 20);
        let started = Instant::now();
        t.spend(1 << 20);
        t.spend(1 << 19);
        // 1.5 MiB at 1 MiB/s, however long the throttle sat idle before.
        assert!(started.elapsed() >= Duration::from_millis(1300));
        let free = Throttle::new(0);
        let started = Instant::now();
        free.spend(u64::MAX);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
