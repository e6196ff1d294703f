//! What every shard of one holdalld shares: each shard's metrics (any shard renders them
//! all) and the per-token request rate limiter (a client's connections land on any shard).

use std::sync::Arc;

use crate::metrics::ShardMetrics;
use crate::rate_limit::{ConnectionCounts, RateLimiter};

/// The process-wide parts of the server.
pub struct Process {
    /// One per shard, by shard id.
    pub metrics: Vec<Arc<ShardMetrics>>,
    /// Requests per second per token.
    pub rate: RateLimiter,
    /// Connections per user.
    pub connections: Arc<ConnectionCounts>,
}
