//! `users/get_current_account`, `users/get_space_usage` and `check/user`: who the token is,
//! as a Dropbox `FullAccount`, and their usage against their quota.

use holdall_engine::journal::state::User;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Value};

use super::call::Call;
use super::error::DbxError;
use super::{json_ok, names};
use crate::body::Body;
use crate::handlers::quota::usage_of;

/// The allocation shown for a user with no quota: what Dropbox's API can carry.
const UNLIMITED_BYTES: u64 = u64::MAX >> 1;

/// `users/get_current_account`.
pub async fn current_account(call: &Call<'_>) -> Result<Response<Body>, DbxError> {
    Ok(json_ok(&account(&call.user)))
}

fn account(user: &User) -> Value {
    let ns = user.root_ns.to_string();
    json!({
        "account_id": names::account_id(user.id),
        "name": {
            "given_name": user.name,
            "surname": "",
            "familiar_name": user.name,
            "display_name": user.name,
            "abbreviated_name": user.name.chars().take(2).collect::<String>(),
        },
        // Holdall users have names, not mailboxes.
        "email": format!("{}@holdall.invalid", user.name),
        "email_verified": false,
        "disabled": false,
        "locale": "en",
        "referral_link": "",
        "is_paired": false,
        "account_type": { ".tag": "basic" },
        "root_info": { ".tag": "user", "root_namespace_id": ns, "home_namespace_id": ns },
    })
}

/// `users/get_space_usage`.
pub async fn space_usage(call: &Call<'_>) -> Result<Response<Body>, DbxError> {
    let usage = usage_of(call.shard, call.user.id).await?;
    Ok(json_ok(&json!({
        "used": usage.bytes,
        "allocation": {
            ".tag": "individual",
            "allocated": usage.quota_bytes.unwrap_or(UNLIMITED_BYTES),
        },
    })))
}

/// `check/user`: echoes `query`, to test a token.
pub async fn check_user(
    call: &Call<'_>,
    req: Request<Incoming>,
) -> Result<Response<Body>, DbxError> {
    #[derive(serde::Deserialize)]
    struct Arg {
        #[serde(default)]
        query: String,
    }
    let arg: Option<Arg> = call.rpc_arg(req).await?;
    Ok(json_ok(
        &json!({ "result": arg.map(|a| a.query).unwrap_or_default() }),
    ))
}
