//! Downloads: rebuild files from blocks into temporary files beside their targets.
//!
//! Every block is first looked for locally — in files whose blocklists the hash cache knows
//! and in the deleted-files cache — and read back only if its bytes still hash right; the
//! rest come from `retrieve_batch` requests of up to the server's `batch_bytes_max`, several
//! in flight, many files per request. A block used by several files is fetched once. Every
//! fetched block is checked against its hash before it is written.
//!
//! Making the files durable and moving them into place is the caller's (`sync`), so that
//! one filesystem sync covers a whole group of files.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use holdall_proto::api::{Jid, NsId, RetrieveBatchRequest, RetrieveItem};
use holdall_proto::frame::RetrieveStatus;
use holdall_proto::limits::{BLOCK_BYTES_MAX, RETRIEVE_HASHES_MAX};
use holdall_proto::BlockHash;

use crate::local::direct::{self, Scratch};
use crate::local::read::read_block;
use crate::local::scan::TEMP_PREFIX;
use crate::local::stat::Stat;
use crate::local::tree::Node;
use crate::net::api::{Api, ApiError};
use crate::pool;
use crate::transfer::delta_download::{self, Synced};
use crate::transfer::prefetch::{PrefetchCache, Prepared};
use holdall_proto::payload::{Payload, DIRECT_BYTES_MIN};
use holdall_proto::retrieved::Retrieved;

/// One file to rebuild.
#[derive(Debug, Clone)]
pub struct Fetch {
    /// Local path.
    pub lpath: String,
    /// Namespace of its row.
    pub ns: NsId,
    /// Path in the namespace.
    pub path: String,
    /// The row.
    pub jid: Jid,
    /// What it holds.
    pub node: Node,
}

/// Where blocks can be read locally.
#[derive(Default)]
pub struct BlockSources {
    places: HashMap<BlockHash, Vec<(PathBuf, u64, usize)>>,
    /// Each file added, by path: its blocklist and size.
    files: HashMap<PathBuf, (Vec<BlockHash>, u64)>,
    prefetched: Option<PrefetchCache>,
}

/// Requests each fetching thread gets at least, when there are enough blocks.
const REQUESTS_PER_FETCHER: u64 = 4;
/// Fetching threads (each with one retrieve_batch request at a time) per `--workers`, and
/// at most, unless more workers were asked for. A fetcher verifies and writes each answer
/// before it asks again, so with one per worker the server's disk waited between a
/// worker's requests; a deeper queue of O_DIRECT reads also reads faster.
const FETCHERS_PER_WORKER: usize = 2;
const FETCHERS_MAX: usize = 8;
/// The smallest retrieve_batch payload the build splits down to.
const REQUEST_BYTES_MIN: u64 = 256 << 10;

fn block_len(size: u64, index: usize) -> usize {
    let offset = index as u64 * BLOCK_BYTES_MAX as u64;
    (size - offset).min(BLOCK_BYTES_MAX as u64) as usize
}

impl BlockSources {
    /// Adds the blocks of the file at `path`.
    pub fn add_file(&mut self, path: PathBuf, blocklist: &[BlockHash], size: u64) {
        self.files.insert(path.clone(), (blocklist.to_vec(), size));
        for (i, h) in blocklist.iter().enumerate() {
            let offset = i as u64 * BLOCK_BYTES_MAX as u64;
            if offset >= size {
                break;
            }
            self.places
                .entry(*h)
                .or_default()
                .push((path.clone(), offset, block_len(size, i)));
        }
    }

    /// The file added at `path`: its path, blocklist and size.
    fn file(&self, path: PathBuf) -> Option<Synced<'_>> {
        let (path, (blocklist, size)) = self.files.get_key_value(&path)?;
        Some((path.as_path(), blocklist.as_slice(), *size))
    }

    /// Also looks in the streaming-sync cache.
    pub fn add_prefetched(&mut self, cache: PrefetchCache) {
        self.prefetched = Some(cache);
    }

    /// The block's bytes if some local file still holds them, and whether they came from
    /// the streaming-sync cache.
    pub fn read(&self, hash: &BlockHash) -> Option<(Vec<u8>, bool)> {
        let local = self.places.get(hash).and_then(|places| {
            places
                .iter()
                .find_map(|(path, offset, len)| read_block(path, *offset, *len, hash))
        });
        if let Some(data) = local {
            return Some((data, false));
        }
        let (path, offset, len) = self.prefetched.as_ref()?.block(hash)?;
        let data = read_block(&path, offset, usize::try_from(len).ok()?, hash)?;
        Some((data, true))
    }

    /// The file of `f` as far as streaming sync assembled it, if it did.
    fn prebuilt(&self, f: &Fetch) -> Option<Prepared> {
        self.prefetched
            .as_ref()?
            .take(f.ns, &f.path, &f.node.blocklist, f.node.size)
    }
}

