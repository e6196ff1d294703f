//! The crash harness: holdalld under a concurrent upload and commit load is killed with
//! SIGKILL at a random moment, started again on the same data folder, and checked against
//! what the load was told (see [`crate::ledger`] for the rules), cycle after cycle.
//!
//! The seed fixes the load (paths, sizes, contents, deduplication) and the kill moments;
//! which byte a kill interrupts is up to the OS's scheduling, so a failing seed replays
//! the same schedule but not necessarily the same interleaving. A failing cycle's data
//! folder and the server's log are kept.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use holdall_benches::http_client::Conn;
use holdall_proto::api::{
    CommitBatchRequest, CommitBatchResponse, CommitRequest, CommitResult, EntryKind, Jid,
    ListEntry, ListRequest, ListResponse, NsId, RetrieveBatchRequest, RetrieveItem,
};
use holdall_proto::frame::{decode_retrieve_frames, RetrieveStatus};
use holdall_proto::limits::{BATCH_BYTES_DEFAULT, COMMIT_BATCH_MAX};
use holdall_proto::BlockHash;
use holdall_proto::FileVersion;

use crate::backups;
use crate::collections;
use crate::daemon::{create_user, Daemon};
use crate::ledger::{BlockSpec, Book, Reconciled};
use crate::workload::{self, Target, Violation};

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The holdalld binary.
    pub holdalld: PathBuf,
    /// Scratch folder (each store is a folder in it).
    pub dir: PathBuf,
    /// Kill-and-restart cycles.
    pub cycles: u64,
    /// Fixes the load and the kill moments.
    pub seed: u64,
    /// holdalld's shards.
    pub shards: usize,
    /// Concurrent load workers.
    pub workers: usize,
    /// Cycles on one data folder before a fresh one (bounds the disk a long run uses).
    pub cycles_per_store: u64,
    /// Longest time from the start of the load to the kill.
    pub kill_after_max: Duration,
    /// Force a garbage collection this often during the load (zero: never).
    pub collect_every: Duration,
    /// holdalld's `--history-retention`, if not its default.
    pub history_retention: Option<String>,
    /// Take an online backup early in each load and check it (crate::backups).
    pub backup: bool,
}

impl Options {
    /// Starts holdalld on `data` as these options ask, its log appended to `log`.
    fn start_daemon(&self, data: &std::path::Path, log: &std::path::Path) -> Result<Daemon> {
        let flags = match &self.history_retention {
            Some(r) => vec!["--history-retention".into(), r.clone()],
            None => Vec::new(),
        };
        Daemon::start(&self.holdalld, data, self.shards, &flags, log)
    }
}

/// What a run saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    /// Cycles completed.
    pub cycles: u64,
    /// Commits answered `ok` (each checked at the next restart).
    pub acked_commits: u64,
    /// Commits unanswered at a kill that were there after the restart.
    pub adopted_commits: u64,
    /// Commits unanswered at a kill that were not.
    pub dropped_commits: u64,
    /// Blocks acknowledged by store_batch and read back byte-exact.
    pub checked_blocks: u64,
    /// Rows whose every block was read back byte-exact.
    pub checked_rows: u64,
    /// Bytes read back.
    pub checked_bytes: u64,
    /// Forced collections that completed.
    pub collections: u64,
    /// Versions `history` listed (within the retention) read back byte-exact.
    pub checked_versions: u64,
    /// Versions refused that had left the retention between listing and reading.
    pub aged_out_versions: u64,
    /// Backups taken during a load (not cut short by its kill) and checked.
    pub backups: u64,
    /// Versions acknowledged before those backups began, read back from them.
    pub backup_versions: u64,
}

/// A store (data folder) and what the load was told about it.
struct Store {
    data: PathBuf,
    log: PathBuf,
    token: String,
    ns: NsId,
    books: Vec<Book>,
    /// Highest JID any answer gave out; every later commit must get a higher one.
    jid_floor: Jid,
}

