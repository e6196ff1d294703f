//! The flusher's side of the group commit: admin records alone, commits checked in order
//! against the state and each other, one padded burst and one fdatasync per group, the
//! state updated and callers answered only after it; snapshots when one is due.

use std::rc::Rc;
use std::time::Instant;

use tracing::{info, warn};

use super::snapshot::encode_snapshot;
use super::{create_journal, generations, io_err, snapshot_path, Inner, JournalError, Request};
use crate::group_commit::Member;
use hashbrown::HashMap;
use holdall_proto::api::NsId;

use crate::journal::now_ms;
use crate::journal::record::{self, JournalRecord, RowAt};
use crate::journal::state::{Commit, CommitOutcome, Pending, State};
use crate::storage;
use crate::{align_up, ALIGN_BYTES};

/// Encodes a burst that starts at byte `end` of journal file `generation`. Each row gets its
/// location and, as `prev`, its path's previous row: one earlier in this burst, else the
/// state's latest; a latest row without a location (from a version-1 snapshot) is first
/// written again as an [`JournalRecord::Earlier`] copy so the chain has somewhere to point.
fn encode_burst(
    state: &State,
    generation: u64,
    end: u64,
    records: &mut [JournalRecord],
) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut placed: HashMap<(NsId, String), RowAt> = HashMap::new();
    let here = |bytes: &Vec<u8>| RowAt {
        generation,
        offset: end + bytes.len() as u64,
    };
    for r in records.iter_mut() {
        if let JournalRecord::Row(row) = r {
            let key = (row.ns, row.path.clone());
            row.prev = match placed.get(&key) {
                Some(&at) => Some(at),
                None => match state.latest(row.ns, &row.path) {
                    Some(latest) if latest.at.is_some() => latest.at,
                    Some(latest) => {
                        let at = here(&bytes);
                        record::encode(&JournalRecord::Earlier(latest.clone()), &mut bytes);
                        Some(at)
                    }
                    None => None,
                },
            };
            let at = here(&bytes);
            row.at = Some(at);
            placed.insert(key, at);
        }
        record::encode(r, &mut bytes);
    }
    bytes
}

/// Checks each commit on its own: the ones that pass go into `rows`.
fn check_each(
    state: &State,
    commits: &[Commit],
    pending: &mut Pending,
    rows: &mut Vec<JournalRecord>,
) -> Vec<CommitOutcome> {
    commits
        .iter()
        .map(|c| match state.check_commit(c, pending) {
            Ok(row) => {
                let jid = row.jid;
                rows.push(JournalRecord::Row(row));
                CommitOutcome::Ok { jid }
            }
            Err(outcome) => outcome,
        })
        .collect()
}

/// Checks the commits as one: all go into `rows`, or, if any is refused, none (and
/// `pending` is as before).
fn check_all(
    state: &State,
    commits: &[Commit],
    pending: &mut Pending,
    rows: &mut Vec<JournalRecord>,
) -> Vec<CommitOutcome> {
    let (before, rows_before) = (pending.clone(), rows.len());
    let outcomes = check_each(state, commits, pending, rows);
    if outcomes
        .iter()
        .all(|o| matches!(o, CommitOutcome::Ok { .. }))
    {
        return outcomes;
    }
    *pending = before;
    rows.truncate(rows_before);
    outcomes
        .into_iter()
        .map(|o| match o {
            CommitOutcome::Ok { .. } => CommitOutcome::NotWritten,
            refused => refused,
        })
        .collect()
}

impl Member for Request {
    fn weight(&self) -> usize {
        match self {
            Request::Commits { commits, .. } => commits.len(),
            Request::Records { .. } | Request::Snapshot { .. } => 1,
        }
    }

    /// Commits share a group; admin records and a requested snapshot go alone.
    fn joins(&self, first: &Self) -> bool {
        matches!(
            (first, self),
            (Request::Commits { .. }, Request::Commits { .. })
        )
    }
}

impl Inner {
    /// Writes one group: admin records alone, or every commit of the group in one burst;
    /// then a snapshot if one is due.
    pub(super) async fn flush(&self, mut group: Vec<Request>) {
        match group.first() {
            Some(Request::Records { .. } | Request::Snapshot { .. }) => {
                debug_assert_eq!(group.len(), 1, "a request that goes alone");
                match group.pop() {
                    Some(Request::Records { records, done }) => {
                        let _ = done.send(self.append_records(records).await);
                    }
                    Some(Request::Snapshot { done }) => {
                        let empty = self.active.borrow().end == 0;
                        let _ = done.send(match empty {
                            true => Ok(()),
                            false => self.snapshot_now().await,
                        });
                    }
                    _ => {}
                }
            }
            _ => self.commit_group(group).await,
        }
        if let Err(e) = self.snapshot_if_due().await {
            warn!(error = %e, "snapshot failed; will retry after the next write");
        }
    }

