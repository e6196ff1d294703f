//! `POST /v1/list` and `POST /v1/longpoll`: what changed in the caller's namespaces since
//! their cursors, and waiting for the next change without holding a thread.
//!
//! Each namespace is asked on its owner shard. A list answer carries the latest rows after
//! the cursor (JID order) and the live prefetch entries of other users' uploads newer than
//! the caller's prefetch cursor. A longpoll parks a waiter on every watched namespace's owner
//! and returns when any of them is woken by a commit or a new prefetch entry.

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::Either;
use holdall_engine::journal::state::User;
use holdall_engine::prefetch::Uploader;
use holdall_proto::api::{
    Cursors, Jid, ListEntry, ListRequest, ListResponse, LongpollRequest, LongpollResponse, NsId,
    PrefetchEntry,
};
use holdall_proto::limits::{
    LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, LONGPOLL_TIMEOUT_S_DEFAULT, LONGPOLL_TIMEOUT_S_MAX,
};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::body::Body;
use crate::reply::{json, ApiError};
use crate::request::{read_json, uploader_of};
use crate::shard::{shard_of_namespace, Seen, Shard};

/// Largest list or longpoll body: cursors of thousands of namespaces.
const CURSORS_BODY_BYTES_MAX: usize = 1 << 20;
/// Most namespaces one list or longpoll may name.
const CURSORS_MAX: usize = 10_000;
/// Most prefetch entries of one namespace in one list answer.
const PREFETCH_LISTED_MAX: usize = 1000;
/// How often a parked longpoll looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(250);

/// What one namespace contributes to a list answer.
struct Part {
    entries: Vec<ListEntry>,
    cursor: Jid,
    has_more: bool,
    prefetch: Vec<PrefetchEntry>,
    prefetch_cursor: u64,
}

fn check_cursors(shard: &Shard, user: &User, cursors: &Cursors) -> Result<(), ApiError> {
    if cursors.is_empty() || cursors.len() > CURSORS_MAX {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_cursors",
            format!("name 1 to {CURSORS_MAX} namespaces in cursors"),
        ));
    }
    let namespaces = crate::handlers::access::namespaces_of(&shard.directory(), user);
    cursors
        .keys()
        .try_for_each(|ns| crate::handlers::access::check(&namespaces, *ns))
}

/// `POST /v1/list`.
pub async fn list(
    shard: &Rc<Shard>,
    user: &User,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let viewer = uploader_of(user, &req)?;
    let body: ListRequest = read_json(req, CURSORS_BODY_BYTES_MAX).await?;
    check_cursors(shard, user, &body.cursors)?;
    let mut remaining = body.limit.unwrap_or(LIST_LIMIT_DEFAULT).min(LIST_LIMIT_MAX) as usize;
    let mut answer = ListResponse {
        entries: Vec::new(),
        prefetch: Vec::new(),
        cursors: Cursors::new(),
        prefetch_cursors: Cursors::new(),
        has_more: false,
    };
    // Namespaces in id order, each filling what the earlier ones left of the limit.
    for (ns, cursor) in body.cursors {
        let prefetch_cursor = body.prefetch_cursors.get(&ns).copied().unwrap_or(0);
        let part = shard
            .submit_to(shard_of_namespace(ns, shard.shards()), move |s| {
                std::future::ready(list_here(s, ns, cursor, remaining, prefetch_cursor, viewer))
            })
            .await??;
        remaining -= part.entries.len();
        answer.entries.extend(part.entries);
        answer.prefetch.extend(part.prefetch);
        answer.cursors.insert(ns, part.cursor);
        answer.prefetch_cursors.insert(ns, part.prefetch_cursor);
        answer.has_more |= part.has_more;
    }
    Ok(json(StatusCode::OK, &answer))
}