/// Runs the cycles; an error names the seed and cycle that broke a rule.
pub fn run(opts: &Options) -> Result<Summary> {
    let mut summary = Summary::default();
    let mut rng = fastrand::Rng::with_seed(opts.seed);
    let mut store: Option<Store> = None;
    for cycle in 0..opts.cycles {
        let fresh = cycle % opts.cycles_per_store.max(1) == 0;
        if fresh {
            if let Some(old) = store.take() {
                finish(opts, old, &mut summary)?;
                eprintln!(
                    "{cycle} cycles: {} commits acknowledged, all kept",
                    summary.acked_commits
                );
            }
        }
        let (mut daemon, mut s) = match store.take() {
            Some(mut s) => {
                let daemon = opts.start_daemon(&s.data, &s.log)?;
                check(&daemon.addr, &mut s, opts, &mut summary)
                    .with_context(|| failed_at(opts, cycle, &s))?;
                (daemon, s)
            }
            None => new_store(opts, cycle)?,
        };
        let kill_after =
            Duration::from_millis(rng.u64(..=opts.kill_after_max.as_millis().max(1) as u64));
        let backup = opts.backup.then(|| {
            let to = backups::folder(&opts.dir, opts.seed, cycle);
            let _ = std::fs::remove_dir_all(&to);
            (to, backups::acked(&s.books))
        });
        let load = Load {
            kill_after,
            collect_every: opts.collect_every,
            cycle,
            backup_to: backup.as_ref().map(|(to, _)| to.clone()),
        };
        let (violations, backed_up) =
            load_then_kill(&mut daemon, &mut s, &load, &mut rng, &mut summary)?;
        if let Some(v) = violations.first() {
            bail!("{}: {}", failed_at(opts, cycle, &s), v.0);
        }
        match (backup, backed_up) {
            (Some((to, acked)), true) => check_backup(opts, &s, &to, &acked, &mut summary)
                .with_context(|| {
                    format!(
                        "{} (backup in {})",
                        failed_at(opts, cycle, &s),
                        to.display()
                    )
                })?,
            (Some((to, _)), false) => bail!(
                "{}: the backup into {} failed",
                failed_at(opts, cycle, &s),
                to.display()
            ),
            (None, _) => {}
        }
        summary.cycles += 1;
        store = Some(s);
    }
    if let Some(s) = store {
        finish(opts, s, &mut summary)?;
    }
    Ok(summary)
}

fn failed_at(opts: &Options, cycle: u64, s: &Store) -> String {
    format!(
        "cycle {cycle} of seed {} broke a promise (replay: holdall-chaos crash --seed {} --cycles {}; data kept in {}, log {})",
        opts.seed,
        opts.seed,
        cycle + 1,
        s.data.display(),
        s.log.display()
    )
}

/// A fresh data folder, its server, and the load's user.
fn new_store(opts: &Options, cycle: u64) -> Result<(Daemon, Store)> {
    let data = opts.dir.join(format!("store-{}-{cycle}", opts.seed));
    let log = data.with_extension("log");
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_file(&log);
    let daemon = opts.start_daemon(&data, &log)?;
    let (token, ns) = create_user(&daemon.addr, &data, "chaos")?;
    let store = Store {
        data,
        log,
        token,
        ns,
        books: (0..opts.workers).map(|_| Book::default()).collect(),
        jid_floor: 0,
    };
    Ok((daemon, store))
}

/// One cycle's load: when to kill, how often to collect meanwhile, where to back up.
struct Load {
    kill_after: Duration,
    collect_every: Duration,
    cycle: u64,
    backup_to: Option<PathBuf>,
}

/// When a cycle's backup begins: once the load is under way.
const BACKUP_AFTER: Duration = Duration::from_millis(30);

/// Checks a backup taken during the load, then removes it.
fn check_backup(
    opts: &Options,
    s: &Store,
    to: &std::path::Path,
    acked: &backups::Acked,
    summary: &mut Summary,
) -> Result<()> {
    let specs = backups::specs(&s.books);
    let reader = backups::Reader {
        list: |c: &mut Conn| list_all(c, &s.token, s.ns),
        read_back: |c: &mut Conn, row: &ListEntry| read_back(c, &s.token, row, &specs),
    };
    let read = backups::check(&opts.holdalld, to, opts.shards, s.ns, acked, reader)?;
    summary.backups += 1;
    summary.backup_versions += read;
    std::fs::remove_dir_all(to)?;
    let _ = std::fs::remove_file(to.with_extension("log"));
    Ok(())
}

