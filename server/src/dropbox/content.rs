//! `files/upload` (one request, at most [`UPLOAD_BYTES_MAX`]) and `files/download` (the
//! whole file, streamed: blocks are read a few at a time while the body goes out, so a
//! download holds a bounded few blocks in memory whatever the file's size).

use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use holdall_engine::journal::record::Row;
use holdall_engine::journal::state::User;
use holdall_proto::api::{EntryKind, RetrieveItem};
use holdall_proto::content_hash::content_hash_of_blocklist;
use holdall_proto::frame::RetrieveStatus;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response};
use serde::Deserialize;

use super::call::{drained, header_arg, Call};
use super::error::DbxError;
use super::owner::lookup_at;
use super::tree::{Node, Place};
use super::write::{file_version, receive, write_file, Mode};
use super::{json_ok, metadata, names};
use crate::body::Body;
use crate::handlers::retrieve::{retrieve, BLOCKS_PER_READ};
use crate::shard::{shard_of_namespace, Shard};

/// Largest `files/upload` body: Dropbox's bound; larger files take an upload session.
pub const UPLOAD_BYTES_MAX: usize = 150 << 20;
/// Reads a download keeps ready ahead of the socket.
const DOWNLOAD_READS_AHEAD: usize = 2;

/// What `files/upload` and a session's `commit` take.
#[derive(Debug, Deserialize)]
pub struct CommitInfo {
    /// Where the file goes.
    pub path: String,
    /// What to do if a file is there.
    #[serde(default)]
    pub mode: Mode,
    /// Take a free name instead of failing on a conflict.
    #[serde(default)]
    pub autorename: bool,
    /// The file's own modification time.
    #[serde(default)]
    pub client_modified: Option<String>,
    /// Dropbox's content hash of the bytes, checked when given.
    #[serde(default)]
    pub content_hash: Option<String>,
}

/// `files/upload`.
pub async fn upload(call: &Call<'_>, req: Request<Incoming>) -> Result<Response<Body>, DbxError> {
    let target = header_arg::<CommitInfo>(call.route, &req)
        .and_then(|arg| Ok((call.tree.place(&arg.path)?, arg)));
    let (place, arg) = match target {
        Ok(t) => t,
        Err(e) => return Err(drained(req, UPLOAD_BYTES_MAX, e).await),
    };
    let got = receive(call, req, UPLOAD_BYTES_MAX, (Bytes::new(), true)).await?;
    let row = commit_file(call, &place, &arg, got.hashes, got.len, &HashSet::new()).await?;
    Ok(json_ok(&metadata::file(&call.tree, &row)))
}

/// Commits the file of `blocklist` (stored) by `info`, its content hash checked first.
pub async fn commit_file(
    call: &Call<'_>,
    place: &Place,
    info: &CommitInfo,
    blocklist: Vec<holdall_proto::BlockHash>,
    size: u64,
    vouched: &HashSet<holdall_proto::BlockHash>,
) -> Result<Row, DbxError> {
    if let Some(expected) = &info.content_hash {
        if content_hash_of_blocklist(&blocklist).to_hex() != expected.to_lowercase() {
            return Err(DbxError::tags(&["content_hash_mismatch"]));
        }
    }
    let version = file_version(blocklist, size, info.client_modified.as_deref())
        .map_err(|e| call.bad_input(e))?;
    write_file(
        call,
        place,
        version,
        (info.mode.clone(), info.autorename),
        vouched,
    )
    .await
    .map_err(upload_write_failed)
}

/// An upload's write error, inside Dropbox's `UploadWriteFailed`.
fn upload_write_failed(e: DbxError) -> DbxError {
    match e {
        DbxError::Route { summary, error }
            if error.get(".tag").and_then(|t| t.as_str()) == Some("path") =>
        {
            let reason = error.get("path").cloned().unwrap_or_default();
            DbxError::Route {
                summary,
                error: serde_json::json!({ ".tag": "path", "reason": reason, "upload_session_id": "" }),
            }
        }
        other => other,
    }
}

#[derive(Deserialize)]
struct DownloadArg {
    path: String,
    #[serde(default)]
    rev: Option<String>,
}

/// `files/download`.
pub async fn download(call: &Call<'_>, req: Request<Incoming>) -> Result<Response<Body>, DbxError> {
    let arg: DownloadArg = header_arg(call.route, &req)?;
    let row = match &arg.rev {
        Some(rev) => version_of(call, &arg.path, rev).await?,
        None => match lookup_at(call, &call.tree.place(&arg.path)?).await? {
            Some(Node::File(row)) => row,
            Some(Node::Folder(..)) => return Err(DbxError::tags(&["path", "not_file"])),
            None => return Err(DbxError::not_found("path")),
        },
    };
    let result = ascii_json(&metadata::file(&call.tree, &row));
    let (tx, rx) = futures::channel::mpsc::channel(DOWNLOAD_READS_AHEAD);
    let size = row.version.size;
    glommio::spawn_local(send_blocks(call.shard.clone(), call.user.clone(), row, tx)).detach();
    let mut response = Response::new(Body::streamed(size, rx));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let result = HeaderValue::from_str(&result).map_err(|e| call.bad_input(e))?;
    headers.insert("dropbox-api-result", result);
    Ok(response)
}

/// Version `rev` of the file at `path`: the latest row or one in its history.
async fn version_of(call: &Call<'_>, path: &str, rev: &str) -> Result<Row, DbxError> {
    let place = call.tree.place(path)?;
    let (ns, jid) = names::parse_rev(rev)
        .filter(|(ns, _)| *ns == place.ns)
        .ok_or_else(|| DbxError::not_found("path"))?;
    let path = match lookup_at(call, &place).await? {
        Some(Node::File(row)) => row.path,
        _ => place.path.clone(),
    };
    let rows =
        call.shard
            .submit_to(shard_of_namespace(ns, call.shard.shards()), move |s| {
                let s = s.clone();
                async move {
                    crate::handlers::history::versions_here(&s, ns, &path, Some(jid + 1), 1).await
                }
            })
            .await??
            .0;
    rows.into_iter()
        .find(|r| r.jid == jid && r.version.kind == EntryKind::File)
        .ok_or_else(|| DbxError::not_found("path"))
}

/// Reads `row`'s blocks in order into `tx`; stops (cutting the body short, which the client
/// sees) if a block cannot be read or the client went away.
async fn send_blocks(
    shard: Rc<Shard>,
    user: User,
    row: Row,
    mut tx: futures::channel::mpsc::Sender<Bytes>,
) {
    for hashes in row.version.blocklist.chunks(BLOCKS_PER_READ) {
        let item = RetrieveItem {
            ns: row.ns,
            path: row.path.clone(),
            jid: Some(row.jid),
            prefetch: false,
            hashes: hashes.to_vec(),
            signatures: Default::default(),
            bases: Default::default(),
        };
        let Ok(answers) = retrieve(&shard, &user, vec![item], Duration::ZERO, true).await else {
            return;
        };
        for (hash, status, data) in answers {
            let Some(data) = data.filter(|_| status == RetrieveStatus::Ok) else {
                tracing::warn!(%hash, ns = row.ns, path = %row.path, "download cut short: block unreadable");
                return;
            };
            for part in data.pieces {
                if tx.send(part).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// JSON for an HTTP header: every character past ASCII written as `\uXXXX`, as Dropbox
/// does in `Dropbox-API-Result`.
pub fn ascii_json(value: &serde_json::Value) -> String {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}
