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
pub mod hint;
pub mod index;
pub mod record;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use futures::channel::oneshot;
use futures::FutureExt;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use hashbrown::HashMap;
use holdall_proto::limits::BLOCK_BYTES_MAX;
use holdall_proto::BlockHash;
use tracing::{info, warn};

use crate::block_log::buffer_pool::BufferPool;
use crate::block_log::hint::HintEntry;
use crate::block_log::index::{BlockIndex, Location};
use crate::block_log::record::{
    decode_header, decode_segment_header, encode_record, encode_segment_header, record_len,
    stored_len, RecordError, HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::storage::{self, dma::DmaStorage, OpenMode, Storage, StorageFile};
use crate::store_key::{KeyError, StoreKey};
use crate::ALIGN_BYTES;
use glommio::io::DmaBuffer;

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
}

type Waiter = oneshot::Sender<Result<(), BlockLogError>>;

/// Records up to this size are copied into one buffer with their neighbours and written
/// together: one 4 KiB write per small block would cost a request each.
const COALESCE_RECORD_BYTES_MAX: usize = 256 << 10;
/// Size at which a run of small records is cut into its own write.
const COALESCE_RUN_BYTES: usize = 4 << 20;

/// Copies a run of records into one DMA buffer.
fn coalesce(run: &mut Vec<DmaBuffer>, bytes: usize) -> Rc<DmaBuffer> {
    if run.len() == 1 {
        return Rc::new(run.pop().expect("one record"));
    }
    let mut out = storage::alloc_buffer(bytes);
    let mut at = 0;
    for b in run.drain(..) {
        out.as_bytes_mut()[at..at + b.len()].copy_from_slice(b.as_bytes());
        at += b.len();
    }
    debug_assert_eq!(at, bytes);
    Rc::new(out)
}

struct WriteRequest {
    hash: BlockHash,
    buf: DmaBuffer,
}

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
    flush_bytes_max: usize,
    hint_interval_bytes: u64,
    key: Option<Rc<StoreKey>>,
    index: RefCell<BlockIndex>,
    pending: RefCell<HashMap<BlockHash, Vec<Waiter>>>,
    files: RefCell<BTreeMap<u32, Rc<dyn StorageFile>>>,
    active: RefCell<Active>,
    pool: BufferPool,
    stats: RefCell<BlockLogStats>,
}