/// Runs the workers (and, if asked, forced collections and a backup), kills the
/// server after `kill_after`, and waits for them to notice. Whether the backup completed.
fn load_then_kill(
    daemon: &mut Daemon,
    s: &mut Store,
    load: &Load,
    rng: &mut fastrand::Rng,
    summary: &mut Summary,
) -> Result<(Vec<Violation>, bool)> {
    let stop = AtomicBool::new(false);
    let addr = daemon.addr.clone();
    let target = Target {
        addr: &addr,
        token: &s.token,
        ns: s.ns,
    };
    let (floor, data) = (s.jid_floor, s.data.clone());
    let seeds: Vec<u64> = s.books.iter().map(|_| rng.u64(..)).collect();
    let (violations, kill, backed_up) = std::thread::scope(|scope| {
        let workers: Vec<_> = s
            .books
            .iter_mut()
            .zip(seeds)
            .enumerate()
            .map(|(w, (book, seed))| {
                let (target, stop) = (&target, &stop);
                scope.spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(seed ^ load.cycle);
                    workload::work(target, w, book, &mut rng, floor, stop)
                })
            })
            .collect();
        let collector = (!load.collect_every.is_zero()).then(|| {
            let (addr, data, stop) = (&addr, &data, &stop);
            scope.spawn(move || collections::collect_until(addr, data, load.collect_every, stop))
        });
        let backup = load.backup_to.as_ref().map(|to| {
            let (addr, data, after) = (&addr, &data, BACKUP_AFTER.min(load.kill_after));
            scope.spawn(move || {
                std::thread::sleep(after);
                backups::take(addr, data, to)
            })
        });
        // The kill comes its random time after the backup, so every backup is checked.
        let backed_up = backup.is_some_and(|b| b.join().unwrap_or(false));
        std::thread::sleep(load.kill_after);
        let kill = daemon.kill();
        stop.store(true, Ordering::Relaxed);
        let mut violations: Vec<Violation> = workers
            .into_iter()
            .filter_map(|w| {
                w.join()
                    .unwrap_or_else(|_| Some(Violation("a load worker panicked".into())))
            })
            .collect();
        match collector.map(|c| c.join()) {
            Some(Ok(Ok(done))) => summary.collections += done,
            Some(Ok(Err(v))) => violations.push(v),
            Some(Err(_)) => violations.push(Violation("the collector panicked".into())),
            None => {}
        }
        (violations, kill, backed_up)
    });
    kill?;
    Ok((violations, backed_up))
}

/// After a restart: every path's row against the books, every live row's blocks and every
/// block store_batch acknowledged since the last check read back byte-exact.
fn check(addr: &str, s: &mut Store, opts: &Options, summary: &mut Summary) -> Result<()> {
    let mut conn = Conn::connect(addr)?;
    let rows = list_all(&mut conn, &s.token, s.ns)?;
    let specs: HashMap<BlockHash, BlockSpec> = s
        .books
        .iter()
        .flat_map(|b| b.specs.iter().map(|(h, spec)| (*h, *spec)))
        .collect();
    for book in &mut s.books {
        for (path, state) in &mut book.paths {
            let row = rows.get(path);
            match state
                .reconcile(row)
                .map_err(|e| anyhow::anyhow!("{path}: {e}"))?
            {
                Reconciled::Kept => {}
                Reconciled::Adopted => summary.adopted_commits += 1,
                Reconciled::Dropped => summary.dropped_commits += 1,
            }
        }
    }
    let strangers: Vec<&String> = rows
        .keys()
        .filter(|p| !p.starts_with(PROBE_DIR))
        .filter(|p| !s.books.iter().any(|b| b.paths.contains_key(*p)))
        .collect();
    ensure!(strangers.is_empty(), "rows nobody committed: {strangers:?}");
    for row in rows.values() {
        s.jid_floor = s.jid_floor.max(row.jid);
        if row.version.kind != EntryKind::File || row.path.starts_with(PROBE_DIR) {
            continue;
        }
        let bytes = read_back(&mut conn, &s.token, row, &specs)
            .with_context(|| format!("reading back {} (jid {})", row.path, row.jid))?;
        summary.checked_rows += 1;
        summary.checked_bytes += bytes;
    }
    if !opts.collect_every.is_zero() {
        let paths: Vec<&String> = s.books.iter().flat_map(|b| b.paths.keys()).collect();
        let seen = collections::check_versions(&mut conn, &s.token, s.ns, &paths, |c, row| {
            read_back(c, &s.token, row, &specs)
        })?;
        summary.checked_versions += seen.read;
        summary.aged_out_versions += seen.aged_out;
    }
    let mut unchecked: Vec<BlockHash> = s
        .books
        .iter_mut()
        .flat_map(|b| std::mem::take(&mut b.unchecked_blocks))
        .collect();
    unchecked.sort();
    unchecked.dedup();
    if !unchecked.is_empty() {
        for row in probe(&mut conn, s, &unchecked, &specs)? {
            summary.checked_bytes += read_back(&mut conn, &s.token, &row, &specs)
                .context("reading back blocks store_batch acknowledged")?;
        }
        summary.checked_blocks += unchecked.len() as u64;
    }
    for book in &mut s.books {
        let known: Vec<BlockHash> = book
            .paths
            .values()
            .filter_map(|p| p.acked.as_ref())
            .flat_map(|(_, v)| v.blocklist.iter().copied())
            .collect();
        book.known_blocks = known;
    }
    for book in &mut s.books {
        summary.acked_commits += std::mem::take(&mut book.acked_commits);
    }
    Ok(())
}

