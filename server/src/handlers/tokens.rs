//! A user's device tokens: `POST /v1/tokens` makes one, `GET /v1/tokens` lists them (never
//! the secret), `DELETE /v1/tokens/{id}` revokes one on every shard at once. A token is
//! kept only as its SHA-256; its id is the first 8 bytes of that, in hex. The account's first
//! token (from `admin add-user`, or the admin's) is one of them, with an empty device.

use std::rc::Rc;

use holdall_engine::journal::state::User;
use holdall_proto::api::{CreateTokenRequest, CreateTokenResponse, TokenEntry, TokensResponse};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::body::Body;
use crate::directory::{new_token, token_id, token_sha256, DirectoryOp};
use crate::reply::{json, ApiError};
use crate::request::read_json;
use crate::shard::Shard;

/// Largest body of `POST /v1/tokens`.
const TOKEN_BODY_BYTES_MAX: usize = 4096;
/// Most live tokens one user may hold: every device of a person, with room to spare.
pub const TOKENS_PER_USER_MAX: usize = 256;

/// `POST /v1/tokens {"device"}`: a new token for the caller's account.
pub async fn create_token(
    shard: &Rc<Shard>,
    user: &User,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let body: CreateTokenRequest = read_json(req, TOKEN_BODY_BYTES_MAX).await?;
    let device = body.device.trim().to_owned();
    let valid = !device.is_empty()
        && device.len() <= holdall_engine::journal::record::DEVICE_BYTES_MAX
        && !device.chars().any(char::is_control);
    if !valid {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_device",
            "a device name is 1 to 128 bytes without control characters",
        ));
    }
    if shard.directory().tokens_of(user.id).len() >= TOKENS_PER_USER_MAX {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_tokens",
            format!("an account holds at most {TOKENS_PER_USER_MAX} tokens; revoke some first"),
        ));
    }
    let token = new_token().map_err(|e| ApiError::internal(e.to_string()))?;
    let sha = token_sha256(&token);
    shard
        .directory_op(DirectoryOp::AddToken {
            user: user.id,
            token_sha256: sha,
            device,
        })
        .await?;
    Ok(json(
        StatusCode::OK,
        &CreateTokenResponse {
            id: token_id(&sha),
            token,
        },
    ))
}

/// `GET /v1/tokens`: the caller's tokens, oldest first, with their last use on any shard.
pub async fn list_tokens(shard: &Rc<Shard>, user: &User) -> Result<Response<Body>, ApiError> {
    let mut tokens: Vec<([u8; 32], String, u64)> = shard
        .directory()
        .tokens_of(user.id)
        .into_iter()
        .map(|(sha, t)| (sha, t.device.clone(), t.created_ms))
        .collect();
    tokens.sort_by_key(|t| (t.2, t.0));
    let shas: Vec<[u8; 32]> = tokens.iter().map(|t| t.0).collect();
    let asked = (0..shard.shards()).map(|to| {
        let shas = shas.clone();
        shard.submit_to(to, move |s| {
            std::future::ready(
                shas.iter()
                    .map(|t| s.token_last_used(t))
                    .collect::<Vec<_>>(),
            )
        })
    });
    let mut last_used: Vec<Option<u64>> = vec![None; tokens.len()];
    for answer in futures::future::join_all(asked).await {
        for (slot, used) in last_used.iter_mut().zip(answer?) {
            *slot = (*slot).max(used);
        }
    }
    let tokens = tokens
        .into_iter()
        .zip(last_used)
        .map(|((sha, device, created_ms), last_used_ms)| TokenEntry {
            id: token_id(&sha),
            device,
            created_ms,
            last_used_ms,
        })
        .collect();
    Ok(json(StatusCode::OK, &TokensResponse { tokens }))
}

/// `DELETE /v1/tokens/{id}`: revokes one of the caller's tokens (the one calling, too).
pub async fn revoke_token(
    shard: &Rc<Shard>,
    user: &User,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let id = id.to_ascii_lowercase();
    let sha = shard
        .directory()
        .tokens_of(user.id)
        .into_iter()
        .map(|(sha, _)| sha)
        .find(|sha| token_id(sha) == id)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_token",
                format!("the account has no token {id:?}"),
            )
        })?;
    shard
        .directory_op(DirectoryOp::RevokeToken { token_sha256: sha })
        .await?;
    let forget = (0..shard.shards()).map(|to| {
        shard.submit_to(to, move |s| {
            s.forget_token(&sha);
            std::future::ready(())
        })
    });
    for done in futures::future::join_all(forget).await {
        done?;
    }
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"id": token_id(&sha), "revoked": true}),
    ))
}
