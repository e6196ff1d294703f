//! One shard: a pinned executor that alone owns its block log, its journal (the rows of the
//! namespaces whose id maps to it) and its metrics, and keeps a replica of the directory.

use std::cell::{Cell, OnceCell, Ref, RefCell, RefMut};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use holdall_engine::block_log::{BlockLog, BlockLogConfig};
use holdall_engine::block_log::{Form, PutOutcome};
use holdall_engine::journal::record::{JournalRecord, UserId};
use holdall_engine::journal::state::State;
use holdall_engine::journal::{Journal, JournalConfig};
use holdall_engine::prefetch::{PrefetchConfig, PrefetchTable, Uploader};
use holdall_proto::api::{Jid, NsId};
use holdall_proto::BlockHash;

mod backup;
pub(crate) use backup::copy_store;
mod collection;
mod directory_change;
mod error;
mod fsck;
mod gate;

pub use error::ShardError;
pub use gate::{CommitGate, Entry as GateEntry};

use crate::block_bytes::BlockBytes;
use crate::block_cache::BlockCache;
use crate::config::Config;
use crate::directory::DirectoryOp;
use crate::mesh::Mesh;
use crate::metrics::{EngineGauges, ShardMetrics};
use crate::process::Process;
use crate::start::{step, StartStep};
use crate::upload_sessions::{SessionLimits, UploadSessions};
use crate::uploads::Uploads;
use crate::waiters::Waiters;

/// Blocks in transit to their owner: slices of the request body, never copies, raw or as
/// they arrived compressed.
pub type Blocks = Vec<(BlockHash, BlockBytes)>;

/// Most upload records (user, block) a shard keeps: about 100 bytes each.
const UPLOAD_RECORDS_MAX: usize = 1 << 20;
/// Most longpolls parked on one shard's namespaces.
const LONGPOLLS_MAX: usize = 65_536;
/// Most retrieves parked on one shard's pending blocks.
const ARRIVAL_WAITERS_MAX: usize = 65_536;

/// What a parked longpoll has seen of its namespace.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    /// Who is waiting: their own device's uploads do not wake them.
    pub viewer: Uploader,
    /// The last JID they have.
    pub jid: Jid,
    /// The newest prefetch entry version they have.
    pub prefetch: u64,
}

/// A shard's state, shared by its request tasks.
pub struct Shard {
    /// This shard's index.
    id: usize,
    /// Number of shards.
    shards: usize,
    /// Blocks whose hash maps to this shard.
    blocks: BlockLog,
    /// Rows of the namespaces that map to this shard.
    journal: Journal,
    /// Read-only replica of the directory.
    directory: RefCell<State>,
    /// This shard's counters.
    metrics: Arc<ShardMetrics>,
    /// Every shard's counters, for `/metrics`.
    process: Arc<Process>,
    /// The directory journal: shard 0 only.
    directory_journal: Option<Journal>,
    /// Next user and namespace ids: shard 0 only, taken before any await so that concurrent
    /// changes never share one.
    next_ids: Cell<(u64, u64)>,
    /// The way to the other shards, once joined.
    mesh: OnceCell<Mesh<Shard>>,
    /// Prefetch entries of the namespaces this shard owns.
    prefetch: RefCell<PrefetchTable>,
    /// Who uploaded which of this shard's blocks lately.
    uploads: RefCell<Uploads>,
    /// Dropbox API upload sessions started on this shard.
    upload_sessions: RefCell<UploadSessions>,
    /// Longpolls parked on this shard's namespaces.
    longpolls: RefCell<Waiters<NsId, Seen>>,
    /// Retrieves parked on this shard's blocks not uploaded yet.
    arrivals: RefCell<Waiters<BlockHash, ()>>,
    /// Whether large uploads publish prefetch entries.
    streaming: bool,
    /// Whether blocks may travel compressed (frame format 2).
    compression: bool,
    /// Whether clients may send and take deltas (frame format 2).
    deltas: bool,
    /// How long a superseded version stays restorable.
    history_retention: std::time::Duration,
    /// Blocks of this shard stored or served lately.
    block_cache: RefCell<BlockCache>,
    /// When each token was last used on this shard (since it started), ms since the epoch.
    token_uses: RefCell<HashMap<[u8; 32], u64>>,
    /// Set when the server is stopping: parked requests end early.
    stop: Arc<AtomicBool>,
    /// What opening the engine found damaged (and cut), for fsck.
    opened: holdall_proto::api::ShardFsck,
    /// The data folder.
    data: std::path::PathBuf,
    /// Requests that may write rows referencing stored blocks, by epoch.
    gate: CommitGate,
    /// Held by the collection running (shard 0).
    collecting: futures::lock::Mutex<()>,
    /// Most bytes per second compaction copies; 0 for no bound.
    gc_rate_bytes_per_s: u64,
}

