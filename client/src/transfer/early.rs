//! Early stores: the blocks of a large file go up while the scan is still hashing it.
//!
//! Without them a large file is hashed, committed, and only then sent, so the hash pass
//! and the upload (the server verifying and writing) add up. The hashing threads offer each block of a file hashed in pieces as soon
//! as it is hashed; sender threads store the offered blocks, lowest file offset first (the
//! order a device streaming the upload fetches in), in batches of up to the server's
//! `batch_bytes_max`.
//!
//! Only blocks that no row this client knows references are offered, and once the first
//! commit has answered, the queue keeps only the blocks it asked for: nothing the commit can
//! claim goes up. The commit is not delayed by any of this, so a device streaming the
//! upload starts when it did before. Early stores need no stat checks: the server verifies
//! every block against its hash, the commit names only blocks the scan hashed from a file
//! that held still, and a block stored from a file that changed meanwhile is just never
//! claimed. A batch refused because one of its blocks changed goes again block by block;
//! any other failure stops the early senders, and the upload sends what is still needed.
//!
//! Blocks stored are remembered across rounds ([`StoredLately`]) for half the server's upload
//! record TTL: a file still being written is hashed again in every round until it holds
//! still, and the blocks it already had must not go up each time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use holdall_proto::delta::DELTA_BLOCK_BYTES_MIN;
use holdall_proto::limits::BLOCK_BYTES_MAX;
use holdall_proto::BlockHash;

use crate::local::scan::HashedBlock;
use crate::net::api::{Api, Sent, StoreBuffers};
use crate::net::bulk::{Piece, Source};

/// Blocks waiting to be sent, by (file, offset): lowest first.
#[derive(Default)]
struct Queue {
    blocks: BTreeMap<(PathBuf, u64), (usize, BlockHash)>,
    /// No more offers: senders leave once the queue is empty.
    closed: bool,
    /// Leave now, sending nothing more (dropped unfinished, or a store failed).
    stopped: bool,
}

/// Blocks early stores put on the server lately, kept across rounds.
pub struct StoredLately {
    /// How long a stored block counts as the server's (half the server's upload record
    /// TTL, so that a commit can still claim it).
    keep: Duration,
    at: Mutex<HashMap<BlockHash, Instant>>,
}

