//! Streaming sync on the downloading side: blocks of files other devices are still
//! uploading, fetched into a cache in `.holdall/prefetch/` before their commit lands, so that
//! when the commit arrives the file is built locally and only what is missing is fetched.
//!
//! The cache is a cache: one file per block (named by its hash, checked on every read by the
//! builder), wiped at start, bounded in bytes (least recently used first out) and in age: an
//! upload the server has said nothing about for its prefetch TTL is dropped with its blocks,
//! and a block no followed upload lists is removed at once. Nothing in it is ever shown as a file of the synced folder: files
//! appear only through the normal download path, from committed rows.
//!
//! The cache state is shared by the [`Prefetcher`] thread (which fetches) and the sync round
//! (which offers entries from `list`, builds files from cached blocks, and purges entries
//! whose upload ended without a commit).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use holdall_proto::api::{NsId, PrefetchEntry, RetrieveBatchRequest, RetrieveItem};
use holdall_proto::frame::{decode_retrieve_frames, RetrieveStatus};
use holdall_proto::limits::BLOCK_BYTES_MAX;
use holdall_proto::BlockHash;
use tracing::{debug, info, warn};

use crate::api::Api;

/// Folder of the cache inside the state folder.
pub const PREFETCH_DIR: &str = "prefetch";
/// How long one prefetch request lets the server wait for blocks still being uploaded.
const WAIT_MS: u64 = 5_000;
/// How long the prefetcher sleeps when it has nothing to do, unless woken.
const IDLE: Duration = Duration::from_secs(5);
/// Longest wait after failed requests.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Most entries followed at once; more are dropped (they take the normal path).
const ENTRIES_MAX: usize = 10_000;
/// Blocks per prefetch request: one, so the downloader trails the uploader by one block.
const REQUEST_BLOCKS_MAX: usize = 1;
/// Longest a build waits for a block the prefetcher is fetching right now.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(10);

/// Counters for `holdall status` and the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefetchStats {
    /// Blocks fetched into the cache.
    pub prefetched_blocks: u64,
    /// Bytes fetched into the cache.
    pub prefetched_bytes: u64,
    /// Cached blocks used when building files.
    pub hits: u64,
    /// Entries dropped because their upload ended without a commit, or changed.
    pub dropped_entries: u64,
    /// Blocks purged by the byte bound, or with an entry dropped by age.
    pub purged_blocks: u64,
}

/// An upload being followed.
#[derive(Debug, Clone)]
struct Followed {
    blocklist: Vec<BlockHash>,
    size: u64,
    /// When the server last showed the upload alive (listed, a block served or pending).
    alive_at: Instant,
    /// When the server said the entry is gone or changed (its blocks are kept until a round
    /// that listed after this moment has had the chance to build the committed file).
    gone_at: Option<Instant>,
}

impl Followed {
    fn block_len(&self, index: usize) -> u64 {
        let offset = index as u64 * BLOCK_BYTES_MAX as u64;
        self.size.saturating_sub(offset).min(BLOCK_BYTES_MAX as u64)
    }
}

#[derive(Debug, Clone, Copy)]
struct Cached {
    len: u64,
    last_used: Instant,
}

/// The cache's books: which uploads are followed and which blocks are on disk.
struct Books {
    dir: PathBuf,
    bytes_max: u64,
    ttl: Duration,
    entries: HashMap<(NsId, String), Followed>,
    blocks: HashMap<BlockHash, Cached>,
    /// Blocks the prefetcher is fetching now: a build waits for them rather than fetch
    /// them a second time.
    in_flight: HashSet<BlockHash>,
    bytes: u64,
    stats: PrefetchStats,
}

/// The prefetch cache of one synced folder, shared by the prefetcher and the sync round.
#[derive(Clone)]
pub struct PrefetchCache {
    books: Arc<Mutex<Books>>,
    wake: Arc<Condvar>,
}

