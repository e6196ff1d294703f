//! Per-token request rate limits and per-user connection limits, shared by every shard of
//! the process (a client's connections land on any shard).
//!
//! Requests: a token bucket per bearer token, refilled at the configured rate with one
//! second's worth of burst; a request over the limit gets 429 with `Retry-After`.
//! Connections: a connection belongs to the user of its first authenticated request, and
//! a user holds at most the configured number at once; one more gets 429 and is closed.
//!
//! One mutex guards the buckets: it is taken once per request for a few map operations,
//! far below the cost of any request it guards. The map is bounded: past
//! [`BUCKETS_MAX`] tokens, buckets that have filled up again (idle tokens) are dropped.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hashbrown::HashMap;

/// Most buckets kept; more live tokens than this are still limited, idle ones are dropped.
pub const BUCKETS_MAX: usize = 100_000;

/// One token's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Requests it may still make at once.
    credit: f64,
    /// When `credit` was last brought up to date.
    at: Instant,
}

/// The limiter of one process.
#[derive(Debug)]
pub struct RateLimiter {
    requests_per_s: u32,
    buckets: Mutex<HashMap<[u8; 32], Bucket>>,
}

impl RateLimiter {
    /// A limiter of `requests_per_s` per token (0: no limit).
    pub fn new(requests_per_s: u32) -> RateLimiter {
        RateLimiter {
            requests_per_s,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request for `token` at `now`; how long to wait first if it is over the
    /// limit.
    pub fn admit(&self, token: &[u8; 32], now: Instant) -> Result<(), Duration> {
        if self.requests_per_s == 0 {
            return Ok(());
        }
        let rate = f64::from(self.requests_per_s);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= BUCKETS_MAX && !buckets.contains_key(token) {
            buckets.retain(|_, b| b.credit + rate * now.duration_since(b.at).as_secs_f64() < rate);
        }
        let bucket = buckets.entry(*token).or_insert(Bucket {
            credit: rate,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.credit = (bucket.credit + rate * elapsed).min(rate);
        bucket.at = now;
        if bucket.credit >= 1.0 {
            bucket.credit -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - bucket.credit) / rate))
    }
}

/// How many connections each user holds now, and the most they may.
#[derive(Debug)]
pub struct ConnectionCounts {
    per_user_max: u32,
    counts: Mutex<HashMap<u64, u32>>,
}

impl ConnectionCounts {
    /// At most `per_user_max` connections per user (0: no limit).
    pub fn new(per_user_max: u32) -> ConnectionCounts {
        ConnectionCounts {
            per_user_max,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one more connection of `user`, unless they hold the most already.
    fn claim(&self, user: u64) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let held = counts.entry(user).or_default();
        if self.per_user_max > 0 && *held >= self.per_user_max {
            return false;
        }
        *held += 1;
        true
    }

    fn release(&self, user: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = counts.get_mut(&user) {
            *held -= 1;
            if *held == 0 {
                counts.remove(&user);
            }
        }
    }

    /// Connections `user` holds now.
    #[cfg(test)]
    pub fn held(&self, user: u64) -> u32 {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(&user).copied().unwrap_or(0)
    }
}

/// Whose a connection is: set by its first authenticated request, released when the
/// connection (and every request holding it) is gone. The HTTP layer puts one in every
/// request's extensions.
#[derive(Debug, Default)]
pub struct ConnectionOwner {
    owner: OnceLock<(u64, Arc<ConnectionCounts>)>,
}

impl ConnectionOwner {
    /// Makes the connection `user`'s if it is nobody's yet; false if that would take them
    /// past their connection limit. A connection that is someone's already stays theirs.
    pub fn claim(&self, user: u64, counts: &Arc<ConnectionCounts>) -> bool {
        if self.owner.get().is_some() {
            return true;
        }
        if !counts.claim(user) {
            return false;
        }
        if self.owner.set((user, counts.clone())).is_err() {
            counts.release(user);
        }
        true
    }
}

impl Drop for ConnectionOwner {
    fn drop(&mut self) {
        if let Some((user, counts)) = self.owner.get() {
            counts.release(*user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_of_burst_then_the_rate_and_other_tokens_apart() {
        let limiter = RateLimiter::new(10);
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(limiter.admit(&a, t0).is_ok());
        }
        let wait = limiter.admit(&a, t0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(
            limiter.admit(&b, t0).is_ok(),
            "another token has its own bucket"
        );
        assert!(limiter.admit(&a, t0 + Duration::from_millis(100)).is_ok());
        assert!(limiter.admit(&a, t0 + Duration::from_millis(100)).is_err());
        // Idle time refills at most one second's worth.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..10 {
            assert!(limiter.admit(&a, later).is_ok());
        }
        assert!(limiter.admit(&a, later).is_err());
    }

    #[test]
    fn no_limit_at_zero() {
        let limiter = RateLimiter::new(0);
        let now = Instant::now();
        assert!((0..10_000).all(|_| limiter.admit(&[3; 32], now).is_ok()));
    }

    #[test]
    fn a_user_holds_at_most_the_limit_and_a_closed_connection_frees_its_place() {
        let counts = Arc::new(ConnectionCounts::new(2));
        let (a, b, c) = (
            ConnectionOwner::default(),
            ConnectionOwner::default(),
            ConnectionOwner::default(),
        );
        assert!(
            a.claim(7, &counts) && a.claim(7, &counts),
            "claiming twice counts once"
        );
        assert!(b.claim(7, &counts));
        assert!(!c.claim(7, &counts), "a third is refused");
        assert!(c.claim(8, &counts), "another user has their own count");
        assert_eq!(counts.held(7), 2);
        drop(a);
        assert_eq!(counts.held(7), 1);
        let d = ConnectionOwner::default();
        assert!(d.claim(7, &counts));
        drop((b, c, d));
        assert_eq!((counts.held(7), counts.held(8)), (0, 0));
    }
}
