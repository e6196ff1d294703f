//! Who uploaded which block lately: the block owner shard's record that a user has shown the
//! bytes of a block (sent them in a store_batch), so that the user's commit may claim it for
//! the prefetch TTL even before any of the user's namespaces references it (the Dropship
//! rule). In memory only: losing it makes a client upload a block again, never lets anyone
//! claim a block without the bytes.
//!
//! Every record lives `ttl` after the upload; a FIFO of (expiry, key) is in expiry order, so
//! expiry pops its front with no scan, and the bound drops the oldest records first.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use holdall_engine::journal::record::UserId;
use holdall_proto::BlockHash;

/// One shard's upload records.
pub struct Uploads {
    ttl: Duration,
    records_max: usize,
    expires: HashMap<(UserId, BlockHash), Instant>,
    queue: VecDeque<(Instant, UserId, BlockHash)>,
}

impl Uploads {
    /// Empty, keeping each record `ttl` and at most `records_max` of them.
    pub fn new(ttl: Duration, records_max: usize) -> Uploads {
        assert!(records_max > 0);
        Uploads {
            ttl,
            records_max,
            expires: HashMap::new(),
            queue: VecDeque::new(),
        }
    }

    /// Records that `user` sent the bytes of `hash` at `now`.
    pub fn record(&mut self, user: UserId, hash: BlockHash, now: Instant) {
        self.expire(now);
        let expires_at = now + self.ttl;
        self.expires.insert((user, hash), expires_at);
        self.queue.push_back((expires_at, user, hash));
        // Refreshed records leave stale queue items; they count against the bound too, so
        // the queue stays within it.
        while self.queue.len() > self.records_max {
            self.pop_front();
        }
        debug_assert!(self.expires.len() <= self.queue.len());
    }

    /// Whether `user` sent the bytes of `hash` within the TTL.
    pub fn uploaded_by(&self, user: UserId, hash: &BlockHash, now: Instant) -> bool {
        self.expires
            .get(&(user, *hash))
            .is_some_and(|&expires_at| expires_at > now)
    }

    /// Every block someone uploaded within the TTL (a block two users sent comes twice).
    pub fn hashes(&self, now: Instant) -> impl Iterator<Item = BlockHash> + '_ {
        self.expires
            .iter()
            .filter(move |(_, &expires_at)| expires_at > now)
            .map(|((_, hash), _)| *hash)
    }

    /// Records kept.
    pub fn len(&self) -> usize {
        self.expires.len()
    }

    fn expire(&mut self, now: Instant) {
        while self.queue.front().is_some_and(|(at, _, _)| *at <= now) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        let Some((at, user, hash)) = self.queue.pop_front() else {
            return;
        };
        // Only the newest queue item of a key removes it.
        if self.expires.get(&(user, hash)) == Some(&at) {
            self.expires.remove(&(user, hash));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_expire_and_stay_bounded() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut u = Uploads::new(ttl, 3);
        let (a, b) = (BlockHash::of(b"a"), BlockHash::of(b"b"));
        u.record(1, a, t0);
        assert!(u.uploaded_by(1, &a, t0));
        assert!(
            !u.uploaded_by(2, &a, t0),
            "another user's upload proves nothing"
        );
        assert!(!u.uploaded_by(1, &a, t0 + ttl), "gone after the TTL");
        // A refresh keeps the record past the first expiry.
        u.record(1, a, t0 + Duration::from_secs(5));
        u.record(1, b, t0 + Duration::from_secs(11));
        assert!(u.uploaded_by(1, &a, t0 + Duration::from_secs(12)));
        for i in 0..10u8 {
            u.record(3, BlockHash::of(&[i]), t0 + Duration::from_secs(12));
        }
        assert!(u.len() <= 3);
        assert!(u.uploaded_by(3, &BlockHash::of(&[9]), t0 + Duration::from_secs(12)));
        assert!(
            !u.uploaded_by(1, &b, t0 + Duration::from_secs(12)),
            "oldest dropped first"
        );
    }
}
