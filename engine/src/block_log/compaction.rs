//! Garbage collection of the block log: the mark phase's bookkeeping and the sweep that
//! drops dead blocks and compacts segments.
//!
//! The caller (who knows which blocks files still use) begins a mark, marks every live
//! block, and calls [`BlockLog::collect`]. While the mark runs, every put of a block, new
//! or already stored, marks it too, and so does [`BlockLog::claim`]: a block someone is
//! about to reference is never taken away under them.
//!
//! Compacting segment S, with its crash points:
//! 1. Its dead blocks leave the index (memory only: a crash brings them back, dead, and
//!    the next collection drops them again).
//! 2. Its live records are copied, byte for byte (still sealed), to the end of the active
//!    segment through the flusher, so each copy is durable before the index points at it.
//!    A crash now leaves a block in S and in a newer segment; opening prefers the newer,
//!    so S holds nothing live and the next collection removes it.
//! 3. Once nothing indexed is in S, its hint and then its file are removed and the
//!    directory is synced. A crash between the two leaves S without a hint: it is scanned
//!    at open, and again holds nothing live.
//!
//! No record is ever rewritten in place, and no byte is counted twice: the index holds one
//! location per block, and live bytes are counted from it.

use std::collections::BTreeMap;
use std::time::Instant;

use futures::channel::oneshot;
use futures::StreamExt;
use holdall_proto::BlockHash;
use tracing::{info, warn};

use super::pacer::Pacer;
use super::writer::WriteRequest;
use super::{hint_path, io_err, segment_path, BlockLog, BlockLogError, Location};
use crate::block_log::live::LiveSet;
use crate::block_log::record::{self, HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::storage;
use crate::ALIGN_BYTES;

/// Records being copied at once (read, queued or being written): a bound on the memory a
/// compaction holds (16 × 4 MiB), deep enough to keep the disk busy both ways.
const MOVES_IN_FLIGHT: usize = 16;

/// What a collection may compact.
#[derive(Debug, Clone, Copy)]
pub struct CollectPlan {
    /// A sealed segment is compacted once at least this share of its bytes is dead.
    pub dead_share_min: f64,
    /// The active segment is sealed and compacted once at least this share of it is dead
    /// (above 1: never).
    pub active_dead_share_min: f64,
    /// Most bytes copied forward per second; 0 for no bound.
    pub rate_bytes_per_s: u64,
}

/// What a collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CollectReport {
    /// Dead blocks dropped from the index.
    pub blocks_dropped: u64,
    /// Bytes given back to the file system: removed segments less what was copied out.
    pub bytes_reclaimed: u64,
    /// Segments removed after their live records were copied forward.
    pub segments_compacted: u64,
    /// Record bytes of live blocks after the collection.
    pub live_bytes: u64,
    /// Segment bytes that hold no live block after it.
    pub dead_bytes: u64,
}

/// Bytes of one segment, and how many of them hold live blocks.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    size: u64,
    live: u64,
}

impl Usage {
    fn dead_share(&self) -> f64 {
        let records = self.size.saturating_sub(SEGMENT_HEADER_BYTES);
        if records == 0 {
            return 0.0;
        }
        1.0 - self.live.min(records) as f64 / records as f64
    }
}

impl BlockLog {
    /// Begins a mark: from now on every put and claim marks its block. False if one is
    /// already running.
    pub fn mark_begin(&self) -> bool {
        let mut live = self.inner.live.borrow_mut();
        if live.is_some() {
            return false;
        }
        *live = Some(LiveSet::new(self.inner.index.borrow().slots_len()));
        true
    }

    /// Ends a mark without collecting anything.
    pub fn mark_abort(&self) {
        *self.inner.live.borrow_mut() = None;
    }

    /// Whether a mark is running.
    pub fn marking(&self) -> bool {
        self.inner.live.borrow().is_some()
    }

    /// Marks `hash` live, if it is stored and a mark is running.
    pub fn mark(&self, hash: &BlockHash) {
        if let Some(live) = self.inner.live.borrow_mut().as_mut() {
            if let Some(slot) = self.inner.index.borrow().slot_of(hash) {
                live.mark(slot);
            }
        }
    }

    /// Whether `hash` is stored, marking it live if so: for a caller about to reference it.
    pub fn claim(&self, hash: &BlockHash) -> bool {
        let stored = self.contains(hash);
        if stored {
            self.mark(hash);
        }
        stored
    }

