//! Who may touch which namespace: a user reads and writes their root namespace and every
//! shared namespace mounted in it. Checked on the shard that took the request, against its
//! directory replica, before any work is sent elsewhere.

use holdall_engine::journal::state::{State, User};

use crate::shard::Shard;
use holdall_proto::api::NsId;
use hyper::StatusCode;

use crate::reply::ApiError;

/// The namespaces `user` can read and write: the root first, then the mounts.
pub fn namespaces_of(directory: &State, user: &User) -> Vec<NsId> {
    std::iter::once(user.root_ns)
        .chain(directory.mounts(user.id).iter().map(|(ns, _)| *ns))
        .collect()
}

/// 403 unless `ns` is one of `namespaces`. An unknown namespace gets the same answer as one
/// the caller may not see, so ids reveal nothing.
pub fn check(namespaces: &[NsId], ns: NsId) -> Result<(), ApiError> {
    if namespaces.contains(&ns) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("namespace {ns} is not one you can access"),
        ))
    }
}

/// 403 unless `user` can reach `ns`, by the directory replica of `shard`.
pub fn check_user(shard: &Shard, user: &User, ns: NsId) -> Result<(), ApiError> {
    check(&namespaces_of(&shard.directory(), user), ns)
}
