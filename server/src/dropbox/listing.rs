//! `files/list_folder`, `list_folder/continue`, `list_folder/get_latest_cursor` and
//! `list_folder/longpoll`.
//!
//! A listing covers parts: the folder's namespace with the folder in it and, when
//! recursive from the root namespace, each mount inside the folder whole. Each part is read
//! in JID order after the cursor's JID on its namespace's owner, at most
//! [`SCAN_ROWS_MAX`] rows a call, so a page's work is bounded however little of the
//! namespace is in the folder. The first listing shows what is there (deletions only with
//! `include_deleted`); after it, the cursor lists changes, deletions included.

use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use holdall_engine::journal::record::Row;
use holdall_engine::journal::state::State;
use holdall_engine::prefetch::Uploader;
use holdall_proto::api::{EntryKind, Jid, NsId};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::call::{rpc_arg, Call};
use super::cursor::{Cursor, Part};
use super::error::DbxError;
use super::owner::{lookup_at, on_owner};
use super::tree::{is_under, Node, Place, Tree};
use super::{json_ok, metadata};
use crate::body::Body;
use crate::reply::ApiError;
use crate::shard::{shard_of_namespace, Seen, Shard};

/// Rows of one part read in one call, at most.
const SCAN_ROWS_MAX: usize = 10_000;
/// Entries in one page unless the caller asks for fewer (Dropbox's bound).
const PAGE_ENTRIES_MAX: usize = 2000;
/// A longpoll's wait unless it asks otherwise, and its bounds, in seconds.
const LONGPOLL_TIMEOUT_S: (u64, u64, u64) = (30, 30, 480);

/// The exact path of the folder `place` names; `not_folder` for a file.
pub async fn resolve_folder(call: &Call<'_>, place: &Place) -> Result<String, DbxError> {
    match lookup_at(call, place).await? {
        Some(Node::Folder(path, _)) => Ok(path),
        Some(Node::File(_)) => Err(DbxError::tags(&["path", "not_folder"])),
        None => Err(DbxError::not_found("path")),
    }
}

/// The (namespace, folder) parts a listing of `folder` in `ns` covers.
pub fn scope(tree: &Tree, ns: NsId, folder: &str, recursive: bool) -> Vec<(NsId, String)> {
    let mut parts = vec![(ns, folder.to_owned())];
    if recursive && ns == tree.root {
        parts.extend(
            tree.mounts_under(folder)
                .into_iter()
                .map(|(m, _)| (m, String::new())),
        );
    }
    parts
}

#[derive(Deserialize)]
struct ListArg {
    path: String,
    #[serde(default)]
    recursive: bool,
    #[serde(default)]
    include_deleted: bool,
    #[serde(default)]
    limit: Option<usize>,
}

/// A new cursor for `arg`'s folder, at the start (`latest` false) or at the namespaces'
/// last JIDs.
async fn new_cursor(call: &Call<'_>, arg: &ListArg, latest: bool) -> Result<Cursor, DbxError> {
    let place = call.tree.place(&arg.path)?;
    let folder = resolve_folder(call, &place).await?;
    let mut parts = Vec::new();
    for (ns, folder) in scope(&call.tree, place.ns, &folder, arg.recursive) {
        let jid = match latest {
            true => {
                on_owner(call, ns, move |s| {
                    s.namespace(ns).map_or(0, |n| n.last_jid())
                })
                .await?
            }
            false => 0,
        };
        parts.push(Part { ns, folder, jid });
    }
    Ok(Cursor {
        user: call.user.id,
        token: hex::encode(call.token),
        recursive: arg.recursive,
        include_deleted: arg.include_deleted,
        first: !latest,
        mounts_listed: latest,
        parts,
    })
}

/// `files/list_folder`.
pub async fn list_folder(
    call: &Call<'_>,
    req: Request<Incoming>,
) -> Result<Response<Body>, DbxError> {
    let arg: ListArg = call.rpc_arg(req).await?;
    let limit = arg
        .limit
        .unwrap_or(PAGE_ENTRIES_MAX)
        .clamp(1, PAGE_ENTRIES_MAX);
    let mut cursor = new_cursor(call, &arg, false).await?;
    answer_page(call, &mut cursor, limit).await
}

/// `files/list_folder/get_latest_cursor`.
pub async fn latest_cursor(
    call: &Call<'_>,
    req: Request<Incoming>,
) -> Result<Response<Body>, DbxError> {
    let arg: ListArg = call.rpc_arg(req).await?;
    let cursor = new_cursor(call, &arg, true).await?;
    Ok(json_ok(
        &json!({ "cursor": cursor.seal(call.shard.cursor_key())? }),
    ))
}

#[derive(Deserialize)]
struct ContinueArg {
    cursor: String,
}