/// The shard that owns block `hash`: its first 8 bytes, taken as a number, modulo the shard
/// count. SHA-256 output is uniform, so blocks (and their hashing) spread evenly.
pub fn shard_of_block(hash: &BlockHash, shards: usize) -> usize {
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    (u64::from_le_bytes(first) % shards as u64) as usize
}

/// What the opens of a shard's block log and journal (and, on shard 0, the directory's)
/// found damaged and cut.
fn opened_damage(
    blocks: &BlockLog,
    journal: &Journal,
    directory: Option<&Journal>,
) -> holdall_proto::api::ShardFsck {
    let b = blocks.stats();
    let journals: Vec<_> = std::iter::once(journal)
        .chain(directory)
        .map(Journal::stats)
        .collect();
    holdall_proto::api::ShardFsck {
        block_log_corrupt_at_open: b.corrupt_records,
        // A journal's torn tail is counted as a damaged record too; here it is a torn tail.
        journal_corrupt_records: journals
            .iter()
            .map(|j| j.corrupt_records.saturating_sub(j.torn_tail_cuts))
            .sum(),
        torn_tails_cut: b.torn_tail_cuts + journals.iter().map(|j| j.torn_tail_cuts).sum::<u64>(),
        torn_tail_bytes: b.torn_tail_bytes
            + journals.iter().map(|j| j.torn_tail_bytes).sum::<u64>(),
        ..Default::default()
    }
}

/// The shard that owns namespace `ns`.
pub fn shard_of_namespace(ns: NsId, shards: usize) -> usize {
    (ns % shards as u64) as usize
}

