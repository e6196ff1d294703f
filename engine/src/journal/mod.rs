//! The journal file of one shard: the durable home of the SFJ and of users, tokens,
//! namespaces and mounts.
//!
//! `journal-NNNNNNNNNN.hjnl` files hold records (see [`crate::journal::record`]) appended by
//! one flusher task. Commits queued while a write is on its way are checked together against
//! the state, written as one burst padded to 4096 bytes with O_DIRECT, and made durable by
//! one fdatasync; only then does the in-memory [`State`] change and do the callers hear back.
//! Nothing acknowledged is ever written again: each burst starts on a fresh 4096-byte page.
//!
//! Once a journal file passes `snapshot_after_bytes`, the state is written to
//! `snap-NNNNNNNNNN.hsnp` (the latest row of each path plus every user, token, namespace and
//! mount) and a new journal file begins, so a restart reads one snapshot and one short
//! journal. Every row records where its path's previous row is, so a path's history is read
//! back from the files (`history`), never held in memory.

mod history;
pub mod record;
mod replay;
mod snapshot;
pub mod state;
mod writer;

use std::cell::{Ref, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use futures::channel::oneshot;
use tracing::{info, warn};

use crate::align_up;
use crate::group_commit::GroupCommit;
use crate::journal::record::JournalRecord;
use crate::journal::state::{Commit, CommitOutcome, RecordInvalid, State};
use crate::storage::{self, dma::DmaStorage, OpenMode, Storage, StorageFile};
pub use history::{retained, History, Retained};

/// The server's clock in ms since the epoch: rows' commit time, and what retention is
/// measured against.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
use replay::{parse, read_all};
use snapshot::load_newest_snapshot;

/// Most commits checked and written in one group commit.
const GROUP_COMMITS_MAX: usize = 16_384;

/// Settings of one journal.
#[derive(Clone)]
pub struct JournalConfig {
    /// Folder of the journal and snapshot files.
    pub dir: PathBuf,
    /// Write a snapshot and start a new journal file once the current one is this large.
    pub snapshot_after_bytes: u64,
    /// Most requests queued for the flusher; further callers wait.
    pub queue_max: usize,
    /// The medium the journal and snapshot files live on.
    pub storage: Rc<dyn Storage>,
}

impl JournalConfig {
    /// Defaults: snapshot every 64 MiB of journal, 1024 queued requests.
    pub fn new(dir: impl Into<PathBuf>) -> JournalConfig {
        JournalConfig {
            dir: dir.into(),
            snapshot_after_bytes: 64 << 20,
            queue_max: 1024,
            storage: Rc::new(DmaStorage),
        }
    }
}

/// Journal errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// An admin record broke a rule; nothing was written.
    #[error("{0}")]
    Invalid(#[from] RecordInvalid),
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
    /// The journal is shutting down.
    #[error("journal is closed")]
    Closed,
    /// Journal files a restart needs are gone: the collection removed them because a
    /// snapshot covered them, and no such snapshot checks out now.
    #[error("journal files before generation {first} are gone and no snapshot covering them checks out (the newest good one covers up to {base})")]
    FilesMissing {
        /// The oldest journal file there.
        first: u64,
        /// The generation the newest good snapshot covers (0: none).
        base: u64,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> JournalError {
    let context = context.into();
    move |e| JournalError::Io {
        context,
        kind: e.kind(),
        message: e.to_string(),
    }
}

/// Counters of one journal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Group commits (one fdatasync each).
    pub flushes: u64,
    /// Records written.
    pub records_written: u64,
    /// Bytes written, padding included.
    pub bytes_written: u64,
    /// Time in fdatasync, nanoseconds.
    pub fsync_nanos: u64,
    /// Records read at open.
    pub records_replayed: u64,
    /// Damaged records found at open (skipped, or cut with a torn tail), and damaged
    /// snapshots (an older one or the journal files are used instead).
    pub corrupt_records: u64,
    /// Torn tails cut at open.
    pub torn_tail_cuts: u64,
    /// Bytes cut with them.
    pub torn_tail_bytes: u64,
    /// Snapshots written.
    pub snapshots: u64,
    /// Current journal file generation.
    pub generation: u64,
    /// Journal files removed by collections.
    pub files_removed: u64,
}

enum Request {
    Commits {
        commits: Vec<Commit>,
        /// Written only if every one of them can be.
        all_or_nothing: bool,
        done: oneshot::Sender<Result<Vec<CommitOutcome>, JournalError>>,
    },
    Records {
        records: Vec<JournalRecord>,
        done: oneshot::Sender<Result<(), JournalError>>,
    },
    Snapshot {
        done: oneshot::Sender<Result<(), JournalError>>,
    },
}

struct ActiveFile {
    generation: u64,
    file: Rc<dyn StorageFile>,
    /// Where the next burst goes; always a multiple of 4096.
    end: u64,
}

struct Inner {
    storage: Rc<dyn Storage>,
    dir: PathBuf,
    snapshot_after_bytes: u64,
    state: RefCell<State>,
    active: RefCell<ActiveFile>,
    stats: RefCell<JournalStats>,
}

/// One shard's journal. Not `Send`: it lives on its shard's executor.
pub struct Journal {
    inner: Rc<Inner>,
    queue: GroupCommit<Request>,
}

fn journal_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("journal-{generation:010}.hjnl"))
}

