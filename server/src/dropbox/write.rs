//! Writing through the API, by the same engine path as Holdall's own clients: bytes cut
//! into 4 MiB blocks (as the client cuts them, so the same file deduplicates), hashed on
//! every core and stored as the caller's upload; then rows committed by `commit::run`, so
//! access, quota and the claim rule hold exactly as for `/v1/commit`. A new path takes the
//! case of the folders it goes into, and its missing parent folders are made in the same
//! group commit.

use std::collections::{BTreeMap, HashSet};

use bytes::{Bytes, BytesMut};
use holdall_engine::journal::record::Row;
use holdall_engine::journal::state::State;
use holdall_proto::api::{CommitRequest, CommitResult, Jid, NsId};
use holdall_proto::limits::BLOCK_BYTES_MAX;
use holdall_proto::pieces::Pieces;
use holdall_proto::{BlockHash, FileVersion};
use serde::Deserialize;

use super::call::Call;
use super::error::DbxError;
use super::names;
use super::owner::{on_owner, row_at};
use super::tree::{latest_jid, lookup, name_of, Node, Place};
use crate::block_bytes::BlockBytes;
use crate::handlers::blocks::put_verified;
use crate::shard::{shard_of_block, Blocks};

/// Names tried for a conflict when the caller asked for `autorename`.
pub const AUTORENAME_TRIES_MAX: u32 = 100;

/// Dropbox's `WriteMode`: what to do when the path holds a file already.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mode {
    /// Never replace: a different file there is a conflict.
    #[default]
    Add,
    /// Replace whatever file is there.
    Overwrite,
    /// Replace the file only if its latest rev is this one.
    Update(String),
}

impl<'de> Deserialize<'de> for Mode {
    /// `"add"`, `{".tag": "add"}`, `{".tag": "update", "update": REV}`.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
        use serde::de::Error;
        let v = serde_json::Value::deserialize(d)?;
        let tag = v.as_str().or_else(|| v.get(".tag")?.as_str());
        match tag {
            Some("add") => Ok(Mode::Add),
            Some("overwrite") => Ok(Mode::Overwrite),
            Some("update") => v
                .get("update")
                .and_then(|r| r.as_str())
                .map(|r| Mode::Update(r.to_owned()))
                .ok_or_else(|| D::Error::custom("update needs a rev")),
            _ => Err(D::Error::custom(format!("unknown write mode {v}"))),
        }
    }
}

/// Bytes gathered while a body arrives before their whole blocks are hashed and stored, so
/// a request holds a bounded few blocks in memory whatever its size.
const STORE_RUN_BYTES: usize = 4 * BLOCK_BYTES_MAX;

/// What [`receive`] took from a body.
#[derive(Debug)]
pub struct Received {
    /// The blocks stored, in order.
    pub hashes: Vec<BlockHash>,
    /// The bytes after the last whole block (empty when the body was the last).
    pub rest: Bytes,
    /// The body's length.
    pub len: u64,
}

/// Reads `req`'s body (at most `limit` bytes) after `tail`, storing whole blocks as they
/// gather; with `last`, the bytes after them are stored as a final short block too.
pub async fn receive(
    call: &Call<'_>,
    req: hyper::Request<hyper::body::Incoming>,
    limit: usize,
    (tail, last): (Bytes, bool),
) -> Result<Received, DbxError> {
    let too_large = |e: crate::reply::ApiError| match e.status() {
        hyper::StatusCode::PAYLOAD_TOO_LARGE => DbxError::tags(&["payload_too_large"]),
        _ => DbxError::from(e),
    };
    let mut body = crate::request::BodyReader::new(req, limit).map_err(too_large)?;
    let mut received = Received {
        hashes: Vec::new(),
        rest: tail,
        len: 0,
    };
    let mut pending: Vec<Bytes> = Vec::new();
    let mut pending_bytes = received.rest.len();
    while let Some(chunk) = body.next().await.map_err(too_large)? {
        received.len += chunk.len() as u64;
        pending_bytes += chunk.len();
        pending.push(chunk);
        if pending_bytes >= STORE_RUN_BYTES {
            let carry = std::mem::take(&mut received.rest);
            let (blocks, rest) = cut(carry, std::mem::take(&mut pending), false);
            pending_bytes = rest.len();
            received.rest = rest;
            store_run(call, blocks, &mut received.hashes).await?;
        }
    }
    let carry = std::mem::take(&mut received.rest);
    let (blocks, rest) = cut(carry, pending, last);
    received.rest = rest;
    store_run(call, blocks, &mut received.hashes).await?;
    Ok(received)
}