    async fn append_records(&self, records: Vec<JournalRecord>) -> Result<(), JournalError> {
        self.state.borrow().check_records(&records)?;
        let mut records = records;
        self.write(&mut records).await?;
        let mut state = self.state.borrow_mut();
        for r in records {
            state.apply(r);
        }
        Ok(())
    }

    async fn commit_group(&self, group: Vec<Request>) {
        let mut rows = Vec::new();
        let mut answers = Vec::with_capacity(group.len());
        {
            let state = self.state.borrow();
            let mut pending = Pending::at(now_ms());
            for request in group {
                let Request::Commits {
                    commits,
                    all_or_nothing,
                    done,
                } = request
                else {
                    unreachable!("groups hold commits only");
                };
                let outcomes = match all_or_nothing {
                    false => check_each(&state, &commits, &mut pending, &mut rows),
                    true => check_all(&state, &commits, &mut pending, &mut rows),
                };
                answers.push((done, outcomes));
            }
        }
        let result = if rows.is_empty() {
            Ok(())
        } else {
            self.write(&mut rows).await
        };
        if result.is_ok() {
            let mut state = self.state.borrow_mut();
            for r in rows {
                state.apply(r);
            }
        }
        for (done, outcomes) in answers {
            let _ = done.send(result.clone().map(|()| outcomes));
        }
    }

    /// Writes `records` as one burst at the end of the active file and fdatasyncs it; rows
    /// come back located and chained to their paths' previous rows.
    async fn write(&self, records: &mut [JournalRecord]) -> Result<(), JournalError> {
        // Only the flusher task writes or replaces the active file, so these stay valid
        // across the awaits below.
        let (generation, end, file) = {
            let a = self.active.borrow();
            (a.generation, a.end, a.file.clone())
        };
        debug_assert_eq!(end % ALIGN_BYTES, 0);
        let bytes = encode_burst(&self.state.borrow(), generation, end, records);
        let padded = align_up(bytes.len() as u64) as usize;
        let mut buf = storage::alloc_buffer(padded);
        buf.as_bytes_mut()[..bytes.len()].copy_from_slice(&bytes);
        buf.as_bytes_mut()[bytes.len()..].fill(0);
        let ctx = || format!("writing journal {generation}");
        storage::write_all_at(&*file, Rc::new(buf), end)
            .await
            .map_err(io_err(ctx()))?;
        let t = Instant::now();
        file.sync().await.map_err(io_err(ctx()))?;
        self.active.borrow_mut().end = end + padded as u64;
        let mut s = self.stats.borrow_mut();
        s.fsync_nanos += t.elapsed().as_nanos() as u64;
        s.flushes += 1;
        s.records_written += records.len() as u64;
        s.bytes_written += padded as u64;
        Ok(())
    }

    async fn snapshot_if_due(&self) -> Result<(), JournalError> {
        let end = self.active.borrow().end;
        if end < self.snapshot_after_bytes {
            return Ok(());
        }
        self.snapshot_now().await
    }

    /// Writes a snapshot of the state as the current file ends and starts the next file.
    async fn snapshot_now(&self) -> Result<(), JournalError> {
        let generation = self.active.borrow().generation;
        let bytes = encode_snapshot(&self.state.borrow(), generation);
        let path = snapshot_path(&self.dir, generation);
        storage::replace_file(&*self.storage, &path, &bytes)
            .map_err(io_err(format!("writing {}", path.display())))?;
        let next = create_journal(&*self.storage, &self.dir, generation + 1).await?;
        *self.active.borrow_mut() = next;
        // Older snapshots are derivable from the journal files; keep the previous one only.
        for old in generations(&*self.storage, &self.dir, "snap-", ".hsnp")? {
            if old + 1 < generation {
                let _ = self.storage.remove(&snapshot_path(&self.dir, old));
            }
        }
        let mut s = self.stats.borrow_mut();
        s.snapshots += 1;
        s.generation = generation + 1;
        info!(generation, bytes = bytes.len(), "journal snapshot written");
        Ok(())
    }
}
