//! The block log: one per shard, an append-only set of segment files holding encrypted,
//! checksummed block records (see [`crate::block_log::record`]), with an in-memory index.
//!
//! Writes go through one flusher task per log. A `put` encodes (and encrypts) its record on
//! the caller's task, then queues it; the flusher takes everything queued (up to
//! `flush_bytes_max`), writes it with O_DIRECT in one burst of concurrent writes, issues one
//! fdatasync, and only then indexes the blocks and resolves the puts. While one burst is on
//! its way to disk the next one gathers: that is the group commit.
//!
//! Bytes that were acknowledged are never written again: a failed burst leaves the segment's
//! end where it was (the next burst overwrites the unacknowledged bytes), and records are
//! never rewritten in place.

pub mod buffer_pool;
mod compaction;
pub mod hint;
pub mod index;
pub mod live;
mod pacer;
pub mod record;
mod recovery;
mod writer;

pub use compaction::{CollectPlan, CollectReport};
pub use record::Form;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use futures::channel::oneshot;
use hashbrown::HashMap;
use holdall_proto::limits::BLOCK_BYTES_MAX;
use holdall_proto::BlockHash;
use tracing::{info, warn};

use crate::block_log::buffer_pool::BufferPool;
use crate::block_log::hint::HintEntry;
use crate::block_log::index::{BlockIndex, Location};
use crate::block_log::live::LiveSet;
use crate::block_log::record::{
    encode_record_of, record_len, stored_len, RecordError, SEGMENT_HEADER_BYTES,
};
use crate::group_commit::GroupCommit;
use crate::storage::{self, dma::DmaStorage, Storage, StorageFile};
use crate::store_key::{KeyError, StoreKey};
use crate::ALIGN_BYTES;
use recovery::{create_segment, load_hint, open_active, open_sealed, scan_segment, write_hint};
use writer::WriteRequest;

/// What [`BlockLog::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records read.
    pub records: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Blocks whose record failed a check.
    pub damaged: Vec<BlockHash>,
}

/// Settings of one block log.
pub struct BlockLogConfig {
    /// Folder of the segment files.
    pub dir: PathBuf,
    /// A segment is sealed once the next record would take it past this size.
    pub segment_bytes_max: u64,
    /// Encrypt payloads under this key; `None` stores them in the clear.
    pub key: Option<Rc<StoreKey>>,
    /// Most bytes one group commit writes.
    pub flush_bytes_max: usize,
    /// Most records queued for the flusher; further puts wait.
    pub queue_records_max: usize,
    /// Idle full-size buffers kept for reuse.
    pub pool_buffers_max: usize,
    /// The active segment's hint is rewritten each time this many bytes were appended, so
    /// that a restart checks payloads only of what came after (at most this much).
    pub hint_interval_bytes: u64,
    /// The medium the segments and hints live on.
    pub storage: Rc<dyn Storage>,
}

impl BlockLogConfig {
    /// Defaults: 1 GiB segments, 64 MiB bursts, 64 queued records, 16 pooled buffers, a
    /// hint checkpoint every 64 MiB.
    pub fn new(dir: impl Into<PathBuf>, key: Option<Rc<StoreKey>>) -> BlockLogConfig {
        BlockLogConfig {
            dir: dir.into(),
            segment_bytes_max: 1 << 30,
            key,
            flush_bytes_max: 64 << 20,
            queue_records_max: 64,
            pool_buffers_max: 16,
            hint_interval_bytes: 64 << 20,
            storage: Rc::new(DmaStorage),
        }
    }
}

/// Whether a put stored a new record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Written and durable now.
    Stored,
    /// The log already had the block (durable); nothing was written.
    Present,
}