/// One shard's block log. Not `Send`: it lives on its shard's executor.
pub struct BlockLog {
    inner: Rc<Inner>,
    tx: LocalSender<WriteRequest>,
    flusher: RefCell<Option<glommio::Task<()>>>,
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

/// What scanning a segment found.
struct Scan {
    entries: Vec<HintEntry>,
    /// End of the last valid record.
    valid_len: u64,
    corrupt_records: u64,
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
                index.insert(e.hash, location(id, e.offset, e.record_len as u64));
            }
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
            flush_bytes_max: config.flush_bytes_max,
            hint_interval_bytes: config.hint_interval_bytes,
            key: config.key,
            index: RefCell::new(index),
            pending: RefCell::new(HashMap::new()),
            files: RefCell::new(files),
            active: RefCell::new(active),
            pool: BufferPool::new(config.pool_buffers_max),
            stats: RefCell::new(stats),
        });
        let (tx, rx) = local_channel::new_bounded(config.queue_records_max.max(1));
        let flusher = crate::runtime::spawn_urgent(flusher(inner.clone(), rx));
        Ok(BlockLog {
            inner,
            tx,
            flusher: RefCell::new(Some(flusher)),
        })
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
        let data_len: usize = pieces.iter().map(|p| p.as_ref().len()).sum();
        if data_len > BLOCK_BYTES_MAX {
            return Err(BlockLogError::TooLarge(data_len));
        }
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
        encode_record(buf.as_bytes_mut(), &hash, pieces, key)?;
        let (tx, rx) = oneshot::channel();
        inner.pending.borrow_mut().insert(hash, vec![tx]);
        if self.tx.send(WriteRequest { hash, buf }).await.is_err() {
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
        let rx = if inner.index.borrow().contains(hash) {
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

    /// Reads block `hash` into `out` (replacing its content). `Ok(false)` if the log does
    /// not have it; a record that fails its checks is an error and leaves the index.
    pub async fn get(&self, hash: &BlockHash, out: &mut Vec<u8>) -> Result<bool, BlockLogError> {
        let inner = &self.inner;
        let Some(loc) = inner.index.borrow().get(hash) else {
            inner.stats.borrow_mut().get_misses += 1;
            return Ok(false);
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
        let key = inner.key.as_deref();
        match record::open_record(&record, hash, key, out) {
            Ok(()) => {
                inner.stats.borrow_mut().gets += 1;
                Ok(true)
            }
            Err(reason) => {
                inner.index.borrow_mut().remove(hash);
                let mut stats = inner.stats.borrow_mut();
                stats.corrupt_records += 1;
                stats.blocks -= 1;
                warn!(%hash, segment = loc.segment, offset, %reason, "corrupt block record; dropped from the index");
                Err(BlockLogError::Corrupt {
                    hash: *hash,
                    segment: loc.segment,
                    offset,
                    reason,
                })
            }
        }
    }

    /// Current counters.
    pub fn stats(&self) -> BlockLogStats {
        let mut s = *self.inner.stats.borrow();
        s.index_bytes = self.inner.index.borrow().allocated_bytes() as u64;
        s
    }

    /// Stops taking puts, lets queued writes finish, and waits for the flusher to end.
    pub async fn close(self) {
        let BlockLog { inner, tx, flusher } = self;
        drop(tx);
        let task = flusher.borrow_mut().take();
        if let Some(task) = task {
            task.await;
        }
        drop(inner);
    }
}

async fn flusher(inner: Rc<Inner>, rx: LocalReceiver<WriteRequest>) {
    while let Some(first) = rx.recv().await {
        let mut bytes = first.buf.len();
        let mut batch = vec![first];
        while bytes < inner.flush_bytes_max {
            match rx.recv().now_or_never() {
                Some(Some(req)) => {
                    bytes += req.buf.len();
                    batch.push(req);
                }
                _ => break,
            }
        }
        inner.flush(batch).await;
    }
}

impl Inner {
    fn resolve(&self, hash: &BlockHash, result: Result<(), BlockLogError>) {
        let waiters = self.pending.borrow_mut().remove(hash).unwrap_or_default();
        for w in waiters {
            // A put whose caller went away no longer listens; that is fine.
            let _ = w.send(result.clone());
        }
    }

    /// Writes `batch` with as few bursts and fdatasyncs as segment boundaries allow.
    async fn flush(&self, batch: Vec<WriteRequest>) {
        let mut rest = batch.into_iter().peekable();
        while rest.peek().is_some() {
            let (id, file, start) = {
                let a = self.active.borrow();
                (a.id, a.file.clone(), a.len)
            };
            let mut group = Vec::new();
            let mut end = start;
            while let Some(req) = rest.peek() {
                let len = req.buf.len() as u64;
                let empty = end == SEGMENT_HEADER_BYTES && group.is_empty();
                if end + len > self.segment_bytes_max && !empty {
                    break;
                }
                end += len;
                group.push(rest.next().expect("peeked"));
            }
            if group.is_empty() {
                if let Err(e) = self.roll_segment().await {
                    warn!(error = %e, "cannot start a new segment");
                    for req in rest.by_ref() {
                        self.resolve(&req.hash, Err(e.clone()));
                    }
                }
                continue;
            }
            self.write_group(id, &*file, start, group).await;
        }
    }

    async fn write_group(
        &self,
        id: u32,
        file: &dyn StorageFile,
        start: u64,
        group: Vec<WriteRequest>,
    ) {
        let mut offset = start;
        let mut placed = Vec::with_capacity(group.len());
        let mut writes = Vec::new();
        let mut run: Vec<DmaBuffer> = Vec::new();
        let mut run_start = start;
        let mut run_bytes = 0usize;
        for req in group {
            let len = req.buf.len();
            placed.push((req.hash, offset, len as u64));
            if len <= COALESCE_RECORD_BYTES_MAX {
                if run.is_empty() {
                    run_start = offset;
                }
                run_bytes += len;
                run.push(req.buf);
                if run_bytes >= COALESCE_RUN_BYTES {
                    writes.push((run_start, coalesce(&mut run, run_bytes)));
                    run_bytes = 0;
                }
            } else {
                if !run.is_empty() {
                    writes.push((run_start, coalesce(&mut run, run_bytes)));
                    run_bytes = 0;
                }
                writes.push((offset, Rc::new(req.buf)));
            }
            offset += len as u64;
        }
        if !run.is_empty() {
            writes.push((run_start, coalesce(&mut run, run_bytes)));
        }
        let mut result = futures::future::join_all(
            writes
                .iter()
                .map(|(at, buf)| storage::write_all_at(file, buf.clone(), *at)),
        )
        .await
        .into_iter()
        .collect::<Result<Vec<()>, _>>()
        .map(|_| ())
        .map_err(io_err(format!("writing segment {id}")));
        if result.is_ok() {
            let t = Instant::now();
            result = file
                .sync()
                .await
                .map_err(io_err(format!("syncing segment {id}")));
            let mut stats = self.stats.borrow_mut();
            stats.fsync_nanos += t.elapsed().as_nanos() as u64;
            stats.flushes += 1;
        }
        for (_, buf) in writes {
            if let Ok(buf) = Rc::try_unwrap(buf) {
                self.pool.give(buf);
            }
        }
        match &result {
            Err(e) => {
                warn!(error = %e, segment = id, "group commit failed; its puts fail and its bytes will be overwritten")
            }
            Ok(()) => {
                let mut active = self.active.borrow_mut();
                debug_assert_eq!((active.id, active.len), (id, start));
                active.len = offset;
                let mut index = self.index.borrow_mut();
                let mut stats = self.stats.borrow_mut();
                for &(hash, at, len) in &placed {
                    let inserted = index.insert(hash, location(id, at, len));
                    debug_assert!(inserted, "a pending block is never indexed twice");
                    active.hints.push(HintEntry {
                        hash,
                        offset: at,
                        record_len: len as u32,
                    });
                    stats.blocks += 1;
                    stats.puts_stored += 1;
                    stats.flushed_records += 1;
                    stats.bytes_appended += len;
                }
            }
        }
        for (hash, _, _) in placed {
            self.resolve(&hash, result.clone());
        }
        if result.is_ok() {
            self.checkpoint_hint();
        }
    }

    /// Rewrites the active segment's hint once enough was appended since the last one.
    fn checkpoint_hint(&self) {
        let mut active = self.active.borrow_mut();
        if active.len < active.hinted_len + self.hint_interval_bytes {
            return;
        }
        match write_hint(
            &*self.storage,
            &self.dir,
            active.id,
            active.len,
            &active.hints,
        ) {
            Ok(()) => active.hinted_len = active.len,
            Err(e) => warn!(error = %e, "cannot checkpoint the active segment's hint"),
        }
    }

    /// Seals the active segment (writes its hint) and starts the next one.
    async fn roll_segment(&self) -> Result<(), BlockLogError> {
        let (id, len, hints) = {
            let a = self.active.borrow();
            (a.id, a.len, a.hints.clone())
        };
        write_hint(&*self.storage, &self.dir, id, len, &hints)?;
        let fingerprint = self.key.as_ref().map_or(0, |k| k.fingerprint());
        let next = create_segment(&*self.storage, &self.dir, id + 1, fingerprint).await?;
        self.files.borrow_mut().insert(next.id, next.file.clone());
        *self.active.borrow_mut() = next;
        self.stats.borrow_mut().segments += 1;
        info!(sealed = id, "block log segment sealed");
        Ok(())
    }
}

fn load_hint(storage: &dyn Storage, dir: &Path, id: u32, segment_size: u64) -> Option<hint::Hint> {
    let path = hint_path(dir, id);
    let bytes = storage.read_file(&path).ok()?;
    match hint::decode(&bytes) {
        Ok(h) if h.segment_id == id as u64 && h.segment_len <= segment_size => Some(h),
        Ok(_) => {
            warn!(path = %path.display(), "hint does not match its segment; scanning instead");
            None
        }
        Err(e) => {
            warn!(path = %path.display(), error = %e, "scanning segment instead of its hint");
            None
        }
    }
}

fn write_hint(
    storage: &dyn Storage,
    dir: &Path,
    id: u32,
    len: u64,
    entries: &[HintEntry],
) -> Result<(), BlockLogError> {
    let path = hint_path(dir, id);
    let bytes = hint::encode(id as u64, len, entries);
    storage::replace_file(storage, &path, &bytes)
        .map_err(io_err(format!("writing {}", path.display())))
}

async fn read_segment_header(
    file: &dyn StorageFile,
    id: u32,
    fingerprint: u64,
) -> Result<Result<(), RecordError>, BlockLogError> {
    let page = file
        .read_at(0, SEGMENT_HEADER_BYTES as usize)
        .await
        .map_err(io_err(format!("reading segment {id}")))?;
    Ok(match decode_segment_header(&page) {
        Ok((found_id, fp)) if found_id == id as u64 => {
            if fp != fingerprint {
                return Err(BlockLogError::WrongKey(id as u64));
            }
            Ok(())
        }
        Ok(_) => Err(RecordError::Field("segment id does not match file name")),
        Err(e) => Err(e),
    })
}

async fn open_sealed(
    storage: &dyn Storage,
    dir: &Path,
    id: u32,
    fingerprint: u64,
    stats: &mut BlockLogStats,
) -> Result<Option<Rc<dyn StorageFile>>, BlockLogError> {
    let path = segment_path(dir, id);
    let file = storage
        .open(&path, OpenMode::Read)
        .await
        .map_err(io_err(format!("opening {}", path.display())))?;
    if let Err(e) = read_segment_header(&*file, id, fingerprint).await? {
        warn!(path = %path.display(), error = %e, "segment header is damaged; its blocks are treated as missing");
        stats.corrupt_records += 1;
        return Ok(None);
    }
    Ok(Some(file))
}

async fn open_active(
    storage: &dyn Storage,
    dir: &Path,
    id: u32,
    fingerprint: u64,
    stats: &mut BlockLogStats,
    index: &mut BlockIndex,
) -> Result<Option<Active>, BlockLogError> {
    let path = segment_path(dir, id);
    let file = storage
        .open(&path, OpenMode::ReadWrite)
        .await
        .map_err(io_err(format!("opening {}", path.display())))?;
    let size = file.size().await.map_err(io_err("segment size"))?;
    if let Err(e) = read_segment_header(&*file, id, fingerprint).await? {
        if size <= SEGMENT_HEADER_BYTES {
            // Created but its header never became durable: nothing in it was acknowledged.
            drop(file);
            storage
                .remove(&path)
                .map_err(io_err(format!("removing {}", path.display())))?;
            return Ok(Some(create_segment(storage, dir, id, fingerprint).await?));
        }
        warn!(path = %path.display(), error = %e, "active segment header is damaged; its blocks are treated as missing");
        stats.corrupt_records += 1;
        return Ok(None);
    }
    // A checkpoint hint covers a prefix that was durable when it was written; only what
    // follows it can hold a torn write, so only that is read and checked in full.
    let (mut entries, from) = match load_hint(storage, dir, id, size) {
        Some(hint) => (hint.entries, hint.segment_len),
        None => (Vec::new(), SEGMENT_HEADER_BYTES),
    };
    let mut scan = scan_segment(&*file, id, from, size, true).await?;
    entries.append(&mut scan.entries);
    scan.entries = entries;
    stats.corrupt_records += scan.corrupt_records;
    if scan.valid_len < size {
        warn!(
            segment = id,
            cut_at = scan.valid_len,
            bytes = size - scan.valid_len,
            "cutting torn tail of the active segment"
        );
        stats.torn_tail_cuts += 1;
        stats.torn_tail_bytes += size - scan.valid_len;
        storage
            .truncate(&path, scan.valid_len)
            .map_err(io_err(format!("cutting {}", path.display())))?;
    }
    for e in &scan.entries {
        index.insert(e.hash, location(id, e.offset, e.record_len as u64));
    }
    Ok(Some(Active {
        id,
        file,
        len: scan.valid_len,
        hints: scan.entries,
        hinted_len: from,
    }))
}

/// Bytes read at a time when walking a segment.
const SCAN_WINDOW_BYTES: usize = 8 << 20;

/// Sequential reads of a segment in large windows.
struct Window<'a> {
    file: &'a dyn StorageFile,
    file_len: u64,
    start: u64,
    data: Option<storage::ReadBuf>,
}

impl Window<'_> {
    /// `len` bytes at `offset` (both aligned), reading a new window when needed.
    async fn get(&mut self, offset: u64, len: usize) -> std::io::Result<&[u8]> {
        let covered = self.data.as_ref().is_some_and(|d| {
            offset >= self.start && offset + len as u64 <= self.start + d.len() as u64
        });
        if !covered {
            let rest = crate::align_up(self.file_len.saturating_sub(offset)) as usize;
            let want = SCAN_WINDOW_BYTES.min(rest).max(len);
            self.data = Some(self.file.read_at(offset, want).await?);
            self.start = offset;
        }
        let d = self.data.as_ref().expect("window read");
        let from = (offset - self.start) as usize;
        if d.len() < from + len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "segment shorter than its size",
            ));
        }
        Ok(&d[from..from + len])
    }
}