/// What a download moved.
#[derive(Debug, Default, Clone, Copy)]
pub struct DownloadStats {
    /// Blocks fetched from the server.
    pub fetched_blocks: u64,
    /// Bytes fetched from the server.
    pub fetched_bytes: u64,
    /// Blocks taken from local files or the deleted-files cache.
    pub reused_blocks: u64,
    /// Blocks taken from the streaming-sync cache.
    pub prefetched_blocks: u64,
    /// Blocks rebuilt from deltas against local blocks (not counted in `fetched_blocks`).
    pub delta_blocks: u64,
    /// Bytes those deltas took on the wire.
    pub delta_bytes: u64,
}

/// What [`build`] made.
pub struct Built {
    /// The temporary file of each fetch (by index) that was built, and its stat once
    /// finished (a rename keeps size, mtime and inode).
    pub files: Vec<(usize, PathBuf, Stat)>,
    /// Why the others were not.
    pub errors: Vec<(usize, String)>,
    /// What it moved.
    pub stats: DownloadStats,
}

/// What the fetching workers found, merged.
#[derive(Default)]
struct Found {
    failed: BTreeSet<usize>,
    errors: Vec<(usize, String)>,
    stats: DownloadStats,
}

impl Found {
    /// Adds what another worker found: its failures, errors and what it fetched.
    fn merge(&mut self, other: Found) {
        self.failed.extend(other.failed);
        self.errors.extend(other.errors);
        let (s, o) = (&mut self.stats, other.stats);
        s.fetched_blocks += o.fetched_blocks;
        s.fetched_bytes += o.fetched_bytes;
        s.delta_blocks += o.delta_blocks;
        s.delta_bytes += o.delta_bytes;
    }
}

/// The temporary files of a build. None is kept open: with thousands of descriptors held,
/// every further open got slower (seconds of opens for 10,000 small files). A write opens its file (creating it), and the write that completes a file
/// also sets its length and mtime, so a one-block file costs one open.
struct TempFiles {
    paths: Vec<PathBuf>,
    /// Per file: block writes still to come.
    remaining: Vec<AtomicUsize>,
    /// Per file: no block write was ever to come (empty, or prebuilt whole).
    untouched: Vec<bool>,
    sizes: Vec<u64>,
    mtimes: Vec<SystemTime>,
    /// Per file: its stat once finished.
    finished: Vec<OnceLock<Stat>>,
}

impl TempFiles {
    fn new(fetches: &[Fetch], paths: Vec<PathBuf>, in_place: &HashMap<usize, Vec<bool>>) -> Self {
        let counts: Vec<usize> = fetches
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let present = in_place
                    .get(&i)
                    .map_or(0, |h| h.iter().filter(|x| **x).count());
                f.node.blocklist.len() - present
            })
            .collect();
        TempFiles {
            paths,
            untouched: counts.iter().map(|&n| n == 0).collect(),
            remaining: counts.into_iter().map(AtomicUsize::new).collect(),
            sizes: fetches.iter().map(|f| f.node.size).collect(),
            mtimes: fetches
                .iter()
                .map(|f| {
                    SystemTime::UNIX_EPOCH + Duration::from_millis(f.node.mtime_ms.max(0) as u64)
                })
                .collect(),
            finished: fetches.iter().map(|_| OnceLock::new()).collect(),
        }
    }

    fn open(&self, i: usize) -> Result<File, String> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.paths[i])
            .map_err(|e| format!("creating {}: {e}", self.paths[i].display()))
    }

    /// Writes one block of file `i` (large ones around the page cache, see direct.rs); the
    /// last one finishes the file.
    fn write(
        &self,
        i: usize,
        payload: Payload,
        offset: u64,
        scratch: &mut Scratch,
    ) -> Result<(), String> {
        let failed = |e: std::io::Error| format!("writing {}: {e}", self.paths[i].display());
        let data = payload.data();
        let file = if data.len() >= DIRECT_BYTES_MIN {
            direct::write_block(&self.paths[i], payload, offset, scratch).map_err(failed)?;
            None
        } else {
            let file = self.open(i)?;
            file.write_all_at(data, offset).map_err(failed)?;
            Some(file)
        };
        if self.remaining[i].fetch_sub(1, Ordering::AcqRel) == 1 {
            let file = match file {
                Some(f) => f,
                None => self.open(i)?,
            };
            self.finish(i, &file)?;
        }
        Ok(())
    }

    /// Finishes file `i` if no write did: an empty file, or one streaming sync prebuilt.
    /// An error if blocks are still missing.
    fn finish_untouched(&self, i: usize) -> Result<(), String> {
        match self.remaining[i].load(Ordering::Acquire) {
            0 if self.untouched[i] => self.finish(i, &self.open(i)?),
            0 => Ok(()),
            n => Err(format!("{n} block(s) did not arrive")),
        }
    }

    fn finish(&self, i: usize, file: &File) -> Result<(), String> {
        let meta = file
            .set_len(self.sizes[i])
            .and_then(|()| file.set_modified(self.mtimes[i]))
            .and_then(|()| file.metadata())
            .map_err(|e| format!("finishing {}: {e}", self.paths[i].display()))?;
        let _ = self.finished[i].set(Stat::of(&meta));
        Ok(())
    }
}