/// Folder of the rows the check commits to prove blocks are stored.
const PROBE_DIR: &str = "probe/";

/// Proves that blocks store_batch acknowledged before the crash are stored: uploaded again,
/// each must come back `present` (already held), never `stored`. Then one single-block
/// file per block is committed (in batches), so they can be read back by their rows.
fn probe(
    conn: &mut Conn,
    s: &Store,
    hashes: &[BlockHash],
    specs: &HashMap<BlockHash, BlockSpec>,
) -> Result<Vec<ListEntry>> {
    let answers = workload::upload(conn, &s.token, hashes, specs)?
        .map_err(|v| anyhow::anyhow!("uploading acknowledged blocks again: {}", v.0))?;
    for answer in answers {
        if let Some(lost) = answer.stored.first() {
            bail!(
                "{} of the blocks store_batch acknowledged were not stored after the restart, e.g. {lost}",
                answer.stored.len()
            );
        }
    }
    let mut rows = Vec::with_capacity(hashes.len());
    for chunk in hashes.chunks(COMMIT_BATCH_MAX) {
        let commits: Vec<CommitRequest> = chunk
            .iter()
            .map(|h| CommitRequest {
                ns: s.ns,
                path: format!("{PROBE_DIR}{h}"),
                version: FileVersion {
                    kind: EntryKind::File,
                    blocklist: vec![*h],
                    size: specs[h].len as u64,
                    mtime_ms: 0,
                },
                parent_jid: None,
            })
            .collect();
        let body = serde_json::to_vec(&CommitBatchRequest {
            commits: commits.clone(),
        })?;
        let (status, answer) = conn.request("POST", "/v1/commit_batch", &s.token, &[&body])?;
        let results = match serde_json::from_slice::<CommitBatchResponse>(&answer) {
            Ok(r) if status == 200 && r.results.len() == commits.len() => r.results,
            _ => bail!(
                "probe commit_batch answered {status}: {}",
                String::from_utf8_lossy(&answer)
            ),
        };
        for (c, result) in commits.into_iter().zip(results) {
            let jid = match result {
                CommitResult::Ok { jid } => jid,
                // A probe of the same block from an earlier check is its latest row.
                CommitResult::Conflict {
                    current_jid: Some(jid),
                } => jid,
                other => bail!(
                    "block {} that store_batch acknowledged: probe commit answered {other:?}",
                    c.version.blocklist[0]
                ),
            };
            rows.push(ListEntry {
                ns: c.ns,
                jid,
                path: c.path,
                version: FileVersion {
                    kind: c.version.kind,
                    blocklist: c.version.blocklist,
                    size: c.version.size,
                    mtime_ms: 0,
                },
            });
        }
    }
    Ok(rows)
}

