//! `GET /v1/account`: who the token belongs to, their mounts, the server's limits and
//! their usage against their quota.

use std::rc::Rc;

use holdall_engine::journal::state::User;
use holdall_proto::api::{AccountResponse, Limits, Mount};
use holdall_proto::limits::{BATCH_BYTES_DEFAULT, BLOCK_BYTES_MAX};
use hyper::{Response, StatusCode};

use crate::body::Body;
use crate::reply::{json, ApiError};
use crate::shard::Shard;

/// The account of `user`.
pub async fn account(shard: &Rc<Shard>, user: &User) -> Result<Response<Body>, ApiError> {
    let usage = crate::handlers::quota::usage_of(shard, user.id).await?;
    let directory = shard.directory();
    let body = AccountResponse {
        user: user.name.clone(),
        root_ns: user.root_ns,
        mounts: directory
            .mounts(user.id)
            .iter()
            .map(|(ns, path)| Mount {
                ns: *ns,
                path: path.clone(),
            })
            .collect(),
        limits: Limits {
            block_bytes_max: BLOCK_BYTES_MAX as u64,
            batch_bytes_max: BATCH_BYTES_DEFAULT as u64,
            prefetch_ttl_s: shard.streaming().then(|| shard.prefetch().ttl().as_secs()),
        },
        usage,
        features: [
            (shard.compression(), holdall_proto::api::FEATURE_ZSTD),
            (shard.deltas(), holdall_proto::api::FEATURE_DELTA),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, feature)| feature.to_string())
        .collect(),
    };
    Ok(json(StatusCode::OK, &body))
}
