//! One sync round, and the loops around it: list what changed on the server, scan and hash
//! the disk, plan, then carry out the plan — conflicts, local deletions and folders,
//! downloads, uploads — and record the results in the state, each step after the files it
//! describes are durable.

mod actions;

use std::collections::{BTreeSet, HashMap};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use holdall_proto::api::{Cursors, EntryKind, Limits, ListRequest, Usage};
use holdall_proto::limits::LIST_LIMIT_MAX;
use holdall_proto::BlockHash;
use tracing::{debug, info, warn};

use crate::local::book::{Book, Entries};
use crate::local::scan::{
    hashed_in_pieces, local_tree, now_ns, walk, HashedBlock, LocalTree, OnBlock, ReadAt, Seen,
    STATE_DIR,
};
use crate::local::state::State;
use crate::local::trash::Trash;
use crate::local::tree::{same, Layout, Node, RemoteNode, Tree};
use crate::net::api::{Api, ApiError};
use crate::sync::planner::{plan, settle_intents, Action, CopyNamer, Settled, Trees};
use crate::sync::quota::{is_quota_refusal, QuotaNotice};
use crate::transfer::early::{Early, StoredLately};
use crate::transfer::prefetch::{PrefetchCache, Prefetcher};
use crate::transfer::upload::in_flight;

/// How long early stores count a block they stored as the server's, when the server does not
/// say how long it keeps upload records (it says so with streaming sync on).
const EARLY_MEMORY_DEFAULT: Duration = Duration::from_secs(60);

/// Half the server's upload record TTL: a block remembered that long can still be claimed.
fn early_memory(limits: &Limits) -> Duration {
    limits
        .prefetch_ttl_s
        .map_or(EARLY_MEMORY_DEFAULT, |s| Duration::from_secs(s / 2))
}

/// Rounds `--once` runs at most before it gives up on agreeing.
const ONCE_ROUNDS_MAX: usize = 30;
/// Transient failures `--once` retries (after 1, 2, 4, 8 and 16 s) before it gives up.
const ONCE_RETRIES_MAX: u32 = 5;

/// Knobs of the sync.
#[derive(Debug, Clone)]
pub struct Options {
    /// Threads that hash, and requests in flight.
    pub workers: usize,
    /// Bound of the deleted-files cache.
    pub trash_bytes_max: u64,
    /// Streaming sync: prefetch blocks of files other devices are still uploading.
    pub streaming: bool,
    /// Bound of the streaming-sync cache.
    pub prefetch_bytes_max: u64,
    /// A changed file is read only once it has not changed for this long (a file still
    /// being written would otherwise be hashed, and committed, at every size it passes
    /// through); zero for `--once`, which runs now.
    pub quiet: Duration,
}

/// What one round did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Actions planned.
    pub planned: usize,
    /// Files and folders committed (including deletions).
    pub committed: usize,
    /// Files rebuilt locally.
    pub downloaded: usize,
    /// Local deletions.
    pub deleted: usize,
    /// Conflicted copies made.
    pub conflicts: usize,
    /// Block bytes uploaded (a delta counts its own bytes).
    pub up_bytes: u64,
    /// Block bytes downloaded (a delta counts its own bytes).
    pub down_bytes: u64,
    /// Blocks sent or fetched as deltas.
    pub delta_blocks: u64,
    /// Blocks reused from local files instead of downloaded.
    pub reused_blocks: u64,
    /// Blocks taken from the streaming-sync cache instead of downloaded.
    pub prefetched_blocks: u64,
    /// Paths that failed, with why.
    pub errors: Vec<(String, String)>,
    /// Files that changed while being read.
    pub unsettled: usize,
}

impl Report {
    /// Nothing was left to do.
    pub fn idle(&self) -> bool {
        self.planned == 0 && self.unsettled == 0
    }
}

/// A synced folder bound to one account.
pub struct Syncer {
    root: PathBuf,
    api: Api,
    /// Rows, merge base, hash cache and cursors, on disk and in memory.
    book: Book,
    trash: Trash,
    opts: Options,
    layout: Layout,
    limits: Limits,
    /// What the account uses against its quota, as of the round's start.
    usage: Usage,
    quota_notice: QuotaNotice,
    /// Newest prefetch entry version listed per namespace.
    prefetch_cursors: Cursors,
    /// The streaming-sync cache, while a prefetcher runs.
    prefetch: Option<PrefetchCache>,
    /// Blocks early stores put on the server lately, across rounds.
    stored_lately: Arc<StoredLately>,
    host: String,
    /// Temporary files of a stopped run: block sources for the first round, then deleted.
    leftovers: Vec<(PathBuf, Vec<BlockHash>, u64)>,
    /// Held while this process syncs the folder.
    _lock: std::fs::File,
}

