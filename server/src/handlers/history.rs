//! `POST /v1/history`, `POST /v1/restore` and `POST /v1/deleted`: the versions the journal
//! already keeps, shown and brought back.
//!
//! Each request is checked like a list (the caller must reach the namespace), then walks
//! the path's history on the namespace's owner shard, within the server's history
//! retention. A restore is an ordinary commit of an old version's content on top of the
//! path's latest row, so running clients see it as a remote change.

use std::rc::Rc;

use holdall_engine::journal::record::Row;
use holdall_engine::journal::state::{Commit, State, User};
use holdall_proto::api::{
    DeletedEntry, DeletedRequest, DeletedResponse, EntryKind, HistoryRequest, HistoryResponse,
    HistoryVersion, Jid, NsId, RestoreRequest, RestoreResponse,
};
use holdall_proto::content_hash::content_hash_of_blocklist;
use holdall_proto::{validate_path, BlockHash};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::body::Body;
use crate::handlers::access;
use crate::handlers::commit::commit_ready;
use crate::handlers::quota::over_quota;
use crate::reply::{json, ApiError};
use crate::request::{author_of, read_json};
use crate::shard::{shard_of_block, shard_of_namespace, Shard};

/// Largest body of these requests: a path and a few numbers.
const BODY_BYTES_MAX: usize = 16 << 10;
/// Versions or entries in one answer unless the caller asks for fewer or more.
const PAGE_DEFAULT: u32 = 100;
/// Most versions or entries in one answer.
pub(crate) const PAGE_MAX: u32 = 1000;

pub(crate) fn bad_path(e: holdall_proto::PathError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_path", e.to_string())
}

/// `POST /v1/history`.
pub async fn history(
    shard: &Rc<Shard>,
    user: &User,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let body: HistoryRequest = read_json(req, BODY_BYTES_MAX).await?;
    access::check_user(shard, user, body.ns)?;
    validate_path(&body.path).map_err(bad_path)?;
    let limit = body.limit.unwrap_or(PAGE_DEFAULT).clamp(1, PAGE_MAX) as usize;
    let HistoryRequest {
        ns,
        path,
        before_jid,
        ..
    } = body;
    let (rows, has_more) = shard
        .submit_to(shard_of_namespace(ns, shard.shards()), move |s| {
            let s = s.clone();
            async move { versions_here(&s, ns, &path, before_jid, limit).await }
        })
        .await??;
    let directory = shard.directory();
    let versions = rows
        .into_iter()
        .map(|r| version_of(&directory, r))
        .collect();
    Ok(json(
        StatusCode::OK,
        &HistoryResponse { versions, has_more },
    ))
}

/// On the owner: up to `limit` retained versions older than `before_jid`, and whether more
/// remain.
pub(crate) async fn versions_here(
    shard: &Shard,
    ns: NsId,
    path: &str,
    before_jid: Option<Jid>,
    limit: usize,
) -> Result<(Vec<Row>, bool), ApiError> {
    let journal = shard.journal();
    if journal.state().namespace(ns).is_none() {
        return Err(ApiError::not_on_shard(ns));
    }
    let mut walk = journal.retained_history(ns, path, shard.history_cutoff_ms());
    let mut rows = Vec::new();
    while let Some(row) = walk.next().await? {
        if before_jid.is_some_and(|b| row.jid >= b) {
            continue;
        }
        if rows.len() == limit {
            return Ok((rows, true));
        }
        rows.push(row);
    }
    Ok((rows, false))
}

fn version_of(directory: &State, row: Row) -> HistoryVersion {
    let content_hash = (row.version.kind == EntryKind::File)
        .then(|| content_hash_of_blocklist(&row.version.blocklist));
    HistoryVersion {
        jid: row.jid,
        committed_ms: (row.committed_ms != 0).then_some(row.committed_ms),
        content_hash,
        user: directory.user(row.author.user).map(|u| u.name.clone()),
        device: (!row.author.device.is_empty()).then_some(row.author.device),
        version: row.version,
    }
}

