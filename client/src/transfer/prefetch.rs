//! Streaming sync on the downloading side: blocks of files other devices are still
//! uploading, fetched into a cache in `.holdall/prefetch/` before their commit lands, so that
//! when the commit arrives the file is built locally and only what is missing is fetched.
//!
//! Each followed upload is assembled in a part file of its own (`<id>.part`, the file's size,
//! blocks written at their offsets as they arrive, large ones around the page cache, the
//! whole made durable once when it is taken). When the commit lands
//! with the same blocklist and every block arrived, the part file itself becomes the synced
//! file: no copy, and no large flush at the end. Otherwise its blocks serve as a local block
//! source (checked against their hashes on every read) and only the rest is fetched.
//!
//! The cache is a cache: wiped at start, bounded in bytes (the least recently used other
//! upload is dropped first) and in age: an upload the server has said nothing about for its
//! prefetch TTL is dropped with its part file. Nothing in it is ever shown as a file of the synced folder: files
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
use holdall_proto::frame::RetrieveStatus;
use holdall_proto::limits::BLOCK_BYTES_MAX;
use holdall_proto::BlockHash;
use tracing::{debug, info, warn};

use crate::local::direct::{self, Scratch};
use crate::net::api::Api;
use holdall_proto::payload::{Payload, DIRECT_BYTES_MIN};
use holdall_proto::retrieved::Retrieved;

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
/// Prefetch requests in flight at once: several, so that blocks are on the wire (or waited
/// for at the server) while earlier ones are verified and written. With one, each block's
/// local work adds to the link's time and a downloader on a link as fast as the uploader's
/// falls further behind with every block; four keep a downloader on loopback close behind
/// (docs/DECISIONS.md, "Tuning").
const REQUESTS_IN_FLIGHT: usize = 4;
/// Under a `--down-limit` the budget is the bottleneck and two requests keep it busy; more
/// only queue on it, and what is queued when the commit lands is the tail the user waits
/// for.
const REQUESTS_IN_FLIGHT_LIMITED: usize = 2;
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

