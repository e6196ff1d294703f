//! `files/list_revisions` and `files/restore`, on the version history the journal keeps
//! (within the server's history retention). A restore is an ordinary commit of the old
//! version on top of the latest row, as `/v1/restore` does it.

use holdall_proto::api::{EntryKind, RestoreRequest};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::call::Call;
use super::error::DbxError;
use super::owner::{on_owner, row_at};
use super::tree::{exact_path, Place};
use super::{json_ok, metadata, names};
use crate::body::Body;
use crate::handlers::history::{restore_version, versions_here, PAGE_MAX};
use crate::shard::shard_of_namespace;

/// Revisions listed unless fewer are asked for (Dropbox's default), and the most.
const REVISIONS: (usize, usize) = (10, 100);

#[derive(Deserialize)]
struct RevisionsArg {
    path: String,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    before_rev: Option<String>,
}

/// The exact path of the file `place` names, deleted or not.
async fn exact_file_path(call: &Call<'_>, place: &Place, outer: &str) -> Result<String, DbxError> {
    let (ns, path) = (place.ns, place.path.clone());
    on_owner(call, ns, move |s| exact_path(s, ns, &path))
        .await?
        .ok_or_else(|| DbxError::not_found(outer))
}

/// `files/list_revisions`: the file's versions, newest first, older than `before_rev`.
pub async fn list_revisions(
    call: &Call<'_>,
    req: Request<Incoming>,
) -> Result<Response<Body>, DbxError> {
    let arg: RevisionsArg = call.rpc_arg(req).await?;
    let (default, max) = REVISIONS;
    let limit = arg.limit.unwrap_or(default).clamp(1, max);
    let place = call.tree.place(&arg.path)?;
    let ns = place.ns;
    let before = match &arg.before_rev {
        Some(rev) => Some(
            names::parse_rev(rev)
                .filter(|(n, _)| *n == ns)
                .ok_or_else(|| call.bad_input("before_rev: not a revision of this path"))?
                .1,
        ),
        None => None,
    };
    let path = exact_file_path(call, &place, "path").await?;
    let latest = {
        let p = path.clone();
        on_owner(call, ns, move |s| s.latest(ns, &p).cloned())
            .await?
            .ok_or_else(|| DbxError::not_found("path"))?
    };
    if latest.version.kind == EntryKind::Dir {
        return Err(DbxError::tags(&["path", "not_file"]));
    }
    let (rows, walk_more) = call
        .shard
        .submit_to(shard_of_namespace(ns, call.shard.shards()), move |s| {
            let s = s.clone();
            async move { versions_here(&s, ns, &path, before, PAGE_MAX as usize).await }
        })
        .await??;
    let versions: Vec<_> = rows
        .iter()
        .filter(|r| r.version.kind == EntryKind::File)
        .collect();
    let has_more = walk_more || versions.len() > limit;
    let entries: Vec<_> = versions
        .iter()
        .take(limit)
        .map(|r| metadata::file(&call.tree, r))
        .collect();
    let deleted = latest.version.kind == EntryKind::Deleted;
    let mut answer = json!({ "is_deleted": deleted, "entries": entries, "has_more": has_more });
    if deleted {
        answer["server_deleted"] = json!(names::timestamp(latest.committed_ms as i64));
    }
    Ok(json_ok(&answer))
}

#[derive(Deserialize)]
struct RestoreArg {
    path: String,
    rev: String,
}

/// `files/restore`.
pub async fn restore(call: &Call<'_>, req: Request<Incoming>) -> Result<Response<Body>, DbxError> {
    let arg: RestoreArg = call.rpc_arg(req).await?;
    let place = call.tree.place(&arg.path)?;
    let (ns, jid) = names::parse_rev(&arg.rev)
        .filter(|(ns, _)| *ns == place.ns)
        .ok_or_else(|| DbxError::tags(&["invalid_revision"]))?;
    let path = exact_file_path(call, &place, "path_lookup").await?;
    let body = RestoreRequest {
        ns,
        path,
        jid,
        parent_jid: None,
    };
    let restored = restore_version(call.shard, body, call.author())
        .await
        .map_err(|e| match (e.status(), e.code()) {
            (StatusCode::NOT_FOUND, _) | (_, "not_a_file") => DbxError::tags(&["invalid_revision"]),
            (StatusCode::CONFLICT, _) => DbxError::tags(&["path_write", "conflict", "file"]),
            _ => DbxError::from(e),
        })?;
    let row = row_at(call, ns, restored).await?;
    Ok(json_ok(&metadata::file(&call.tree, &row)))
}