/// `files/list_folder/continue`.
pub async fn list_continue(
    call: &Call<'_>,
    req: Request<Incoming>,
) -> Result<Response<Body>, DbxError> {
    let arg: ContinueArg = call.rpc_arg(req).await?;
    let namespaces = call.tree.namespaces();
    // A cursor of another user, or covering a namespace no longer in the caller's tree.
    let mut cursor = Cursor::open(call.shard.cursor_key(), &arg.cursor)
        .filter(|c| c.user == call.user.id)
        .filter(|c| c.parts.iter().all(|p| namespaces.contains(&p.ns)))
        .ok_or_else(|| DbxError::tags(&["reset"]))?;
    answer_page(call, &mut cursor, PAGE_ENTRIES_MAX).await
}

async fn answer_page(
    call: &Call<'_>,
    cursor: &mut Cursor,
    limit: usize,
) -> Result<Response<Body>, DbxError> {
    let (entries, has_more) = page(call, cursor, limit).await?;
    Ok(json_ok(&json!({
        "entries": entries,
        "cursor": cursor.seal(call.shard.cursor_key())?,
        "has_more": has_more,
    })))
}

/// The next page of `cursor`, which moves past it; whether more remain.
async fn page(
    call: &Call<'_>,
    cursor: &mut Cursor,
    limit: usize,
) -> Result<(Vec<Value>, bool), DbxError> {
    let mut entries = Vec::new();
    if cursor.first && !cursor.mounts_listed {
        entries.extend(mount_folders(call, cursor).await?);
        cursor.mounts_listed = true;
    }
    let mut has_more = false;
    let (recursive, skip_deleted) = (cursor.recursive, cursor.first && !cursor.include_deleted);
    for part in cursor.parts.iter_mut() {
        let room = limit.saturating_sub(entries.len());
        if room == 0 {
            has_more = true;
            break;
        }
        let (ns, folder, after) = (part.ns, part.folder.clone(), part.jid);
        let (rows, jid, more) = on_owner(call, ns, move |s| {
            scan(s, ns, after, room, |r| {
                wanted(r, &folder, recursive)
                    && !(skip_deleted && r.version.kind == EntryKind::Deleted)
            })
        })
        .await?;
        part.jid = jid;
        has_more |= more;
        entries.extend(rows.iter().map(|r| metadata::of_row(&call.tree, r)));
    }
    if !has_more {
        cursor.first = false;
    }
    Ok((entries, has_more))
}

/// Folder entries a first listing shows that no row of the root namespace holds: each
/// mount inside its folder, and the folders on the way to one (only those directly inside
/// the folder, unless recursive).
async fn mount_folders(call: &Call<'_>, cursor: &Cursor) -> Result<Vec<Value>, DbxError> {
    let root = call.tree.root;
    let Some(first) = cursor.parts.first().filter(|p| p.ns == root) else {
        return Ok(Vec::new());
    };
    let folder = first.folder.clone();
    let skip = if folder.is_empty() {
        0
    } else {
        folder.len() + 1
    };
    let mut shown = Vec::new();
    let mut between = BTreeSet::new();
    for (ns, at) in call.tree.mounts_under(&folder) {
        let segments: Vec<&str> = at.get(skip..).unwrap_or_default().split('/').collect();
        let deepest = if cursor.recursive {
            segments.len() - 1
        } else {
            1.min(segments.len() - 1)
        };
        for k in 1..=deepest {
            let inner = segments[..k].join("/");
            between.insert(if folder.is_empty() {
                inner
            } else {
                format!("{folder}/{inner}")
            });
        }
        if cursor.recursive || segments.len() == 1 {
            shown.push(ns);
        }
    }
    let implied: Vec<String> = on_owner(call, root, move |s| {
        between
            .into_iter()
            .filter(|p| {
                s.latest(root, p)
                    .is_none_or(|r| r.version.kind == EntryKind::Deleted)
            })
            .collect()
    })
    .await?;
    let tree = &call.tree;
    Ok(implied
        .iter()
        .map(|p| metadata::folder(tree, root, p))
        .chain(shown.into_iter().map(|ns| metadata::folder(tree, ns, "")))
        .collect())
}

/// Whether `row` belongs in a listing of `folder`.
fn wanted(row: &Row, folder: &str, recursive: bool) -> bool {
    if !is_under(&row.path, folder) {
        return false;
    }
    let rest = if folder.is_empty() {
        &row.path[..]
    } else {
        &row.path[folder.len() + 1..]
    };
    recursive || !rest.contains('/')
}