/// Takes `.holdall/lock`, so two clients never sync one folder at once.
fn lock(state_dir: &Path) -> Result<std::fs::File> {
    let path = state_dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock only reads the descriptor, which `file` keeps open.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        anyhow::bail!(
            "another holdall is syncing this folder already ({} is locked)",
            path.display()
        );
    }
    Ok(file)
}

fn syncfs(root: &Path) -> Result<()> {
    let dir = std::fs::File::open(root).with_context(|| format!("opening {}", root.display()))?;
    // SAFETY: syncfs only reads the descriptor, which `dir` keeps open for the call.
    let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("syncing the filesystem of {}", root.display()));
    }
    Ok(())
}

impl Syncer {
    /// Opens the folder `root` for the account behind `api`.
    pub fn open(root: &Path, api: Api, opts: Options) -> Result<Syncer> {
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        let root = root
            .canonicalize()
            .with_context(|| format!("resolving {}", root.display()))?;
        let account = api.account()?;
        let state_dir = root.join(STATE_DIR);
        let mut state = State::open(&state_dir)?;
        let lock = lock(&state_dir)?;
        let api = api.with_device(&state.device()?);
        let leftovers = crate::local::scan::leftovers(&root);
        state.bind(api.url(), &account.user)?;
        let trash = Trash::open(&state_dir, &state, opts.trash_bytes_max)?;
        Ok(Syncer {
            layout: Layout {
                root_ns: account.root_ns,
                mounts: account.mounts,
            },
            limits: account.limits,
            usage: account.usage,
            quota_notice: QuotaNotice::default(),
            prefetch_cursors: Cursors::new(),
            prefetch: None,
            stored_lately: Arc::new(StoredLately::new(early_memory(&account.limits))),
            trash,
            book: Book::open(state)?,
            root,
            api,
            opts,
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            leftovers,
            _lock: lock,
        })
    }

    /// The API client.
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The namespaces' cursors (for longpoll).
    pub fn cursors(&self) -> Cursors {
        let mut c = self.book.cursors().clone();
        for ns in self.layout.namespaces() {
            c.entry(ns).or_insert(0);
        }
        c
    }

    /// Newest prefetch entry versions listed (for longpoll).
    pub fn prefetch_cursors(&self) -> Cursors {
        self.prefetch_cursors.clone()
    }