impl StoredLately {
    /// Remembering blocks for `keep`.
    pub fn new(keep: Duration) -> StoredLately {
        StoredLately {
            keep,
            at: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<BlockHash, Instant>> {
        self.at.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `hash` was stored within `keep` of `now`.
    pub(crate) fn holds(&self, hash: &BlockHash, now: Instant) -> bool {
        self.map()
            .get(hash)
            .is_some_and(|at| now.duration_since(*at) < self.keep)
    }

    fn record(&self, hashes: impl IntoIterator<Item = BlockHash>, now: Instant) {
        self.map().extend(hashes.into_iter().map(|h| (h, now)));
    }

    /// Forgets what is older than `keep`: the map holds at most the blocks that went up in
    /// that time (at 1 GB/s and 300 s, 72,000 entries of 48 bytes).
    fn prune(&self, now: Instant) {
        let keep = self.keep;
        self.map().retain(|_, at| now.duration_since(*at) < keep);
    }
}

/// A block an early sender stored.
#[derive(Debug, Clone, Copy)]
pub struct Stored {
    /// The block.
    pub hash: BlockHash,
    /// Its length.
    pub len: usize,
    /// When the server answered its store.
    pub at: Instant,
}

/// What the senders share.
#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Blocks stored.
    stored: Mutex<Vec<Stored>>,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next batch of at most `batch_bytes_max` (lowest offsets first); None when the
    /// senders are done.
    fn next_batch(&self, batch_bytes_max: u64) -> Option<Vec<(PathBuf, u64, usize, BlockHash)>> {
        let mut q = self.queue();
        while q.blocks.is_empty() && !q.closed && !q.stopped {
            q = self.ready.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        if q.stopped {
            return None;
        }
        let mut batch = Vec::new();
        let mut bytes = 0u64;
        // Blocks are at most BLOCK_BYTES_MAX, so while this holds the next one fits.
        while bytes + BLOCK_BYTES_MAX as u64 <= batch_bytes_max || batch.is_empty() {
            let Some(((path, offset), (len, hash))) = q.blocks.pop_first() else {
                break;
            };
            bytes += len as u64;
            batch.push((path, offset, len, hash));
        }
        (!batch.is_empty()).then_some(batch)
    }

    fn stop(&self) {
        self.queue().stopped = true;
        self.ready.notify_all();
    }
}

/// The early senders of one round.
pub struct Early {
    shared: Arc<Shared>,
    /// Blocks referenced by rows the client knows: never sent.
    known: HashSet<BlockHash>,
    /// Blocks earlier rounds stored: not sent again.
    lately: Arc<StoredLately>,
    /// Blocks offered so far (each is sent once).
    offered: Mutex<HashSet<BlockHash>>,
    /// Synced files whose changed blocks go up as deltas after the commit, not early: by
    /// path, the blocklist as synced.
    delta_bases: HashMap<PathBuf, Vec<BlockHash>>,
    senders: Vec<JoinHandle<()>>,
}

impl Early {
    /// Starts `senders` threads storing offered blocks through `api`, in batches of at most
    /// `batch_bytes_max`; blocks in `known` (referenced by rows the client knows) or stored
    /// `lately` are never sent, and what is stored is recorded there.
    pub fn start(
        api: Api,
        known: HashSet<BlockHash>,
        lately: Arc<StoredLately>,
        batch_bytes_max: u64,
        senders: usize,
    ) -> Early {
        assert!(
            batch_bytes_max >= BLOCK_BYTES_MAX as u64,
            "a batch holds a block"
        );
        lately.prune(Instant::now());
        let shared = Arc::new(Shared::default());
        let senders = (0..senders.max(1))
            .map(|_| {
                let (api, shared, lately) = (api.clone(), shared.clone(), lately.clone());
                std::thread::spawn(move || send(&api, &shared, &lately, batch_bytes_max))
            })
            .collect();
        Early {
            shared,
            known,
            lately,
            offered: Mutex::new(HashSet::new()),
            delta_bases: HashMap::new(),
            senders,
        }
    }

    /// The same, leaving to the delta upload the blocks of these synced files (by path,
    /// their blocklists as synced) that replace a block at their position.
    pub fn with_delta_bases(mut self, bases: HashMap<PathBuf, Vec<BlockHash>>) -> Early {
        self.delta_bases = bases;
        self
    }

    /// Queues `block` for sending unless a known row references it, an earlier round stored
    /// it, it was offered before, or it may go up as a delta.
    pub fn offer(&self, block: HashedBlock) {
        if self.known.contains(&block.hash) || self.lately.holds(&block.hash, Instant::now()) {
            return;
        }
        let replaces = self.delta_bases.get(block.path).is_some_and(|synced| {
            let at = (block.offset / BLOCK_BYTES_MAX as u64) as usize;
            synced.get(at).is_some() && block.len >= DELTA_BLOCK_BYTES_MIN
        });
        if replaces {
            return;
        }
        let first = self
            .offered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(block.hash);
        if !first {
            return;
        }
        let mut q = self.shared.queue();
        if q.closed || q.stopped {
            return;
        }
        q.blocks.insert(
            (block.path.to_path_buf(), block.offset),
            (block.len, block.hash),
        );
        drop(q);
        self.shared.ready.notify_one();
    }

    /// Drops queued blocks that are not in `needed` (what the commit asked for).
    pub fn keep_only(&self, needed: &HashSet<BlockHash>) {
        self.shared
            .queue()
            .blocks
            .retain(|_, (_, hash)| needed.contains(hash));
    }

    /// Sends what is queued, waits for the senders and returns the blocks they stored.
    pub fn finish(mut self) -> Vec<Stored> {
        self.shared.queue().closed = true;
        self.shared.ready.notify_all();
        self.join();
        std::mem::take(&mut *self.shared.stored.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn join(&mut self) {
        for s in self.senders.drain(..) {
            let _ = s.join();
        }
    }
}

impl Drop for Early {
    /// Unfinished (the round ended before its upload): sends nothing more.
    fn drop(&mut self) {
        if !self.senders.is_empty() {
            self.shared.stop();
            self.join();
        }
    }
}

/// One sender: stores batches until the queue is closed and empty, or stopped.
fn send(api: &Api, shared: &Shared, lately: &StoredLately, batch_bytes_max: u64) {
    let mut body = StoreBuffers::default();
    while let Some(batch) = shared.next_batch(batch_bytes_max) {
        let mut pieces = Vec::with_capacity(batch.len());
        for (path, offset, len, hash) in batch {
            // Gone since it was hashed: nothing to claim either.
            let Ok(file) = File::open(&path) else {
                continue;
            };
            pieces.push(Piece {
                hash,
                len,
                source: Source::File { file, offset },
            });
        }
        match store(api, &pieces, &mut body) {
            Outcome::Stored => record(shared, lately, &pieces),
            // One block changed since it was hashed (a file still being written): the
            // server kept none of the batch, so the others go again one by one.
            Outcome::Mismatch if pieces.len() > 1 => {
                for piece in pieces.chunks(1) {
                    match store(api, piece, &mut body) {
                        Outcome::Stored => record(shared, lately, piece),
                        Outcome::Mismatch => {}
                        Outcome::Failed => {
                            shared.stop();
                            break;
                        }
                    }
                }
            }
            Outcome::Mismatch => {}
            Outcome::Failed => shared.stop(),
        }
    }
}

/// What became of one early store_batch.
enum Outcome {
    Stored,
    /// A block no longer matches its name (or its file is shorter now): not stored.
    Mismatch,
    /// Anything else: the senders stop.
    Failed,
}

fn store(api: &Api, pieces: &[Piece], body: &mut StoreBuffers) -> Outcome {
    if pieces.is_empty() {
        return Outcome::Mismatch;
    }
    match api.store_pieces(pieces, &[], body) {
        Ok(Sent::Stored) => Outcome::Stored,
        Ok(Sent::SourceShort) => Outcome::Mismatch,
        Err(crate::net::api::ApiError::Server { code, .. }) if code == "hash_mismatch" => {
            Outcome::Mismatch
        }
        Err(e) => {
            tracing::debug!(error = %e, "early stores stopped; the upload sends the rest");
            Outcome::Failed
        }
    }
}

/// Records `pieces` as stored, for this round and the next ones.
fn record(shared: &Shared, lately: &StoredLately, pieces: &[Piece]) {
    let at = Instant::now();
    lately.record(pieces.iter().map(|p| p.hash), at);
    shared
        .stored
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(pieces.iter().map(|p| Stored {
            hash: p.hash,
            len: p.len,
            at,
        }));
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::net::api::Endpoint;
    use crate::net::bulk::tests::{answer, request};
    use holdall_proto::api::{
        CommitBatchRequest, CommitBatchResponse, CommitResult, StoreBatchResponse,
    };
    use holdall_proto::frame::decode_store_frames;
    use std::net::TcpListener;
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fake holdalld that keeps the blocks it is sent, as the real one does for the
    /// Dropship rule: a commit needs the blocks of its blocklist it was not sent.
    pub(crate) struct BlockServer {
        pub(crate) api: Api,
        /// Every block stored, in order, repeats kept.
        pub(crate) stores: Arc<Mutex<Vec<BlockHash>>>,
        /// store_batch requests answered, failed ones too.
        pub(crate) store_requests: Arc<AtomicUsize>,
    }

    /// How the fake answers.
    #[derive(Clone, Copy, Default)]
    pub(crate) struct Behaviour {
        /// store_batch fails with 503.
        pub(crate) fail_stores: bool,
        /// The first commit_batch forgets every block sent before it (an upload record
        /// that expired).
        pub(crate) forget_at_first_commit: bool,
    }

    impl BlockServer {
        pub(crate) fn start(behaviour: Behaviour) -> BlockServer {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let stores: Arc<Mutex<Vec<BlockHash>>> = Arc::default();
            // Blocks a commit may claim, and commits answered so far.
            let kept: Arc<Mutex<(HashSet<BlockHash>, u64)>> = Arc::default();
            let store_requests: Arc<AtomicUsize> = Arc::default();
            let (log, count) = (Arc::clone(&stores), Arc::clone(&store_requests));
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    let (mut s, log, kept) = (conn.unwrap(), log.clone(), kept.clone());
                    let count = count.clone();
                    std::thread::spawn(move || {
                        while let Some((head, body)) = request(&mut s) {
                            let (status, json) = match head.split_whitespace().nth(1) {
                                Some("/v1/store_batch") => {
                                    count.fetch_add(1, Ordering::SeqCst);
                                    store(&body, behaviour, &log, &kept)
                                }
                                _ => commit(&body, behaviour, &kept),
                            };
                            answer(&mut s, status, &json);
                        }
                    });
                }
            });
            let endpoint = Endpoint {
                url,
                token: "t".into(),
                ca: None,
            };
            BlockServer {
                api: Api::new(&endpoint, 0, 0).unwrap(),
                stores,
                store_requests,
            }
        }

        pub(crate) fn stores(&self) -> Vec<BlockHash> {
            self.stores.lock().unwrap().clone()
        }
    }

    fn store(
        body: &[u8],
        behaviour: Behaviour,
        log: &Mutex<Vec<BlockHash>>,
        kept: &Mutex<(HashSet<BlockHash>, u64)>,
    ) -> (&'static str, String) {
        if behaviour.fail_stores {
            return (
                "503 Service Unavailable",
                r#"{"error":"busy","message":"no"}"#.into(),
            );
        }
        let frames: Vec<_> = decode_store_frames(body, u64::MAX)
            .collect::<Result<_, _>>()
            .unwrap();
        if let Some(bad) = frames.iter().find(|f| BlockHash::of(f.data) != f.hash) {
            let message = format!("block {} does not match its bytes", bad.hash);
            let json = format!(r#"{{"error":"hash_mismatch","message":"{message}"}}"#);
            return ("400 Bad Request", json);
        }
        let hashes: Vec<BlockHash> = frames.iter().map(|f| f.hash).collect();
        log.lock().unwrap().extend(&hashes);
        kept.lock().unwrap().0.extend(&hashes);
        let answer = StoreBatchResponse {
            stored: hashes,
            present: Vec::new(),
        };
        ("200 OK", serde_json::to_string(&answer).unwrap())
    }

    fn commit(
        body: &[u8],
        behaviour: Behaviour,
        kept: &Mutex<(HashSet<BlockHash>, u64)>,
    ) -> (&'static str, String) {
        let batch: CommitBatchRequest = serde_json::from_slice(body).unwrap();
        let mut kept = kept.lock().unwrap();
        kept.1 += 1;
        if behaviour.forget_at_first_commit && kept.1 == 1 {
            kept.0.clear();
        }
        let results = batch
            .commits
            .iter()
            .map(|c| {
                let need: Vec<BlockHash> = c
                    .version
                    .blocklist
                    .iter()
                    .filter(|h| !kept.0.contains(*h))
                    .copied()
                    .collect();
                match need.is_empty() {
                    true => CommitResult::Ok { jid: kept.1 },
                    false => CommitResult::NeedBlocks { need },
                }
            })
            .collect();
        let answer = CommitBatchResponse { results };
        ("200 OK", serde_json::to_string(&answer).unwrap())
    }

    /// A file of `blocks` blocks of 1 KiB under `dir` (the fake server takes any length)
    /// and its blocks as the hashing threads tell them.
    pub(crate) fn file_of_blocks(dir: &Path, blocks: usize) -> (PathBuf, Vec<u8>, Vec<BlockHash>) {
        let path = dir.join("big");
        let data = holdall_testkit::pseudo_random_bytes(7, blocks * 1024);
        std::fs::write(&path, &data).unwrap();
        let hashes = data.chunks(1024).map(BlockHash::of).collect();
        (path, data, hashes)
    }

    /// A fresh memory of stored blocks.
    pub(crate) fn lately() -> Arc<StoredLately> {
        Arc::new(StoredLately::new(Duration::from_secs(60)))
    }

    /// One sender to `fake`, a block per batch, nothing known.
    fn one_sender(fake: &BlockServer) -> Early {
        Early::start(
            fake.api.clone(),
            HashSet::new(),
            lately(),
            BLOCK_BYTES_MAX as u64,
            1,
        )
    }

    fn offer_all(early: &Early, path: &Path, hashes: &[BlockHash]) {
        for (i, hash) in hashes.iter().enumerate() {
            early.offer(HashedBlock {
                path,
                offset: i as u64 * 1024,
                len: 1024,
                hash: *hash,
            });
        }
    }

    #[test]
    fn the_queue_hands_out_lowest_offsets_first_in_batches_that_fit() {
        let shared = Shared::default();
        let block = BLOCK_BYTES_MAX;
        let mut q = shared.queue();
        for (offset, len) in [(8u64, block), (0, block), (4, 100), (12, block)] {
            let hash = BlockHash::of(&offset.to_le_bytes());
            q.blocks.insert((PathBuf::from("f"), offset), (len, hash));
        }
        q.closed = true;
        drop(q);
        let offsets = |b: Vec<(PathBuf, u64, usize, BlockHash)>| -> Vec<u64> {
            b.into_iter().map(|(_, o, _, _)| o).collect()
        };
        let max = 2 * block as u64;
        assert_eq!(offsets(shared.next_batch(max).unwrap()), [0, 4]);
        assert_eq!(offsets(shared.next_batch(max).unwrap()), [8, 12]);
        assert!(shared.next_batch(max).is_none(), "closed and empty: done");
    }

    #[test]
    fn offered_blocks_go_up_once_except_those_known_or_no_longer_needed() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _, hashes) = file_of_blocks(dir.path(), 6);
        let fake = BlockServer::start(Behaviour::default());
        let known: HashSet<BlockHash> = [hashes[1]].into();
        let early = Early::start(fake.api.clone(), known, lately(), 8 << 20, 2);
        offer_all(&early, &path, &hashes);
        offer_all(&early, &path, &hashes);
        // Whatever was still queued when the commit answered and is not needed stays.
        let needed: HashSet<BlockHash> =
            hashes.iter().copied().filter(|h| *h != hashes[5]).collect();
        early.keep_only(&needed);
        let stored: Vec<BlockHash> = early.finish().into_iter().map(|s| s.hash).collect();
        let mut sent = fake.stores();
        sent.sort();
        let mut unique = sent.clone();
        unique.dedup();
        assert_eq!(sent, unique, "no block goes up twice");
        assert!(!sent.contains(&hashes[1]), "a known block does not go up");
        let mut stored_sorted = stored.clone();
        stored_sorted.sort();
        assert_eq!(stored_sorted, sent, "finish reports what was stored");
        for h in [hashes[0], hashes[2], hashes[3], hashes[4]] {
            assert!(sent.contains(&h), "needed blocks go up");
        }
    }

    #[test]
    fn a_block_whose_file_changed_is_not_stored_and_the_others_are() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _, hashes) = file_of_blocks(dir.path(), 2);
        let other = dir.path().join("other");
        std::fs::write(&other, vec![1u8; 1024]).unwrap();
        let fake = BlockServer::start(Behaviour::default());
        let early = one_sender(&fake);
        // Offered under a name its file's bytes no longer match.
        early.offer(HashedBlock {
            path: &other,
            offset: 0,
            len: 1024,
            hash: hashes[0],
        });
        early.offer(HashedBlock {
            path: &path,
            offset: 1024,
            len: 1024,
            hash: hashes[1],
        });
        let stored: Vec<BlockHash> = early.finish().into_iter().map(|s| s.hash).collect();
        assert_eq!(stored, [hashes[1]]);
        assert_eq!(fake.stores(), [hashes[1]]);
    }

    /// A file still being written is hashed again every round: what an earlier round stored
    /// does not go up again while the server still counts it as this user's.
    #[test]
    fn blocks_an_earlier_round_stored_are_not_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _, hashes) = file_of_blocks(dir.path(), 4);
        let fake = BlockServer::start(Behaviour::default());
        let memory = lately();
        let first = Early::start(fake.api.clone(), HashSet::new(), memory.clone(), 8 << 20, 2);
        offer_all(&first, &path, &hashes[..2]);
        assert_eq!(first.finish().len(), 2);
        let second = Early::start(fake.api.clone(), HashSet::new(), memory.clone(), 8 << 20, 2);
        offer_all(&second, &path, &hashes);
        let stored: Vec<BlockHash> = second.finish().into_iter().map(|s| s.hash).collect();
        let mut stored_sorted = stored.clone();
        stored_sorted.sort();
        let mut rest = hashes[2..].to_vec();
        rest.sort();
        assert_eq!(
            stored_sorted, rest,
            "only the blocks the first round had not stored"
        );
        assert_eq!(fake.stores().len(), 4, "each block once over both rounds");
        // Past the memory's span, a block counts as unknown again.
        let short = Arc::new(StoredLately::new(Duration::ZERO));
        short.record([hashes[0]], Instant::now());
        assert!(!short.holds(&hashes[0], Instant::now()));
    }

    /// A batch refused because one of its blocks changed is sent again block by block, so
    /// the blocks that did not change are stored.
    #[test]
    fn a_refused_batch_goes_again_one_block_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _, hashes) = file_of_blocks(dir.path(), 3);
        let fake = BlockServer::start(Behaviour::default());
        let shared = Shared::default();
        let mut q = shared.queue();
        for (i, hash) in hashes.iter().enumerate() {
            // The middle block is named for bytes the file no longer has.
            let hash = if i == 1 {
                BlockHash::of(b"before")
            } else {
                *hash
            };
            q.blocks
                .insert((path.clone(), i as u64 * 1024), (1024, hash));
        }
        q.closed = true;
        drop(q);
        let memory = lately();
        send(&fake.api, &shared, &memory, 8 << 20);
        assert_eq!(
            fake.store_requests.load(Ordering::SeqCst),
            4,
            "the batch, then each"
        );
        assert_eq!(fake.stores(), [hashes[0], hashes[2]]);
        let stored: Vec<BlockHash> = shared
            .stored
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.hash)
            .collect();
        assert_eq!(stored, [hashes[0], hashes[2]]);
        assert!(memory.holds(&hashes[2], Instant::now()));
    }

    #[test]
    fn a_failed_store_stops_the_senders() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _, hashes) = file_of_blocks(dir.path(), 4);
        let fake = BlockServer::start(Behaviour {
            fail_stores: true,
            ..Behaviour::default()
        });
        let early = one_sender(&fake);
        offer_all(&early, &path, &hashes);
        assert!(early.finish().is_empty());
        assert!(fake.stores().is_empty());
        assert_eq!(
            fake.store_requests.load(Ordering::SeqCst),
            1,
            "no request after the failure"
        );
    }

    #[test]
    fn dropped_unfinished_it_stops() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _, hashes) = file_of_blocks(dir.path(), 64);
        let fake = BlockServer::start(Behaviour::default());
        let early = one_sender(&fake);
        offer_all(&early, &path, &hashes);
        drop(early);
        let sent = fake.stores().len();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(fake.stores().len(), sent, "nothing goes up after the drop");
    }
}