/// `POST /v1/restore`.
pub async fn restore(
    shard: &Rc<Shard>,
    user: &User,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let author = author_of(user, &req);
    let body: RestoreRequest = read_json(req, BODY_BYTES_MAX).await?;
    access::check_user(shard, user, body.ns)?;
    validate_path(&body.path).map_err(bad_path)?;
    let jid = restore_version(shard, body, author).await?;
    let answer = RestoreResponse {
        status: "ok".into(),
        jid,
    };
    Ok(json(StatusCode::OK, &answer))
}

/// Puts version `body.jid` of the path back on top, on the namespace's owner; the JID of
/// the path's latest row after. The caller checked access and the path.
pub(crate) async fn restore_version(
    shard: &Rc<Shard>,
    body: RestoreRequest,
    author: holdall_engine::journal::record::Author,
) -> Result<Jid, ApiError> {
    shard
        .submit_to(shard_of_namespace(body.ns, shard.shards()), move |s| {
            let s = s.clone();
            async move {
                let _gate = s.enter_gate();
                let commit = restore_commit(&s, body, author).await?;
                match commit {
                    Restore::AlreadyLatest(jid) => Ok(jid),
                    Restore::Commit(c) => commit_restore(&s, c).await,
                }
            }
        })
        .await?
}

enum Restore {
    /// The version asked for is the path's latest row: nothing to write.
    AlreadyLatest(Jid),
    /// The commit that brings it back.
    Commit(Commit),
}

/// On the owner: the commit that puts version `jid` back on top of the path's latest row.
async fn restore_commit(
    shard: &Rc<Shard>,
    body: RestoreRequest,
    author: holdall_engine::journal::record::Author,
) -> Result<Restore, ApiError> {
    let journal = shard.journal();
    let latest = {
        let state = journal.state();
        state
            .namespace(body.ns)
            .ok_or_else(|| ApiError::not_on_shard(body.ns))?;
        state.latest(body.ns, &body.path).map(|r| r.jid)
    };
    if let Some(parent) = body.parent_jid {
        if latest != Some(parent) {
            return Err(conflict(latest));
        }
    }
    let mut walk = journal.retained_history(body.ns, &body.path, shard.history_cutoff_ms());
    let row = loop {
        match walk.next().await? {
            Some(r) if r.jid == body.jid => break r,
            Some(r) if r.jid > body.jid => continue,
            _ => return Err(version_gone(&body)),
        }
    };
    if row.version.kind != EntryKind::File {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "not_a_file",
            format!(
                "version {} of {:?} is a {:?}, not a file",
                row.jid, body.path, row.version.kind
            ),
        ));
    }
    if latest == Some(row.jid) {
        return Ok(Restore::AlreadyLatest(row.jid));
    }
    if !blocks_stored(shard, &row.version.blocklist).await? {
        return Err(version_gone(&body));
    }
    Ok(Restore::Commit(Commit {
        ns: body.ns,
        path: body.path,
        version: row.version,
        parent_jid: latest,
        author,
    }))
}

/// Commits a restore, answering a concurrent change to the path with 409.
async fn commit_restore(shard: &Rc<Shard>, c: Commit) -> Result<Jid, ApiError> {
    use holdall_proto::api::CommitResult;
    let ready = vec![(0, c)];
    if let Some((_, refusal)) = over_quota(shard, &ready).await?.pop() {
        return Err(refusal);
    }
    let answered = commit_ready(shard, ready).await?.pop();
    match answered {
        Some((_, Ok(CommitResult::Ok { jid }))) => Ok(jid),
        Some((_, Ok(CommitResult::Conflict { current_jid }))) => Err(conflict(current_jid)),
        Some((_, Err(e))) => Err(e),
        Some((_, Ok(_))) | None => Err(ApiError::internal("a restore went unanswered")),
    }
}

fn conflict(latest: Option<Jid>) -> ApiError {
    let now = latest.map_or("no row".to_owned(), |j| format!("JID {j}"));
    ApiError::new(
        StatusCode::CONFLICT,
        "conflict",
        format!("the path's latest row is {now}, not the parent_jid given"),
    )
}

fn version_gone(body: &RestoreRequest) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "version_gone",
        format!(
            "no version {} of {:?} within the history retention",
            body.jid, body.path
        ),
    )
}