/// Walks a segment's records from `from` to `size`. With `check_payloads`, each record's
/// stored bytes are checked too (the active segment's unhinted tail, where a torn write may
/// have left a bad payload); otherwise only headers are trusted. A bad run followed by a good
/// record is damage in the middle: counted as corrupt and skipped. Bad bytes with nothing
/// good after them are the torn tail, left out of `valid_len`.
async fn scan_segment(
    file: &dyn StorageFile,
    id: u32,
    from: u64,
    size: u64,
    check_payloads: bool,
) -> Result<Scan, BlockLogError> {
    let ctx = || format!("scanning segment {id}");
    let mut scan = Scan {
        entries: Vec::new(),
        valid_len: from.min(size),
        corrupt_records: 0,
    };
    let mut window = Window {
        file,
        file_len: size,
        start: 0,
        data: None,
    };
    let mut offset = from;
    let mut in_bad_run = false;
    while offset + ALIGN_BYTES <= size {
        let page = window
            .get(offset, ALIGN_BYTES as usize)
            .await
            .map_err(io_err(ctx()))?;
        let header = match decode_header(&page[..HEADER_BYTES]) {
            Ok(h) if offset + h.record_len() as u64 <= size => h,
            _ => {
                in_bad_run = true;
                offset += ALIGN_BYTES;
                continue;
            }
        };
        let len = header.record_len() as u64;
        let resync_in_clear = in_bad_run && !header.encrypted;
        if check_payloads || resync_in_clear {
            let record = window
                .get(offset, len as usize)
                .await
                .map_err(io_err(ctx()))?;
            let good = record::check_payload(&header, record).is_ok()
                && (!resync_in_clear || record::payload_matches_name(&header, record));
            if !good {
                in_bad_run = true;
                offset += if resync_in_clear { ALIGN_BYTES } else { len };
                continue;
            }
        }
        if in_bad_run {
            scan.corrupt_records += 1;
            warn!(
                segment = id,
                from = scan.valid_len,
                to = offset,
                "skipping damaged bytes between good records"
            );
            in_bad_run = false;
        }
        scan.entries.push(HintEntry {
            hash: header.hash,
            offset,
            record_len: len as u32,
        });
        offset += len;
        scan.valid_len = offset;
    }
    Ok(scan)
}

async fn create_segment(
    storage: &dyn Storage,
    dir: &Path,
    id: u32,
    fingerprint: u64,
) -> Result<Active, BlockLogError> {
    let path = segment_path(dir, id);
    let ctx = format!("creating {}", path.display());
    let file = storage
        .open(&path, OpenMode::Create)
        .await
        .map_err(io_err(ctx.clone()))?;
    let mut page = storage::alloc_buffer(SEGMENT_HEADER_BYTES as usize);
    encode_segment_header(page.as_bytes_mut(), id as u64, fingerprint);
    storage::write_all_at(&*file, Rc::new(page), 0)
        .await
        .map_err(io_err(ctx.clone()))?;
    file.sync().await.map_err(io_err(ctx.clone()))?;
    storage.sync_dir(dir).map_err(io_err(ctx))?;
    Ok(Active {
        id,
        file,
        len: SEGMENT_HEADER_BYTES,
        hints: Vec::new(),
        hinted_len: SEGMENT_HEADER_BYTES,
    })
}