/// Hashes and stores `blocks`, adding their hashes to `hashes`.
async fn store_run(
    call: &Call<'_>,
    blocks: Vec<Pieces>,
    hashes: &mut Vec<BlockHash>,
) -> Result<(), DbxError> {
    if blocks.is_empty() {
        return Ok(());
    }
    let run = hash_blocks(call, &blocks).await?;
    store_blocks(call, &run, blocks).await?;
    hashes.extend(run);
    Ok(())
}

/// Cuts `tail` and then `chunks` into whole blocks; the bytes after the last whole block
/// are returned, or, when `last`, become a final short block.
pub fn cut(tail: Bytes, chunks: Vec<Bytes>, last: bool) -> (Vec<Pieces>, Bytes) {
    let mut blocks = Vec::new();
    let mut current = Pieces::default();
    for mut chunk in std::iter::once(tail).chain(chunks) {
        while !chunk.is_empty() {
            let room = BLOCK_BYTES_MAX - current.len();
            let part = chunk.split_to(room.min(chunk.len()));
            current.push(part);
            if current.len() == BLOCK_BYTES_MAX {
                blocks.push(std::mem::take(&mut current));
            }
        }
    }
    if last {
        if !current.is_empty() {
            blocks.push(current);
        }
        return (blocks, Bytes::new());
    }
    let mut rest = BytesMut::with_capacity(current.len());
    for part in current.parts() {
        rest.extend_from_slice(part);
    }
    (blocks, rest.freeze())
}

/// The hash of each block, computed on every shard in turn.
pub async fn hash_blocks(call: &Call<'_>, blocks: &[Pieces]) -> Result<Vec<BlockHash>, DbxError> {
    let shards = call.shard.shards();
    let asked = blocks.iter().enumerate().map(|(i, b)| {
        let b = b.clone();
        call.shard
            .submit_to(i % shards, move |_| std::future::ready(b.hash()))
    });
    let mut hashes = Vec::with_capacity(blocks.len());
    for h in futures::future::join_all(asked).await {
        hashes.push(h?);
    }
    Ok(hashes)
}

/// Stores `blocks` (named by their checked hashes) on their owners as the caller's.
pub async fn store_blocks(
    call: &Call<'_>,
    hashes: &[BlockHash],
    blocks: Vec<Pieces>,
) -> Result<(), DbxError> {
    let mut by_owner: BTreeMap<usize, Blocks> = BTreeMap::new();
    for (hash, pieces) in hashes.iter().zip(blocks) {
        by_owner
            .entry(shard_of_block(hash, call.shard.shards()))
            .or_default()
            .push((*hash, BlockBytes::raw(pieces)));
    }
    put_verified(call.shard, call.user.id, by_owner).await?;
    Ok(())
}

/// A new file's version for `blocklist` of `size` bytes, modified at `client_modified`
/// (a Dropbox time) or now.
pub fn file_version(
    blocklist: Vec<BlockHash>,
    size: u64,
    client_modified: Option<&str>,
) -> Result<FileVersion, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mtime_ms = match client_modified {
        Some(t) => names::parse_timestamp(t).ok_or_else(|| {
            format!("client_modified {t:?} is not a time like 2024-01-31T12:00:00Z")
        })?,
        None => now,
    };
    Ok(FileVersion::file(blocklist, size, mtime_ms))
}

/// Folders to make: each one's exact path and its latest JID (a tombstone's, or none).
pub type Dirs = Vec<(String, Option<Jid>)>;