    /// Turns streaming sync on (unless the options or the server have it off): returns the
    /// prefetcher to run on threads of its own; `nudge` is called when an upload it follows
    /// ended, so that a round can build or purge it.
    pub fn start_streaming(
        &mut self,
        nudge: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Option<Prefetcher>> {
        let Some(ttl_s) = self.limits.prefetch_ttl_s.filter(|_| self.opts.streaming) else {
            return Ok(None);
        };
        let cache = PrefetchCache::open(
            &self.root.join(STATE_DIR),
            self.opts.prefetch_bytes_max,
            Duration::from_secs(ttl_s),
        )
        .context("opening the prefetch cache")?;
        self.prefetch = Some(cache.clone());
        Ok(Some(Prefetcher::new(
            cache,
            self.api.clone(),
            self.limits.batch_bytes_max,
            nudge,
        )))
    }

    /// Reads the account again: mounts may have changed.
    fn refresh_account(&mut self) -> Result<(), ApiError> {
        let account = self.api.account()?;
        self.layout = Layout {
            root_ns: account.root_ns,
            mounts: account.mounts,
        };
        self.limits = account.limits;
        self.usage = account.usage;
        Ok(())
    }

    /// Lists every namespace until it has no more, recording rows and cursors.
    fn list_all(&mut self) -> Result<()> {
        loop {
            let answer = self.api.list(&ListRequest {
                cursors: self.cursors(),
                limit: Some(LIST_LIMIT_MAX),
                prefetch_cursors: self.prefetch_cursors.clone(),
            })?;
            if let Some(cache) = &self.prefetch {
                cache.offer(&answer.prefetch);
            }
            self.prefetch_cursors
                .extend(answer.prefetch_cursors.clone());
            let mut entries = Entries::new();
            for e in &answer.entries {
                let row = (!e.version.is_deleted()).then(|| RemoteNode {
                    ns: e.ns,
                    jid: e.jid,
                    node: e.version.clone(),
                });
                entries.remote(e.ns, &e.path, row);
            }
            for (ns, jid) in &answer.cursors {
                entries.cursor(*ns, *jid);
            }
            self.book.apply(entries)?;
            if !answer.has_more {
                return Ok(());
            }
        }
    }

    /// The server's tree by local path, mount points included as folders.
    fn remote_tree(&self) -> (Tree<RemoteNode>, BTreeSet<String>) {
        let mut tree = Tree::new();
        for ((ns, path), r) in self.book.rows() {
            if let Some(lpath) = self.layout.local(*ns, path) {
                tree.insert(lpath, r.clone());
            }
        }
        let mut mount_points = BTreeSet::new();
        for m in &self.layout.mounts {
            tree.insert(
                m.path.clone(),
                RemoteNode {
                    ns: m.ns,
                    jid: 0,
                    node: Node::dir(),
                },
            );
            mount_points.insert(m.path.clone());
        }
        (tree, mount_points)
    }

    /// Early senders for this round's scan, if it will hash a file in pieces (a new or
    /// changed one of more than two blocks) and uploads are not capped (under a cap the
    /// budget is the bottleneck, and blocks would leave in hashing order).
    fn early_store(&self, seen: &Tree<Seen>, read: ReadAt) -> Option<Early> {
        let hashes_a_large_file = seen.iter().any(|(p, s)| match s {
            Seen::File(stat) => {
                hashed_in_pieces(stat.size)
                    && !self.book.hashes().get(p).is_some_and(|h| stat.trusts(h))
                    && !read.too_recent(stat)
            }
            Seen::Dir => false,
        });
        if !hashes_a_large_file || self.api.up_limited() {
            return None;
        }
        let known = self
            .book
            .rows()
            .values()
            .flat_map(|r| r.node.blocklist.iter().copied())
            .collect();
        let delta_bases = match self.api.deltas() {
            true => self
                .book
                .synced()
                .iter()
                // Only files hashed in pieces have their blocks offered.
                .filter(|(_, n)| n.kind == EntryKind::File && hashed_in_pieces(n.size))
                .map(|(p, n)| (self.root.join(p), n.blocklist.clone()))
                .collect(),
            false => HashMap::new(),
        };
        let early = Early::start(
            self.api.clone(),
            known,
            self.stored_lately.clone(),
            self.limits.batch_bytes_max,
            in_flight(&self.api, self.opts.workers),
        );
        Some(early.with_delta_bases(delta_bases))
    }

    /// Hashes the walked folder as `read` says (telling `early` of each block of a large
    /// file), caching new blocklists.
    fn scan(&mut self, seen: Tree<Seen>, read: ReadAt, early: Option<&Early>) -> Result<LocalTree> {
        let offer = |b: HashedBlock| {
            if let Some(e) = early {
                e.offer(b)
            }
        };
        let on_block: Option<OnBlock> = early.map(|_| &offer as OnBlock);
        let local = local_tree(
            &self.root,
            seen,
            self.book.hashes(),
            self.opts.workers,
            read,
            on_block,
        );
        let mut entries = Entries::new();
        for (p, h) in &local.hashed {
            entries.hash(p, Some(h.clone()));
        }
        for p in self.book.hashes().keys() {
            if !local.stats.contains_key(p) {
                entries.hash(p, None);
            }
        }
        self.book.apply(entries)?;
        Ok(local)
    }

    /// One round: list, scan, plan, act. Returns what it did.
    pub fn round(&mut self) -> Result<Report> {
        let listed_at = Instant::now();
        self.refresh_account()?;
        self.list_all()?;
        let listed_ms = listed_at.elapsed().as_millis();
        let seen = walk(&self.root);
        let read = ReadAt {
            now_ns: now_ns(),
            quiet_ns: i64::try_from(self.opts.quiet.as_nanos()).unwrap_or(i64::MAX),
        };
        let early = self.early_store(&seen, read);
        let local = self.scan(seen, read, early.as_ref())?;
        let scanned_ms = listed_at.elapsed().as_millis();
        let (remote, mount_points) = self.remote_tree();
        self.settle_deletions(&local)?;
        self.settle_intents(&remote)?;
        let namer = CopyNamer {
            host: self.host.clone(),
            stamp: chrono::Local::now().format("%Y-%m-%d %H%M%S").to_string(),
        };
        let actions = plan(
            &Trees {
                local: &local.nodes,
                remote: &remote,
                synced: self.book.synced(),
                mount_points: &mount_points,
                unsettled: &local.unsettled,
            },
            &namer,
        );
        let mut report = Report {
            planned: actions.len(),
            unsettled: local.unsettled.len(),
            ..Report::default()
        };
        debug!(
            listed_ms,
            scanned_ms,
            planned_ms = listed_at.elapsed().as_millis(),
            actions = actions.len(),
            "round planned"
        );
        let (bytes, files) = planned_transfers(&actions, &local, &remote);
        self.api.progress().begin(bytes, files);
        let acted = self.act(actions, &local, &remote, early, &mut report);
        self.api.progress().end();
        acted?;
        for (path, _, _) in self.leftovers.drain(..) {
            let _ = std::fs::remove_file(path);
        }
        if let Some(cache) = &self.prefetch {
            cache.purge(listed_at);
        }
        if let Some(message) = self.quota_notice.observe(&report.errors, self.usage) {
            eprintln!("holdall: {message}");
        }
        Ok(report)
    }

    fn act(
        &mut self,
        actions: Vec<Action>,
        local: &LocalTree,
        remote: &Tree<RemoteNode>,
        early: Option<Early>,
        report: &mut Report,
    ) -> Result<()> {
        let mut adopt = Vec::new();
        let mut delete_local = Vec::new();
        let mut make_dirs = Vec::new();
        let mut downloads = Vec::new();
        let mut changes = Vec::new();
        for a in actions {
            match a {
                Action::ConflictCopy { path, copy } => {
                    let (from, to) = (self.root.join(&path), self.root.join(&copy));
                    match std::fs::rename(&from, &to) {
                        Ok(()) => {
                            info!(path = %path, copy = %copy, "conflict: kept the local version as a copy");
                            report.conflicts += 1;
                        }
                        Err(e) => report
                            .errors
                            .push((path, format!("making a conflicted copy: {e}"))),
                    }
                }
                Action::Adopt(p) => adopt.push(p),
                Action::DeleteLocal(p) => delete_local.push(p),
                Action::MakeDir(p) => make_dirs.push(p),
                Action::Download(p) => downloads.push(p),
                Action::Upload(p) => {
                    if let Some(mut c) = self.change(&p, local.nodes.get(&p), remote) {
                        c.stat = local.stats.get(&p).cloned();
                        changes.push(c);
                    }
                }
                Action::DeleteRemote(p) => {
                    if let Some(c) = self.change(&p, None, remote) {
                        changes.push(c);
                    }
                }
            }
        }
        let mut entries = Entries::new();
        for p in &adopt {
            entries.synced(p, remote.get(p).map(|r| r.node.clone()));
        }
        self.book.apply(entries)?;
        self.delete_locally(delete_local, local, report)?;
        self.make_dirs(make_dirs, report)?;
        self.download(downloads, local, remote, report)?;
        self.commit(changes, local, early, report)?;
        Ok(())
    }

    /// Local deletions a crash interrupted: where the path no longer holds what was being
    /// deleted, the merge base forgets it (gone: the server's version comes back; new
    /// content: both are kept). Where it still does, the planner decides again.
    fn settle_deletions(&mut self, local: &LocalTree) -> Result<()> {
        let mut entries = Entries::new();
        for (lpath, n) in &self.book.state().deleting()? {
            entries.deleting(lpath, None);
            if !same(local.nodes.get(lpath), Some(n)) {
                entries.synced(lpath, None);
            }
        }
        self.book.apply(entries)
    }

    /// Commits this client sent without recording their answers (a crash, a lost answer):
    /// once the server's row at the path moved on, the merge base takes what the server
    /// holds if that is what the commit asked for, and otherwise forgets the path (so the
    /// planner keeps both versions rather than guess).
    fn settle_intents(&mut self, remote: &Tree<RemoteNode>) -> Result<()> {
        let settled = settle_intents(&self.book.state().intents()?, remote);
        if settled.is_empty() {
            return Ok(());
        }
        let mut entries = Entries::new();
        for (lpath, how) in &settled {
            entries.intent(lpath, None);
            match how {
                Settled::Adopt(Some(n)) => entries.synced(lpath, Some(n.clone())),
                Settled::Adopt(None) | Settled::Forget => entries.synced(lpath, None),
            };
        }
        self.book.apply(entries)?;
        info!(
            intents = settled.len(),
            "settled commits whose answers were not recorded"
        );
        Ok(())
    }

    /// Records the round's outcome for `holdall status`.
    pub fn record(&mut self, report: Option<&Report>, error: Option<&str>) -> Result<()> {
        let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
        let trash_bytes = self.trash.bytes();
        let prefetch = self
            .prefetch
            .as_ref()
            .map(|c| (c.stats(), c.bytes(), c.followed()));
        self.book.state_mut().write(|w| {
            w.set_meta("last_round", &now)?;
            if let Some((stats, bytes, followed)) = prefetch {
                w.set_meta("prefetch_followed", &followed.to_string())?;
                w.set_meta("prefetched_blocks", &stats.prefetched_blocks.to_string())?;
                w.set_meta("prefetch_hits", &stats.hits.to_string())?;
                w.set_meta("prefetch_cache_bytes", &bytes.to_string())?;
            }
            w.set_meta("last_error", error.unwrap_or(""))?;
            w.set_meta("trash_bytes", &trash_bytes.to_string())?;
            if let Some(r) = report {
                w.set_meta(
                    "in_sync",
                    if r.idle() && r.errors.is_empty() {
                        "yes"
                    } else {
                        "no"
                    },
                )?;
                let errors: Vec<String> =
                    r.errors.iter().map(|(p, e)| format!("{p}: {e}")).collect();
                w.set_meta("path_errors", &errors.join("\n"))?;
            } else {
                w.set_meta("in_sync", "no")?;
            }
            Ok(())
        })
    }

    /// Rounds until the folder and the server agree (`--once`).
    pub fn until_agreed(&mut self) -> Result<Report> {
        let mut total = Report::default();
        let mut failures = 0u32;
        for round in 0..ONCE_ROUNDS_MAX {
            let started = Instant::now();
            let r = match self.round() {
                Ok(r) => r,
                Err(e) => {
                    let _ = self.record(None, Some(&format!("{e:#}")));
                    let transient = e
                        .downcast_ref::<ApiError>()
                        .is_some_and(ApiError::is_transient);
                    if transient && failures < ONCE_RETRIES_MAX {
                        let wait = Duration::from_secs(1 << failures);
                        warn!(error = %format!("{e:#}"), retry_in_s = wait.as_secs(), "sync round failed");
                        failures += 1;
                        std::thread::sleep(wait);
                        continue;
                    }
                    return Err(e);
                }
            };
            log_round(&r, started.elapsed());
            self.record(Some(&r), None)?;
            let idle = r.idle();
            // Only failures (a full disk, a path the server refuses): another round would
            // fail the same way; report them.
            let stuck =
                !r.errors.is_empty() && r.committed + r.downloaded + r.deleted + r.conflicts == 0;
            let errors = r.errors.clone();
            accumulate(&mut total, r);
            if idle || stuck {
                total.errors = errors;
                return Ok(total);
            }
            if total.unsettled > 0 && round + 1 < ONCE_ROUNDS_MAX {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Err(anyhow!(
            "the folder and the server still differ after {ONCE_ROUNDS_MAX} rounds (files keep changing?)"
        ))
    }
}

fn accumulate(total: &mut Report, r: Report) {
    total.planned += r.planned;
    total.committed += r.committed;
    total.downloaded += r.downloaded;
    total.deleted += r.deleted;
    total.conflicts += r.conflicts;
    total.up_bytes += r.up_bytes;
    total.down_bytes += r.down_bytes;
    total.reused_blocks += r.reused_blocks;
    total.delta_blocks += r.delta_blocks;
    total.prefetched_blocks += r.prefetched_blocks;
    total.unsettled = r.unsettled;
}

/// Bytes and files a round's uploads and downloads move at most (blocks the server or the
/// disk already has move nothing), for its progress bar.
fn planned_transfers(
    actions: &[Action],
    local: &LocalTree,
    remote: &Tree<RemoteNode>,
) -> (u64, usize) {
    let sizes = actions.iter().filter_map(|a| match a {
        Action::Upload(p) => local.nodes.get(p).map(|n| n.size),
        Action::Download(p) => remote.get(p).map(|r| r.node.size),
        _ => None,
    });
    sizes.fold((0, 0), |(bytes, files), size| (bytes + size, files + 1))
}

/// One log line per round that did something.
pub fn log_round(r: &Report, took: Duration) {
    if r.planned == 0 && r.errors.is_empty() {
        return;
    }
    info!(
        committed = r.committed,
        downloaded = r.downloaded,
        deleted = r.deleted,
        conflicts = r.conflicts,
        up_bytes = r.up_bytes,
        down_bytes = r.down_bytes,
        reused_blocks = r.reused_blocks,
        delta_blocks = r.delta_blocks,
        prefetched_blocks = r.prefetched_blocks,
        errors = r.errors.len(),
        took_ms = took.as_millis() as u64,
        "sync round"
    );
    // Quota refusals are told once, by the round, not per path every round.
    for (p, e) in r.errors.iter().filter(|(_, e)| !is_quota_refusal(e)) {
        warn!(path = %p, error = %e, "not synced");
    }
}
