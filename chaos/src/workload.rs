//! The load a crash interrupts: workers that each write, rewrite and delete files of their
//! own through the protocol (commit → need_blocks → store_batch → commit), recording every
//! answer in their [`Book`] before acting on it. A worker stops at the first failed
//! request (the server is gone) or when told to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use holdall_benches::http_client::Conn;
use holdall_proto::api::{CommitRequest, CommitResult, EntryKind, Jid, NsId, StoreBatchResponse};
use holdall_proto::frame::{store_frame_header_v2, StoreHeader, FRAME_FORMAT_HEADER};
use holdall_proto::limits::{BATCH_BYTES_DEFAULT, BLOCK_BYTES_MAX};
use holdall_proto::BlockHash;
use holdall_proto::FileVersion;

use crate::ledger::{BlockSpec, Book, Version};

/// Paths per worker.
pub const PATHS_PER_WORKER: usize = 8;
/// Largest small block.
const SMALL_BLOCK_BYTES_MAX: usize = 256 << 10;
/// Commit attempts per version (need_blocks answers in between).
const COMMIT_ATTEMPTS_MAX: usize = 3;

/// Where the load sends its requests.
pub struct Target<'a> {
    /// `127.0.0.1:PORT`.
    pub addr: &'a str,
    /// The load user's token.
    pub token: &'a str,
    /// The load user's root namespace.
    pub ns: NsId,
}

/// What went wrong in a way the server must never allow (as opposed to the server dying).
#[derive(Debug)]
pub struct Violation(pub String);

/// One worker's run: stops when `stop` is set or a request fails at the transport. The
/// result is a violation only for answers the protocol forbids.
pub fn work(
    target: &Target,
    worker: usize,
    book: &mut Book,
    rng: &mut fastrand::Rng,
    jid_floor: Jid,
    stop: &AtomicBool,
) -> Option<Violation> {
    let Ok(mut conn) = Conn::connect(target.addr) else {
        return None;
    };
    let mut floor = jid_floor;
    while !stop.load(Ordering::Relaxed) {
        let path = format!("w{worker}/f{}", rng.usize(..PATHS_PER_WORKER));
        let version = make_version(book, rng, &path);
        match commit_version(&mut conn, target, book, &path, version, &mut floor) {
            Ok(None) => {}
            Ok(Some(v)) => return Some(v),
            Err(_) => return None,
        }
    }
    None
}

/// A new version for `path`: a deletion of a live file now and then, else a file of
/// fresh blocks (mostly small, some full 4 MiB ones, so that writes of every size are
/// interrupted) or of a block stored before (deduplication).
fn make_version(book: &mut Book, rng: &mut fastrand::Rng, path: &str) -> Version {
    let live = book
        .paths
        .get(path)
        .and_then(|s| s.acked.as_ref())
        .is_some_and(|(_, v)| v.kind == EntryKind::File);
    if live && rng.u8(..100) < 15 {
        return Version {
            kind: EntryKind::Deleted,
            blocklist: Vec::new(),
            size: 0,
        };
    }
    let mut specs = Vec::new();
    let roll = rng.u8(..100);
    if roll < 10 && !book.known_blocks.is_empty() {
        let hash = book.known_blocks[rng.usize(..book.known_blocks.len())];
        specs.push((hash, book.specs[&hash]));
    } else {
        let full_blocks = match roll {
            10..=17 => 1,
            18..=19 => 2,
            _ => 0,
        };
        for _ in 0..full_blocks {
            specs.push(fresh(book, rng, BLOCK_BYTES_MAX));
        }
        let tail = rng.usize(..=SMALL_BLOCK_BYTES_MAX);
        if tail > 0 || specs.is_empty() {
            specs.push(fresh(book, rng, tail));
        }
    }
    let specs: Vec<_> = specs.into_iter().filter(|(_, s)| s.len > 0).collect();
    Version {
        kind: EntryKind::File,
        size: specs.iter().map(|(_, s)| s.len as u64).sum(),
        blocklist: specs.into_iter().map(|(h, _)| h).collect(),
    }
}

fn fresh(book: &mut Book, rng: &mut fastrand::Rng, len: usize) -> (BlockHash, BlockSpec) {
    let spec = BlockSpec {
        seed: rng.u64(..),
        len,
    };
    let hash = BlockHash::of(&spec.data());
    book.specs.insert(hash, spec);
    (hash, spec)
}