/// Block log errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockLogError {
    /// The block is larger than 4 MiB.
    #[error("block is {0} bytes, more than the 4194304 allowed")]
    TooLarge(usize),
    /// The payload does not hash to the name it was put under.
    #[error("block does not hash to {expected} (it hashes to {actual})")]
    HashMismatch {
        /// The name given.
        expected: BlockHash,
        /// The payload's hash.
        actual: BlockHash,
    },
    /// A record failed its checks when read; the block is dropped from the index.
    #[error("corrupt record of block {hash} in segment {segment} at byte {offset}: {reason}")]
    Corrupt {
        /// The block.
        hash: BlockHash,
        /// Segment id.
        segment: u32,
        /// Record offset.
        offset: u64,
        /// What check failed.
        reason: RecordError,
    },
    /// A segment was written under another store key (or none).
    #[error("segment {0} was written with another store key")]
    WrongKey(u64),
    /// The store key could not be used.
    #[error("store key: {0}")]
    Key(String),
    /// An I/O error; `kind` lets callers tell a full disk from the rest.
    #[error("{context}: {message}")]
    Io {
        /// What was being done.
        context: String,
        /// The error kind.
        kind: std::io::ErrorKind,
        /// The error text.
        message: String,
    },
    /// The log is shutting down.
    #[error("block log is closed")]
    Closed,
}

impl From<KeyError> for BlockLogError {
    fn from(e: KeyError) -> Self {
        BlockLogError::Key(e.to_string())
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BlockLogError {
    let context = context.into();
    move |e| BlockLogError::Io {
        context,
        kind: e.kind(),
        message: e.to_string(),
    }
}

/// Counters of one block log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockLogStats {
    /// Blocks indexed.
    pub blocks: u64,
    /// Record bytes appended since open.
    pub bytes_appended: u64,
    /// Puts that wrote a record.
    pub puts_stored: u64,
    /// Puts of a block already there.
    pub puts_present: u64,
    /// Blocks read.
    pub gets: u64,
    /// Reads of a block not indexed.
    pub get_misses: u64,
    /// Records found corrupt (at open or at read).
    pub corrupt_records: u64,
    /// Torn tails cut at open.
    pub torn_tail_cuts: u64,
    /// Bytes cut with them.
    pub torn_tail_bytes: u64,
    /// Group commits (one fdatasync each).
    pub flushes: u64,
    /// Records written by them.
    pub flushed_records: u64,
    /// Time spent in fdatasync, nanoseconds.
    pub fsync_nanos: u64,
    /// Segment files.
    pub segments: u64,
    /// Heap bytes of the index.
    pub index_bytes: u64,
    /// Bytes of the segment files.
    pub segment_bytes: u64,
    /// Record bytes of live blocks as the last collection found them, plus what was
    /// appended since (new blocks are live until a collection says otherwise).
    pub live_bytes: u64,
    /// Record bytes compaction copied forward.
    pub bytes_moved: u64,
    /// Collections run.
    pub collections: u64,
    /// Time spent in them, nanoseconds.
    pub collect_nanos: u64,
    /// Blocks dropped as dead.
    pub blocks_dropped: u64,
    /// Bytes given back to the file system.
    pub bytes_reclaimed: u64,
    /// Segments compacted (copied forward and removed).
    pub segments_compacted: u64,
}

type Waiter = oneshot::Sender<Result<(), BlockLogError>>;

struct Active {
    id: u32,
    file: Rc<dyn StorageFile>,
    len: u64,
    hints: Vec<HintEntry>,
    /// Bytes covered by the hint file on disk.
    hinted_len: u64,
}

struct Inner {
    storage: Rc<dyn Storage>,
    dir: PathBuf,
    segment_bytes_max: u64,
    hint_interval_bytes: u64,
    key: Option<Rc<StoreKey>>,
    index: RefCell<BlockIndex>,
    pending: RefCell<HashMap<BlockHash, Vec<Waiter>>>,
    files: RefCell<BTreeMap<u32, Rc<dyn StorageFile>>>,
    active: RefCell<Active>,
    pool: BufferPool,
    stats: RefCell<BlockLogStats>,
    /// While a collection runs: the blocks found live so far.
    live: RefCell<Option<LiveSet>>,
}

/// One shard's block log. Not `Send`: it lives on its shard's executor.
pub struct BlockLog {
    inner: Rc<Inner>,
    queue: GroupCommit<WriteRequest>,
}

/// The key fingerprint in the header of the oldest segment in `dir`: what a store was
/// written under, read before anything opens it. None if there is no segment or its header
/// is damaged (opening then judges it).
pub fn key_fingerprint_on_disk(dir: &Path) -> std::io::Result<Option<u64>> {
    use std::io::Read;
    let Some(id) = storage::numbered_files(&DmaStorage, dir, "seg-", ".hblk")
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(Vec::new()),
            _ => Err(e),
        })?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    let mut header = Vec::with_capacity(SEGMENT_HEADER_BYTES as usize);
    std::fs::File::open(segment_path(dir, id as u32))?
        .take(SEGMENT_HEADER_BYTES)
        .read_to_end(&mut header)?;
    Ok(record::decode_segment_header(&header)
        .ok()
        .map(|(_, fp)| fp))
}

fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("seg-{id:010}.hblk"))
}

fn hint_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("seg-{id:010}.hint"))
}

fn segment_ids(storage: &dyn Storage, dir: &Path) -> Result<Vec<u32>, BlockLogError> {
    let numbers = storage::numbered_files(storage, dir, "seg-", ".hblk")
        .map_err(io_err(format!("listing {}", dir.display())))?;
    // Ids are written as u32; a larger number is not a segment of ours.
    Ok(numbers
        .into_iter()
        .filter_map(|n| u32::try_from(n).ok())
        .collect())
}

fn location(segment: u32, offset: u64, len: u64) -> Location {
    debug_assert!(offset.is_multiple_of(ALIGN_BYTES) && len.is_multiple_of(ALIGN_BYTES));
    Location {
        segment,
        offset_pages: u32::try_from(offset / ALIGN_BYTES).expect("segment under 16 TiB"),
        len_pages: (len / ALIGN_BYTES) as u32,
    }
}

impl BlockLog {
    /// Opens (or creates) the log in `config.dir`: loads sealed segments from their hints,
    /// scans the active segment, cuts a torn tail, and starts the flusher.
    pub async fn open(config: BlockLogConfig) -> Result<BlockLog, BlockLogError> {
        let dir = config.dir.clone();
        let storage = config.storage.clone();
        storage
            .create_dir(&dir)
            .await
            .map_err(io_err(format!("creating {}", dir.display())))?;
        let fingerprint = config.key.as_ref().map_or(0, |k| k.fingerprint());
        let mut stats = BlockLogStats::default();
        let mut index = BlockIndex::new();
        let mut files = BTreeMap::new();
        let mut ids = segment_ids(&*storage, &dir)?;
        let last = ids.pop();

        for &id in &ids {
            let Some(file) = open_sealed(&*storage, &dir, id, fingerprint, &mut stats).await?
            else {
                continue;
            };
            let size = file.size().await.map_err(io_err("segment size"))?;
            let entries = match load_hint(&*storage, &dir, id, size) {
                Some(hint) if hint.segment_len == size => hint.entries,
                _ => {
                    let scan = scan_segment(&*file, id, SEGMENT_HEADER_BYTES, size, false).await?;
                    stats.corrupt_records += scan.corrupt_records;
                    write_hint(&*storage, &dir, id, scan.valid_len, &scan.entries)?;
                    scan.entries
                }
            };
            for e in entries {
                index.insert_newest(e.hash, location(id, e.offset, e.record_len as u64));
            }
            stats.segment_bytes += size;
            files.insert(id, file);
        }

        let active = match last {
            Some(id) => {
                open_active(&*storage, &dir, id, fingerprint, &mut stats, &mut index).await?
            }
            None => None,
        };
        let active = match active {
            Some(active) => active,
            None => {
                let id = last.map_or(1, |l| l + 1);
                create_segment(&*storage, &dir, id, fingerprint).await?
            }
        };
        files.insert(active.id, active.file.clone());
        stats.segment_bytes += active.len;
        // Until a collection says otherwise, everything stored counts as live.
        stats.live_bytes = stats.segment_bytes;
        stats.segments = files.len() as u64;
        stats.blocks = index.len() as u64;
        info!(
            dir = %dir.display(),
            blocks = index.len(),
            segments = files.len(),
            "block log open"
        );

        let inner = Rc::new(Inner {
            storage,
            dir,
            segment_bytes_max: config.segment_bytes_max,
            hint_interval_bytes: config.hint_interval_bytes,
            key: config.key,
            index: RefCell::new(index),
            pending: RefCell::new(HashMap::new()),
            files: RefCell::new(files),
            active: RefCell::new(active),
            pool: BufferPool::new(config.pool_buffers_max),
            stats: RefCell::new(stats),
            live: RefCell::new(None),
        });
        let flushing = inner.clone();
        let queue = GroupCommit::start(
            config.queue_records_max,
            config.flush_bytes_max,
            move |batch| {
                let inner = flushing.clone();
                async move { inner.flush(batch).await }
            },
        );
        Ok(BlockLog { inner, queue })
    }