fn snapshot_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("snap-{generation:010}.hsnp"))
}

fn generations(
    storage: &dyn Storage,
    dir: &Path,
    prefix: &str,
    suffix: &str,
) -> Result<Vec<u64>, JournalError> {
    storage::numbered_files(storage, dir, prefix, suffix)
        .map_err(io_err(format!("listing {}", dir.display())))
}

impl Journal {
    /// Opens (or creates) the journal in `config.dir`: loads the newest good snapshot,
    /// replays the journal files after it, cuts a torn tail, and starts the flusher.
    pub async fn open(config: JournalConfig) -> Result<Journal, JournalError> {
        let dir = config.dir.clone();
        let storage = config.storage.clone();
        storage
            .create_dir(&dir)
            .await
            .map_err(io_err(format!("creating {}", dir.display())))?;
        let mut stats = JournalStats::default();
        let (mut state, base, damaged_snapshots) = load_newest_snapshot(&*storage, &dir)?;
        stats.corrupt_records += damaged_snapshots;
        let journals: Vec<u64> = generations(&*storage, &dir, "journal-", ".hjnl")?
            .into_iter()
            .filter(|&g| g > base)
            .collect();
        if let Some(&first) = journals.first() {
            if first != base + 1 {
                return Err(JournalError::FilesMissing { first, base });
            }
        }
        // Latest rows the snapshot places in files a collection removed since.
        let oldest = generations(&*storage, &dir, "journal-", ".hjnl")?
            .first()
            .copied()
            .unwrap_or(base + 1);
        state.forget_locations_before(oldest);
        let mut active = None;
        for (i, &generation) in journals.iter().enumerate() {
            let last = i + 1 == journals.len();
            let path = journal_path(&dir, generation);
            let ctx = format!("reading {}", path.display());
            let file = storage
                .open(&path, OpenMode::ReadWrite)
                .await
                .map_err(io_err(ctx.clone()))?;
            let len = file.size().await.map_err(io_err(ctx.clone()))?;
            let bytes = read_all(&*file, len).await.map_err(io_err(ctx.clone()))?;
            let parsed = parse(&bytes, generation);
            stats.corrupt_records += parsed.corrupt_records;
            stats.records_replayed += parsed.records.len() as u64;
            state.apply_all(parsed.records);
            let tail = &bytes[parsed.valid_end..];
            if tail.iter().any(|&b| b != 0) {
                if last {
                    warn!(path = %path.display(), cut_at = parsed.valid_end, bytes = tail.len(), "cutting torn tail of the journal");
                    stats.torn_tail_cuts += 1;
                    stats.torn_tail_bytes += tail.len() as u64;
                    stats.corrupt_records += 1;
                    storage
                        .truncate(&path, parsed.valid_end as u64)
                        .map_err(io_err(ctx))?;
                } else {
                    warn!(path = %path.display(), "damaged end of a sealed journal file; left out");
                    stats.corrupt_records += 1;
                }
            }
            if last {
                active = Some(ActiveFile {
                    generation,
                    file,
                    end: align_up(parsed.valid_end as u64),
                });
            }
        }
        let active = match active {
            Some(a) => a,
            None => create_journal(&*storage, &dir, base + 1).await?,
        };
        stats.generation = active.generation;
        info!(
            dir = %dir.display(),
            generation = active.generation,
            snapshot = base,
            replayed = stats.records_replayed,
            "journal open"
        );
        let inner = Rc::new(Inner {
            storage,
            dir,
            snapshot_after_bytes: config.snapshot_after_bytes,
            state: RefCell::new(state),
            active: RefCell::new(active),
            stats: RefCell::new(stats),
        });
        let flushing = inner.clone();
        let queue = GroupCommit::start(config.queue_max, GROUP_COMMITS_MAX, move |group| {
            let inner = flushing.clone();
            async move { inner.flush(group).await }
        });
        Ok(Journal { inner, queue })
    }