/// The temporary file for fetch `i` of this process.
fn temp_path(root: &Path, lpath: &str, i: usize) -> PathBuf {
    let target = root.join(lpath);
    let dir = target.parent().unwrap_or(root).to_path_buf();
    dir.join(format!("{TEMP_PREFIX}{}-{i}", std::process::id()))
}

/// Builds each of `fetches` into a temporary file (mtime set, not yet synced). Returns the
/// temporary path per fetch that was built, and the errors of those that were not.
pub fn build(
    api: &Api,
    root: &Path,
    batch_bytes_max: u64,
    workers: usize,
    fetches: &[Fetch],
    sources: &BlockSources,
) -> Result<Built, ApiError> {
    let mut found = Found::default();
    let (temps, in_place) = prepare_temps(root, fetches, sources, &mut found);
    let files = TempFiles::new(fetches, temps, &in_place);
    let (mut wanted, mut owner_order) =
        write_local_blocks(fetches, sources, &files, &in_place, &mut found);
    let fetchers = (workers * FETCHERS_PER_WORKER)
        .min(FETCHERS_MAX)
        .max(workers)
        .max(1);
    if api.deltas() {
        let by_delta = Deltas {
            api,
            root,
            fetches,
            sources,
            files: &files,
            wanted: &wanted,
            limits: (batch_bytes_max, fetchers),
        };
        let (done, found_by_delta) = by_delta.fetch(&owner_order);
        found.merge(found_by_delta);
        owner_order.retain(|(_, h, _)| !done.contains(h));
        wanted.retain(|h, _| !done.contains(h));
    }
    // Several requests per fetcher even when everything would fit in one: each fetcher
    // writes the files its answer holds, so one big request would create them all on one
    // thread while the others wait.
    let wanted_bytes: u64 = owner_order.iter().map(|(_, _, len)| len).sum();
    let request_bytes_max = (wanted_bytes / (REQUESTS_PER_FETCHER * fetchers as u64))
        .clamp(REQUEST_BYTES_MIN, batch_bytes_max.max(REQUEST_BYTES_MIN));
    let requests = pack_requests(fetches, &owner_order, request_bytes_max);
    let mut fetched = match fetch(api, &requests, fetchers, &wanted, &files) {
        Ok(fetched) => fetched,
        Err(e) => {
            for t in &files.paths {
                let _ = std::fs::remove_file(t);
            }
            return Err(e);
        }
    };
    // Errors of no file (a bad answer) only explain the files that failed with them.
    fetched.errors.retain(|(i, _)| *i != usize::MAX);
    found.merge(fetched);
    Ok(finish(&files, fetches.len(), found))
}