    /// Stores `data` as block `hash` and resolves once it is durable. With `verify`, the
    /// payload's SHA-256 is checked first; a mismatch writes nothing.
    pub async fn put(
        &self,
        hash: BlockHash,
        data: &[u8],
        verify: bool,
    ) -> Result<PutOutcome, BlockLogError> {
        self.put_pieces(hash, &[data], verify).await
    }

    /// [`BlockLog::put`] for a block whose bytes are `pieces` in order (the parts of a
    /// request body it arrived in), copied once, into the record.
    pub async fn put_pieces<P: AsRef<[u8]>>(
        &self,
        hash: BlockHash,
        pieces: &[P],
        verify: bool,
    ) -> Result<PutOutcome, BlockLogError> {
        self.put_form(hash, pieces, Form::Raw, verify).await
    }

    /// Stores block `hash` as `pieces` of `form` (the block, or the block compressed, which
    /// the caller has checked expands to the block) and resolves once it is durable. With
    /// `verify` (raw blocks only), the bytes' SHA-256 is checked first.
    pub async fn put_form<P: AsRef<[u8]>>(
        &self,
        hash: BlockHash,
        pieces: &[P],
        form: Form,
        verify: bool,
    ) -> Result<PutOutcome, BlockLogError> {
        let data_len: usize = pieces.iter().map(|p| p.as_ref().len()).sum();
        let block_len = match form {
            Form::Raw => data_len,
            Form::Zstd { block_len } => block_len as usize,
        };
        if block_len > BLOCK_BYTES_MAX {
            return Err(BlockLogError::TooLarge(block_len));
        }
        assert!(
            form == Form::Raw || (data_len < block_len && !verify),
            "a compressed payload is shorter than its block and checked by the caller"
        );
        if let Some(waiting) = self.wait_if_known(&hash) {
            return waiting.await;
        }
        if verify {
            let actual = BlockHash::of_pieces(pieces);
            if actual != hash {
                return Err(BlockLogError::HashMismatch {
                    expected: hash,
                    actual,
                });
            }
        }
        let inner = &self.inner;
        let key = inner.key.as_deref();
        let len = record_len(stored_len(data_len, key.is_some()));
        let mut buf = inner.pool.take(len);
        encode_record_of(buf.as_bytes_mut(), &hash, pieces, form, key)?;
        let (tx, rx) = oneshot::channel();
        inner.pending.borrow_mut().insert(hash, vec![tx]);
        if self
            .queue
            .send(WriteRequest::Put { hash, buf })
            .await
            .is_err()
        {
            inner.pending.borrow_mut().remove(&hash);
            return Err(BlockLogError::Closed);
        }
        match rx.await {
            Ok(Ok(())) => Ok(PutOutcome::Stored),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(BlockLogError::Closed),
        }
    }