    /// Checks and commits `commits` in order (each sees the ones before it), durably, in one
    /// group commit with whatever else is queued. One outcome per commit.
    pub async fn commit(&self, commits: Vec<Commit>) -> Result<Vec<CommitOutcome>, JournalError> {
        self.send_commits(commits, false).await
    }

    /// As [`Journal::commit`], but all or nothing: if any commit is refused, none is
    /// written, and the others answer [`CommitOutcome::NotWritten`].
    pub async fn commit_all_or_nothing(
        &self,
        commits: Vec<Commit>,
    ) -> Result<Vec<CommitOutcome>, JournalError> {
        self.send_commits(commits, true).await
    }

    async fn send_commits(
        &self,
        commits: Vec<Commit>,
        all_or_nothing: bool,
    ) -> Result<Vec<CommitOutcome>, JournalError> {
        let (done, rx) = oneshot::channel();
        self.queue
            .send(Request::Commits {
                commits,
                all_or_nothing,
                done,
            })
            .await
            .map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// Appends admin records (users, tokens, namespaces, mounts) after checking them; all or
    /// nothing.
    pub async fn append(&self, records: Vec<JournalRecord>) -> Result<(), JournalError> {
        let (done, rx) = oneshot::channel();
        self.queue
            .send(Request::Records { records, done })
            .await
            .map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// Writes a snapshot of everything committed so far and starts a new journal file, in
    /// order with the commits around it (a backup's fresh snapshot); nothing to do if the
    /// current file is empty.
    pub async fn snapshot(&self) -> Result<(), JournalError> {
        let (done, rx) = oneshot::channel();
        self.queue
            .send(Request::Snapshot { done })
            .await
            .map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// The in-memory state. Do not hold it across an `.await`.
    pub fn state(&self) -> Ref<'_, State> {
        self.inner.state.borrow()
    }

    /// Reads every journal file whole (the active one to its durable end) and checks every
    /// record's CRC, including the files before the newest snapshot that an open skips:
    /// the records read, and the damaged ones.
    pub async fn verify(&self) -> Result<(u64, u64), JournalError> {
        let inner = &self.inner;
        let (active, end) = {
            let a = inner.active.borrow();
            (a.generation, a.end)
        };
        let (mut records, mut damaged) = (0, 0);
        for generation in generations(&*inner.storage, &inner.dir, "journal-", ".hjnl")? {
            let path = journal_path(&inner.dir, generation);
            let ctx = format!("reading {}", path.display());
            let file = inner
                .storage
                .open(&path, OpenMode::Read)
                .await
                .map_err(io_err(ctx.clone()))?;
            let len = match generation == active {
                true => end,
                false => file.size().await.map_err(io_err(ctx.clone()))?,
            };
            let bytes = read_all(&*file, len).await.map_err(io_err(ctx))?;
            let parsed = parse(&bytes, generation);
            records += parsed.records.len() as u64;
            damaged += parsed.corrupt_records;
            if bytes[parsed.valid_end..].iter().any(|&b| b != 0) {
                damaged += 1;
            }
        }
        Ok((records, damaged))
    }

    /// The files a backup takes now: every sealed journal file and snapshot, and the
    /// active file up to what is durable.
    pub fn backup_files(&self) -> Result<crate::backup::FileSet, JournalError> {
        let inner = &self.inner;
        let active = inner.active.borrow();
        let listing = |prefix, suffix| generations(&*inner.storage, &inner.dir, prefix, suffix);
        let mut immutable: Vec<PathBuf> = listing("journal-", ".hjnl")?
            .into_iter()
            .filter(|&g| g < active.generation)
            .map(|g| journal_path(&inner.dir, g))
            .collect();
        // The flusher removes an older snapshot once a newer one is written; the newest
        // listed stays until two more are.
        let mut snapshots: Vec<PathBuf> = listing("snap-", ".hsnp")?
            .into_iter()
            .map(|g| snapshot_path(&inner.dir, g))
            .collect();
        immutable.extend(snapshots.pop());
        Ok(crate::backup::FileSet {
            dir: inner.dir.clone(),
            immutable,
            superseded: snapshots,
            growing: vec![(journal_path(&inner.dir, active.generation), active.end)],
        })
    }

    /// Current counters.
    pub fn stats(&self) -> JournalStats {
        *self.inner.stats.borrow()
    }

    /// Removes the journal files that neither a restart nor a retained version needs: those
    /// the older of the two newest snapshots covers (a damaged newest one falls back to
    /// it), and older than `needed_from`, the oldest generation holding a row that some
    /// path's history reaches past its latest row (latest rows are in memory and in every
    /// snapshot; their next commit copies them forward). How many were removed.
    pub async fn remove_files_before(&self, needed_from: u64) -> Result<u64, JournalError> {
        let inner = &self.inner;
        let snapshots = generations(&*inner.storage, &inner.dir, "snap-", ".hsnp")?;
        let Some(&covered) = snapshots.iter().rev().nth(1) else {
            return Ok(0);
        };
        let active = inner.active.borrow().generation;
        let bound = needed_from.min(covered + 1).min(active);
        // Before any file goes: a burst encoded from now on copies such a row forward, and
        // an empty commit waits out the burst that may have been encoded before.
        inner.state.borrow_mut().forget_locations_before(bound);
        self.commit(Vec::new()).await?;
        let mut removed = 0;
        for generation in generations(&*inner.storage, &inner.dir, "journal-", ".hjnl")? {
            if generation >= bound {
                break;
            }
            let path = journal_path(&inner.dir, generation);
            inner
                .storage
                .remove(&path)
                .map_err(io_err(format!("removing {}", path.display())))?;
            removed += 1;
        }
        if removed > 0 {
            inner
                .storage
                .sync_dir(&inner.dir)
                .map_err(io_err(format!("syncing {}", inner.dir.display())))?;
            info!(removed, below = bound, "journal files removed");
        }
        inner.stats.borrow_mut().files_removed += removed;
        Ok(removed)
    }

    /// Stops taking requests, finishes queued ones, and waits for the flusher to end.
    pub async fn close(self) {
        let Journal { inner, queue } = self;
        queue.close().await;
        drop(inner);
    }
}

async fn create_journal(
    storage: &dyn Storage,
    dir: &Path,
    generation: u64,
) -> Result<ActiveFile, JournalError> {
    let path = journal_path(dir, generation);
    let ctx = format!("creating {}", path.display());
    let file = storage
        .open(&path, OpenMode::Create)
        .await
        .map_err(io_err(ctx.clone()))?;
    storage.sync_dir(dir).map_err(io_err(ctx))?;
    Ok(ActiveFile {
        generation,
        file,
        end: 0,
    })
}