/// Each fetch's temporary path, its folder made; a file streaming sync assembled becomes
/// the temporary file as it is, and the blocks it already holds are returned per fetch.
fn prepare_temps(
    root: &Path,
    fetches: &[Fetch],
    sources: &BlockSources,
    found: &mut Found,
) -> (Vec<PathBuf>, HashMap<usize, Vec<bool>>) {
    let mut temps = Vec::with_capacity(fetches.len());
    let mut in_place: HashMap<usize, Vec<bool>> = HashMap::new();
    let mut dirs_made: BTreeSet<PathBuf> = BTreeSet::new();
    for (i, f) in fetches.iter().enumerate() {
        let temp = temp_path(root, &f.lpath, i);
        let dir = temp.parent().unwrap_or(root).to_path_buf();
        if !dirs_made.contains(&dir) {
            match std::fs::create_dir_all(&dir) {
                Ok(()) => {
                    dirs_made.insert(dir);
                }
                Err(e) => {
                    found.failed.insert(i);
                    found
                        .errors
                        .push((i, format!("creating {}: {e}", dir.display())));
                }
            }
        }
        if let Some(Prepared { part, have }) = sources.prebuilt(f) {
            match std::fs::rename(&part, &temp) {
                Ok(()) => {
                    found.stats.prefetched_blocks += have.iter().filter(|h| **h).count() as u64;
                    in_place.insert(i, have);
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&part);
                    tracing::warn!(path = %f.lpath, error = %e, "could not use the prefetched file; fetching it");
                }
            }
        }
        temps.push(temp);
    }
    (temps, in_place)
}

/// Blocks wanted from the server, by hash, with where each goes.
type Wanted = HashMap<BlockHash, Vec<(usize, u64)>>;

/// Writes the blocks found locally; returns the rest, each wanted block once with the
/// fetch that first wants it and its length, in fetch order.
fn write_local_blocks(
    fetches: &[Fetch],
    sources: &BlockSources,
    files: &TempFiles,
    in_place: &HashMap<usize, Vec<bool>>,
    found: &mut Found,
) -> (Wanted, Vec<(usize, BlockHash, u64)>) {
    let mut scratch = Scratch::default();
    let mut wanted: Wanted = HashMap::new();
    let mut owner_order: Vec<(usize, BlockHash, u64)> = Vec::new();
    for (i, f) in fetches.iter().enumerate() {
        if found.failed.contains(&i) {
            continue;
        }
        let have = in_place.get(&i);
        for (j, h) in f.node.blocklist.iter().enumerate() {
            if have.is_some_and(|have| have[j]) {
                continue;
            }
            let offset = j as u64 * BLOCK_BYTES_MAX as u64;
            if let Some(targets) = wanted.get_mut(h) {
                targets.push((i, offset));
                continue;
            }
            let Some((data, prefetched)) = sources.read(h) else {
                wanted.insert(*h, vec![(i, offset)]);
                owner_order.push((i, *h, block_len(f.node.size, j) as u64));
                continue;
            };
            match prefetched {
                true => found.stats.prefetched_blocks += 1,
                false => found.stats.reused_blocks += 1,
            }
            if let Err(e) = files.write(i, Payload::plain(&data), offset, &mut scratch) {
                found.failed.insert(i);
                found.errors.push((i, e));
            }
        }
    }
    (wanted, owner_order)
}

/// Finishes every file that did not fail (those no block write touched get their length
/// and mtime now) and removes the others; one error per failed file.
fn finish(files: &TempFiles, count: usize, mut found: Found) -> Built {
    let mut built = Vec::new();
    for i in 0..count {
        let finished = match found.failed.contains(&i) {
            true => None,
            false => match files.finish_untouched(i) {
                Err(e) => {
                    found.errors.push((i, e));
                    None
                }
                Ok(()) => {
                    let stat = files.finished[i].get().cloned();
                    if stat.is_none() {
                        found
                            .errors
                            .push((i, "the rebuilt file was not finished".into()));
                    }
                    stat
                }
            },
        };
        match finished {
            Some(stat) => built.push((i, files.paths[i].clone(), stat)),
            None => {
                found.failed.insert(i);
                let _ = std::fs::remove_file(&files.paths[i]);
            }
        }
    }
    if !found.failed.is_empty() && found.errors.is_empty() {
        let first = *found.failed.iter().next().unwrap_or(&0);
        found.errors.push((first, "not all blocks arrived".into()));
    }
    // One error per file: its blocks tend to fail alike (a full disk).
    found.errors.sort_by_key(|(i, _)| *i);
    found.errors.dedup_by_key(|(i, _)| *i);
    Built {
        files: built,
        errors: found.errors,
        stats: found.stats,
    }
}

/// Blocks of a file asked as deltas first; if none comes as a delta, the rest of the file
/// comes whole (a file rewritten rather than edited).
const PROBE_BLOCKS: usize = 4;

