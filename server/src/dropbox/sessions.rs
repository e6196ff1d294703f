//! `files/upload_session/start`, `append_v2`, `finish` and `finish_batch_v2`: a large file
//! in pieces. The session lives on the shard that started it (its id names that shard);
//! every request takes it there (so two requests on one session never interleave), cuts
//! its tail and the new bytes into blocks here, stores the whole blocks, and gives it back
//! with the blocks and the new tail. A failed request gives it back unchanged. A finish
//! stores the tail as the last block and commits the file; the session's blocks are
//! claimable by its owner however old, since the server took them from that user's bytes.

use std::collections::HashSet;
use std::time::Instant;

use bytes::Bytes;
use holdall_proto::BlockHash;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::call::{drained, header_arg, Call};
use super::content::{commit_file, CommitInfo, UPLOAD_BYTES_MAX};
use super::error::DbxError;
use super::write::{cut, hash_blocks, receive, store_blocks, Received};
use super::{json_ok, metadata};
use crate::body::Body;
use crate::upload_sessions::{Appended, SessionError};

/// Most sessions one `finish_batch_v2` commits (Dropbox's bound).
const FINISH_BATCH_MAX: usize = 1000;

#[derive(Debug, Clone, Deserialize)]
struct SessionCursor {
    session_id: String,
    offset: u64,
}

#[derive(Deserialize)]
struct StartArg {
    #[serde(default)]
    close: bool,
}

#[derive(Deserialize)]
struct AppendArg {
    cursor: SessionCursor,
    #[serde(default)]
    close: bool,
}

#[derive(Deserialize)]
struct FinishArg {
    cursor: SessionCursor,
    commit: CommitInfo,
}

/// A session's shard and its id there, from the id the client holds.
fn parse_session(id: &str) -> Option<(usize, u64)> {
    let (shard, local) = id.split_once('-')?;
    Some((
        usize::from_str_radix(shard, 16).ok()?,
        u64::from_str_radix(local, 16).ok()?,
    ))
}

/// A session error as an append reports it.
fn lookup_error(e: SessionError) -> DbxError {
    match e {
        SessionError::NotFound => DbxError::tags(&["not_found"]),
        SessionError::IncorrectOffset { correct } => {
            DbxError::nested(&["incorrect_offset"], json!({ "correct_offset": correct }))
        }
        SessionError::Closed => DbxError::tags(&["closed"]),
        SessionError::NotClosed => DbxError::tags(&["not_closed"]),
        SessionError::TooLarge { .. } => DbxError::tags(&["too_large"]),
        SessionError::Busy | SessionError::TooMany => DbxError::RateLimited(1),
    }
}

/// The same inside a finish's `lookup_failed`.
fn finish_lookup_error(e: SessionError) -> DbxError {
    match lookup_error(e) {
        DbxError::Route { summary, error } => DbxError::Route {
            summary: format!("lookup_failed/{summary}"),
            error: json!({ ".tag": "lookup_failed", "lookup_failed": error }),
        },
        other => other,
    }
}

/// `files/upload_session/start`.
pub async fn start(call: &Call<'_>, req: Request<Incoming>) -> Result<Response<Body>, DbxError> {
    let started = header_arg::<StartArg>(call.route, &req).and_then(|arg| {
        let mut sessions = call.shard.upload_sessions_mut();
        let id = sessions.start(call.user.id, fastrand::u64(..), Instant::now());
        Ok((arg, id.map_err(lookup_error)?))
    });
    let (arg, id) = match started {
        Ok(s) => s,
        Err(e) => return Err(drained(req, UPLOAD_BYTES_MAX, e).await),
    };
    let session_id = format!("{:x}-{id:016x}", call.shard.id());
    let cursor = SessionCursor {
        session_id: session_id.clone(),
        offset: 0,
    };
    if let Err(e) = add(call, &cursor, req, arg.close).await {
        end(call, &cursor).await?;
        return Err(e.map_err(lookup_error));
    }
    Ok(json_ok(&json!({ "session_id": session_id })))
}

/// `files/upload_session/append_v2`.
pub async fn append(call: &Call<'_>, req: Request<Incoming>) -> Result<Response<Body>, DbxError> {
    let arg: AppendArg = match header_arg(call.route, &req) {
        Ok(arg) => arg,
        Err(e) => return Err(drained(req, UPLOAD_BYTES_MAX, e).await),
    };
    add(call, &arg.cursor, req, arg.close)
        .await
        .map_err(|e| e.map_err(lookup_error))?;
    Ok(json_ok(&Value::Null))
}

