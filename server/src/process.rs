//! What every shard of one holdalld shares: each shard's metrics (any shard renders them
//! all), the per-token request rate limiter (a client's connections land on any shard), and
//! the TLS certificate every shard serves.

use std::sync::Arc;

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
}
