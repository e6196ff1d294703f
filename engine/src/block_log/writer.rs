//! The write path: the flusher's side of the group commit. Records are laid back to back
//! at the end of the active segment, runs of small ones gathered into one write, all writes
//! issued at once, then one fdatasync; only then are the blocks indexed and their puts
//! answered. Also hint checkpoints and segment rolls.

use std::rc::Rc;
use std::time::Instant;

use glommio::io::DmaBuffer;
use holdall_proto::BlockHash;
use tracing::{info, warn};

use super::recovery::{create_segment, write_hint};
use super::{io_err, location, BlockLogError, Inner, Waiter};
use crate::block_log::hint::HintEntry;
use crate::block_log::index::Location;
use crate::block_log::record::SEGMENT_HEADER_BYTES;
use crate::group_commit::Member;
use crate::storage::{self, StorageFile};

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

/// What the flusher is asked to do.
pub(super) enum WriteRequest {
    /// Store a new block; its puts wait in `pending`.
    Put { hash: BlockHash, buf: DmaBuffer },
    /// Copy an indexed block's record forward (compaction); the index follows the copy only
    /// if the block is still where it was read.
    Move {
        hash: BlockHash,
        buf: DmaBuffer,
        from: Location,
        done: Waiter,
    },
    /// Seal the active segment, if it holds any record, and start the next.
    Seal { done: Waiter },
}

impl WriteRequest {
    fn hash_and_buf(self) -> (BlockHash, DmaBuffer, Answer) {
        match self {
            WriteRequest::Put { hash, buf } => (hash, buf, Answer::Put),
            WriteRequest::Move {
                hash,
                buf,
                from,
                done,
            } => (hash, buf, Answer::Move { from, done }),
            WriteRequest::Seal { .. } => unreachable!("a seal is never grouped with records"),
        }
    }
}

/// Whom a written record answers.
enum Answer {
    Put,
    Move { from: Location, done: Waiter },
}

impl Member for WriteRequest {
    fn weight(&self) -> usize {
        match self {
            WriteRequest::Put { buf, .. } | WriteRequest::Move { buf, .. } => buf.len(),
            WriteRequest::Seal { .. } => 0,
        }
    }

    fn joins(&self, first: &Self) -> bool {
        let seal = |r: &Self| matches!(r, WriteRequest::Seal { .. });
        !seal(self) && !seal(first)
    }
}

/// A record's block, offset and length in its segment, and whom it answers.
type Placed = (BlockHash, u64, u64, Answer);
/// A buffer and where it is written.
type Write = (u64, Rc<DmaBuffer>);

/// Lays a group's records out back to back from `start`: where each goes, the writes
/// (runs of small records gathered into one buffer), and the segment's new end.
fn lay_out(start: u64, group: Vec<WriteRequest>) -> (Vec<Placed>, Vec<Write>, u64) {
    let mut offset = start;
    let mut placed = Vec::with_capacity(group.len());
    let mut writes = Vec::new();
    let mut run: Vec<DmaBuffer> = Vec::new();
    let mut run_start = start;
    let mut run_bytes = 0usize;
    for req in group {
        let (hash, buf, answer) = req.hash_and_buf();
        let len = buf.len();
        placed.push((hash, offset, len as u64, answer));
        if len <= COALESCE_RECORD_BYTES_MAX {
            if run.is_empty() {
                run_start = offset;
            }
            run_bytes += len;
            run.push(buf);
            if run_bytes >= COALESCE_RUN_BYTES {
                writes.push((run_start, coalesce(&mut run, run_bytes)));
                run_bytes = 0;
            }
        } else {
            if !run.is_empty() {
                writes.push((run_start, coalesce(&mut run, run_bytes)));
                run_bytes = 0;
            }
            writes.push((offset, Rc::new(buf)));
        }
        offset += len as u64;
    }
    if !run.is_empty() {
        writes.push((run_start, coalesce(&mut run, run_bytes)));
    }
    (placed, writes, offset)
}

impl Inner {
    /// Tells a record's waiters how its write went.
    fn answer(&self, hash: &BlockHash, answer: Answer, result: Result<(), BlockLogError>) {
        match answer {
            Answer::Put => {
                let waiters = self.pending.borrow_mut().remove(hash).unwrap_or_default();
                for w in waiters {
                    // A put whose caller went away no longer listens; that is fine.
                    let _ = w.send(result.clone());
                }
            }
            Answer::Move { done, .. } => {
                let _ = done.send(result);
            }
        }
    }

