//! Authentication: the bearer token of a request, looked up by its SHA-256 in the shard's
//! directory replica.

use holdall_engine::journal::state::User;
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Request, StatusCode};

use std::sync::Arc;

use crate::directory::token_sha256;
use crate::rate_limit::ConnectionOwner;
use crate::reply::ApiError;
use crate::shard::Shard;

/// The user whose token the request carries; 401 without one, with an unknown one, or with
/// a disabled user's. Notes the token's use on this shard.
pub fn authenticate(shard: &Shard, req: &Request<Incoming>) -> Result<User, ApiError> {
    let sha = bearer_sha256(req)?;
    let user = user_of_token(shard, &sha)?;
    if let Err(wait) = shard.rate_limiter().admit(&sha, std::time::Instant::now()) {
        return Err(ApiError::too_many_requests(wait));
    }
    if let Some(owner) = req.extensions().get::<Arc<ConnectionOwner>>() {
        if !owner.claim(user.id, shard.connection_counts()) {
            return Err(ApiError::too_many_connections());
        }
    }
    shard.note_token_use(sha);
    Ok(user)
}

/// The SHA-256 of the request's bearer token; 401 without one.
pub fn bearer_sha256(req: &Request<Incoming>) -> Result<[u8; 32], ApiError> {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer <token>"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("Authorization must be 'Bearer <token>'"))?;
    Ok(token_sha256(token.trim()))
}

/// The user of a live token, as this shard's directory replica has it now; 401 if it was
/// never made, has been revoked, or its user is disabled.
pub fn user_of_token(shard: &Shard, sha: &[u8; 32]) -> Result<User, ApiError> {
    let directory = shard.directory();
    let user = directory
        .user_by_token(sha)
        .ok_or_else(|| unauthorized("unknown or revoked token"))?;
    if directory.is_disabled(user.id) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "account_disabled",
            format!("the account {:?} is disabled; ask the admin", user.name),
        ));
    }
    Ok(user.clone())
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}