/// The delta pass of a build: what it reads and writes.
struct Deltas<'a> {
    api: &'a Api,
    root: &'a Path,
    fetches: &'a [Fetch],
    sources: &'a BlockSources,
    files: &'a TempFiles,
    wanted: &'a Wanted,
    /// Block bytes per request, fetching threads.
    limits: (u64, usize),
}

impl Deltas<'_> {
    /// Fetches as deltas what pays of `owner_order` (fetch, hash, length): a probe of each
    /// file's first blocks, then the rest of the files the probe found edited. The blocks
    /// written, and what the writes found.
    fn fetch(&self, owner_order: &[(usize, BlockHash, u64)]) -> (HashSet<BlockHash>, Found) {
        let mut per_fetch: HashMap<usize, usize> = HashMap::new();
        let (probe, rest): (Vec<_>, Vec<_>) = owner_order.iter().partition(|(i, _, _)| {
            let n = per_fetch.entry(*i).or_default();
            *n += 1;
            *n <= PROBE_BLOCKS
        });
        let (mut done, mut found, edited) = self.round(&probe);
        let rest: Vec<_> = rest
            .into_iter()
            .filter(|(i, _, _)| edited.contains(i))
            .collect();
        let (done_rest, found_rest, _) = self.round(&rest);
        done.extend(done_rest);
        found.merge(found_rest);
        (done, found)
    }

    /// One round: plans `order`'s blocks that replace a local block, sends them on the
    /// fetchers and writes what they rebuild. The blocks written, what the writes found, and
    /// the fetches that got at least one delta.
    fn round(
        &self,
        order: &[(usize, BlockHash, u64)],
    ) -> (HashSet<BlockHash>, Found, HashSet<usize>) {
        let (batch_bytes_max, fetchers) = self.limits;
        let asked = delta_download::plan(
            order,
            |i, h| {
                let targets = self.wanted.get(h)?;
                targets.iter().find(|(k, _)| *k == i).map(|(_, o)| *o)
            },
            |i| self.sources.file(self.root.join(&self.fetches[i].lpath)),
        );
        let requests = delta_download::requests(&asked, batch_bytes_max, |i| {
            let f = &self.fetches[i];
            (f.ns, f.path.clone(), f.jid)
        });
        fetch_deltas(
            self.api,
            &requests,
            fetchers,
            &asked,
            self.wanted,
            self.files,
        )
    }
}