/// An upload being followed, assembled in a part file of its own as its blocks arrive.
#[derive(Debug)]
struct Followed {
    /// Names the part file, `<id>.part`.
    id: u64,
    blocklist: Vec<BlockHash>,
    size: u64,
    /// Which blocks of the blocklist are in the part file.
    have: Vec<bool>,
    /// Bytes of the blocks in the part file.
    bytes: u64,
    /// When a build last read from it (least recently used goes first under the bound).
    last_used: Instant,
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

/// A part file handed over to a build: the blocks it holds are in place already.
#[derive(Debug)]
pub struct Prepared {
    /// The part file, now the caller's.
    pub part: PathBuf,
    /// Per block of the blocklist: whether the part file holds it.
    pub have: Vec<bool>,
}

/// The cache's books: which uploads are followed and which of their blocks are on disk.
struct Books {
    dir: PathBuf,
    bytes_max: u64,
    ttl: Duration,
    entries: HashMap<(NsId, String), Followed>,
    next_id: u64,
    /// Blocks the prefetcher is fetching now: a build waits for them rather than fetch
    /// them a second time.
    in_flight: HashSet<BlockHash>,
    bytes: u64,
    stats: PrefetchStats,
    /// The aligned buffer of large blocks' writes (see direct.rs).
    scratch: Scratch,
}

/// The prefetch cache of one synced folder, shared by the prefetcher and the sync round.
#[derive(Clone)]
pub struct PrefetchCache {
    books: Arc<Mutex<Books>>,
    wake: Arc<Condvar>,
}

impl PrefetchCache {
    /// An empty cache in `state_dir/prefetch` (whatever a past run left there is removed),
    /// bounded to `bytes_max` bytes and uploads silent for `ttl`.
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
                next_id: 1,
                in_flight: HashSet::new(),
                bytes: 0,
                stats: PrefetchStats::default(),
                scratch: Scratch::default(),
            })),
            wake: Arc::new(Condvar::new()),
        })
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows the uploads `list` announced. An entry whose blocklist changed starts over.
    pub fn offer(&self, announced: &[PrefetchEntry]) {
        if announced.is_empty() {
            return;
        }
        let mut b = self.books();
        let now = Instant::now();
        for e in announced {
            let key = (e.ns, e.path.clone());
            if let Some(f) = b.entries.get_mut(&key) {
                if f.blocklist == e.blocklist && f.size == e.size {
                    f.alive_at = now;
                    f.gone_at = None;
                    continue;
                }
                b.remove_entry(&key);
            }
            if b.entries.len() >= ENTRIES_MAX {
                continue;
            }
            debug!(ns = e.ns, path = %e.path, blocks = e.blocklist.len(), "following an upload");
            let id = b.next_id;
            b.next_id += 1;
            b.entries.insert(
                key,
                Followed {
                    id,
                    have: vec![false; e.blocklist.len()],
                    blocklist: e.blocklist.clone(),
                    size: e.size,
                    bytes: 0,
                    last_used: now,
                    alive_at: now,
                    gone_at: None,
                },
            );
        }
        drop(b);
        self.wake.notify_all();
    }

    /// Where a cached copy of block `hash` is: a part file, the offset and the length. A
    /// block being prefetched right now is waited for.
    pub fn block(&self, hash: &BlockHash) -> Option<(PathBuf, u64, u64)> {
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
        let (f, i) = b.entries.values_mut().find_map(|f| {
            let i = (0..f.blocklist.len()).find(|&i| f.have[i] && f.blocklist[i] == *hash)?;
            Some((f, i))
        })?;
        f.last_used = Instant::now();
        let offset = i as u64 * BLOCK_BYTES_MAX as u64;
        Some((dir.join(format!("{}.part", f.id)), offset, f.block_len(i)))
    }

    /// The upload of `path` in `ns` with exactly this blocklist and size, as far as it was
    /// prefetched: its part file (made durable) and which blocks it holds. The caller moves
    /// it into place and fills in the rest, so a file that streamed all but its last blocks
    /// costs those blocks, not a copy of the whole. Blocks of the upload being fetched right
    /// now are waited for first. The upload is no longer followed afterwards.
    pub fn take(
        &self,
        ns: NsId,
        path: &str,
        blocklist: &[BlockHash],
        size: u64,
    ) -> Option<Prepared> {
        let key = (ns, path.to_string());
        let mut b = self.books();
        let deadline = Instant::now() + IN_FLIGHT_WAIT;
        loop {
            let f = b.entries.get(&key)?;
            if f.blocklist != blocklist || f.size != size || f.bytes == 0 {
                return None;
            }
            let now = Instant::now();
            if now >= deadline || !f.blocklist.iter().any(|h| b.in_flight.contains(h)) {
                break;
            }
            b = self
                .wake
                .wait_timeout(b, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let part = b.part_of(&b.entries[&key]);
        std::fs::File::open(&part)
            .and_then(|p| p.sync_data())
            .ok()?;
        let f = b.entries.remove(&key)?;
        b.bytes -= f.bytes;
        Some(Prepared { part, have: f.have })
    }

    /// Counts `n` cached blocks used to build files.
    pub fn count_hits(&self, n: u64) {
        self.books().stats.hits += n;
    }

    /// Stops following the uploads of files that were just built (their commits landed).
    pub fn finished(&self, keys: &[(NsId, String)]) {
        let mut b = self.books();
        for key in keys {
            b.remove_entry(key);
        }
    }

    /// Drops entries the server called gone before `listed_at` (the start of a round's
    /// list, which has therefore seen any commit that ended them), and entries silent for
    /// the TTL.
    pub fn purge(&self, listed_at: Instant) {
        let mut b = self.books();
        let gone: Vec<(NsId, String)> = b
            .entries
            .iter()
            .filter(|(_, f)| f.gone_at.is_some_and(|gone| gone < listed_at))
            .map(|(k, _)| k.clone())
            .collect();
        b.stats.dropped_entries += gone.len() as u64;
        for key in &gone {
            b.remove_entry(key);
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
    fn part_of(&self, f: &Followed) -> PathBuf {
        self.dir.join(format!("{}.part", f.id))
    }

    fn remove_entry(&mut self, key: &(NsId, String)) -> u64 {
        let Some(f) = self.entries.remove(key) else {
            return 0;
        };
        self.bytes -= f.bytes;
        let _ = std::fs::remove_file(self.part_of(&f));
        f.have.iter().filter(|h| **h).count() as u64
    }

    /// Drops uploads the server has shown no sign of for the TTL, and their blocks.
    fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        let old: Vec<(NsId, String)> = self
            .entries
            .iter()
            .filter(|(_, f)| now.duration_since(f.alive_at) >= ttl)
            .map(|(k, _)| k.clone())
            .collect();
        self.stats.dropped_entries += old.len() as u64;
        for key in &old {
            self.stats.purged_blocks += self.remove_entry(key);
        }
    }

    /// Makes room for `len` more bytes, dropping the least recently used other uploads
    /// first, never `keep` (the upload being fetched). False when it cannot.
    fn make_room(&mut self, len: u64, keep: &(NsId, String)) -> bool {
        while self.bytes + len > self.bytes_max {
            let victim = self
                .entries
                .iter()
                .filter(|(k, f)| *k != keep && f.bytes > 0)
                .min_by_key(|(_, f)| f.last_used)
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else {
                return false;
            };
            self.stats.purged_blocks += self.remove_entry(&victim);
        }
        true
    }

    /// Writes a block that came back for the upload `key` into its part file, at every
    /// place its blocklist has it, and makes it durable (so that a complete part file can
    /// become the synced file without a copy or a large flush at the end).
    fn store(
        &mut self,
        key: &(NsId, String),
        hash: &BlockHash,
        payload: Payload,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let data = payload.data();
        let Some(f) = self.entries.get(key) else {
            return Ok(());
        };
        let places: Vec<usize> = (0..f.blocklist.len())
            .filter(|&i| {
                !f.have[i] && f.blocklist[i] == *hash && f.block_len(i) == data.len() as u64
            })
            .collect();
        let added = places.len() as u64 * data.len() as u64;
        if places.is_empty() || !self.make_room(added, key) {
            return Ok(());
        }
        let part = self.part_of(&self.entries[key]);
        let size = self.entries[key].size;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&part)?;
        if file.metadata()?.len() != size {
            file.set_len(size)?;
        }
        for &i in &places {
            let offset = i as u64 * BLOCK_BYTES_MAX as u64;
            match data.len() >= DIRECT_BYTES_MIN {
                true => direct::write_block(&part, payload, offset, &mut self.scratch)?,
                false => file.write_all_at(data, offset)?,
            }
        }
        // No flush per block: large blocks went around the page cache, and the part file is
        // flushed once when a build takes it (a flush per block cost the disk 256 cache
        // flushes per GiB, interleaved with the server's on a shared disk).
        let f = self.entries.get_mut(key).expect("checked above");
        for &i in &places {
            f.have[i] = true;
        }
        f.bytes += added;
        f.alive_at = Instant::now();
        self.bytes += added;
        self.stats.prefetched_blocks += places.len() as u64;
        self.stats.prefetched_bytes += added;
        Ok(())
    }

    /// The next request: the first block neither cached nor being fetched of the
    /// oldest-listed live entry, in file order (the order they are uploaded in).
    fn next_request(&mut self, batch_bytes_max: u64) -> Option<(RetrieveBatchRequest, u64)> {
        let mut keys: Vec<&(NsId, String)> = self
            .entries
            .iter()
            .filter(|(_, f)| f.gone_at.is_none())
            .map(|(k, _)| k)
            .collect();
        keys.sort_by_key(|k| self.entries[*k].id);
        for key in keys {
            let f = &self.entries[key];
            let mut hashes = Vec::new();
            let mut payload = 0u64;
            for (i, h) in f.blocklist.iter().enumerate() {
                let len = f.block_len(i);
                if f.have[i] || hashes.contains(h) || self.in_flight.contains(h) {
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
                    signatures: Default::default(),
                    bases: Default::default(),
                }],
                wait_ms: Some(WAIT_MS),
            };
            return Some((request, payload));
        }
        None
    }
}