impl PrefetchCache {
    /// An empty cache in `state_dir/prefetch` (whatever a past run left there is removed),
    /// bounded to `bytes_max` bytes and blocks unused for `ttl`.
    pub fn open(state_dir: &Path, bytes_max: u64, ttl: Duration) -> std::io::Result<Self> {
        let dir = state_dir.join(PREFETCH_DIR);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&dir)?;
        Ok(PrefetchCache {
            books: Arc::new(Mutex::new(Books {
                dir,
                bytes_max,
                ttl,
                entries: HashMap::new(),
                blocks: HashMap::new(),
                in_flight: HashSet::new(),
                bytes: 0,
                stats: PrefetchStats::default(),
            })),
            wake: Arc::new(Condvar::new()),
        })
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows the uploads `list` announced. An entry whose blocklist changed replaces the
    /// old one; the old one's blocks stay while other entries or the LRU keep them.
    pub fn offer(&self, announced: &[PrefetchEntry]) {
        if announced.is_empty() {
            return;
        }
        let mut b = self.books();
        let mut replaced = false;
        for e in announced {
            let key = (e.ns, e.path.clone());
            if b.entries.len() >= ENTRIES_MAX && !b.entries.contains_key(&key) {
                continue;
            }
            debug!(ns = e.ns, path = %e.path, blocks = e.blocklist.len(), "following an upload");
            let old = b.entries.insert(
                key,
                Followed {
                    blocklist: e.blocklist.clone(),
                    size: e.size,
                    alive_at: Instant::now(),
                    gone_at: None,
                },
            );
            replaced |= old.is_some_and(|o| o.blocklist != e.blocklist);
        }
        if replaced {
            b.free_unlisted();
        }
        drop(b);
        self.wake.notify_all();
    }