/// What a file write will commit, planned on the namespace's owner.
#[derive(Debug)]
pub struct Plan {
    /// Folders to make first.
    pub dirs: Dirs,
    /// The path the file goes to and the JID it replaces; none when the same file is
    /// there already.
    pub target: Option<(String, Option<Jid>)>,
    /// The file there already, when it has the same content.
    pub same: Option<Row>,
}

/// The exact case of `path`'s parent folders and those of them to make; a file in the
/// way is `file_ancestor`.
pub fn parents(state: &State, ns: NsId, path: &str) -> Result<(String, Dirs), DbxError> {
    let mut exact = String::new();
    let mut dirs = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let (last, ancestors) = segments
        .split_last()
        .ok_or_else(|| DbxError::tags(&["path", "malformed_path"]))?;
    for segment in ancestors {
        let candidate = join(&exact, segment);
        match lookup(state, ns, &candidate) {
            Some(Node::Folder(p, _)) => exact = p,
            Some(Node::File(_)) => {
                return Err(DbxError::tags(&["path", "conflict", "file_ancestor"]))
            }
            None => {
                dirs.push((candidate.clone(), latest_jid(state, ns, &candidate)));
                exact = candidate;
            }
        }
    }
    Ok((join(&exact, last), dirs))
}

fn join(folder: &str, name: &str) -> String {
    if folder.is_empty() {
        name.to_owned()
    } else {
        format!("{folder}/{name}")
    }
}

/// `name (N).ext` for the N-th try of an autorename.
pub fn renamed(path: &str, n: u32) -> String {
    let name = name_of(path);
    let folder = &path[..path.len() - name.len()];
    match name.rfind('.').filter(|&i| i > 0) {
        Some(dot) => format!("{folder}{} ({n}){}", &name[..dot], &name[dot..]),
        None => format!("{folder}{name} ({n})"),
    }
}

/// Plans writing `version` at `path` of `ns` under `mode`.
pub fn plan_file(
    state: &State,
    ns: NsId,
    path: &str,
    version: &FileVersion,
    mode: &Mode,
    autorename: bool,
) -> Result<Plan, DbxError> {
    let (exact, dirs) = parents(state, ns, path)?;
    let conflict = |kind: &str| -> Result<Plan, DbxError> {
        if !autorename {
            return Err(DbxError::tags(&["path", "conflict", kind]));
        }
        for n in 1..=AUTORENAME_TRIES_MAX {
            let candidate = renamed(&exact, n);
            if lookup(state, ns, &candidate).is_none() {
                let parent = latest_jid(state, ns, &candidate);
                return Ok(Plan {
                    dirs: dirs.clone(),
                    target: Some((candidate, parent)),
                    same: None,
                });
            }
        }
        Err(DbxError::tags(&["path", "conflict", kind]))
    };
    match lookup(state, ns, &exact) {
        None => {
            let parent = latest_jid(state, ns, &exact);
            Ok(Plan {
                dirs,
                target: Some((exact, parent)),
                same: None,
            })
        }
        Some(Node::Folder(..)) => conflict("folder"),
        Some(Node::File(row)) => {
            if row.version.blocklist == version.blocklist && row.version.size == version.size {
                return Ok(Plan {
                    dirs,
                    target: None,
                    same: Some(row),
                });
            }
            match mode {
                Mode::Overwrite => Ok(Plan {
                    dirs,
                    target: Some((row.path.clone(), Some(row.jid))),
                    same: None,
                }),
                Mode::Update(rev) if *rev == names::rev(ns, row.jid) => Ok(Plan {
                    dirs,
                    target: Some((row.path.clone(), Some(row.jid))),
                    same: None,
                }),
                Mode::Add | Mode::Update(_) => conflict("file"),
            }
        }
    }
}