/// `files/upload_session/finish`.
pub async fn finish(call: &Call<'_>, req: Request<Incoming>) -> Result<Response<Body>, DbxError> {
    let arg: FinishArg = match header_arg(call.route, &req) {
        Ok(arg) => arg,
        Err(e) => return Err(drained(req, UPLOAD_BYTES_MAX, e).await),
    };
    let meta = finish_one(call, arg, Some(req), false).await?;
    Ok(json_ok(&meta))
}

#[derive(Deserialize)]
struct FinishBatchArg {
    entries: Vec<FinishArg>,
}

/// `files/upload_session/finish_batch_v2`: each session closed, each committed in turn;
/// each entry's own success or failure.
pub async fn finish_batch(
    call: &Call<'_>,
    req: Request<Incoming>,
) -> Result<Response<Body>, DbxError> {
    let arg: FinishBatchArg = call.rpc_arg(req).await?;
    if arg.entries.len() > FINISH_BATCH_MAX {
        return Err(call.bad_input(format!("entries: at most {FINISH_BATCH_MAX}")));
    }
    let mut entries = Vec::with_capacity(arg.entries.len());
    for entry in arg.entries {
        let answer = match finish_one(call, entry, None, true).await {
            Ok(mut meta) => {
                meta[".tag"] = json!("success");
                meta
            }
            Err(DbxError::Route { error, .. }) => json!({ ".tag": "failure", "failure": error }),
            Err(other) => return Err(other),
        };
        entries.push(answer);
    }
    Ok(json_ok(&json!({ "entries": entries })))
}

/// Adds the bytes of `req` (if any) and the tail as the last block, then commits the file
/// by `arg.commit`; the file's metadata. `closed_only` refuses a session not closed.
async fn finish_one(
    call: &Call<'_>,
    arg: FinishArg,
    req: Option<Request<Incoming>>,
    closed_only: bool,
) -> Result<Value, DbxError> {
    let taken = match finish_checks(call, &arg, req.as_ref(), closed_only).await {
        Ok(t) => t,
        Err(e) => {
            return Err(match req {
                Some(req) => drained(req, UPLOAD_BYTES_MAX, e).await,
                None => e,
            })
        }
    };
    let (place, tail, blocklist) = taken;
    let kept = tail.clone();
    let committed = async {
        let got = match req {
            Some(req) => receive(call, req, UPLOAD_BYTES_MAX, (tail, true)).await?,
            None => receive_nothing(call, tail).await?,
        };
        let all: Vec<BlockHash> = blocklist.into_iter().chain(got.hashes).collect();
        let vouched: HashSet<BlockHash> = all.iter().copied().collect();
        let size = arg.cursor.offset + got.len;
        commit_file(call, &place, &arg.commit, all, size, &vouched).await
    }
    .await;
    match committed {
        Ok(row) => {
            end(call, &arg.cursor).await?;
            Ok(metadata::file(&call.tree, &row))
        }
        Err(e) => {
            put_back(call, &arg.cursor, kept).await?;
            Err(e)
        }
    }
}

/// What a finish checks before it reads its body: the commit's place, the session closed
/// if `closed_only`, and the session taken (its tail and blocklist).
async fn finish_checks(
    call: &Call<'_>,
    arg: &FinishArg,
    req: Option<&Request<Incoming>>,
    closed_only: bool,
) -> Result<(super::tree::Place, Bytes, Vec<BlockHash>), DbxError> {
    let place = call.tree.place(&arg.commit.path)?;
    let (shard, id) = parse_session(&arg.cursor.session_id)
        .ok_or_else(|| finish_lookup_error(SessionError::NotFound))?;
    if closed_only {
        let closed = call
            .shard
            .submit_to(shard, move |s| {
                std::future::ready(s.upload_sessions_mut().is_closed(id))
            })
            .await?;
        if !closed {
            return Err(finish_lookup_error(SessionError::NotClosed));
        }
    }
    let len = req.map_or(0, declared_len);
    let (tail, blocklist) = take(call, &arg.cursor, len)
        .await
        .map_err(|e| e.map_err(finish_lookup_error))?;
    Ok((place, tail, blocklist))
}

