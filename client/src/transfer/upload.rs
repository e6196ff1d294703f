//! Uploads: commit a batch of changes, store the blocks the server asks for, commit again.
//!
//! Commits go up to 1000 at a time (`commit_batch`), blocks in `store_batch` requests of up
//! to the server's `batch_bytes_max`, several in flight. Each block is sent from its file,
//! which must still have the size, mtime and inode it was hashed with (checked before and
//! after reading a small block, and for a large one, sent by sendfile, when it is opened
//! and after the answer): if the file changed since it was hashed, that file's commit is
//! dropped for this round (it is hashed again next round). The server hashes every block it
//! is sent and refuses a batch with a block that does not match its name; such a batch
//! (an edit that kept the file's stat) drops its files' commits the same way. Torn content
//! is never committed, and the client does not hash each block a second time.
//!
//! Blocks of large files may already be on their way ([`Early`], started before the scan):
//! the first commit's answer trims their queue, the upload waits for them, and sends only the
//! needed blocks they did not store.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use holdall_proto::api::{CommitResult, Jid};
use holdall_proto::limits::{BLOCK_BYTES_MAX, COMMIT_BATCH_MAX};
use holdall_proto::BlockHash;

use crate::local::read::{open_unchanged, read_unchanged, unchanged};
use crate::local::stat::Stat;
use crate::net::api::{Api, ApiError, Sent, StoreBuffers};
use crate::net::bulk::{Piece, Source, SENDFILE_BYTES_MIN};
use crate::pool;
use crate::transfer::change::Change;
use crate::transfer::delta_upload::send_deltas;
use crate::transfer::early::Early;

/// What became of a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Committed as this JID.
    Committed(Jid),
    /// The path changed on the server meanwhile: list, then plan again.
    Conflict,
    /// The file changed while it was uploaded: hash it again.
    Changed,
    /// The server refused it (`code: message`); other changes go on.
    Refused(String),
}

/// What an upload moved.
#[derive(Debug, Default, Clone, Copy)]
pub struct UploadStats {
    /// Blocks sent.
    pub blocks: u64,
    /// Block bytes sent.
    pub bytes: u64,
    /// Of `blocks`, those early stores sent (counted in `bytes` too).
    pub early_blocks: u64,
    /// Blocks sent as deltas (not counted in `blocks`).
    pub delta_blocks: u64,
    /// Bytes of the deltas sent.
    pub delta_bytes: u64,
}

/// store_batch requests in flight under an `--up-limit`: the budget is the bottleneck and
/// two keep it busy; more only wait on it and may leave in another order than the file's,
/// which is the order a device streaming the upload fetches in.
const LIMITED_IN_FLIGHT: usize = 2;
/// store_batch requests in flight per worker otherwise: each waits for the server's flush
/// to disk before it is answered, so with one per worker the processes of a sync on one
/// machine all waited on the disk at times; four per worker sent blocks out of file order
/// faster than a device streaming the upload fetched them (docs/DECISIONS.md, "Tuning").
const IN_FLIGHT_PER_WORKER: usize = 2;
/// The most store_batch requests in flight.
const IN_FLIGHT_MAX: usize = 8;

/// store_batch requests to keep in flight with `workers` workers.
pub fn in_flight(api: &Api, workers: usize) -> usize {
    match api.up_limited() {
        true => workers.min(LIMITED_IN_FLIGHT),
        false => (workers * IN_FLIGHT_PER_WORKER).min(IN_FLIGHT_MAX),
    }
}

/// Where a block to upload is read: file, offset, length, and the stat the file must have.
type Wanted<'a> = (PathBuf, u64, usize, Option<&'a Stat>);