    /// Drops every block not marked since [`BlockLog::mark_begin`], compacts the segments
    /// `plan` allows, and ends the mark, whatever happens.
    pub async fn collect(&self, plan: &CollectPlan) -> Result<CollectReport, BlockLogError> {
        assert!(self.marking(), "collect without a mark");
        let started = Instant::now();
        let result = self.sweep(plan).await;
        self.mark_abort();
        let mut stats = self.inner.stats.borrow_mut();
        stats.collections += 1;
        stats.collect_nanos += started.elapsed().as_nanos() as u64;
        if let Ok(r) = &result {
            stats.blocks_dropped += r.blocks_dropped;
            stats.bytes_reclaimed += r.bytes_reclaimed;
            stats.segments_compacted += r.segments_compacted;
            stats.live_bytes = r.live_bytes;
        }
        result
    }

    async fn sweep(&self, plan: &CollectPlan) -> Result<CollectReport, BlockLogError> {
        let usage = self.usage().await?;
        let active = self.inner.active.borrow().id;
        let mut victims: Vec<u32> = usage
            .iter()
            .filter(|(&id, u)| id != active && u.dead_share() >= plan.dead_share_min)
            .map(|(&id, _)| id)
            .collect();
        if usage.get(&active).is_some_and(|u| {
            u.size > SEGMENT_HEADER_BYTES && u.dead_share() >= plan.active_dead_share_min
        }) {
            self.seal().await?;
            victims.push(active);
        }
        let mut report = CollectReport::default();
        let mut pacer = Pacer::new(plan.rate_bytes_per_s);
        for id in victims {
            self.compact(id, &mut pacer, &mut report).await?;
        }
        let after = self.usage().await?;
        report.live_bytes = after.values().map(|u| u.live).sum();
        report.dead_bytes = after
            .values()
            .map(|u| u.size.saturating_sub(SEGMENT_HEADER_BYTES + u.live))
            .sum();
        info!(
            blocks_dropped = report.blocks_dropped,
            bytes_reclaimed = report.bytes_reclaimed,
            segments_compacted = report.segments_compacted,
            "block log collected"
        );
        Ok(report)
    }

    /// Each segment's size and live bytes, as the mark found them.
    async fn usage(&self) -> Result<BTreeMap<u32, Usage>, BlockLogError> {
        let inner = &self.inner;
        let files: Vec<_> = inner
            .files
            .borrow()
            .iter()
            .map(|(&id, f)| (id, f.clone()))
            .collect();
        let active = inner.active.borrow().id;
        let mut usage = BTreeMap::new();
        for (id, file) in files {
            let size = if id == inner.active.borrow().id {
                inner.active.borrow().len
            } else {
                file.size().await.map_err(io_err("segment size"))?
            };
            usage.insert(id, Usage { size, live: 0 });
        }
        let index = inner.index.borrow();
        let live = inner.live.borrow();
        for (slot, _, loc) in index.entries() {
            let is_live = live.as_ref().is_none_or(|l| l.is_live(slot));
            if let (true, Some(u)) = (is_live, usage.get_mut(&loc.segment)) {
                u.live += loc.len_pages as u64 * ALIGN_BYTES;
            }
        }
        debug_assert!(usage.contains_key(&active));
        Ok(usage)
    }

    /// Asks the flusher to seal the active segment and start the next.
    async fn seal(&self) -> Result<(), BlockLogError> {
        let (done, sealed) = oneshot::channel();
        self.queue
            .send(WriteRequest::Seal { done })
            .await
            .map_err(|_| BlockLogError::Closed)?;
        sealed.await.map_err(|_| BlockLogError::Closed)?
    }

    /// Compacts sealed segment `id`: drops its dead blocks, copies its live ones forward,
    /// removes it.
    async fn compact(
        &self,
        id: u32,
        pacer: &mut Pacer,
        report: &mut CollectReport,
    ) -> Result<(), BlockLogError> {
        let mut moves = self.drop_dead(id, report);
        moves.sort_by_key(|(_, loc)| loc.offset_pages);
        let mut moved = 0;
        let mut copies = futures::stream::iter(moves.iter())
            .map(|(hash, loc)| self.move_record(hash, *loc))
            .buffer_unordered(MOVES_IN_FLIGHT);
        while let Some(copied) = copies.next().await {
            let bytes = copied?;
            moved += bytes;
            pacer.account(bytes).await;
        }
        drop(copies);
        let size = self.remove_segment(id).await?;
        report.segments_compacted += 1;
        report.bytes_reclaimed += size.saturating_sub(moved);
        Ok(())
    }