impl Shard {
    /// Opens the shard's engine in `DATA/shard-N/`, builds its directory replica, and makes
    /// sure every namespace it owns exists in its journal.
    pub async fn open(
        id: usize,
        cfg: &Config,
        directory_records: Vec<JournalRecord>,
        directory_journal: Option<Journal>,
        process: Arc<Process>,
        stop: Arc<AtomicBool>,
        at: &StartStep,
    ) -> Result<Rc<Shard>> {
        let (shards, data) = (cfg.shards, cfg.data.as_path());
        let key = Rc::new(cfg.load_store_key()?);
        let root = data.join(format!("shard-{id}"));
        let storage = cfg.storage();
        step(at, "opening its block log");
        let blocks = BlockLog::open(BlockLogConfig {
            storage: storage.clone(),
            ..BlockLogConfig::new(root.join("blocks"), Some(key))
        })
        .await
        .with_context(|| format!("opening shard {id}'s block log"))?;
        step(at, "opening its journal");
        let journal = Journal::open(JournalConfig {
            storage,
            ..JournalConfig::new(root.join("journal"))
        })
        .await
        .with_context(|| format!("opening shard {id}'s journal"))?;
        let opened = opened_damage(&blocks, &journal, directory_journal.as_ref());
        let mut directory = State::default();
        directory.apply_all(directory_records);
        let missing: Vec<JournalRecord> = directory
            .namespace_ids()
            .filter(|&ns| shard_of_namespace(ns, shards) == id)
            .filter(|&ns| journal.state().namespace(ns).is_none())
            .filter_map(|ns| {
                directory.namespace(ns).map(|n| JournalRecord::Namespace {
                    id: ns,
                    owner: n.owner,
                    kind: n.kind(),
                })
            })
            .collect();
        if !missing.is_empty() {
            step(at, "recording its namespaces");
            journal
                .append(missing)
                .await
                .with_context(|| format!("recording shard {id}'s namespaces"))?;
        }
        let metrics = process.metrics[id].clone();
        let (max_user, max_ns) = directory.max_ids();
        Ok(Rc::new(Shard {
            id,
            shards,
            directory_journal,
            next_ids: Cell::new((max_user + 1, max_ns + 1)),
            mesh: OnceCell::new(),
            blocks,
            journal,
            directory: RefCell::new(directory),
            metrics,
            process,
            prefetch: RefCell::new(PrefetchTable::new(PrefetchConfig {
                ttl: cfg.prefetch_ttl,
                entries_max: cfg.prefetch_entries_max,
                ..PrefetchConfig::default()
            })),
            uploads: RefCell::new(Uploads::new(cfg.prefetch_ttl, UPLOAD_RECORDS_MAX)),
            upload_sessions: RefCell::new(UploadSessions::new(
                SessionLimits {
                    session_bytes_max: cfg.upload_session_bytes_max,
                    ..SessionLimits::default()
                },
                fastrand::u64(..),
            )),
            longpolls: RefCell::new(Waiters::new(LONGPOLLS_MAX)),
            arrivals: RefCell::new(Waiters::new(ARRIVAL_WAITERS_MAX)),
            streaming: cfg.streaming,
            compression: cfg.compression,
            deltas: cfg.deltas,
            history_retention: cfg.history_retention,
            block_cache: RefCell::new(BlockCache::new(
                cfg.block_cache_bytes_per_shard,
                cfg.recent_blocks,
            )),
            token_uses: RefCell::new(HashMap::new()),
            stop,
            opened,
            data: cfg.data.clone(),
            gate: CommitGate::default(),
            collecting: futures::lock::Mutex::new(()),
            gc_rate_bytes_per_s: cfg.gc_rate_bytes_per_s,
        }))
    }

    /// What opening the engine found damaged.
    pub fn opened(&self) -> holdall_proto::api::ShardFsck {
        self.opened.clone()
    }

    /// The data folder.
    pub fn data(&self) -> &std::path::Path {
        &self.data
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Whether large uploads publish prefetch entries.
    pub fn streaming(&self) -> bool {
        self.streaming
    }

    /// Whether blocks may travel compressed (frame format 2).
    pub fn compression(&self) -> bool {
        self.compression
    }

    /// Whether clients may send and take deltas (frame format 2).
    pub fn deltas(&self) -> bool {
        self.deltas
    }

    /// Versions superseded before this instant (ms since the epoch) are outside the
    /// history retention.
    pub fn history_cutoff_ms(&self) -> u64 {
        holdall_engine::journal::now_ms().saturating_sub(self.history_retention.as_millis() as u64)
    }

    /// Enters the commit gate: held by a request, from before it claims blocks until its
    /// rows are written, so that a collection beginning meanwhile waits for it.
    pub fn enter_gate(&self) -> GateEntry<'_> {
        self.gate.enter()
    }

    /// Whether the server is stopping: parked requests end early.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Blocks whose hash maps to this shard.
    pub fn blocks(&self) -> &BlockLog {
        &self.blocks
    }