/// The threads that fetch followed uploads' blocks into the cache.
#[derive(Clone)]
pub struct Prefetcher {
    cache: PrefetchCache,
    api: Api,
    batch_bytes_max: u64,
    /// Called when an entry is gone, so a round runs and purges (or builds) it.
    nudge: Arc<dyn Fn() + Send + Sync>,
}

impl Prefetcher {
    /// A prefetcher filling `cache` through `api`.
    pub fn new(
        cache: PrefetchCache,
        api: Api,
        batch_bytes_max: u64,
        nudge: Arc<dyn Fn() + Send + Sync>,
    ) -> Prefetcher {
        Prefetcher {
            cache,
            api,
            batch_bytes_max,
            nudge,
        }
    }

    /// Fetches forever with [`REQUESTS_IN_FLIGHT`] requests at a time
    /// ([`REQUESTS_IN_FLIGHT_LIMITED`] under a down-limit); the threads end with the process.
    pub fn run(self) {
        let in_flight = match self.api.down_limited() {
            true => REQUESTS_IN_FLIGHT_LIMITED,
            false => REQUESTS_IN_FLIGHT,
        };
        for _ in 1..in_flight {
            let other = self.clone();
            std::thread::spawn(move || other.fetch_forever());
        }
        self.fetch_forever();
    }

