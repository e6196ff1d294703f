//! The commit gate: a collection must not miss a block that a commit claimed before the
//! mark began and wrote after the walk went past it. Every request that may write rows
//! referencing existing blocks (commit, restore, rewind) holds an entry for its whole run;
//! a collection starts its mark (from then on every claim marks its block), moves the
//! gate to the next epoch, and waits until no entry of the earlier epoch is left before it
//! walks the journal. Two epochs alternate, so the count is two cells.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How often a collection looks again while entries of the epoch it waits on run.
const DRAIN_POLL: Duration = Duration::from_millis(2);

/// One shard's count of running writers, by epoch parity.
#[derive(Default)]
pub struct CommitGate {
    epoch: Cell<u64>,
    running: [Cell<u64>; 2],
}

/// A writer's entry; leaving the gate when dropped.
pub struct Entry<'g> {
    gate: &'g CommitGate,
    parity: usize,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        let c = &self.gate.running[self.parity];
        debug_assert!(c.get() > 0);
        c.set(c.get() - 1);
    }
}

/// Writers of an earlier epoch were still running at the deadline.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("{0} commits that began before the collection were still running after {1:?}")]
pub struct StillRunning(pub u64, pub Duration);

impl CommitGate {
    /// Enters the gate for the current epoch.
    pub fn enter(&self) -> Entry<'_> {
        let parity = (self.epoch.get() % 2) as usize;
        let c = &self.running[parity];
        c.set(c.get() + 1);
        Entry { gate: self, parity }
    }

    /// Starts the next epoch; the one it ended, to wait on with [`CommitGate::drained`].
    pub fn advance(&self) -> u64 {
        let ended = self.epoch.get();
        self.epoch.set(ended + 1);
        ended
    }

    /// Resolves once no writer of epoch `ended` runs, or fails after `wait_max`.
    pub async fn drained(&self, ended: u64, wait_max: Duration) -> Result<(), StillRunning> {
        let c = &self.running[(ended % 2) as usize];
        let started = Instant::now();
        while c.get() > 0 {
            if started.elapsed() >= wait_max {
                return Err(StillRunning(c.get(), wait_max));
            }
            glommio::timer::sleep(DRAIN_POLL).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_epoch_waits_only_for_the_writers_before_it() {
        holdall_engine::runtime::run(async {
            let gate = CommitGate::default();
            let before = gate.enter();
            let ended = gate.advance();
            let _after = gate.enter();
            let short = Duration::from_millis(20);
            assert!(gate.drained(ended, short).await.is_err());
            drop(before);
            gate.drained(ended, short).await.unwrap();
        });
    }
}