/// Writes `version` at `place` under `mode`; the file's latest row after.
pub async fn write_file(
    call: &Call<'_>,
    place: &Place,
    version: FileVersion,
    (mode, autorename): (Mode, bool),
    vouched: &HashSet<BlockHash>,
) -> Result<Row, DbxError> {
    if place.path.is_empty() {
        return Err(DbxError::tags(&["path", "malformed_path"]));
    }
    let (ns, path) = (place.ns, place.path.clone());
    let plan = {
        let v = version.clone();
        on_owner(call, ns, move |state| {
            plan_file(state, ns, &path, &v, &mode, autorename)
        })
        .await??
    };
    if let Some(row) = plan.same {
        return Ok(row);
    }
    let Some((target, parent_jid)) = plan.target else {
        return Err(DbxError::Holdall(crate::reply::ApiError::internal(
            "a write planned nothing",
        )));
    };
    let mut commits = dirs_of(ns, plan.dirs);
    commits.push(CommitRequest {
        ns,
        path: target.clone(),
        version,
        parent_jid,
    });
    let jids = commit_all(call, commits, vouched).await?;
    let jid = *jids.last().expect("one answer per commit");
    row_at(call, ns, jid).await
}

/// Commits making the folders `dirs` of `ns`.
pub fn dirs_of(ns: NsId, dirs: Dirs) -> Vec<CommitRequest> {
    dirs.into_iter()
        .map(|(path, parent_jid)| CommitRequest {
            ns,
            path,
            version: FileVersion::dir(),
            parent_jid,
        })
        .collect()
}

/// Commits every request (each namespace's in one group commit); their JIDs in order. A
/// path changed meanwhile is a conflict; nothing is half-written within a namespace.
pub async fn commit_all(
    call: &Call<'_>,
    commits: Vec<CommitRequest>,
    vouched: &HashSet<BlockHash>,
) -> Result<Vec<Jid>, DbxError> {
    let who = (call.uploader(), call.author());
    let answers =
        crate::handlers::commit::run(call.shard, &call.user, who, commits, vouched).await?;
    answers
        .into_iter()
        .map(|a| match a? {
            CommitResult::Ok { jid } => Ok(jid),
            CommitResult::Conflict { .. } => Err(DbxError::tags(&["path", "conflict", "file"])),
            CommitResult::NeedBlocks { .. } => {
                Err(DbxError::Holdall(crate::reply::ApiError::unavailable(
                    "a block of this file is no longer stored; upload it again",
                )))
            }
            CommitResult::Error { error, message } => {
                Err(DbxError::BadInput(format!("{error}: {message}")))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_cut_at_block_boundaries() {
        let mb = |n: usize| Bytes::from(vec![1u8; n << 20]);
        let (blocks, rest) = cut(mb(1), vec![mb(5), mb(3)], false);
        assert_eq!(
            blocks.iter().map(Pieces::len).collect::<Vec<_>>(),
            vec![4 << 20, 4 << 20]
        );
        assert_eq!(rest.len(), 1 << 20);
        let (blocks, rest) = cut(Bytes::new(), vec![mb(9)], true);
        assert_eq!(blocks.last().map(Pieces::len), Some(1 << 20));
        assert!(rest.is_empty());
        let (blocks, _) = cut(Bytes::new(), vec![], true);
        assert!(blocks.is_empty());
    }

    #[test]
    fn autorename_keeps_the_extension() {
        assert_eq!(renamed("a/b.txt", 1), "a/b (1).txt");
        assert_eq!(renamed("notes", 2), "notes (2)");
        assert_eq!(renamed(".profile", 1), ".profile (1)");
    }

    #[test]
    fn write_modes_read_as_the_sdks_send_them() {
        let m: Mode = serde_json::from_str(r#"{".tag": "overwrite"}"#).unwrap();
        assert_eq!(m, Mode::Overwrite);
        let m: Mode = serde_json::from_str(r#""add""#).unwrap();
        assert_eq!(m, Mode::Add);
        let m: Mode = serde_json::from_str(r#"{".tag": "update", "update": "0a"}"#).unwrap();
        assert_eq!(m, Mode::Update("0a".into()));
        assert!(serde_json::from_str::<Mode>(r#""replace""#).is_err());
    }
}