fn list_here(
    shard: &Shard,
    ns: NsId,
    cursor: Jid,
    limit: usize,
    prefetch_cursor: u64,
    viewer: Uploader,
) -> Result<Part, ApiError> {
    let state = shard.journal().state();
    let page = state
        .list(ns, cursor, limit)
        .ok_or_else(|| ApiError::not_on_shard(ns))?;
    let entries = page
        .rows
        .iter()
        .map(|r| ListEntry {
            ns,
            jid: r.jid,
            path: r.path.clone(),
            version: r.version.clone(),
        })
        .collect();
    let mut table = shard.prefetch_mut();
    let mut live: Vec<(u64, PrefetchEntry)> = table
        .entries_of(ns, Instant::now())
        .filter(|(_, e)| e.uploader.is_other_than(&viewer) && e.version > prefetch_cursor)
        .map(|(path, e)| {
            let entry = PrefetchEntry {
                ns,
                path: path.to_owned(),
                blocklist: e.blocklist.clone(),
                size: e.size,
            };
            (e.version, entry)
        })
        .collect();
    live.sort_unstable_by_key(|(version, _)| *version);
    let more_prefetch = live.len() > PREFETCH_LISTED_MAX;
    live.truncate(PREFETCH_LISTED_MAX);
    let prefetch_cursor = live.last().map_or(prefetch_cursor, |(v, _)| *v);
    Ok(Part {
        entries,
        cursor: page.cursor,
        has_more: page.has_more || more_prefetch,
        prefetch: live.into_iter().map(|(_, e)| e).collect(),
        prefetch_cursor,
    })
}

/// `POST /v1/longpoll`.
pub async fn longpoll(
    shard: &Rc<Shard>,
    user: &User,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let viewer = uploader_of(user, &req)?;
    let token = crate::auth::bearer_sha256(&req)?;
    let body: LongpollRequest = read_json(req, CURSORS_BODY_BYTES_MAX).await?;
    check_cursors(shard, user, &body.cursors)?;
    let timeout_s = body
        .timeout_s
        .unwrap_or(LONGPOLL_TIMEOUT_S_DEFAULT)
        .min(LONGPOLL_TIMEOUT_S_MAX);
    let parks = body.cursors.iter().map(|(&ns, &jid)| {
        let seen = Seen {
            viewer,
            jid,
            prefetch: body.prefetch_cursors.get(&ns).copied().unwrap_or(0),
        };
        shard.submit_to(shard_of_namespace(ns, shard.shards()), move |s| {
            std::future::ready(park_here(s, ns, seen))
        })
    });
    let mut waits = Vec::new();
    for parked in futures::future::join_all(parks).await {
        match parked?? {
            Some(rx) => waits.push(rx),
            None => return Ok(json(StatusCode::OK, &LongpollResponse { changes: true })),
        }
    }
    shard.metrics().longpoll_parked(true);
    // A token revoked (or its user disabled) while parked ends the wait with 401.
    let still_valid = || crate::auth::user_of_token(shard, &token).map(|_| ());
    let changes = wait_any(
        shard,
        waits,
        Duration::from_secs(timeout_s.into()),
        &still_valid,
    )
    .await;
    shard.metrics().longpoll_parked(false);
    Ok(json(
        StatusCode::OK,
        &LongpollResponse { changes: changes? },
    ))
}

/// Parks a waiter on `ns` unless it has changed for `seen` already (`None`).
pub(crate) fn park_here(
    shard: &Shard,
    ns: NsId,
    seen: Seen,
) -> Result<Option<oneshot::Receiver<()>>, ApiError> {
    let last_jid = shard
        .journal()
        .state()
        .namespace(ns)
        .ok_or_else(|| ApiError::not_on_shard(ns))?
        .last_jid();
    let new_prefetch = shard
        .prefetch_mut()
        .entries_of(ns, Instant::now())
        .any(|(_, e)| e.uploader.is_other_than(&seen.viewer) && e.version > seen.prefetch);
    if last_jid > seen.jid || new_prefetch {
        return Ok(None);
    }
    shard
        .longpolls_mut()
        .park(ns, seen)
        .map(Some)
        .map_err(|_| ApiError::unavailable("too many longpolls are parked; retry later"))
}

/// Whether any waiter is woken within `timeout`; false at once when the server stops.
pub(crate) async fn wait_any(
    shard: &Shard,
    waits: Vec<oneshot::Receiver<()>>,
    timeout: Duration,
    still_valid: &dyn Fn() -> Result<(), ApiError>,
) -> Result<bool, ApiError> {
    let deadline = Instant::now() + timeout;
    let mut woken = futures::future::select_all(waits);
    loop {
        still_valid()?;
        let now = Instant::now();
        if now >= deadline || shard.stopping() {
            return Ok(false);
        }
        let slice = glommio::timer::sleep((deadline - now).min(STOP_POLL));
        match futures::future::select(woken, Box::pin(slice)).await {
            // A waiter dropped unsent (its shard stopping) also ends the wait: listing again
            // is always safe.
            Either::Left(_) => return Ok(true),
            Either::Right((_, pending)) => woken = pending,
        }
    }
}