/// Commits `version` at `path`, uploading what the server asks for. `Ok(None)`: done;
/// `Ok(Some)`: the server broke a rule; `Err`: the request failed (the server died).
fn commit_version(
    conn: &mut Conn,
    target: &Target,
    book: &mut Book,
    path: &str,
    version: Version,
    floor: &mut Jid,
) -> Result<Option<Violation>> {
    let state = book.paths.entry(path.to_string()).or_default();
    let parent_jid = state.acked.as_ref().map(|(j, _)| *j);
    state.pending = Some(version.clone());
    let request = CommitRequest {
        ns: target.ns,
        path: path.to_string(),
        version: FileVersion {
            kind: version.kind,
            blocklist: version.blocklist.clone(),
            size: version.size,
            mtime_ms: 0,
        },
        parent_jid,
    };
    let body = serde_json::to_vec(&request)?;
    for _ in 0..COMMIT_ATTEMPTS_MAX {
        let (status, answer) = conn.request("POST", "/v1/commit", target.token, &[&body])?;
        let result = match serde_json::from_slice::<CommitResult>(&answer) {
            Ok(r) if status == 200 => r,
            _ => return Ok(Some(violation(path, "commit", status, &answer))),
        };
        match result {
            CommitResult::Ok { jid } => {
                if jid <= *floor {
                    return Ok(Some(Violation(format!(
                        "{path}: commit got jid {jid}, not above {floor} given out before"
                    ))));
                }
                *floor = jid;
                let state = book.paths.get_mut(path).context("path state")?;
                state.acked = Some((jid, version));
                state.pending = None;
                book.acked_commits += 1;
                return Ok(None);
            }
            CommitResult::NeedBlocks { need } => {
                if let Some(h) = need.iter().find(|h| !version.blocklist.contains(h)) {
                    return Ok(Some(Violation(format!(
                        "{path}: need_blocks named {h}, not in the blocklist"
                    ))));
                }
                if let Some(v) = store(conn, target, book, &need)? {
                    return Ok(Some(v));
                }
            }
            other => {
                return Ok(Some(Violation(format!(
                    "{path}: commit answered {other:?}"
                ))))
            }
        }
    }
    Ok(Some(Violation(format!(
        "{path}: still asked for blocks after {COMMIT_ATTEMPTS_MAX} commits"
    ))))
}

/// Uploads `need` in batches within the server's batch limit; acknowledged blocks go to
/// the book.
fn store(
    conn: &mut Conn,
    target: &Target,
    book: &mut Book,
    need: &[BlockHash],
) -> Result<Option<Violation>> {
    match upload(conn, target.token, need, &book.specs)? {
        Ok(answers) => {
            for a in answers {
                book.unchecked_blocks
                    .extend(a.stored.into_iter().chain(a.present));
            }
            Ok(None)
        }
        Err(v) => Ok(Some(v)),
    }
}

/// Sends `hashes` (made by the load, described in `specs`) with store_batch, batches within
/// the server's limit. The outer error: a request failed; the inner: an answer the protocol
/// forbids (an error status, or not every block acknowledged).
pub fn upload(
    conn: &mut Conn,
    token: &str,
    hashes: &[BlockHash],
    specs: &HashMap<BlockHash, BlockSpec>,
) -> Result<Result<Vec<StoreBatchResponse>, Violation>> {
    let mut answers = Vec::new();
    let mut batch: Vec<(BlockHash, Vec<u8>)> = Vec::new();
    let mut batch_bytes = 0usize;
    for (i, hash) in hashes.iter().enumerate() {
        let data = specs.get(hash).context("a block the load made")?.data();
        batch_bytes += data.len();
        batch.push((*hash, data));
        let next_len = hashes
            .get(i + 1)
            .and_then(|h| specs.get(h))
            .map_or(0, |s| s.len);
        if i + 1 == hashes.len() || batch_bytes + next_len > BATCH_BYTES_DEFAULT {
            match store_batch(conn, token, &batch)? {
                Ok(a) => answers.push(a),
                Err(v) => return Ok(Err(v)),
            }
            batch.clear();
            batch_bytes = 0;
        }
    }
    Ok(Ok(answers))
}

/// Sends `batch` in frame format 2, each block compressed when that makes it shorter (so a
/// load stores compressed and raw records side by side).
fn store_batch(
    conn: &mut Conn,
    token: &str,
    batch: &[(BlockHash, Vec<u8>)],
) -> Result<Result<StoreBatchResponse, Violation>> {
    let wires: Vec<(StoreHeader, Option<Vec<u8>>)> = batch
        .iter()
        .map(|(hash, data)| {
            let packed = zstd::bulk::compress(data, 3)
                .ok()
                .filter(|p| p.len() < data.len());
            let header = StoreHeader {
                hash: *hash,
                raw_len: data.len() as u32,
                wire_len: packed.as_ref().map_or(data.len(), Vec::len) as u32,
                zstd: packed.is_some(),
                delta: false,
            };
            (header, packed)
        })
        .collect();
    let headers: Vec<_> = wires
        .iter()
        .map(|(h, _)| store_frame_header_v2(h))
        .collect();
    let mut parts: Vec<&[u8]> = Vec::with_capacity(batch.len() * 2);
    for ((header, (_, packed)), (_, data)) in headers.iter().zip(&wires).zip(batch) {
        parts.push(header);
        parts.push(packed.as_deref().unwrap_or(data));
    }
    let extra = format!("{FRAME_FORMAT_HEADER}: 2\r\n");
    let (status, answer) = conn.request_with("POST", "/v1/store_batch", token, &extra, &parts)?;
    let stored = match serde_json::from_slice::<StoreBatchResponse>(&answer) {
        Ok(s) if status == 200 => s,
        _ => return Ok(Err(violation("store_batch", "store", status, &answer))),
    };
    let sent = |h: &BlockHash| batch.iter().any(|(b, _)| b == h);
    if let Some(h) = stored
        .stored
        .iter()
        .chain(&stored.present)
        .find(|h| !sent(h))
    {
        return Ok(Err(Violation(format!(
            "store_batch acknowledged {h}, which was not in the batch"
        ))));
    }
    let acked = stored.stored.len() + stored.present.len();
    if acked != batch.len() {
        return Ok(Err(Violation(format!(
            "store_batch acknowledged {acked} of {} blocks",
            batch.len()
        ))));
    }
    Ok(Ok(stored))
}

fn violation(path: &str, what: &str, status: u16, answer: &[u8]) -> Violation {
    Violation(format!(
        "{path}: {what} answered {status}: {}",
        String::from_utf8_lossy(answer)
    ))
}