    /// Takes segment `id`'s unmarked blocks out of the index; its marked ones, to move.
    fn drop_dead(&self, id: u32, report: &mut CollectReport) -> Vec<(BlockHash, Location)> {
        let inner = &self.inner;
        let mut index = inner.index.borrow_mut();
        let live = inner.live.borrow();
        let live = live.as_ref().expect("compaction runs under a mark");
        let (mut moves, mut dead) = (Vec::new(), Vec::new());
        for (slot, hash, loc) in index.entries() {
            if loc.segment != id {
                continue;
            }
            if live.is_live(slot) {
                moves.push((hash, loc));
            } else {
                dead.push(hash);
            }
        }
        for hash in &dead {
            index.remove(hash);
        }
        let mut stats = inner.stats.borrow_mut();
        stats.blocks -= dead.len() as u64;
        report.blocks_dropped += dead.len() as u64;
        moves
    }

    /// Copies one record forward unchanged; the bytes copied (0 if it was found corrupt and
    /// dropped: its block is asked for again, as for any corrupt record).
    async fn move_record(&self, hash: &BlockHash, from: Location) -> Result<u64, BlockLogError> {
        let inner = &self.inner;
        let Some(file) = inner.files.borrow().get(&from.segment).cloned() else {
            return Ok(0);
        };
        let offset = from.offset_pages as u64 * ALIGN_BYTES;
        let len = from.len_pages as usize * ALIGN_BYTES as usize;
        let bytes = storage::read_exact_at(&*file, offset, len)
            .await
            .map_err(io_err(format!(
                "reading segment {} to compact it",
                from.segment
            )))?;
        let intact = record::decode_header(&bytes[..HEADER_BYTES]).and_then(|h| {
            if h.hash != *hash || h.record_len() != len {
                return Err(record::RecordError::WrongBlock);
            }
            record::check_payload(&h, &bytes)
        });
        if let Err(reason) = intact {
            warn!(%hash, segment = from.segment, offset, %reason, "corrupt block record found by compaction; dropped");
            let mut index = inner.index.borrow_mut();
            if index.get(hash) == Some(from) {
                index.remove(hash);
                let mut stats = inner.stats.borrow_mut();
                stats.blocks -= 1;
                stats.corrupt_records += 1;
            }
            return Ok(0);
        }
        let mut buf = inner.pool.take(len);
        buf.as_bytes_mut()[..len].copy_from_slice(&bytes);
        drop(bytes);
        let (done, copied) = oneshot::channel();
        let request = WriteRequest::Move {
            hash: *hash,
            buf,
            from,
            done,
        };
        self.queue
            .send(request)
            .await
            .map_err(|_| BlockLogError::Closed)?;
        copied.await.map_err(|_| BlockLogError::Closed)??;
        Ok(len as u64)
    }

    /// Removes sealed segment `id`, which must hold nothing indexed; its size.
    async fn remove_segment(&self, id: u32) -> Result<u64, BlockLogError> {
        let inner = &self.inner;
        let still = inner
            .index
            .borrow()
            .entries()
            .filter(|(_, _, loc)| loc.segment == id)
            .count();
        if still > 0 {
            return Err(BlockLogError::Io {
                context: format!("compacting segment {id}"),
                kind: std::io::ErrorKind::Other,
                message: format!("{still} blocks are still indexed there; it is kept"),
            });
        }
        assert_ne!(
            id,
            inner.active.borrow().id,
            "the active segment is never removed"
        );
        let Some(file) = inner.files.borrow_mut().remove(&id) else {
            return Ok(0);
        };
        let size = file.size().await.map_err(io_err("segment size"))?;
        let removing = |path: std::path::PathBuf| {
            let ctx = format!("removing {}", path.display());
            match inner.storage.remove(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(ctx)(e)),
                _ => Ok(()),
            }
        };
        removing(hint_path(&inner.dir, id))?;
        removing(segment_path(&inner.dir, id))?;
        inner
            .storage
            .sync_dir(&inner.dir)
            .map_err(io_err(format!("syncing {}", inner.dir.display())))?;
        let mut stats = inner.stats.borrow_mut();
        stats.segments -= 1;
        stats.segment_bytes = stats.segment_bytes.saturating_sub(size);
        Ok(size)
    }
}
