//! `POST /v1/rewind`: a folder put back as it was at an earlier JID or time, in one
//! all-or-nothing group commit.
//!
//! On the namespace's owner, every path under the folder whose latest row is newer than the
//! point is looked up in its history: a path that held a file or folder then gets that
//! version back, a path created since gets a deletion, one that was deleted then and is
//! deleted now is left alone. Today's versions stay in history, so a rewind can itself be
//! undone by another. Either every change is written or, if the folder changed meanwhile,
//! none (409).

use std::collections::HashSet;
use std::rc::Rc;

use holdall_engine::journal::record::{Author, Row};
use holdall_engine::journal::state::{Commit, CommitOutcome, User};
use holdall_proto::api::{EntryKind, Jid, NsId, RewindChange, RewindRequest, RewindResponse};
use holdall_proto::{validate_path, BlockHash, FileVersion};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::body::Body;
use crate::handlers::access;
use crate::handlers::commit::wake_namespace;
use crate::handlers::history::{bad_path, blocks_stored, is_under};
use crate::handlers::quota::over_quota;
use crate::reply::{json, ApiError};
use crate::request::{author_of, read_json};
use crate::shard::{shard_of_namespace, Shard};

/// Largest body: a path and a few numbers.
const BODY_BYTES_MAX: usize = 16 << 10;
/// Most paths one rewind changes: its rows are written as one burst.
const CHANGES_MAX: usize = 100_000;

/// The moment a rewind goes back to.
#[derive(Debug, Clone, Copy)]
enum Point {
    /// Right after this JID of the namespace.
    Jid(Jid),
    /// This time, ms since the epoch.
    Ms(u64),
}

impl Point {
    /// Whether `row` was written by then. A row without a commit time (format version 1)
    /// predates every row that has one, so it counts as written by any time.
    fn includes(self, row: &Row) -> bool {
        match self {
            Point::Jid(jid) => row.jid <= jid,
            Point::Ms(ms) => row.committed_ms <= ms,
        }
    }
}

/// `POST /v1/rewind`.
pub async fn rewind(
    shard: &Rc<Shard>,
    user: &User,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let author = author_of(user, &req);
    let body: RewindRequest = read_json(req, BODY_BYTES_MAX).await?;
    access::check_user(shard, user, body.ns)?;
    if !body.path.is_empty() {
        validate_path(&body.path).map_err(bad_path)?;
    }
    let point = match (body.to_jid, body.to_ms) {
        (Some(jid), None) => Point::Jid(jid),
        (None, Some(ms)) => Point::Ms(ms),
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_point",
                "give exactly one of to_jid and to_ms",
            ))
        }
    };
    let (ns, folder, dry_run) = (body.ns, body.path, body.dry_run);
    let answer = shard
        .submit_to(shard_of_namespace(ns, shard.shards()), move |s| {
            let s = s.clone();
            async move {
                let _gate = s.enter_gate();
                rewind_here(&s, (ns, &folder), point, author, dry_run).await
            }
        })
        .await??;
    Ok(json(StatusCode::OK, &answer))
}

/// On the owner: works out the commits and writes them as one (or, for a dry run, only
/// lists them).
async fn rewind_here(
    shard: &Rc<Shard>,
    (ns, folder): (NsId, &str),
    point: Point,
    author: Author,
    dry_run: bool,
) -> Result<RewindResponse, ApiError> {
    let cutoff_ms = shard.history_cutoff_ms();
    if let Point::Ms(ms) = point {
        if ms < cutoff_ms {
            return Err(gone("that time is before the history retention"));
        }
    }
    let commits = plan(shard, ns, folder, point, author, cutoff_ms).await?;
    let files: Vec<BlockHash> = commits
        .iter()
        .flat_map(|c| c.version.blocklist.iter().copied())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if !blocks_stored(shard, &files).await? {
        return Err(gone(
            "a block of a version it needs was found damaged and not uploaded again",
        ));
    }
    let deleted = commits
        .iter()
        .filter(|c| c.version.kind == EntryKind::Deleted)
        .count() as u64;
    let restored = commits.len() as u64 - deleted;
    let changes = match dry_run {
        true => Some(commits.into_iter().map(change_of).collect()),
        false => {
            check_quota(shard, &commits).await?;
            write(shard, ns, commits).await?;
            None
        }
    };
    let jid = shard
        .journal()
        .state()
        .namespace(ns)
        .map_or(0, |n| n.last_jid());
    Ok(RewindResponse {
        status: "ok".into(),
        jid,
        restored,
        deleted,
        changes,
    })
}