/// Commits `changes` of files under `root`, uploading the blocks the server lacks (those
/// `early` stores after the first commit was sent are not sent again); a transient failure
/// of the server aborts with the error, after the commits that did land.
pub fn upload(
    api: &Api,
    root: &Path,
    batch_bytes_max: u64,
    workers: usize,
    changes: Vec<Change>,
    early: Option<Early>,
    done: &mut Vec<(Change, Outcome)>,
) -> Result<UploadStats, ApiError> {
    let started = std::time::Instant::now();
    let mut stats = UploadStats::default();
    let mut waiting: Vec<(Change, Vec<BlockHash>)> = Vec::new();
    commit_round(api, changes, done, &mut waiting)?;
    let first_commit_ms = started.elapsed().as_millis();
    if let Some(early) = early {
        claim_early(early, started, &mut waiting, &mut stats);
    }
    if waiting.is_empty() {
        return Ok(stats);
    }
    if api.deltas() {
        let sent = send_deltas(api, root, batch_bytes_max, &waiting)?;
        for (_, need) in waiting.iter_mut() {
            need.retain(|h| !sent.stored.contains(h));
        }
        stats.delta_blocks = sent.blocks;
        stats.delta_bytes = sent.wire_bytes;
    }
    let sources = sources_of(root, &waiting);
    let batches = batches_of(&sources, batch_bytes_max);
    let changed = store_all(api, workers, &sources, &batches, &mut stats)?;
    let mut again = Vec::new();
    for (change, _) in waiting {
        if changed.contains(&root.join(&change.lpath)) {
            done.push((change, Outcome::Changed));
        } else {
            again.push(change);
        }
    }
    let stored_ms = started.elapsed().as_millis();
    let mut still: Vec<(Change, Vec<BlockHash>)> = Vec::new();
    commit_round(api, again, done, &mut still)?;
    tracing::debug!(
        first_commit_ms,
        stored_ms,
        committed_ms = started.elapsed().as_millis(),
        blocks = stats.blocks,
        early_blocks = stats.early_blocks,
        delta_blocks = stats.delta_blocks,
        "upload done"
    );
    // Blocks asked for again right after being stored: something else is wrong (a block
    // the store dropped as damaged, say); the next round starts over.
    for (change, need) in still {
        let message = format!(
            "the server still lacks {} block(s) after upload",
            need.len()
        );
        done.push((change, Outcome::Refused(message)));
    }
    Ok(stats)
}

/// Waits for the early senders, once the first commit said which blocks it needs: those
/// they stored after the commit was sent are not sent again.
fn claim_early(
    early: Early,
    started: std::time::Instant,
    waiting: &mut [(Change, Vec<BlockHash>)],
    stats: &mut UploadStats,
) {
    let needed: HashSet<BlockHash> = waiting
        .iter()
        .flat_map(|(_, n)| n.iter().copied())
        .collect();
    early.keep_only(&needed);
    // A block stored before the commit was sent and asked for all the same was
    // forgotten by the server (its upload record expired): that one goes up again.
    let stored = early.finish();
    let late: HashSet<BlockHash> = stored
        .iter()
        .filter(|s| s.at > started)
        .map(|s| s.hash)
        .collect();
    for (_, need) in waiting.iter_mut() {
        need.retain(|h| !late.contains(h));
    }
    tracing::debug!(before_commit = stored.len() - late.len(), "early stores");
    stats.early_blocks = stored.len() as u64;
    stats.blocks += stored.len() as u64;
    stats.bytes += stored.iter().map(|s| s.len as u64).sum::<u64>();
}

/// Each wanted block once, with the file, offset, length and hashed stat it is read from.
fn sources_of<'a>(
    root: &Path,
    waiting: &'a [(Change, Vec<BlockHash>)],
) -> HashMap<BlockHash, Wanted<'a>> {
    let mut sources: HashMap<BlockHash, Wanted> = HashMap::new();
    for (change, need) in waiting {
        let r = &change.request;
        for (i, h) in r.version.blocklist.iter().enumerate() {
            if need.contains(h) && !sources.contains_key(h) {
                let offset = i as u64 * BLOCK_BYTES_MAX as u64;
                let len = (r.version.size - offset).min(BLOCK_BYTES_MAX as u64) as usize;
                sources.insert(
                    *h,
                    (root.join(&change.lpath), offset, len, change.stat.as_ref()),
                );
            }
        }
    }
    sources
}