    /// Where the cached block `hash` is, with its length, marking it used. A block being
    /// prefetched right now is waited for.
    pub fn block(&self, hash: &BlockHash) -> Option<(PathBuf, u64)> {
        let mut b = self.books();
        let deadline = Instant::now() + IN_FLIGHT_WAIT;
        while b.in_flight.contains(hash) {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            b = self
                .wake
                .wait_timeout(b, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let dir = b.dir.clone();
        let c = b.blocks.get_mut(hash)?;
        c.last_used = Instant::now();
        Some((dir.join(hash.to_hex()), c.len))
    }

    /// Counts `n` cached blocks used to build files.
    pub fn count_hits(&self, n: u64) {
        self.books().stats.hits += n;
    }

    /// Stops following the uploads of files that were just built (their commits landed),
    /// and frees their blocks that no other followed upload lists.
    pub fn finished(&self, keys: &[(NsId, String)]) {
        let mut b = self.books();
        for key in keys {
            b.entries.remove(key);
        }
        b.free_unlisted();
    }

    /// Drops entries the server called gone before `listed_at` (the start of a round's
    /// list, which has therefore seen any commit that ended them), and entries silent for
    /// the TTL.
    pub fn purge(&self, listed_at: Instant) {
        let mut b = self.books();
        let before = b.entries.len();
        b.entries
            .retain(|_, f| f.gone_at.is_none_or(|gone| gone >= listed_at));
        let dropped = (before - b.entries.len()) as u64;
        b.stats.dropped_entries += dropped;
        if dropped > 0 {
            b.free_unlisted();
        }
        b.expire(Instant::now());
    }

    /// Counters.
    pub fn stats(&self) -> PrefetchStats {
        self.books().stats
    }

    /// Bytes of blocks on disk.
    pub fn bytes(&self) -> u64 {
        self.books().bytes
    }

    /// Uploads followed.
    pub fn followed(&self) -> usize {
        self.books().entries.len()
    }
}

impl Books {
    fn path_of(&self, hash: &BlockHash) -> PathBuf {
        self.dir.join(hash.to_hex())
    }

    fn remove_block(&mut self, hash: &BlockHash) {
        if let Some(c) = self.blocks.remove(hash) {
            self.bytes -= c.len;
            let _ = std::fs::remove_file(self.path_of(hash));
        }
    }

    /// Removes blocks no followed upload lists; how many.
    fn free_unlisted(&mut self) -> u64 {
        let listed: HashSet<BlockHash> = self
            .entries
            .values()
            .flat_map(|f| f.blocklist.iter().copied())
            .collect();
        let unlisted: Vec<BlockHash> = self
            .blocks
            .keys()
            .filter(|h| !listed.contains(*h))
            .copied()
            .collect();
        let n = unlisted.len() as u64;
        for h in unlisted {
            self.remove_block(&h);
        }
        n
    }

    /// Drops uploads the server has shown no sign of for the TTL, and their blocks.
    fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        let before = self.entries.len();
        self.entries
            .retain(|_, f| now.duration_since(f.alive_at) < ttl);
        let dropped = (before - self.entries.len()) as u64;
        if dropped > 0 {
            self.stats.dropped_entries += dropped;
            self.stats.purged_blocks += self.free_unlisted();
        }
    }

    /// Makes room for `len` more bytes, least recently used first, never taking a block of
    /// `keep` (the upload being fetched). False when it cannot.
    fn make_room(&mut self, len: u64, keep: &[BlockHash]) -> bool {
        if self.bytes + len <= self.bytes_max {
            return true;
        }
        let keep: HashSet<&BlockHash> = keep.iter().collect();
        let mut candidates: Vec<(Instant, BlockHash)> = self
            .blocks
            .iter()
            .filter(|(h, _)| !keep.contains(h))
            .map(|(h, c)| (c.last_used, *h))
            .collect();
        candidates.sort_unstable_by_key(|(used, _)| *used);
        for (_, h) in candidates {
            if self.bytes + len <= self.bytes_max {
                break;
            }
            self.remove_block(&h);
            self.stats.purged_blocks += 1;
        }
        self.bytes + len <= self.bytes_max
    }

    /// The next request: up to `batch_bytes_max` of blocks of the oldest-listed live entry
    /// that are not cached yet, in file order (the order they are uploaded in).
    fn next_request(&mut self, batch_bytes_max: u64) -> Option<(RetrieveBatchRequest, u64)> {
        let mut keys: Vec<&(NsId, String)> = self
            .entries
            .iter()
            .filter(|(_, f)| f.gone_at.is_none())
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        for key in keys {
            let f = &self.entries[key];
            let mut hashes = Vec::new();
            let mut payload = 0u64;
            let mut asked = HashSet::new();
            for (i, h) in f.blocklist.iter().enumerate() {
                let len = f.block_len(i);
                if self.blocks.contains_key(h) || !asked.insert(*h) {
                    continue;
                }
                if !hashes.is_empty()
                    && (payload + len > batch_bytes_max || hashes.len() == REQUEST_BLOCKS_MAX)
                {
                    break;
                }
                hashes.push(*h);
                payload += len;
            }
            if hashes.is_empty() {
                continue;
            }
            let request = RetrieveBatchRequest {
                items: vec![RetrieveItem {
                    ns: key.0,
                    path: key.1.clone(),
                    jid: None,
                    prefetch: true,
                    hashes,
                }],
                wait_ms: Some(WAIT_MS),
            };
            return Some((request, payload));
        }
        None
    }
}

/// The thread that fetches followed uploads' blocks into the cache.
pub struct Prefetcher {
    cache: PrefetchCache,
    api: Api,
    batch_bytes_max: u64,
    /// Called when an entry is gone, so a round runs and purges (or builds) it.
    nudge: Box<dyn Fn() + Send>,
}

impl Prefetcher {
    /// A prefetcher filling `cache` through `api`.
    pub fn new(
        cache: PrefetchCache,
        api: Api,
        batch_bytes_max: u64,
        nudge: Box<dyn Fn() + Send>,
    ) -> Prefetcher {
        Prefetcher {
            cache,
            api,
            batch_bytes_max,
            nudge,
        }
    }