fn change_of(c: Commit) -> RewindChange {
    RewindChange {
        path: c.path,
        kind: c.version.kind,
        size: c.version.size,
    }
}

/// Refuses the whole rewind if it would take the namespace's owner past quota, counting
/// its deletions first (the rewind is written as one, so only its net growth matters).
async fn check_quota(shard: &Rc<Shard>, commits: &[Commit]) -> Result<(), ApiError> {
    let mut ordered: Vec<(usize, Commit)> = commits.iter().cloned().enumerate().collect();
    ordered.sort_by_key(|(_, c)| c.version.kind != EntryKind::Deleted);
    match over_quota(shard, &ordered).await?.into_iter().next() {
        Some((_, refusal)) => Err(refusal),
        None => Ok(()),
    }
}

/// Writes the rewind's commits as one batch, then wakes the namespace's longpolls.
async fn write(shard: &Shard, ns: NsId, commits: Vec<Commit>) -> Result<(), ApiError> {
    if commits.is_empty() {
        return Ok(());
    }
    let paths: Vec<String> = commits.iter().map(|c| c.path.clone()).collect();
    let outcomes = shard
        .journal()
        .commit_all_or_nothing(commits)
        .await
        .map_err(ApiError::from)?;
    refused(&outcomes)?;
    for path in &paths {
        shard.prefetch_mut().remove(ns, path);
    }
    wake_namespace(shard, ns);
    Ok(())
}

/// The commit for every path under `folder` that differs from what it was at `point`.
async fn plan(
    shard: &Shard,
    ns: NsId,
    folder: &str,
    point: Point,
    author: Author,
    cutoff_ms: u64,
) -> Result<Vec<Commit>, ApiError> {
    let changed: Vec<(String, Jid, FileVersion)> = {
        let state = shard.journal().state();
        let n = state
            .namespace(ns)
            .ok_or_else(|| ApiError::not_on_shard(ns))?;
        n.latest_rows()
            .filter(|r| folder.is_empty() || r.path == folder || is_under(&r.path, folder))
            .filter(|r| !point.includes(r))
            .take(CHANGES_MAX + 1)
            .map(|r| (r.path.clone(), r.jid, r.version.clone()))
            .collect()
    };
    if changed.len() > CHANGES_MAX {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_changes",
            format!("more than {CHANGES_MAX} paths changed since then; rewind smaller folders"),
        ));
    }
    let mut commits = Vec::new();
    for (path, latest_jid, now) in changed {
        let then = version_at(shard, ns, &path, point, cutoff_ms)
            .await?
            .unwrap_or_else(FileVersion::deleted);
        let unchanged = match (then.kind, now.kind) {
            (EntryKind::Deleted, EntryKind::Deleted) => true,
            _ => then.same_content(&now),
        };
        if !unchanged {
            commits.push(Commit {
                ns,
                path,
                version: then,
                parent_jid: Some(latest_jid),
                author: author.clone(),
            });
        }
    }
    commits.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    Ok(commits)
}

/// What `path` held at `point`: `None` if it did not exist yet.
async fn version_at(
    shard: &Shard,
    ns: NsId,
    path: &str,
    point: Point,
    cutoff_ms: u64,
) -> Result<Option<FileVersion>, ApiError> {
    let mut walk = shard.journal().retained_history(ns, path, cutoff_ms);
    let mut oldest_ms = None;
    while let Some(row) = walk.next().await? {
        if point.includes(&row) {
            return Ok(Some(row.version));
        }
        oldest_ms = Some(row.committed_ms);
    }
    // Created after the point, unless the chain was cut or starts at an old-format row
    // (whose predecessors were never recorded).
    if walk.reached_first() && oldest_ms.is_some_and(|ms| ms != 0) {
        return Ok(None);
    }
    Err(gone(&format!(
        "what {path:?} held then is outside the history retention"
    )))
}

fn gone(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "version_gone",
        format!("cannot rewind: {why}"),
    )
}

/// The error for a batch the journal refused, if it was.
fn refused(outcomes: &[CommitOutcome]) -> Result<(), ApiError> {
    for o in outcomes {
        match o {
            CommitOutcome::Ok { .. } | CommitOutcome::NotWritten => {}
            CommitOutcome::Conflict { .. } => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    "the folder changed while the rewind ran; nothing was changed",
                ))
            }
            CommitOutcome::Invalid(e) => {
                return Err(ApiError::internal(format!(
                    "a rewind commit was invalid: {e}"
                )))
            }
        }
    }
    Ok(())
}