    /// Writes `batch` with as few bursts and fdatasyncs as segment boundaries allow.
    pub(super) async fn flush(&self, mut batch: Vec<WriteRequest>) {
        if let [WriteRequest::Seal { .. }] = batch.as_slice() {
            let Some(WriteRequest::Seal { done }) = batch.pop() else {
                unreachable!("matched above")
            };
            let holds_records = self.active.borrow().len > SEGMENT_HEADER_BYTES;
            let sealed = if holds_records {
                self.roll_segment().await
            } else {
                Ok(())
            };
            let _ = done.send(sealed);
            return;
        }
        let mut rest = batch.into_iter().peekable();
        while rest.peek().is_some() {
            let (id, file, start) = {
                let a = self.active.borrow();
                (a.id, a.file.clone(), a.len)
            };
            let mut group = Vec::new();
            let mut end = start;
            while let Some(req) = rest.peek() {
                let len = req.weight() as u64;
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
                        let (hash, _, answer) = req.hash_and_buf();
                        self.answer(&hash, answer, Err(e.clone()));
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
        let (placed, writes, end) = lay_out(start, group);
        let result = self.write_and_sync(id, file, &writes).await;
        for (_, buf) in writes {
            if let Ok(buf) = Rc::try_unwrap(buf) {
                self.pool.give(buf);
            }
        }
        match &result {
            Err(e) => {
                warn!(error = %e, segment = id, "group commit failed; its puts fail and its bytes will be overwritten")
            }
            Ok(()) => self.index_durable(id, start, end, &placed),
        }
        for (hash, _, _, answer) in placed {
            self.answer(&hash, answer, result.clone());
        }
        if result.is_ok() {
            self.checkpoint_hint();
        }
    }

    /// Issues every write of a group at once, then one fdatasync.
    async fn write_and_sync(
        &self,
        id: u32,
        file: &dyn StorageFile,
        writes: &[Write],
    ) -> Result<(), BlockLogError> {
        let writes = writes
            .iter()
            .map(|(at, buf)| storage::write_all_at(file, buf.clone(), *at));
        for r in futures::future::join_all(writes).await {
            r.map_err(io_err(format!("writing segment {id}")))?;
        }
        let t = Instant::now();
        let synced = file
            .sync()
            .await
            .map_err(io_err(format!("syncing segment {id}")));
        let mut stats = self.stats.borrow_mut();
        stats.fsync_nanos += t.elapsed().as_nanos() as u64;
        stats.flushes += 1;
        synced
    }

    /// After the group's fdatasync: the segment ends at `end`, its blocks are indexed (a
    /// moved block only if it is still where the copy was read) and listed for the hint.
    fn index_durable(&self, id: u32, start: u64, end: u64, placed: &[Placed]) {
        let mut active = self.active.borrow_mut();
        debug_assert_eq!((active.id, active.len), (id, start));
        active.len = end;
        let mut index = self.index.borrow_mut();
        let mut live = self.live.borrow_mut();
        let mut stats = self.stats.borrow_mut();
        for (hash, at, len, answer) in placed {
            let to = location(id, *at, *len);
            match answer {
                Answer::Put => {
                    let inserted = index.insert(*hash, to);
                    debug_assert!(inserted, "a pending block is never indexed twice");
                    if let (Some(live), Some(slot)) = (live.as_mut(), index.slot_of(hash)) {
                        live.mark(slot);
                    }
                    stats.blocks += 1;
                    stats.puts_stored += 1;
                    stats.live_bytes += len;
                }
                Answer::Move { from, .. } => {
                    if index.relocate(hash, *from, to) {
                        stats.bytes_moved += len;
                    }
                }
            }
            active.hints.push(HintEntry {
                hash: *hash,
                offset: *at,
                record_len: *len as u32,
            });
            stats.flushed_records += 1;
            stats.bytes_appended += len;
            stats.segment_bytes += len;
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
        let mut stats = self.stats.borrow_mut();
        stats.segments += 1;
        stats.segment_bytes += SEGMENT_HEADER_BYTES;
        info!(sealed = id, "block log segment sealed");
        Ok(())
    }
}