    /// Rows of the namespaces that map to this shard.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The directory replica, read-only: only replication changes it. Do not hold it
    /// across an `.await`.
    pub fn directory(&self) -> Ref<'_, State> {
        self.directory.borrow()
    }

    /// This shard's counters.
    pub fn metrics(&self) -> &ShardMetrics {
        &self.metrics
    }

    /// Every shard's counters, for `/metrics`.
    pub fn all_metrics(&self) -> &[Arc<ShardMetrics>] {
        &self.process.metrics
    }

    /// How many connections each user holds, over the process.
    pub fn connection_counts(&self) -> &Arc<crate::rate_limit::ConnectionCounts> {
        &self.process.connections
    }

    /// The process's per-token request rate limiter.
    pub fn rate_limiter(&self) -> &crate::rate_limit::RateLimiter {
        &self.process.rate
    }

    /// The prefetch entries of this shard's namespaces.
    pub fn prefetch(&self) -> Ref<'_, PrefetchTable> {
        self.prefetch.borrow()
    }

    /// The same, to change. Do not hold it across an `.await`.
    pub fn prefetch_mut(&self) -> RefMut<'_, PrefetchTable> {
        self.prefetch.borrow_mut()
    }

    /// Who uploaded which of this shard's blocks lately.
    pub fn uploads(&self) -> Ref<'_, Uploads> {
        self.uploads.borrow()
    }

    /// The Dropbox API upload sessions started here. Do not hold across an `.await`.
    pub fn upload_sessions_mut(&self) -> RefMut<'_, UploadSessions> {
        self.upload_sessions.borrow_mut()
    }

    /// The key that seals Dropbox API cursors.
    pub fn cursor_key(&self) -> &holdall_engine::store_key::StoreKey {
        &self.process.cursor_key
    }

    /// This shard's index.
    pub fn id(&self) -> usize {
        self.id
    }

    /// Longpolls parked on this shard's namespaces. Do not hold across an `.await`.
    pub fn longpolls_mut(&self) -> RefMut<'_, Waiters<NsId, Seen>> {
        self.longpolls.borrow_mut()
    }

    /// Retrieves parked on this shard's blocks not uploaded yet. Do not hold across an
    /// `.await`.
    pub fn arrivals_mut(&self) -> RefMut<'_, Waiters<BlockHash, ()>> {
        self.arrivals.borrow_mut()
    }

    /// Notes that a live token was just used here. The map holds only tokens that
    /// authenticated, so it is bounded by the directory's tokens.
    pub fn note_token_use(&self, sha: [u8; 32]) {
        self.token_uses
            .borrow_mut()
            .insert(sha, crate::directory::now_ms());
    }

    /// When the token was last used on this shard, if it was since the start.
    pub fn token_last_used(&self, sha: &[u8; 32]) -> Option<u64> {
        self.token_uses.borrow().get(sha).copied()
    }

    /// Forgets a revoked token's uses.
    pub fn forget_token(&self, sha: &[u8; 32]) {
        self.token_uses.borrow_mut().remove(sha);
    }

    /// Blocks stored or served lately. Do not hold across an `.await`.
    pub fn block_cache_mut(&self) -> RefMut<'_, BlockCache> {
        self.block_cache.borrow_mut()
    }

    /// Joins the mesh to the other shards, once; false if it was joined already.
    pub fn join_mesh(&self, mesh: Mesh<Shard>) -> bool {
        self.mesh.set(mesh).is_ok()
    }

    /// A fresh user id (shard 0).
    pub fn next_user_id(&self) -> u64 {
        let (user, ns) = self.next_ids.get();
        self.next_ids.set((user + 1, ns));
        user
    }

    /// A fresh namespace id (shard 0).
    pub fn next_ns_id(&self) -> u64 {
        let (user, ns) = self.next_ids.get();
        self.next_ids.set((user, ns + 1));
        ns
    }

    /// Runs `work` on shard `to` (in place when that is this shard) and returns its answer.
    pub async fn submit_to<T, W, F>(self: &Rc<Self>, to: usize, work: W) -> Result<T, ShardError>
    where
        T: Send + 'static,
        W: FnOnce(&Rc<Shard>) -> F + Send + 'static,
        F: Future<Output = T> + 'static,
    {
        if to == self.id {
            return Ok(work(self).await);
        }
        let mesh = self.mesh.get().ok_or(ShardError::Starting)?;
        Ok(mesh.submit(to, work).await?)
    }

    /// Asks shard 0 to change the directory.
    pub async fn directory_op(self: &Rc<Self>, op: DirectoryOp) -> Result<Vec<u64>, ShardError> {
        self.submit_to(0, move |s| {
            let s = s.clone();
            async move { s.apply_directory_op(op).await }
        })
        .await?
    }

    /// Applies durable directory records to every shard's replica, this one included.
    pub async fn replicate_all(
        self: &Rc<Self>,
        records: Vec<JournalRecord>,
    ) -> Result<(), ShardError> {
        let waits: Vec<_> = (0..self.shards)
            .filter(|&to| to != self.id)
            .map(|to| {
                let records = records.clone();
                // Applied on arrival, before the task's first await, so replicas see the
                // directory's records in the order shard 0 wrote them.
                self.submit_to(to, move |s| {
                    s.directory.borrow_mut().apply_all(records);
                    std::future::ready(())
                })
            })
            .collect();
        self.directory.borrow_mut().apply_all(records);
        for result in futures::future::join_all(waits).await {
            result?;
        }
        Ok(())
    }

    /// Makes sure a namespace exists in this shard's journal.
    pub async fn ensure_namespace(&self, record: JournalRecord) -> Result<(), ShardError> {
        let JournalRecord::Namespace { id, .. } = &record else {
            return Err(ShardError::Internal("not a namespace record".into()));
        };
        if self.journal.state().namespace(*id).is_some() {
            return Ok(());
        }
        Ok(self.journal.append(vec![record]).await?)
    }

    /// Stores verified blocks this shard owns and resolves once they are durable; records
    /// that `uploader` has shown their bytes and wakes retrieves waiting for them.
    pub async fn put_blocks(
        &self,
        blocks: Blocks,
        uploader: UserId,
    ) -> Result<Vec<PutOutcome>, ShardError> {
        let puts = blocks.iter().map(|(hash, data)| {
            (self.blocks).put_form(*hash, data.pieces.parts(), data.form, false)
        });
        let outcomes: Vec<PutOutcome> = futures::future::join_all(puts)
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let compressed = (blocks.iter().zip(&outcomes))
            .filter(|((_, b), o)| b.form != Form::Raw && **o == PutOutcome::Stored)
            .count();
        self.metrics.compressed_stored(compressed as u64);
        let now = Instant::now();
        let mut uploads = self.uploads.borrow_mut();
        let mut arrivals = self.arrivals.borrow_mut();
        let mut cache = self.block_cache.borrow_mut();
        for (hash, data) in blocks {
            uploads.record(uploader, hash, now);
            arrivals.wake(&hash, |_| true);
            cache.insert_stored(hash, data);
        }
        Ok(outcomes)
    }

    /// Copies the engine's counters into this shard's metrics.
    pub fn publish_gauges(&self) {
        let b = self.blocks.stats();
        let j = self.journal.stats();
        let p = {
            let mut table = self.prefetch.borrow_mut();
            table.expire(Instant::now());
            table.stats()
        };
        self.metrics.publish(EngineGauges {
            blocks: b.blocks,
            block_bytes_appended: b.bytes_appended,
            block_flushes: b.flushes,
            block_flushed_records: b.flushed_records,
            block_fsync_nanos: b.fsync_nanos,
            corrupt_blocks: b.corrupt_records,
            journal_rows_written: j.records_written,
            journal_flushes: j.flushes,
            journal_fsync_nanos: j.fsync_nanos,
            corrupt_journal_records: j.corrupt_records,
            journal_torn_tail_cuts: j.torn_tail_cuts,
            prefetch_entries: p.entries,
            prefetch_inserts: p.inserts,
            prefetch_refreshes: p.refreshes,
            prefetch_hits: p.hits,
            prefetch_misses: p.misses,
            prefetch_expirations: p.expirations,
            prefetch_evictions: p.evictions,
            prefetch_removals: p.removals,
            prefetch_touches: p.touches,
            upload_records: self.uploads.borrow().len() as u64,
            upload_sessions: self.upload_sessions.borrow().len() as u64,
            block_cache: self.block_cache.borrow().stats(),
            block_segment_bytes: b.segment_bytes,
            block_live_bytes: b.live_bytes,
            block_dead_bytes: b.segment_bytes.saturating_sub(b.live_bytes),
            gc_runs: b.collections,
            gc_nanos: b.collect_nanos,
            gc_blocks_dropped: b.blocks_dropped,
            gc_bytes_reclaimed: b.bytes_reclaimed,
            gc_segments_compacted: b.segments_compacted,
            gc_bytes_moved: b.bytes_moved,
            journal_files_removed: j.files_removed,
        });
    }
}