/// Up to `room` rows of `ns` after JID `after` that `keep` takes, reading at most
/// [`SCAN_ROWS_MAX`]; the JID read up to and whether rows remain.
fn scan(
    state: &State,
    ns: NsId,
    after: Jid,
    room: usize,
    keep: impl Fn(&Row) -> bool,
) -> (Vec<Row>, Jid, bool) {
    let Some(page) = state.list(ns, after, SCAN_ROWS_MAX) else {
        return (Vec::new(), after, false);
    };
    let mut rows = Vec::new();
    let mut jid = after;
    for row in &page.rows {
        if rows.len() == room {
            return (rows, jid, true);
        }
        jid = row.jid;
        if keep(row) {
            rows.push((*row).clone());
        }
    }
    (rows, page.cursor.max(jid), page.has_more)
}

#[derive(Deserialize)]
struct LongpollArg {
    cursor: String,
    #[serde(default)]
    timeout: Option<u64>,
}

/// `files/list_folder/longpoll`: no token; the cursor's own token must still be good.
/// Answers `changes: true` as soon as a row the cursor would list is committed.
pub async fn longpoll(
    shard: &Rc<Shard>,
    route: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, DbxError> {
    let arg: LongpollArg = rpc_arg(route, req).await?;
    let (default_s, min_s, max_s) = LONGPOLL_TIMEOUT_S;
    let timeout_s = arg.timeout.unwrap_or(default_s);
    if !(min_s..=max_s).contains(&timeout_s) {
        return Err(super::call::bad_input(
            route,
            format!("timeout must be {min_s} to {max_s} seconds"),
        ));
    }
    let cursor =
        Cursor::open(shard.cursor_key(), &arg.cursor).ok_or_else(|| DbxError::tags(&["reset"]))?;
    let token: [u8; 32] = hex::decode(&cursor.token)
        .ok()
        .and_then(|t| t.try_into().ok())
        .ok_or_else(|| DbxError::tags(&["reset"]))?;
    let still_valid = || -> Result<(), ApiError> {
        let user = crate::auth::user_of_token(shard, &token)?;
        match user.id == cursor.user {
            true => Ok(()),
            false => Err(ApiError::new(
                hyper::StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the cursor's token is gone",
            )),
        }
    };
    still_valid()?;
    let user = crate::auth::user_of_token(shard, &token)?;
    let namespaces = Tree::of(&shard.directory(), &user).namespaces();
    if !cursor.parts.iter().all(|p| namespaces.contains(&p.ns)) {
        return Err(DbxError::tags(&["reset"]));
    }
    if let Err(wait) = shard.rate_limiter().admit(&token, Instant::now()) {
        return Err(ApiError::too_many_requests(wait).into());
    }
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    let mut seen: Vec<Jid> = cursor.parts.iter().map(|p| p.jid).collect();
    loop {
        let mut waits = Vec::new();
        for (part, jid) in cursor.parts.iter().zip(seen.iter_mut()) {
            match watch(shard, part, *jid, cursor.user, cursor.recursive).await? {
                Watch::Changed => return Ok(json_ok(&json!({ "changes": true }))),
                Watch::Parked(rx, last) => {
                    *jid = last;
                    waits.push(rx);
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero()
            || !crate::handlers::list::wait_any(shard, waits, left, &still_valid).await?
        {
            return Ok(json_ok(&json!({ "changes": false })));
        }
    }
}

/// What one part of a longpoll found.
enum Watch {
    /// A row the cursor would list is there.
    Changed,
    /// Nothing yet: woken by the namespace's next commit; the JID seen so far.
    Parked(oneshot::Receiver<()>, Jid),
}

/// On the part's owner, with no await between the look and the park (so no commit falls
/// between them): whether rows after `after` concern the part, else a parked waiter.
async fn watch(
    shard: &Rc<Shard>,
    part: &Part,
    after: Jid,
    user: u64,
    recursive: bool,
) -> Result<Watch, DbxError> {
    let (ns, folder) = (part.ns, part.folder.clone());
    let owner = shard_of_namespace(ns, shard.shards());
    let watched = shard
        .submit_to(owner, move |s| {
            std::future::ready((|| {
                let (rows, last, more) = {
                    let state = s.journal().state();
                    scan(&state, ns, after, 1, |r| wanted(r, &folder, recursive))
                };
                if !rows.is_empty() || more {
                    return Ok(Watch::Changed);
                }
                // Prefetch entries never wake it: only committed rows are listed.
                let viewer = Uploader {
                    user,
                    device: u64::MAX,
                };
                let seen = Seen {
                    viewer,
                    jid: last,
                    prefetch: u64::MAX,
                };
                let rx = s.longpolls_mut().park(ns, seen).map_err(|_| {
                    ApiError::unavailable("too many longpolls are parked; retry later")
                })?;
                Ok::<_, ApiError>(Watch::Parked(rx, last))
            })())
        })
        .await??;
    Ok(watched)
}
