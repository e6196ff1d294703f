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
//! journal. Journal files are never deleted: they are the full history, and a restart can
//! fall back to them if a snapshot is damaged.

pub mod record;
pub mod state;

use std::cell::{Ref, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use futures::channel::oneshot;
use futures::FutureExt;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use tracing::{info, warn};

use crate::journal::record::{JournalRecord, MAGIC};
use crate::journal::state::{Commit, CommitOutcome, Pending, RecordInvalid, State};
use crate::storage::{self, dma::DmaStorage, OpenMode, Storage, StorageFile};
use crate::{align_up, ALIGN_BYTES};

const SNAPSHOT_MAGIC: [u8; 4] = *b"HSNP";
const SNAPSHOT_VERSION: u8 = 1;
const SNAPSHOT_HEAD_BYTES: usize = 24;
/// Most commits checked and written in one group commit.
const GROUP_COMMITS_MAX: usize = 16_384;
/// Bytes read from a journal file per read at open.
const READ_CHUNK_BYTES: usize = 8 << 20;

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
}

enum Request {
    Commits {
        commits: Vec<Commit>,
        done: oneshot::Sender<Result<Vec<CommitOutcome>, JournalError>>,
    },
    Records {
        records: Vec<JournalRecord>,
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
    tx: LocalSender<Request>,
    flusher: RefCell<Option<glommio::Task<()>>>,
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

/// What parsing a journal file found.
struct Parsed {
    records: Vec<JournalRecord>,
    /// End of the last good record.
    valid_end: usize,
    corrupt_records: u64,
}

/// Parses journal bytes: zero bytes where a record would start are padding (skip to the next
/// page); a bad record followed by a good one is damage, skipped and counted; bad bytes with
/// nothing good after them end the parse (the torn tail).
fn parse(bytes: &[u8]) -> Parsed {
    let mut p = Parsed {
        records: Vec::new(),
        valid_end: 0,
        corrupt_records: 0,
    };
    let mut at = 0usize;
    while at + 4 <= bytes.len() {
        if bytes[at..at + 4] == [0; 4] {
            at = align_up(at as u64 + 1) as usize;
            continue;
        }
        match record::decode(&bytes[at..]) {
            Ok((record, len)) => {
                p.records.push(record);
                at += len;
                p.valid_end = at;
            }
            Err(_) => match next_good_record(bytes, at + 1) {
                Some(next) => {
                    p.corrupt_records += 1;
                    warn!(
                        from = at,
                        to = next,
                        "skipping damaged journal bytes between good records"
                    );
                    at = next;
                }
                None => break,
            },
        }
    }
    p
}

fn next_good_record(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at + 4 <= bytes.len() {
        let rel = bytes[at..].windows(4).position(|w| w == MAGIC)?;
        at += rel;
        if record::decode(&bytes[at..]).is_ok() {
            return Some(at);
        }
        at += 1;
    }
    None
}

async fn read_all(file: &dyn StorageFile, len: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len as usize);
    let mut pos = 0u64;
    while pos < len {
        let want = READ_CHUNK_BYTES.min(align_up(len - pos) as usize);
        let chunk = file.read_at(pos, want).await?;
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
        pos += chunk.len() as u64;
    }
    out.truncate(len as usize);
    Ok(out)
}

fn encode_snapshot(state: &State, generation: u64) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.push(SNAPSHOT_VERSION);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    let mut count = 0u64;
    for r in state.snapshot_records() {
        record::encode(&r, &mut out);
        count += 1;
    }
    out[16..24].copy_from_slice(&count.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode_snapshot(bytes: &[u8], generation: u64) -> Option<State> {
    if bytes.len() < SNAPSHOT_HEAD_BYTES + 4 {
        return None;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc
        || body[0..4] != SNAPSHOT_MAGIC
        || body[4] != SNAPSHOT_VERSION
        || u64::from_le_bytes(body[8..16].try_into().ok()?) != generation
    {
        return None;
    }
    let count = u64::from_le_bytes(body[16..24].try_into().ok()?);
    let mut records = Vec::with_capacity(count.min(1 << 24) as usize);
    let mut at = SNAPSHOT_HEAD_BYTES;
    while at < body.len() {
        let (record, len) = record::decode(&body[at..]).ok()?;
        records.push(record);
        at += len;
    }
    if records.len() as u64 != count {
        return None;
    }
    let mut state = State::default();
    state.apply_all(records);
    Some(state)
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
            let parsed = parse(&bytes);
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
        let (tx, rx) = local_channel::new_bounded(config.queue_max.max(1));
        let flusher = crate::runtime::spawn_urgent(flusher(inner.clone(), rx));
        Ok(Journal {
            inner,
            tx,
            flusher: RefCell::new(Some(flusher)),
        })
    }

    /// Checks and commits `commits` in order (each sees the ones before it), durably, in one
    /// group commit with whatever else is queued. One outcome per commit.
    pub async fn commit(&self, commits: Vec<Commit>) -> Result<Vec<CommitOutcome>, JournalError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Request::Commits { commits, done })
            .await
            .map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// Appends admin records (users, tokens, namespaces, mounts) after checking them; all or
    /// nothing.
    pub async fn append(&self, records: Vec<JournalRecord>) -> Result<(), JournalError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Request::Records { records, done })
            .await
            .map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// The in-memory state. Do not hold it across an `.await`.
    pub fn state(&self) -> Ref<'_, State> {
        self.inner.state.borrow()
    }

    /// Current counters.
    pub fn stats(&self) -> JournalStats {
        *self.inner.stats.borrow()
    }

    /// Stops taking requests, finishes queued ones, and waits for the flusher to end.
    pub async fn close(self) {
        let Journal { inner, tx, flusher } = self;
        drop(tx);
        let task = flusher.borrow_mut().take();
        if let Some(task) = task {
            task.await;
        }
        drop(inner);
    }
}

