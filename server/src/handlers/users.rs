//! The admin's view of users: `GET /v1/admin/users`, and `POST
//! /v1/admin/users/{user}/disable` and `/enable`. A disabled user's tokens are refused
//! (401 `account_disabled`) on every shard from the moment the answer is sent; nothing of
//! theirs is deleted, and enabling them gives everything back.

use std::collections::HashMap;
use std::rc::Rc;

use holdall_engine::journal::state::User;
use holdall_proto::api::{AdminUser, AdminUsersResponse, DisableResponse, Usage};
use hyper::{Response, StatusCode};
use percent_encoding::percent_decode_str;

use crate::body::Body;
use crate::directory::DirectoryOp;
use crate::handlers::admin::admin_only;
use crate::reply::{json, ApiError};
use crate::shard::Shard;

/// The user named by a percent-encoded path segment; 400 or 404 otherwise.
pub(crate) fn user_named(shard: &Shard, name: &str) -> Result<User, ApiError> {
    let name = percent_decode_str(name).decode_utf8().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_name",
            "the user name in the path is not percent-encoded UTF-8",
        )
    })?;
    shard
        .directory()
        .user_by_name(&name)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_user",
                format!("no user {name:?}"),
            )
        })
}

/// `GET /v1/admin/users`: every user with their usage, quota and whether they are disabled.
pub async fn list_users(shard: &Rc<Shard>, caller: &User) -> Result<Response<Body>, ApiError> {
    admin_only(caller, "list users")?;
    let asked = (0..shard.shards()).map(|to| {
        shard.submit_to(to, move |s| {
            std::future::ready(s.journal().state().usage_by_owner())
        })
    });
    let mut usage: HashMap<u64, u64> = HashMap::new();
    for answer in futures::future::join_all(asked).await {
        for (owner, bytes) in answer? {
            *usage.entry(owner).or_default() += bytes;
        }
    }
    let directory = shard.directory();
    let users = directory
        .users()
        .into_iter()
        .map(|u| AdminUser {
            name: u.name.clone(),
            root_ns: u.root_ns,
            admin: u.admin,
            disabled: directory.is_disabled(u.id),
            usage: Usage {
                bytes: usage.get(&u.id).copied().unwrap_or(0),
                quota_bytes: directory.quota(u.id),
            },
        })
        .collect();
    Ok(json(StatusCode::OK, &AdminUsersResponse { users }))
}

/// `POST /v1/admin/users/{user}/disable` (`disabled`) or `/enable`.
pub async fn set_disabled(
    shard: &Rc<Shard>,
    caller: &User,
    name: &str,
    disabled: bool,
) -> Result<Response<Body>, ApiError> {
    admin_only(caller, "disable or enable users")?;
    let user = user_named(shard, name)?;
    if disabled && user.id == caller.id {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "cannot_disable_self",
            "the admin cannot disable their own account",
        ));
    }
    shard
        .directory_op(DirectoryOp::SetDisabled {
            user: user.id,
            disabled,
        })
        .await?;
    Ok(json(
        StatusCode::OK,
        &DisableResponse {
            user: user.name,
            disabled,
        },
    ))
}