/// The latest row of every path of `ns`.
fn list_all(conn: &mut Conn, token: &str, ns: NsId) -> Result<BTreeMap<String, ListEntry>> {
    let mut rows = BTreeMap::new();
    let mut cursors = BTreeMap::from([(ns, 0)]);
    loop {
        let request = ListRequest {
            cursors: cursors.clone(),
            limit: None,
            prefetch_cursors: Default::default(),
        };
        let (status, answer) =
            conn.request("POST", "/v1/list", token, &[&serde_json::to_vec(&request)?])?;
        ensure!(
            status == 200,
            "list answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
        let page: ListResponse = serde_json::from_slice(&answer)?;
        for e in page.entries.into_iter().filter(|e| e.ns == ns) {
            rows.insert(e.path.clone(), e);
        }
        cursors = page.cursors;
        if !page.has_more {
            return Ok(rows);
        }
    }
}

/// Reads every block of `row` by its JID and compares it with what the load made.
fn read_back(
    conn: &mut Conn,
    token: &str,
    row: &ListEntry,
    specs: &HashMap<BlockHash, BlockSpec>,
) -> Result<u64> {
    let mut bytes = 0;
    let mut batch: Vec<BlockHash> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut hashes: Vec<BlockHash> = row.version.blocklist.clone();
    hashes.sort();
    hashes.dedup();
    for (i, hash) in hashes.iter().enumerate() {
        let spec = specs
            .get(hash)
            .with_context(|| format!("block {hash} was never made by the load"))?;
        if batch_bytes + spec.len > BATCH_BYTES_DEFAULT {
            bytes += retrieve(conn, token, row, &batch, specs)?;
            batch.clear();
            batch_bytes = 0;
        }
        batch.push(*hash);
        batch_bytes += spec.len;
        if i + 1 == hashes.len() {
            bytes += retrieve(conn, token, row, &batch, specs)?;
        }
    }
    Ok(bytes)
}

fn retrieve(
    conn: &mut Conn,
    token: &str,
    row: &ListEntry,
    hashes: &[BlockHash],
    specs: &HashMap<BlockHash, BlockSpec>,
) -> Result<u64> {
    let request = RetrieveBatchRequest {
        items: vec![RetrieveItem {
            ns: row.ns,
            path: row.path.clone(),
            jid: Some(row.jid),
            prefetch: false,
            hashes: hashes.to_vec(),
            signatures: Default::default(),
            bases: Default::default(),
        }],
        wait_ms: None,
    };
    let (status, answer) = conn.request(
        "POST",
        "/v1/retrieve_batch",
        token,
        &[&serde_json::to_vec(&request)?],
    )?;
    ensure!(
        status == 200,
        "retrieve_batch answered {status}: {}",
        String::from_utf8_lossy(&answer)
    );
    let mut bytes = 0u64;
    let mut answered = 0usize;
    for (frame, want) in decode_retrieve_frames(&answer, BATCH_BYTES_DEFAULT as u64).zip(hashes) {
        let frame = frame.context("a retrieve frame")?;
        ensure!(
            frame.hash == *want,
            "block {want} came back as {}",
            frame.hash
        );
        if frame.status != RetrieveStatus::Ok {
            return Err(collections::NotServed(*want, frame.status).into());
        }
        ensure!(
            frame.data == specs[want].data().as_slice(),
            "block {want} came back with other bytes"
        );
        bytes += frame.data.len() as u64;
        answered += 1;
    }
    ensure!(
        answered == hashes.len(),
        "{answered} of {} blocks answered",
        hashes.len()
    );
    Ok(bytes)
}

/// The last check of a store, then a clean stop, and the folder removed.
fn finish(opts: &Options, mut s: Store, summary: &mut Summary) -> Result<()> {
    let daemon = opts.start_daemon(&s.data, &s.log)?;
    check(&daemon.addr, &mut s, opts, summary)
        .with_context(|| failed_at(opts, summary.cycles, &s))?;
    daemon.stop()?;
    std::fs::remove_dir_all(&s.data)?;
    std::fs::remove_file(&s.log)?;
    Ok(())
}