/// The newest snapshot that checks out, its generation, and how many newer ones did not
/// (each counted as a damaged record).
fn load_newest_snapshot(
    storage: &dyn Storage,
    dir: &Path,
) -> Result<(State, u64, u64), JournalError> {
    let mut damaged = 0;
    for generation in generations(storage, dir, "snap-", ".hsnp")?
        .into_iter()
        .rev()
    {
        let path = snapshot_path(dir, generation);
        let bytes = storage
            .read_file(&path)
            .map_err(io_err(format!("reading {}", path.display())))?;
        match decode_snapshot(&bytes, generation) {
            Some(state) => return Ok((state, generation, damaged)),
            None => {
                damaged += 1;
                warn!(path = %path.display(), "damaged snapshot; using an older one or the journal")
            }
        }
    }
    Ok((State::default(), 0, damaged))
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

async fn flusher(inner: Rc<Inner>, rx: LocalReceiver<Request>) {
    let mut carry: Option<Request> = None;
    loop {
        let first = match carry.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => break,
            },
        };
        match first {
            Request::Records { records, done } => {
                let result = inner.append_records(records).await;
                let _ = done.send(result);
            }
            first @ Request::Commits { .. } => {
                let mut group = vec![first];
                let mut count = 0;
                loop {
                    if let Some(Request::Commits { commits, .. }) = group.last() {
                        count += commits.len();
                    }
                    if count >= GROUP_COMMITS_MAX {
                        break;
                    }
                    match rx.recv().now_or_never() {
                        Some(Some(r @ Request::Commits { .. })) => group.push(r),
                        Some(Some(r)) => {
                            carry = Some(r);
                            break;
                        }
                        _ => break,
                    }
                }
                inner.commit_group(group).await;
            }
        }
        if let Err(e) = inner.snapshot_if_due().await {
            warn!(error = %e, "snapshot failed; will retry after the next write");
        }
    }
}

impl Inner {
    async fn append_records(&self, records: Vec<JournalRecord>) -> Result<(), JournalError> {
        self.state.borrow().check_records(&records)?;
        self.write(&records).await?;
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
            let mut pending = Pending::default();
            for request in group {
                let Request::Commits { commits, done } = request else {
                    unreachable!("groups hold commits only");
                };
                let outcomes: Vec<CommitOutcome> = commits
                    .iter()
                    .map(|c| match state.check_commit(c, &mut pending) {
                        Ok(row) => {
                            let jid = row.jid;
                            rows.push(JournalRecord::Row(row));
                            CommitOutcome::Ok { jid }
                        }
                        Err(outcome) => outcome,
                    })
                    .collect();
                answers.push((done, outcomes));
            }
        }
        let result = if rows.is_empty() {
            Ok(())
        } else {
            self.write(&rows).await
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

    /// Writes `records` as one burst at the end of the active file and fdatasyncs it.
    async fn write(&self, records: &[JournalRecord]) -> Result<(), JournalError> {
        let mut bytes = Vec::new();
        for r in records {
            record::encode(r, &mut bytes);
        }
        let padded = align_up(bytes.len() as u64) as usize;
        let mut buf = storage::alloc_buffer(padded);
        buf.as_bytes_mut()[..bytes.len()].copy_from_slice(&bytes);
        buf.as_bytes_mut()[bytes.len()..].fill(0);
        // Only the flusher task writes or replaces the active file, so these stay valid
        // across the awaits below.
        let (generation, end, file) = {
            let a = self.active.borrow();
            (a.generation, a.end, a.file.clone())
        };
        debug_assert_eq!(end % ALIGN_BYTES, 0);
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
        let (generation, end) = {
            let a = self.active.borrow();
            (a.generation, a.end)
        };
        if end < self.snapshot_after_bytes {
            return Ok(());
        }
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