/// Stores a session's tail as its last block, for a finish with no body.
async fn receive_nothing(call: &Call<'_>, tail: Bytes) -> Result<Received, DbxError> {
    let (blocks, _) = cut(tail, Vec::new(), true);
    let hashes = hash_blocks(call, &blocks).await?;
    store_blocks(call, &hashes, blocks).await?;
    Ok(Received {
        hashes,
        rest: Bytes::new(),
        len: 0,
    })
}

/// The length a request says its body has (0 when it does not say).
fn declared_len(req: &Request<Incoming>) -> u64 {
    hyper::body::Body::size_hint(req.body()).lower()
}

/// A session request's failure: the session's own refusal, or anything else.
enum Failed {
    Session(SessionError),
    Other(DbxError),
}

impl Failed {
    fn map_err(self, f: impl FnOnce(SessionError) -> DbxError) -> DbxError {
        match self {
            Failed::Session(e) => f(e),
            Failed::Other(e) => e,
        }
    }
}

impl From<DbxError> for Failed {
    fn from(e: DbxError) -> Failed {
        Failed::Other(e)
    }
}

/// Takes the session at `cursor` for `len` more bytes: its tail, and its blocklist.
async fn take(
    call: &Call<'_>,
    cursor: &SessionCursor,
    len: u64,
) -> Result<(Bytes, Vec<BlockHash>), Failed> {
    let (shard, id) =
        parse_session(&cursor.session_id).ok_or(Failed::Session(SessionError::NotFound))?;
    let (user, offset) = (call.user.id, cursor.offset);
    let taken = call
        .shard
        .submit_to(shard, move |s| {
            let mut sessions = s.upload_sessions_mut();
            let taken = sessions.take(id, user, offset, len, Instant::now());
            std::future::ready(taken.map(|tail| (tail, sessions.blocklist(id))))
        })
        .await
        .map_err(|e| Failed::Other(e.into()))?;
    taken.map_err(Failed::Session)
}

/// Appends the body of `req` to the session at `cursor`: whole blocks stored as they
/// arrive, the rest kept.
async fn add(
    call: &Call<'_>,
    cursor: &SessionCursor,
    req: Request<Incoming>,
    close: bool,
) -> Result<(), Failed> {
    let (tail, _) = match take(call, cursor, declared_len(&req)).await {
        Ok(taken) => taken,
        Err(Failed::Session(e)) => {
            return Err(Failed::Other(
                drained(req, UPLOAD_BYTES_MAX, lookup_error(e)).await,
            ))
        }
        Err(Failed::Other(e)) => {
            return Err(Failed::Other(drained(req, UPLOAD_BYTES_MAX, e).await))
        }
    };
    let kept = tail.clone();
    let (shard, id) =
        parse_session(&cursor.session_id).ok_or(Failed::Session(SessionError::NotFound))?;
    let appended = match receive(call, req, UPLOAD_BYTES_MAX, (tail, false)).await {
        Ok(got) => Appended {
            blocks: got.hashes,
            tail: got.rest,
            len: got.len,
            close,
        },
        Err(e) => {
            put_back(call, cursor, kept).await?;
            return Err(Failed::Other(e));
        }
    };
    let appended = call
        .shard
        .submit_to(shard, move |s| {
            std::future::ready(s.upload_sessions_mut().append(id, appended, Instant::now()))
        })
        .await
        .map_err(|e| Failed::Other(e.into()))?;
    if let Err(e) = appended {
        put_back(call, cursor, kept).await?;
        return Err(Failed::Session(e));
    }
    Ok(())
}

/// Gives the taken session back unchanged.
async fn put_back(call: &Call<'_>, cursor: &SessionCursor, tail: Bytes) -> Result<(), DbxError> {
    let Some((shard, id)) = parse_session(&cursor.session_id) else {
        return Ok(());
    };
    call.shard
        .submit_to(shard, move |s| {
            s.upload_sessions_mut().put_back(id, tail);
            std::future::ready(())
        })
        .await?;
    Ok(())
}

/// Ends the session.
async fn end(call: &Call<'_>, cursor: &SessionCursor) -> Result<(), DbxError> {
    let Some((shard, id)) = parse_session(&cursor.session_id) else {
        return Ok(());
    };
    call.shard
        .submit_to(shard, move |s| {
            s.upload_sessions_mut().end(id);
            std::future::ready(())
        })
        .await?;
    Ok(())
}
