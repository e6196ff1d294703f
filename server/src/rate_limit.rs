//! Per-token request rate limits: a token bucket per bearer token, shared by every shard of
//! the process (a client's connections land on any shard), refilled at the configured rate
//! with one second's worth of burst. A request over the limit gets 429 with `Retry-After`.
//!
//! One mutex guards the buckets: it is taken once per request for a few map operations,
//! far below the cost of any request it guards. The map is bounded: past
//! [`BUCKETS_MAX`] tokens, buckets that have filled up again (idle tokens) are dropped.

use std::sync::Mutex;
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
}