    /// One request at a time, each for the next block nobody is fetching.
    fn fetch_forever(&self) {
        let mut backoff = Duration::from_secs(1);
        let mut body = Retrieved::default();
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
            let answer = self.api.retrieve_batch(&request, payload, &mut body);
            if answer.is_err() {
                self.landed(&request);
            }
            match answer {
                Ok(()) => {
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
    fn take(&self, request: &RetrieveBatchRequest, body: &Retrieved) -> bool {
        let item = &request.items[0];
        let key = (item.ns, item.path.clone());
        let mut gone = false;
        for frame in body.frames() {
            match frame.status {
                RetrieveStatus::Ok if BlockHash::of(frame.payload.data()) == frame.hash => {
                    self.store(&key, &frame.hash, frame.payload);
                }
                RetrieveStatus::Ok => {
                    warn!(hash = %frame.hash, "prefetched block does not match its hash")
                }
                RetrieveStatus::Pending => self.alive(&key),
                RetrieveStatus::NotEligible | RetrieveStatus::NotFound => gone = true,
            }
        }
        if let Some(e) = body.damage() {
            warn!(error = %e, "bad prefetch answer");
            return false;
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

    fn store(&self, key: &(NsId, String), hash: &BlockHash, payload: Payload) {
        if let Err(e) = self.cache.books().store(key, hash, payload) {
            warn!(error = %e, "could not write to the prefetch cache");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, seeds: &[u8], size: u64) -> PrefetchEntry {
        PrefetchEntry {
            ns: 1,
            path: path.into(),
            blocklist: seeds.iter().map(|s| hash(*s, size, seeds.len())).collect(),
            size,
        }
    }

    /// Block `seed`'s bytes: full blocks except the last of a `size`-byte file of `n` blocks.
    fn data(seed: u8, size: u64, n: usize) -> Vec<u8> {
        let full = BLOCK_BYTES_MAX as u64;
        let last = size - (n as u64 - 1) * full;
        let len = if u64::from(seed) == n as u64 {
            last
        } else {
            full
        };
        vec![seed; len as usize]
    }

    fn hash(seed: u8, size: u64, n: usize) -> BlockHash {
        BlockHash::of(&data(seed, size, n))
    }

    /// Stores block `seed` (1-based position) of the upload at `path`.
    fn put(cache: &PrefetchCache, path: &str, seed: u8, size: u64, n: usize) {
        let key = (1, path.to_string());
        let d = data(seed, size, n);
        cache
            .books()
            .store(&key, &BlockHash::of(&d), Payload::plain(&d))
            .unwrap();
    }

    const MIB: u64 = 1 << 20;

    fn cache(bytes_max: u64, ttl: Duration) -> (tempfile::TempDir, PrefetchCache) {
        let dir = tempfile::tempdir().unwrap();
        let cache = PrefetchCache::open(dir.path(), bytes_max, ttl).unwrap();
        (dir, cache)
    }

    #[test]
    fn requests_follow_file_order_one_block_each() {
        let (_dir, cache) = cache(1 << 30, Duration::from_secs(60));
        let size = 8 * MIB + 10;
        cache.offer(&[entry("big", &[1, 2, 3], size)]);
        let (r, payload) = cache.books().next_request(8 * MIB).unwrap();
        assert_eq!(r.items[0].hashes, vec![hash(1, size, 3)]);
        assert!(r.items[0].prefetch && r.wait_ms.is_some());
        assert_eq!(payload, 4 * MIB);
        put(&cache, "big", 1, size, 3);
        put(&cache, "big", 2, size, 3);
        let (r, payload) = cache.books().next_request(8 * MIB).unwrap();
        assert_eq!((r.items[0].hashes.len(), payload), (1, 10));
        put(&cache, "big", 3, size, 3);
        assert!(cache.books().next_request(8 * MIB).is_none(), "all cached");
    }

    #[test]
    fn an_upload_hands_over_its_part_file_as_far_as_it_came() {
        let (_dir, cache) = cache(1 << 30, Duration::from_secs(60));
        let size = 4 * MIB + 5;
        let e = entry("big", &[1, 2], size);
        cache.offer(std::slice::from_ref(&e));
        assert!(
            cache.take(1, "big", &e.blocklist, size).is_none(),
            "nothing prefetched yet"
        );
        put(&cache, "big", 2, size, 2);
        let (part, offset, len) = cache.block(&e.blocklist[1]).unwrap();
        assert_eq!((offset, len), (4 * MIB, 5));
        assert!(part.exists());
        assert!(
            cache.take(1, "big", &e.blocklist[..1], size).is_none(),
            "other blocklist"
        );
        assert!(
            cache.take(1, "big", &e.blocklist, size + 1).is_none(),
            "other size"
        );
        let taken = cache.take(1, "big", &e.blocklist, size).unwrap();
        assert_eq!(taken.have, vec![false, true]);
        let bytes = std::fs::read(&taken.part).unwrap();
        assert_eq!(bytes.len() as u64, size);
        assert_eq!(&bytes[4 * MIB as usize..], &data(2, size, 2)[..]);
        assert_eq!((cache.followed(), cache.bytes()), (0, 0));
        put(&cache, "big", 1, size, 2);
        assert_eq!(
            cache.bytes(),
            0,
            "no longer followed: a late block is not kept"
        );
    }

    #[test]
    fn taking_an_upload_waits_for_its_blocks_in_flight() {
        let (_dir, cache) = cache(1 << 30, Duration::from_secs(60));
        let size = 4 * MIB + 5;
        let e = entry("big", &[1, 2], size);
        cache.offer(std::slice::from_ref(&e));
        put(&cache, "big", 1, size, 2);
        let h = e.blocklist[1];
        cache.books().in_flight.insert(h);
        let fetcher = cache.clone();
        let landed = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            put(&fetcher, "big", 2, size, 2);
            fetcher.books().in_flight.remove(&h);
            fetcher.wake.notify_all();
        });
        let taken = cache.take(1, "big", &e.blocklist, size).unwrap();
        assert_eq!(
            taken.have,
            vec![true, true],
            "the block in flight was waited for"
        );
        landed.join().unwrap();
    }

    #[test]
    fn two_requests_ask_for_different_blocks() {
        let (_dir, cache) = cache(1 << 30, Duration::from_secs(60));
        let e = entry("big", &[1, 2, 3], 12 * MIB);
        cache.offer(std::slice::from_ref(&e));
        let mut b = cache.books();
        let first = b.next_request(8 * MIB).unwrap().0;
        b.in_flight.extend(first.items[0].hashes.iter().copied());
        let second = b.next_request(8 * MIB).unwrap().0;
        assert_eq!(first.items[0].hashes, vec![e.blocklist[0]]);
        assert_eq!(second.items[0].hashes, vec![e.blocklist[1]]);
    }

    #[test]
    fn a_build_waits_for_a_block_in_flight() {
        let (_dir, cache) = cache(1 << 30, Duration::from_secs(60));
        let e = entry("f", &[1], 10);
        cache.offer(std::slice::from_ref(&e));
        let h = e.blocklist[0];
        cache.books().in_flight.insert(h);
        let fetcher = cache.clone();
        let landed = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            put(&fetcher, "f", 1, 10, 1);
            fetcher.books().in_flight.remove(&h);
            fetcher.wake.notify_all();
        });
        assert!(cache.block(&h).is_some(), "waited for it");
        landed.join().unwrap();
    }

    #[test]
    fn finished_and_gone_entries_free_their_part_files() {
        let (dir, cache) = cache(1 << 30, Duration::from_secs(60));
        let size = 8 * MIB;
        cache.offer(&[entry("a", &[1, 2], size), entry("b", &[1, 2], size)]);
        put(&cache, "a", 1, size, 2);
        put(&cache, "b", 2, size, 2);
        cache.finished(&[(1, "a".into())]);
        assert_eq!(cache.bytes(), 4 * MIB);
        // b is gone; a round that listed before that keeps it, a later one purges it.
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
    fn byte_bound_drops_the_least_recently_used_other_upload() {
        let (_dir, cache) = cache(12 * MIB, Duration::from_secs(60));
        let size = 8 * MIB;
        cache.offer(&[
            entry("old", &[1, 2], size),
            entry("used", &[3, 4], size),
            entry("new", &[5, 6], size),
        ]);
        put(&cache, "old", 1, size, 2);
        put(&cache, "used", 3, size, 2);
        cache.block(&entry("used", &[3, 4], size).blocklist[0]);
        put(&cache, "new", 5, size, 2);
        put(&cache, "new", 6, size, 2);
        assert!(cache
            .block(&entry("old", &[1, 2], size).blocklist[0])
            .is_none());
        assert!(cache
            .block(&entry("used", &[3, 4], size).blocklist[0])
            .is_some());
        assert_eq!(cache.bytes(), 12 * MIB);
        // Nothing but the current upload left to drop: no room, nothing stored.
        cache.offer(&[entry("huge", &[7, 8, 9, 10], 16 * MIB)]);
        cache.finished(&[(1, "used".into()), (1, "new".into())]);
        for s in 7..=10 {
            put(&cache, "huge", s, 16 * MIB, 4);
        }
        assert_eq!(cache.bytes(), 12 * MIB);
    }

    #[test]
    fn uploads_silent_for_the_ttl_are_dropped_with_their_blocks() {
        let (_dir, cache) = cache(1 << 30, Duration::from_millis(50));
        cache.offer(&[entry("a", &[1], 10)]);
        put(&cache, "a", 1, 10, 1);
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