    /// If the block is durable or on its way, a future that resolves once it is durable.
    fn wait_if_known(
        &self,
        hash: &BlockHash,
    ) -> Option<impl std::future::Future<Output = Result<PutOutcome, BlockLogError>> + '_> {
        let inner = &self.inner;
        let rx = if let Some(slot) = inner.index.borrow().slot_of(hash) {
            // Stored again while a collection runs: whoever stores it means to use it.
            if let Some(live) = inner.live.borrow_mut().as_mut() {
                live.mark(slot);
            }
            None
        } else {
            let mut pending = inner.pending.borrow_mut();
            let waiters = pending.get_mut(hash)?;
            let (tx, rx) = oneshot::channel();
            waiters.push(tx);
            Some(rx)
        };
        Some(async move {
            if let Some(rx) = rx {
                rx.await.map_err(|_| BlockLogError::Closed)??;
            }
            inner.stats.borrow_mut().puts_present += 1;
            Ok(PutOutcome::Present)
        })
    }

    /// Whether the block is stored and durable.
    pub fn contains(&self, hash: &BlockHash) -> bool {
        self.inner.index.borrow().contains(hash)
    }

    /// Reads every indexed record and checks it whole (CRC, authentication tag, SHA-256 of
    /// the plaintext), at most `rate_bytes_per_s` (0: no bound), changing nothing: a damaged
    /// record is counted and left where it is. The blocks whose records failed.
    pub async fn verify(&self, rate_bytes_per_s: u64) -> Result<VerifyReport, BlockLogError> {
        let slots = self.inner.index.borrow().slots_len() as u32;
        let mut pacer = pacer::Pacer::new(rate_bytes_per_s);
        let mut report = VerifyReport::default();
        let mut scratch = Vec::new();
        for slot in 0..slots {
            let Some((hash, loc)) = self.inner.index.borrow().at_slot(slot) else {
                continue;
            };
            let Some(file) = self.inner.files.borrow().get(&loc.segment).cloned() else {
                continue;
            };
            let offset = loc.offset_pages as u64 * ALIGN_BYTES;
            let len = loc.len_pages as usize * ALIGN_BYTES as usize;
            let record = storage::read_exact_at(&*file, offset, len)
                .await
                .map_err(io_err(format!("reading segment {}", loc.segment)))?;
            let key = self.inner.key.as_deref();
            if record::open_record(&record, &hash, key, &mut scratch).is_err() {
                report.damaged.push(hash);
            }
            report.records += 1;
            report.bytes += len as u64;
            pacer.account(len as u64).await;
        }
        Ok(report)
    }

    /// Drops `damaged` blocks (found by [`BlockLog::verify`]) from the index for good:
    /// every segment that held one gets its hint rewritten without it, so no later open
    /// indexes it again (the record's bytes stay; a collection's compaction leaves them
    /// behind). The blocks then count as missing and can be stored again. The number
    /// dropped.
    pub async fn forget_damaged(&self, damaged: &[BlockHash]) -> Result<u64, BlockLogError> {
        let inner = &self.inner;
        let mut segments = std::collections::BTreeSet::new();
        let mut dropped = 0;
        for hash in damaged {
            if let Some(loc) = inner.index.borrow_mut().remove(hash) {
                segments.insert(loc.segment);
                dropped += 1;
            }
        }
        let active_id = inner.active.borrow().id;
        for id in segments {
            let mut entries = self.entries_of(id);
            let len = match id == active_id {
                // Its hint covers a prefix; what follows is checked in full at open.
                true => {
                    let mut active = inner.active.borrow_mut();
                    active.hints.retain(|e| !damaged.contains(&e.hash));
                    entries.retain(|e| e.offset < active.hinted_len);
                    active.hinted_len
                }
                false => {
                    let file = inner.files.borrow().get(&id).cloned();
                    match file {
                        Some(f) => f.size().await.map_err(io_err("segment size"))?,
                        None => 0,
                    }
                }
            };
            if len > 0 {
                write_hint(&*inner.storage, &inner.dir, id, len, &entries)?;
            }
        }
        Ok(dropped)
    }

    /// The index's entries in segment `id`, in offset order.
    fn entries_of(&self, id: u32) -> Vec<HintEntry> {
        let index = self.inner.index.borrow();
        let mut entries: Vec<HintEntry> = (0..index.slots_len() as u32)
            .filter_map(|slot| index.at_slot(slot))
            .filter(|(_, loc)| loc.segment == id)
            .map(|(hash, loc)| HintEntry {
                hash,
                offset: loc.offset_pages as u64 * ALIGN_BYTES,
                record_len: loc.len_pages * ALIGN_BYTES as u32,
            })
            .collect();
        entries.sort_by_key(|e| e.offset);
        entries
    }

    /// Reads block `hash` into `out` (replacing its content), expanded if it is stored
    /// compressed. `Ok(false)` if the log does not have it; a record that fails its checks
    /// (a compressed one that does not expand to its block among them) is an error and
    /// leaves the index.
    pub async fn get(&self, hash: &BlockHash, out: &mut Vec<u8>) -> Result<bool, BlockLogError> {
        let key = self.inner.key.as_deref();
        let opened = self
            .read_open(hash, |record| record::open_record(record, hash, key, out))
            .await?;
        Ok(opened.is_some())
    }

    /// Reads block `hash`'s payload into `out` (replacing its content) as stored, to be sent
    /// on without expanding: its form, or None if the log does not have it. Errors as for
    /// [`BlockLog::get`]; a compressed payload is authenticated and checksummed here, and
    /// whoever expands it must treat a failure as corruption.
    pub async fn get_stored(
        &self,
        hash: &BlockHash,
        out: &mut Vec<u8>,
    ) -> Result<Option<Form>, BlockLogError> {
        let key = self.inner.key.as_deref();
        self.read_open(hash, |record| {
            record::open_record_stored(record, hash, key, out)
        })
        .await
    }

    /// Reads block `hash`'s record and hands it to `open`: None if the log does not have
    /// it; a record `open` finds damaged is counted, dropped from the index and an error.
    async fn read_open<T>(
        &self,
        hash: &BlockHash,
        open: impl FnOnce(&[u8]) -> Result<T, RecordError>,
    ) -> Result<Option<T>, BlockLogError> {
        let inner = &self.inner;
        let Some(loc) = inner.index.borrow().get(hash) else {
            inner.stats.borrow_mut().get_misses += 1;
            return Ok(None);
        };
        let file = inner
            .files
            .borrow()
            .get(&loc.segment)
            .cloned()
            .expect("indexed blocks live in open segments");
        let offset = loc.offset_pages as u64 * ALIGN_BYTES;
        let len = loc.len_pages as usize * ALIGN_BYTES as usize;
        let record = storage::read_exact_at(&*file, offset, len)
            .await
            .map_err(io_err(format!("reading segment {}", loc.segment)))?;
        match open(&record) {
            Ok(opened) => {
                inner.stats.borrow_mut().gets += 1;
                Ok(Some(opened))
            }
            Err(reason) => {
                self.forget_corrupt(hash, &reason);
                Err(BlockLogError::Corrupt {
                    hash: *hash,
                    segment: loc.segment,
                    offset,
                    reason,
                })
            }
        }
    }

    /// Drops block `hash`, whose record failed its checks (here, or when its caller
    /// expanded a compressed payload from [`BlockLog::get_stored`]), from the index, and
    /// counts it: it is missing from now on (and may be stored again).
    pub fn forget_corrupt(&self, hash: &BlockHash, reason: &RecordError) {
        let inner = &self.inner;
        let Some(loc) = inner.index.borrow_mut().remove(hash) else {
            return;
        };
        let mut stats = inner.stats.borrow_mut();
        stats.corrupt_records += 1;
        stats.blocks -= 1;
        let offset = loc.offset_pages as u64 * ALIGN_BYTES;
        warn!(%hash, segment = loc.segment, offset, %reason, "corrupt block record; dropped from the index");
    }

    /// The files a backup takes now: every sealed segment and its hint, and the active
    /// segment up to what is durable.
    pub fn backup_files(&self) -> crate::backup::FileSet {
        let inner = &self.inner;
        let active = inner.active.borrow();
        let mut immutable = Vec::new();
        for &id in inner.files.borrow().keys().filter(|&&id| id != active.id) {
            immutable.push(segment_path(&inner.dir, id));
            let hint = hint_path(&inner.dir, id);
            if hint.exists() {
                immutable.push(hint);
            }
        }
        crate::backup::FileSet {
            dir: inner.dir.clone(),
            immutable,
            superseded: Vec::new(),
            growing: vec![(segment_path(&inner.dir, active.id), active.len)],
        }
    }

    /// Current counters.
    pub fn stats(&self) -> BlockLogStats {
        let mut s = *self.inner.stats.borrow();
        s.index_bytes = self.inner.index.borrow().allocated_bytes() as u64;
        s.live_bytes = s.live_bytes.min(s.segment_bytes);
        s
    }

    /// Stops taking puts, lets queued writes finish, and waits for the flusher to end.
    pub async fn close(self) {
        let BlockLog { inner, queue } = self;
        queue.close().await;
        drop(inner);
    }
}
