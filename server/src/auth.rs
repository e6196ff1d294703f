//! Authentication: the bearer token of a request, looked up by its SHA-256 in the shard's
//! directory replica.

use holdall_engine::journal::state::User;
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Request, StatusCode};

use crate::directory::token_sha256;
use crate::reply::ApiError;
use crate::shard::Shard;

/// The user whose token the request carries; 401 without one, with an unknown one, or with
/// a disabled user's.
pub fn authenticate(shard: &Shard, req: &Request<Incoming>) -> Result<User, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer <token>"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("Authorization must be 'Bearer <token>'"))?;
    let directory = shard.directory();
    let user = directory
        .user_by_token(&token_sha256(token.trim()))
        .ok_or_else(|| unauthorized("unknown token"))?;
    if directory.is_disabled(user.id) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "account_disabled",
            format!("the account {:?} is disabled; ask the admin", user.name),
        ));
    }
    Ok(user.clone())
}