/// The blocks in store_batch requests of at most `batch_bytes_max`, in file order.
fn batches_of(sources: &HashMap<BlockHash, Wanted>, batch_bytes_max: u64) -> Vec<Vec<BlockHash>> {
    let mut batches: Vec<Vec<BlockHash>> = Vec::new();
    let mut current: Vec<BlockHash> = Vec::new();
    let mut current_bytes = 0u64;
    let mut ordered: Vec<(&BlockHash, &Wanted)> = sources.iter().collect();
    ordered.sort_by(|a, b| (&a.1 .0, a.1 .1).cmp(&(&b.1 .0, b.1 .1)));
    for (h, (_, _, len, _)) in ordered {
        if current_bytes + *len as u64 > batch_bytes_max && !current.is_empty() {
            batches.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current.push(*h);
        current_bytes += *len as u64;
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Sends every batch on up to the upload's requests in flight; the paths of files that
/// changed since they were hashed.
fn store_all(
    api: &Api,
    workers: usize,
    sources: &HashMap<BlockHash, Wanted>,
    batches: &[Vec<BlockHash>],
    stats: &mut UploadStats,
) -> Result<HashSet<PathBuf>, ApiError> {
    let workers = in_flight(api, workers);
    let changed: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let sent = Mutex::new(UploadStats::default());
    // Small blocks are read (from files whose stat is the hashed one before and after the
    // read) into a thread's `read` buffer; large ones are sent from their open files. Both
    // buffers only grow: zeroing them before reading over them was a pass over every byte
    // uploaded. `body` holds the request when the bulk path is off, and compressed blocks.
    let stored = pool::run(
        batches,
        workers,
        || (Vec::<u8>::new(), StoreBuffers::default()),
        |(read, body), _, batch| send_batch(api, sources, batch, read, body, &changed, &sent),
    );
    let st = sent.into_inner().unwrap_or_else(|e| e.into_inner());
    stats.blocks += st.blocks;
    stats.bytes += st.bytes;
    stored?;
    Ok(changed
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .collect())
}

/// Sends one store_batch of `batch`'s blocks, each read from its file only while the file
/// still has the stat it was hashed with; files that changed go to `changed`, what was
/// stored is counted in `sent`.
fn send_batch(
    api: &Api,
    sources: &HashMap<BlockHash, Wanted>,
    batch: &[BlockHash],
    read: &mut Vec<u8>,
    body: &mut StoreBuffers,
    changed: &Mutex<Vec<PathBuf>>,
    sent: &Mutex<UploadStats>,
) -> Result<(), ApiError> {
    let mut pieces = Vec::with_capacity(batch.len());
    // Every piece's file and hashed stat.
    let mut from: Vec<(&PathBuf, Option<&Stat>)> = Vec::new();
    let mut used = 0;
    for h in batch {
        let (path, offset, len, stat) = &sources[h];
        let source = if *len >= SENDFILE_BYTES_MIN {
            open_unchanged(path, *stat).map(|file| Source::File {
                file,
                offset: *offset,
            })
        } else {
            if read.len() < used + len {
                read.resize(used + len, 0);
            }
            let at = used;
            read_unchanged(path, *offset, &mut read[at..at + len], *stat).then(|| {
                used += len;
                Source::Read { at }
            })
        };
        match source {
            Some(source) => {
                pieces.push(Piece {
                    hash: *h,
                    len: *len,
                    source,
                });
                from.push((path, *stat));
            }
            None => mark_changed(changed, [path.clone()]),
        }
    }
    if pieces.is_empty() {
        return Ok(());
    }
    match api.store_pieces(&pieces, &read[..used], body) {
        Ok(Sent::Stored) => {
            // A file that changed while its blocks were sent is hashed
            // again; the blocks the server verified and kept do no harm.
            for (piece, (path, stat)) in pieces.iter().zip(&from) {
                if let Source::File { file, .. } = &piece.source {
                    if !unchanged(file, *stat) {
                        mark_changed(changed, [(*path).clone()]);
                    }
                }
            }
            let mut st = sent.lock().unwrap_or_else(|e| e.into_inner());
            st.blocks += pieces.len() as u64;
            st.bytes += pieces.iter().map(|p| p.len as u64).sum::<u64>();
        }
        Ok(Sent::SourceShort) => {
            mark_changed(changed, from.iter().map(|(p, _)| (*p).clone()));
        }
        // A file changed without changing its stat: the batch kept
        // nothing, and its files are hashed again next round.
        Err(ApiError::Server { code, .. }) if code == "hash_mismatch" => {
            mark_changed(changed, from.iter().map(|(p, _)| (*p).clone()));
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

fn mark_changed(changed: &Mutex<Vec<PathBuf>>, paths: impl IntoIterator<Item = PathBuf>) {
    changed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(paths);
}

/// One pass of commit_batch calls over `changes`.
fn commit_round(
    api: &Api,
    changes: Vec<Change>,
    done: &mut Vec<(Change, Outcome)>,
    waiting: &mut Vec<(Change, Vec<BlockHash>)>,
) -> Result<(), ApiError> {
    let mut rest = changes.into_iter().peekable();
    while rest.peek().is_some() {
        let chunk: Vec<Change> = rest.by_ref().take(COMMIT_BATCH_MAX).collect();
        let answer = api.commit_batch(chunk.iter().map(|c| c.request.clone()).collect())?;
        for (change, result) in chunk.into_iter().zip(answer.results) {
            match result {
                CommitResult::Ok { jid } => done.push((change, Outcome::Committed(jid))),
                CommitResult::NeedBlocks { need } => waiting.push((change, need)),
                CommitResult::Conflict { .. } => done.push((change, Outcome::Conflict)),
                CommitResult::Error { error, message } => {
                    done.push((change, Outcome::Refused(format!("{error}: {message}"))))
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::api::Endpoint;
    use crate::net::bulk::tests::{answer, request};
    use crate::transfer::early::tests::{lately, Behaviour, BlockServer};
    use crate::transfer::early::StoredLately;
    use holdall_proto::frame::decode_store_frames;
    use holdall_proto::FileVersion;
    use std::net::TcpListener;
    use std::sync::Arc;

    /// A file edited after it was hashed without a change of stat (a second write in the
    /// same timestamp tick): its block goes up under the hashed name with the new bytes,
    /// the server's verification refuses the batch, and the file goes back to hashing
    /// instead of being committed or reported as refused.
    #[test]
    fn a_batch_the_server_finds_mismatched_sends_its_files_back_to_hashing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"edited!").unwrap();
        let named = BlockHash::of(b"hashed!");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // Each request's path and body, in arrival order.
        type Requests = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
        let seen: Requests = Arc::default();
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let (mut s, log) = (conn.unwrap(), Arc::clone(&log));
                std::thread::spawn(move || {
                    while let Some((head, body)) = request(&mut s) {
                        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                        log.lock().unwrap().push((path.clone(), body));
                        match path.as_str() {
                            "/v1/commit_batch" => answer(
                                &mut s,
                                "200 OK",
                                &format!(
                                    r#"{{"results":[{{"status":"need_blocks","need":["{named}"]}}]}}"#
                                ),
                            ),
                            _ => answer(
                                &mut s,
                                "400 Bad Request",
                                &format!(
                                    r#"{{"error":"hash_mismatch","message":"block {named}"}}"#
                                ),
                            ),
                        }
                    }
                });
            }
        });
        let api = Api::new(
            &Endpoint {
                url,
                token: "t".into(),
                ca: None,
            },
            0,
            0,
        )
        .unwrap();
        let change = change_of_f(dir.path(), vec![named], 7);
        let mut done = Vec::new();
        let stats = upload(&api, dir.path(), 8 << 20, 2, vec![change], None, &mut done).unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].1, Outcome::Changed);
        assert_eq!(stats.blocks, 0, "nothing counts as sent");
        let seen = seen.lock().unwrap();
        let paths: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            ["/v1/commit_batch", "/v1/store_batch"],
            "no second commit"
        );
        let frames: Vec<_> = decode_store_frames(&seen[1].1, u64::MAX)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!((frames[0].hash, frames[0].data), (named, &b"edited!"[..]));
    }

    /// A file of two full blocks and a short one, its change and its blocks.
    fn three_block_change(dir: &Path) -> (Change, Vec<BlockHash>) {
        let data = holdall_testkit::pseudo_random_bytes(3, 2 * BLOCK_BYTES_MAX + 1000);
        std::fs::write(dir.join("f"), &data).unwrap();
        let blocklist = holdall_proto::blocklist_of(&data);
        let change = change_of_f(dir, blocklist.clone(), data.len() as u64);
        (change, blocklist)
    }

    /// The commit of the file `f` under `dir` as `blocklist` and `size`, with its stat now.
    fn change_of_f(dir: &Path, blocklist: Vec<BlockHash>, size: u64) -> Change {
        Change {
            lpath: "f".into(),
            request: holdall_proto::api::CommitRequest {
                ns: 1,
                path: "f".into(),
                version: FileVersion::file(blocklist, size, 0),
                parent_jid: None,
            },
            stat: Some(Stat::of(&std::fs::metadata(dir.join("f")).unwrap())),
            base: None,
        }
    }

    /// Early senders to `fake`, offered every block of `change` (of the file `f` under `dir`).
    fn early_offering(fake: &BlockServer, dir: &Path, change: &Change) -> Early {
        early_offering_with(fake, dir, change, lately())
    }

    /// The same, remembering what went up in `lately`.
    fn early_offering_with(
        fake: &BlockServer,
        dir: &Path,
        change: &Change,
        lately: Arc<StoredLately>,
    ) -> Early {
        let early = Early::start(fake.api.clone(), HashSet::new(), lately, 8 << 20, 2);
        let (path, size) = (dir.join("f"), change.request.version.size);
        for (i, hash) in change.request.version.blocklist.iter().enumerate() {
            let offset = (i * BLOCK_BYTES_MAX) as u64;
            early.offer(crate::local::scan::HashedBlock {
                path: &path,
                offset,
                len: (size - offset).min(BLOCK_BYTES_MAX as u64) as usize,
                hash: *hash,
            });
        }
        early
    }

    /// However the early stores and the first commit interleave, every block goes up
    /// exactly once and the file is committed.
    #[test]
    fn blocks_early_stores_sent_are_not_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        let (change, blocklist) = three_block_change(dir.path());
        let fake = BlockServer::start(Behaviour::default());
        let early = early_offering(&fake, dir.path(), &change);
        let size = change.request.version.size;
        let stats = upload_committing(&fake, dir.path(), change, early);
        assert_eq!(sorted(fake.stores()), sorted(blocklist), "each block once");
        assert_eq!((stats.blocks, stats.bytes), (3, size));
    }

    /// A block stored early and asked for all the same by the first commit (the server's
    /// upload record expired) goes up again rather than leaving the commit short.
    #[test]
    fn a_block_the_server_forgot_goes_up_again() {
        let dir = tempfile::tempdir().unwrap();
        let (change, blocklist) = three_block_change(dir.path());
        let fake = BlockServer::start(Behaviour {
            forget_at_first_commit: true,
            ..Behaviour::default()
        });
        let stored = lately();
        let early = early_offering_with(&fake, dir.path(), &change, stored.clone());
        // Until the senders have the server's answers, not just until the server has the
        // blocks: a store answered after the upload started counts as sent after the
        // commit, and is not sent again.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let now = std::time::Instant::now;
        while !blocklist.iter().all(|h| stored.holds(h, now())) {
            assert!(now() < deadline, "early stores went up");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        upload_committing(&fake, dir.path(), change, early);
        let twice: Vec<BlockHash> = blocklist.iter().chain(&blocklist).copied().collect();
        assert_eq!(
            sorted(fake.stores()),
            sorted(twice),
            "early, then again after the commit asked"
        );
    }

    /// Uploads `change` of a file under `root` with `early`, insisting that it is committed.
    fn upload_committing(
        fake: &BlockServer,
        root: &Path,
        change: Change,
        early: Early,
    ) -> UploadStats {
        let mut done = Vec::new();
        let stats = upload(
            &fake.api,
            root,
            8 << 20,
            2,
            vec![change],
            Some(early),
            &mut done,
        );
        assert!(matches!(done[..], [(_, Outcome::Committed(_))]), "{done:?}");
        stats.unwrap()
    }

    fn sorted(mut hashes: Vec<BlockHash>) -> Vec<BlockHash> {
        hashes.sort();
        hashes
    }
}