    /// Fetches forever (the thread ends with the process).
    pub fn run(self) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let next = {
                let mut b = self.cache.books();
                b.expire(Instant::now());
                match b.next_request(self.batch_bytes_max) {
                    Some(r) => {
                        b.in_flight.extend(r.0.items[0].hashes.iter().copied());
                        Some(r)
                    }
                    None => {
                        let (guard, _) = self
                            .cache
                            .wake
                            .wait_timeout(b, IDLE)
                            .unwrap_or_else(|e| e.into_inner());
                        drop(guard);
                        None
                    }
                }
            };
            let Some((request, payload)) = next else {
                continue;
            };
            let answer = self.api.retrieve_batch(&request, payload);
            if answer.is_err() {
                self.landed(&request);
            }
            match answer {
                Ok(body) => {
                    backoff = Duration::from_secs(1);
                    let gone = self.take(&request, &body);
                    self.landed(&request);
                    if gone {
                        (self.nudge)();
                    }
                }
                Err(e) => {
                    warn!(error = %e, "prefetch request failed; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Stores the blocks that came back. True when the entry turned out gone.
    fn take(&self, request: &RetrieveBatchRequest, body: &[u8]) -> bool {
        let item = &request.items[0];
        let key = (item.ns, item.path.clone());
        let mut gone = false;
        for frame in decode_retrieve_frames(body, self.batch_bytes_max) {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    warn!(error = %e, "bad prefetch answer");
                    return false;
                }
            };
            match frame.status {
                RetrieveStatus::Ok if BlockHash::of(frame.data) == frame.hash => {
                    self.store(&key, &frame.hash, frame.data);
                }
                RetrieveStatus::Ok => {
                    warn!(hash = %frame.hash, "prefetched block does not match its hash")
                }
                RetrieveStatus::Pending => self.alive(&key),
                RetrieveStatus::NotEligible | RetrieveStatus::NotFound => gone = true,
            }
        }
        if gone {
            let mut b = self.cache.books();
            // An entry replaced meanwhile (a new blocklist) is not the one that went away.
            let same = |f: &Followed| item.hashes.iter().all(|h| f.blocklist.contains(h));
            if let Some(f) = b.entries.get_mut(&key).filter(|f| same(f)) {
                if f.gone_at.is_none() {
                    info!(path = %item.path, "upload no longer streamable (committed, changed or gone)");
                    f.gone_at = Some(Instant::now());
                }
            }
        }
        gone
    }

    /// The request's blocks are no longer in flight (stored, pending or failed).
    fn landed(&self, request: &RetrieveBatchRequest) {
        let mut b = self.cache.books();
        for h in &request.items[0].hashes {
            b.in_flight.remove(h);
        }
        drop(b);
        self.cache.wake.notify_all();
    }

    fn alive(&self, key: &(NsId, String)) {
        if let Some(f) = self.cache.books().entries.get_mut(key) {
            f.alive_at = Instant::now();
        }
    }

    fn store(&self, key: &(NsId, String), hash: &BlockHash, data: &[u8]) {
        let mut b = self.cache.books();
        if let Some(f) = b.entries.get_mut(key) {
            f.alive_at = Instant::now();
        }
        let Some(keep) = b.entries.get(key).map(|f| f.blocklist.clone()) else {
            return;
        };
        if b.blocks.contains_key(hash) || !b.make_room(data.len() as u64, &keep) {
            return;
        }
        let path = b.path_of(hash);
        let temp = path.with_extension("part");
        // Written under the lock: a purge never races a half-written block.
        let written = std::fs::write(&temp, data).and_then(|()| std::fs::rename(&temp, &path));
        if let Err(e) = written {
            warn!(error = %e, "could not write to the prefetch cache");
            let _ = std::fs::remove_file(&temp);
            return;
        }
        b.blocks.insert(
            *hash,
            Cached {
                len: data.len() as u64,
                last_used: Instant::now(),
            },
        );
        b.bytes += data.len() as u64;
        b.stats.prefetched_blocks += 1;
        b.stats.prefetched_bytes += data.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, seeds: &[u8], size: u64) -> PrefetchEntry {
        PrefetchEntry {
            ns: 1,
            path: path.into(),
            blocklist: seeds.iter().map(|s| BlockHash::of(&[*s])).collect(),
            size,
        }
    }

    fn put(cache: &PrefetchCache, seed: u8, len: u64) {
        let mut b = cache.books();
        let h = BlockHash::of(&[seed]);
        std::fs::write(b.path_of(&h), vec![0u8; len as usize]).unwrap();
        b.blocks.insert(
            h,
            Cached {
                len,
                last_used: Instant::now(),
            },
        );
        b.bytes += len;
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn requests_follow_file_order_and_skip_cached_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PrefetchCache::open(dir.path(), 1 << 30, Duration::from_secs(60)).unwrap();
        cache.offer(&[entry("big", &[1, 2, 3], 8 * MIB + 10)]);
        let (r, payload) = cache.books().next_request(8 * MIB).unwrap();
        assert_eq!(r.items[0].hashes, entry("big", &[1], 0).blocklist);
        assert!(r.items[0].prefetch && r.wait_ms.is_some());
        assert_eq!(payload, 4 * MIB);
        put(&cache, 1, 4 * MIB);
        let (r, _) = cache.books().next_request(8 * MIB).unwrap();
        assert_eq!(r.items[0].hashes, entry("big", &[2], 0).blocklist);
        put(&cache, 2, 4 * MIB);
        let (r, payload) = cache.books().next_request(8 * MIB).unwrap();
        assert_eq!((r.items[0].hashes.len(), payload), (1, 10));
        put(&cache, 3, 10);
        assert!(cache.books().next_request(8 * MIB).is_none(), "all cached");
    }

    #[test]
    fn a_build_waits_for_a_block_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PrefetchCache::open(dir.path(), 1 << 30, Duration::from_secs(60)).unwrap();
        let h = BlockHash::of(&[1]);
        cache.books().in_flight.insert(h);
        let fetcher = cache.clone();
        let landed = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            put(&fetcher, 1, 10);
            fetcher.books().in_flight.remove(&h);
            fetcher.wake.notify_all();
        });
        assert!(cache.block(&h).is_some(), "waited for it");
        landed.join().unwrap();
    }

    #[test]
    fn finished_and_gone_entries_free_their_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PrefetchCache::open(dir.path(), 1 << 30, Duration::from_secs(60)).unwrap();
        cache.offer(&[entry("a", &[1, 2], 8 * MIB), entry("b", &[2, 3], 8 * MIB)]);
        for s in 1..=3 {
            put(&cache, s, 4 * MIB);
        }
        cache.finished(&[(1, "a".into())]);
        assert!(cache.block(&BlockHash::of(&[1])).is_none());
        assert!(
            cache.block(&BlockHash::of(&[2])).is_some(),
            "b still lists it"
        );
        // b is gone; a round that listed before that keeps its blocks, a later one purges.
        let listed_before = Instant::now();
        cache
            .books()
            .entries
            .get_mut(&(1, "b".into()))
            .unwrap()
            .gone_at = Some(Instant::now());
        cache.purge(listed_before);
        assert_eq!(cache.followed(), 1);
        cache.purge(Instant::now() + Duration::from_millis(1));
        assert_eq!((cache.followed(), cache.bytes()), (0, 0));
        assert_eq!(
            std::fs::read_dir(dir.path().join(PREFETCH_DIR))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(cache.stats().dropped_entries, 1);
    }

    #[test]
    fn byte_bound_takes_least_recently_used_but_not_the_current_upload() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PrefetchCache::open(dir.path(), 12 * MIB, Duration::from_secs(60)).unwrap();
        cache.offer(&[
            entry("old", &[1, 2], 8 * MIB),
            entry("new", &[3, 4], 8 * MIB),
        ]);
        put(&cache, 1, 4 * MIB);
        put(&cache, 3, 4 * MIB);
        put(&cache, 2, 4 * MIB);
        // Block 3 is used (a build read it), so block 1 is the least recently used.
        cache.block(&BlockHash::of(&[3]));
        let keep = entry("new", &[3, 4], 0).blocklist;
        assert!(cache.books().make_room(4 * MIB, &keep));
        assert!(cache.block(&BlockHash::of(&[1])).is_none());
        assert!(cache.block(&BlockHash::of(&[3])).is_some());
        // Nothing but the current upload's blocks left to take: no room.
        let all: Vec<BlockHash> = (1..=4).map(|s| BlockHash::of(&[s])).collect();
        assert!(!cache.books().make_room(8 * MIB, &all));
    }

    #[test]
    fn uploads_silent_for_the_ttl_are_dropped_with_their_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PrefetchCache::open(dir.path(), 1 << 30, Duration::from_millis(50)).unwrap();
        cache.offer(&[entry("a", &[1], 10)]);
        put(&cache, 1, 10);
        cache.purge(Instant::now());
        assert_eq!(cache.bytes(), 10, "young: kept");
        std::thread::sleep(Duration::from_millis(60));
        cache.purge(Instant::now());
        let s = cache.stats();
        assert_eq!(
            (cache.bytes(), s.purged_blocks, s.dropped_entries),
            (0, 1, 1)
        );
    }

    #[test]
    fn opening_wipes_what_a_past_run_left() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(PREFETCH_DIR).join("stale");
        std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
        std::fs::write(&stale, b"x").unwrap();
        PrefetchCache::open(dir.path(), 1, Duration::from_secs(1)).unwrap();
        assert!(!stale.exists());
    }
}
