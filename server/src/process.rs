//! What every shard of one holdalld shares: each shard's metrics (any shard renders them
//! all), the per-token request rate limiter (a client's connections land on any shard), and
//! the TLS certificate every shard serves, and the key that seals Dropbox API cursors.

use std::sync::Arc;

use holdall_engine::store_key::StoreKey;

use crate::metrics::ShardMetrics;
use crate::rate_limit::{ConnectionCounts, RateLimiter};
use crate::tls::Tls;

/// The process-wide parts of the server.
pub struct Process {
    /// One per shard, by shard id.
    pub metrics: Vec<Arc<ShardMetrics>>,
    /// Requests per second per token.
    pub rate: RateLimiter,
    /// Connections per user.
    pub connections: Arc<ConnectionCounts>,
    /// HTTPS's certificate and key; None for plain HTTP.
    pub tls: Option<Arc<Tls>>,
    /// Seals the cursors the Dropbox API hands out, so they cannot be forged or read, and
    /// stay good across restarts.
    pub cursor_key: StoreKey,
}

impl Process {
    /// The shared parts for `cfg`'s shards.
    pub fn new(
        cfg: &crate::config::Config,
        tls: Option<Arc<Tls>>,
        cursor_key: StoreKey,
    ) -> Process {
        Process {
            metrics: (0..cfg.shards).map(|_| Arc::default()).collect(),
            rate: RateLimiter::new(cfg.token_requests_per_s),
            connections: Arc::new(ConnectionCounts::new(cfg.user_connections_max)),
            tls,
            cursor_key,
        }
    }
}