/// Sends the delta `requests` on up to `fetchers` threads and writes each block they
/// rebuild; the blocks written, what the writes found, and the fetches that got a delta.
/// Anything else (a refusal, a block not rebuilt) is left to the whole-block fetch.
fn fetch_deltas(
    api: &Api,
    requests: &[(RetrieveBatchRequest, u64, Vec<usize>)],
    fetchers: usize,
    asked: &[delta_download::Asked],
    wanted: &Wanted,
    files: &TempFiles,
) -> (HashSet<BlockHash>, Found, HashSet<usize>) {
    let outcome: Mutex<(HashSet<BlockHash>, Found, HashSet<usize>)> = Mutex::default();
    let init = || (Scratch::default(), Retrieved::default());
    let sent = pool::run(requests, fetchers, init, |(scratch, body), _, job| {
        let (request, payload, carried) = job;
        if let Err(e) = api.retrieve_batch(request, *payload, body) {
            tracing::debug!(error = %e, "deltas refused; fetching whole blocks");
            return Ok::<(), std::convert::Infallible>(());
        }
        let by_hash: HashMap<BlockHash, usize> =
            carried.iter().map(|&k| (asked[k].hash, k)).collect();
        let (mut done, mut local, mut edited) = (Vec::new(), Found::default(), Vec::new());
        for frame in body.frames() {
            let Some(block) = by_hash
                .get(&frame.hash)
                .and_then(|&k| delta_download::rebuilt(&asked[k], &frame))
            else {
                continue;
            };
            let targets = wanted.get(&frame.hash).into_iter().flatten();
            if frame.delta.is_some() {
                local.stats.delta_blocks += 1;
                local.stats.delta_bytes += frame.payload.data().len() as u64;
                edited.extend(targets.clone().map(|(i, _)| *i));
            }
            for &(i, offset) in targets {
                if let Err(e) = files.write(i, Payload::plain(&block), offset, scratch) {
                    local.failed.insert(i);
                    local.errors.push((i, e));
                }
            }
            done.push(frame.hash);
        }
        let mut all = outcome.lock().unwrap_or_else(|e| e.into_inner());
        all.0.extend(done);
        all.1.merge(local);
        all.2.extend(edited);
        Ok(())
    });
    let Ok(()) = sent;
    outcome.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// Sends `requests` on up to `fetchers` threads and writes each answered block into the
/// files that want it; the first failed request stops the others.
fn fetch(
    api: &Api,
    requests: &[(RetrieveBatchRequest, u64)],
    fetchers: usize,
    wanted: &Wanted,
    files: &TempFiles,
) -> Result<Found, ApiError> {
    let outcome: Mutex<Found> = Mutex::new(Found::default());
    pool::run(
        requests,
        fetchers,
        || (Scratch::default(), Retrieved::default()),
        |(scratch, body), _, (request, payload)| {
            api.retrieve_batch(request, *payload, body)?;
            let local = write_answer(body, request, wanted, files, scratch);
            outcome
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .merge(local);
            Ok(())
        },
    )?;
    Ok(outcome.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// Verifies each block of one retrieve answer and writes it where `wanted` says; what
/// failed, including blocks the answer left out.
fn write_answer(
    body: &Retrieved,
    request: &RetrieveBatchRequest,
    wanted: &HashMap<BlockHash, Vec<(usize, u64)>>,
    files: &TempFiles,
    scratch: &mut Scratch,
) -> Found {
    let mut local = Found::default();
    let mut answered = 0usize;
    for frame in body.frames() {
        answered += 1;
        let Some(targets) = wanted.get(&frame.hash) else {
            continue;
        };
        let data = frame.payload.data();
        let ok = frame.status == RetrieveStatus::Ok && BlockHash::of(data) == frame.hash;
        if ok {
            local.stats.fetched_blocks += 1;
            local.stats.fetched_bytes += data.len() as u64;
        }
        for &(i, offset) in targets {
            let written = match ok {
                false => Err(format!("block {} came back {:?}", frame.hash, frame.status)),
                true => files.write(i, frame.payload, offset, scratch),
            };
            if let Err(e) = written {
                local.failed.insert(i);
                local.errors.push((i, e));
            }
        }
    }
    if let Some(e) = body.damage() {
        local
            .errors
            .push((usize::MAX, format!("bad retrieve answer: {e}")));
    }
    let asked: usize = request.items.iter().map(|i| i.hashes.len()).sum();
    if answered < asked {
        for item in &request.items {
            for h in &item.hashes {
                for &(i, _) in wanted.get(h).into_iter().flatten() {
                    local.failed.insert(i);
                }
            }
        }
        local
            .errors
            .push((usize::MAX, format!("{answered} of {asked} blocks answered")));
    }
    local
}

/// Groups the wanted blocks into retrieve_batch requests: items per file, payloads up to
/// `batch_bytes_max`, at most [`RETRIEVE_HASHES_MAX`] hashes each.
fn pack_requests(
    fetches: &[Fetch],
    owner_order: &[(usize, BlockHash, u64)],
    batch_bytes_max: u64,
) -> Vec<(RetrieveBatchRequest, u64)> {
    let mut out = Vec::new();
    let mut items: Vec<RetrieveItem> = Vec::new();
    let (mut payload, mut count) = (0u64, 0usize);
    for &(i, h, len) in owner_order {
        if !items.is_empty() && (payload + len > batch_bytes_max || count == RETRIEVE_HASHES_MAX) {
            out.push((
                RetrieveBatchRequest {
                    items: std::mem::take(&mut items),
                    wait_ms: None,
                },
                payload,
            ));
            payload = 0;
            count = 0;
        }
        let f = &fetches[i];
        match items.last_mut() {
            Some(item) if item.ns == f.ns && item.path == f.path && item.jid == Some(f.jid) => {
                item.hashes.push(h)
            }
            _ => items.push(RetrieveItem {
                ns: f.ns,
                path: f.path.clone(),
                jid: Some(f.jid),
                prefetch: false,
                hashes: vec![h],
                signatures: Default::default(),
                bases: Default::default(),
            }),
        }
        payload += len;
        count += 1;
    }
    if !items.is_empty() {
        out.push((
            RetrieveBatchRequest {
                items,
                wait_ms: None,
            },
            payload,
        ));
    }
    out
}