/// Whether every block of `blocklist` is stored on its shard (a block dropped as damaged
/// makes the version unrestorable until someone uploads it again), claiming each: a
/// collection running now keeps them.
pub(crate) async fn blocks_stored(
    shard: &Rc<Shard>,
    blocklist: &[BlockHash],
) -> Result<bool, ApiError> {
    let mut by_owner: std::collections::BTreeMap<usize, Vec<BlockHash>> = Default::default();
    for h in blocklist {
        by_owner
            .entry(shard_of_block(h, shard.shards()))
            .or_default()
            .push(*h);
    }
    let asked = by_owner.into_iter().map(|(owner, hashes)| {
        shard.submit_to(owner, move |s| {
            std::future::ready(hashes.iter().all(|h| s.blocks().claim(h)))
        })
    });
    for stored in futures::future::join_all(asked).await {
        if !stored? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `POST /v1/deleted`.
pub async fn deleted(
    shard: &Rc<Shard>,
    user: &User,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let body: DeletedRequest = read_json(req, BODY_BYTES_MAX).await?;
    access::check_user(shard, user, body.ns)?;
    let folder = body.path.filter(|p| !p.is_empty());
    if let Some(f) = &folder {
        validate_path(f).map_err(bad_path)?;
    }
    if let Some(a) = &body.after_path {
        validate_path(a).map_err(bad_path)?;
    }
    let limit = body.limit.unwrap_or(PAGE_DEFAULT).clamp(1, PAGE_MAX) as usize;
    let (ns, after) = (body.ns, body.after_path);
    let answer = shard
        .submit_to(shard_of_namespace(ns, shard.shards()), move |s| {
            let s = s.clone();
            async move { deleted_here(&s, ns, folder, after, limit).await }
        })
        .await??;
    Ok(json(StatusCode::OK, &answer))
}

/// On the owner: deleted files under `folder` (after `after`, by path) whose last live
/// version is still within retention.
async fn deleted_here(
    shard: &Shard,
    ns: NsId,
    folder: Option<String>,
    after: Option<String>,
    limit: usize,
) -> Result<DeletedResponse, ApiError> {
    let cutoff = shard.history_cutoff_ms();
    let journal = shard.journal();
    let mut candidates: Vec<(String, Jid, u64)> = {
        let state = journal.state();
        let n = state
            .namespace(ns)
            .ok_or_else(|| ApiError::not_on_shard(ns))?;
        n.latest_rows()
            .filter(|r| r.version.kind == EntryKind::Deleted)
            .filter(|r| holdall_engine::journal::retained(Some(r.committed_ms), cutoff))
            .filter(|r| folder.as_ref().is_none_or(|f| is_under(&r.path, f)))
            .filter(|r| after.as_ref().is_none_or(|a| r.path.as_str() > a.as_str()))
            .map(|r| (r.path.clone(), r.jid, r.committed_ms))
            .collect()
    };
    candidates.sort_unstable();
    let mut entries = Vec::new();
    for (path, deleted_jid, deleted_ms) in candidates {
        let Some(last) = last_live_file(shard, ns, &path, cutoff).await? else {
            continue;
        };
        if entries.len() == limit {
            return Ok(DeletedResponse {
                entries,
                has_more: true,
            });
        }
        entries.push(DeletedEntry {
            path,
            deleted_jid,
            deleted_ms: (deleted_ms != 0).then_some(deleted_ms),
            last_jid: last.jid,
            size: last.version.size,
        });
    }
    Ok(DeletedResponse {
        entries,
        has_more: false,
    })
}

pub(crate) fn is_under(path: &str, folder: &str) -> bool {
    path.strip_prefix(folder)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// The newest retained version of `path` that is not a deletion, if it is a file.
async fn last_live_file(
    shard: &Shard,
    ns: NsId,
    path: &str,
    cutoff_ms: u64,
) -> Result<Option<Row>, ApiError> {
    let mut walk = shard.journal().retained_history(ns, path, cutoff_ms);
    while let Some(row) = walk.next().await? {
        match row.version.kind {
            EntryKind::Deleted => continue,
            EntryKind::File => return Ok(Some(row)),
            EntryKind::Dir => return Ok(None),
        }
    }
    Ok(None)
}
