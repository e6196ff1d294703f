//! Crash and I/O-fault runs of the real block log and journal over the in-memory medium,
//! shared by the exhaustive tests (`tests/crash.rs`: a crash at every sync point, failures
//! on every countdown) and the `storage_faults` fuzz target (any point, any seed).
//!
//! A run puts a workload until the fault stops it, then opens what a crash would leave
//! (unsynced pages kept or lost as a seed decides) and checks that every acknowledged write
//! is there byte for byte, that nothing it holds is damaged, and that the store takes new
//! writes. Each check panics on a broken promise.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::rc::Rc;

use holdall_engine::block_log::record::SEGMENT_HEADER_BYTES;
use holdall_engine::block_log::{BlockLog, BlockLogConfig, CollectPlan};
use holdall_engine::journal::record::{JournalRecord, NamespaceKind};
use holdall_engine::journal::state::{Commit, CommitOutcome};
use holdall_engine::journal::{Journal, JournalConfig};
use holdall_engine::runtime;
use holdall_engine::storage::memory::MemStorage;
use holdall_engine::store_key::StoreKey;
use holdall_proto::api::EntryKind;
use holdall_proto::BlockHash;
use holdall_proto::FileVersion;

/// What goes wrong in a run.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// The medium crashes at this sync (1-based).
    CrashAtSync(u64),
    /// After this many operations, every one fails with this kind.
    FailAfter(u64, ErrorKind),
}

impl Fault {
    fn arm(self, m: &MemStorage) {
        match self {
            Fault::CrashAtSync(n) => m.crash_at_sync(n),
            Fault::FailAfter(ops, kind) => m.fail_after(ops, kind),
        }
    }
}

/// Puts `blocks` workload blocks with `fault` armed, then checks each crash image `seeds`
/// names. False when the workload finished before the fault struck.
pub async fn block_log_run(fault: Fault, blocks: usize, seeds: &[u64]) -> bool {
    let m = MemStorage::new();
    fault.arm(&m);
    let acked = match BlockLog::open(block_config(&m)).await {
        Ok(log) => {
            let acked = put_blocks(&log, blocks).await;
            log.close().await;
            acked
        }
        Err(_) => BTreeMap::new(),
    };
    if !m.faulted() {
        assert_eq!(acked.len(), blocks, "no fault, every block acknowledged");
        return false;
    }
    for &seed in seeds {
        check_blocks(m.after_crash(seed), &acked, blocks).await;
    }
    true
}

/// Commits `rounds` workload rounds with `fault` armed, then checks each crash image
/// `seeds` names. False when the workload finished before the fault struck.
pub async fn journal_run(fault: Fault, rounds: usize, seeds: &[u64]) -> bool {
    let m = MemStorage::new();
    fault.arm(&m);
    let committed = match Journal::open(journal_config(&m)).await {
        Ok(j) => {
            let committed = commit_versions(&j, rounds).await;
            j.close().await;
            committed
        }
        Err(_) => Committed::default(),
    };
    if !m.faulted() {
        assert_eq!(
            committed.acked.len(),
            PATHS.min(rounds * 2),
            "no fault, every path acknowledged"
        );
        return false;
    }
    for &seed in seeds {
        check_journal(m.after_crash(seed), &committed).await;
    }
    true
}

/// Puts `blocks` workload blocks, then runs a collection (every third block live, one more
/// stored while the mark runs) with `fault` armed, and checks each crash image `seeds`
/// names: every live block reads back byte for byte, and a collection after the restart
/// leaves no byte of a dead block on the medium. False when the collection finished before
/// the fault struck.
pub async fn collect_run(fault: Fault, blocks: usize, seeds: &[u64]) -> bool {
    let m = MemStorage::new();
    let log = BlockLog::open(block_config(&m)).await.expect("open");
    let stored = put_blocks(&log, blocks).await;
    assert_eq!(stored.len(), blocks, "no fault yet");
    fault.arm(&m);
    let mut live: BTreeMap<BlockHash, Vec<u8>> = stored
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 == 0)
        .map(|(_, (h, d))| (*h, d.clone()))
        .collect();
    assert!(log.mark_begin());
    for hash in live.keys() {
        log.mark(hash);
    }
    let during = b"stored while the mark runs".to_vec();
    let during_hash = BlockHash::of(&during);
    let (put, collected) = futures::future::join(
        log.put(during_hash, &during, true),
        log.collect(&COLLECT_ALL),
    )
    .await;
    if put.is_ok() {
        live.insert(during_hash, during);
    }
    log.close().await;
    if !m.faulted() {
        assert!(collected.is_ok(), "no fault, the collection succeeds");
        check_collected(m.after_crash(0), &live).await;
        return false;
    }
    for &seed in seeds {
        check_collected(m.after_crash(seed), &live).await;
    }
    true
}

/// Compacts every segment with any dead byte, the active one included, unpaced.
const COLLECT_ALL: CollectPlan = CollectPlan {
    dead_share_min: 0.0001,
    active_dead_share_min: 0.0001,
    rate_bytes_per_s: 0,
};

/// Opens what is on `m`, checks every block of `live` reads back exactly, collects again
/// with the same blocks live, and checks that the segments then hold live records only.
async fn check_collected(m: MemStorage, live: &BTreeMap<BlockHash, Vec<u8>>) {
    let log = BlockLog::open(block_config(&m))
        .await
        .expect("a crashed block log opens");
    let mut out = Vec::new();
    for (hash, data) in live {
        assert!(
            log.get(hash, &mut out).await.unwrap(),
            "live block {hash} lost"
        );
        assert_eq!(&out, data, "live block {hash} changed");
    }
    assert!(log.mark_begin());
    for hash in live.keys() {
        log.mark(hash);
    }
    let report = log
        .collect(&COLLECT_ALL)
        .await
        .expect("collect after restart");
    let stats = log.stats();
    assert_eq!(
        stats.blocks,
        live.len() as u64,
        "only live blocks stay indexed"
    );
    assert_eq!(report.dead_bytes, 0, "no dead byte left: {report:?}");
    let headers = stats.segments * SEGMENT_HEADER_BYTES;
    assert_eq!(
        stats.segment_bytes,
        report.live_bytes + headers,
        "the segments hold the live records and their headers only"
    );
    for (hash, data) in live {
        assert!(
            log.get(hash, &mut out).await.unwrap(),
            "live block {hash} lost"
        );
        assert_eq!(&out, data, "live block {hash} changed");
    }
    log.close().await;
}

/// The `storage_faults` fuzz target: the first byte picks the store and the kind of fault,
/// the next two the sync point or countdown, the next eight the crash image's seed.
pub fn storage_faults(data: &[u8]) -> bool {
    let [pick, a, b, rest @ ..] = data else {
        return false;
    };
    let at = u16::from_le_bytes([*a, *b]) as u64 % 400;
    let mut seed = [0u8; 8];
    for (s, d) in seed.iter_mut().zip(rest) {
        *s = *d;
    }
    let seed = u64::from_le_bytes(seed);
    let pick = *pick;
    let fault = match pick & 2 {
        0 => Fault::CrashAtSync(at + 1),
        _ => Fault::FailAfter(at, ErrorKind::StorageFull),
    };
    runtime::run(async move {
        match pick & 1 {
            0 => block_log_run(fault, 30, &[seed]).await,
            _ => journal_run(fault, 40, &[seed]).await,
        }
    })
}

/// Paths the journal workload commits versions of.
const PATHS: usize = 5;

fn block_config(m: &MemStorage) -> BlockLogConfig {
    let mut c = BlockLogConfig::new(
        "/data/blocks",
        Some(Rc::new(StoreKey::from_bytes(&[7; 32]))),
    );
    // Small segments and frequent hint checkpoints, so that rolls, sealed hints and the
    // active segment's checkpoint all happen many times in a short workload.
    c.segment_bytes_max = 96 << 10;
    c.hint_interval_bytes = 24 << 10;
    c.storage = Rc::new(m.clone());
    c
}

/// Block `i` of the workload: sizes from one byte to a few pages.
fn block(i: usize) -> Vec<u8> {
    let len = [1, 900, 4096, 5000, 13_000][i % 5] + i;
    (0..len).map(|k| (k * 31 + i * 7) as u8).collect()
}

/// Puts the workload's blocks, three at a time (so they share group commits), until all
/// are in or a put fails. The blocks acknowledged durable.
async fn put_blocks(log: &BlockLog, count: usize) -> BTreeMap<BlockHash, Vec<u8>> {
    let mut acked = BTreeMap::new();
    for first in (0..count).step_by(3) {
        let datas: Vec<Vec<u8>> = (first..(first + 3).min(count)).map(block).collect();
        let puts = datas.iter().map(|d| log.put(BlockHash::of(d), d, true));
        let results = futures::future::join_all(puts).await;
        let mut failed = false;
        for (d, r) in datas.iter().zip(results) {
            match r {
                Ok(_) => {
                    acked.insert(BlockHash::of(d), d.clone());
                }
                Err(_) => failed = true,
            }
        }
        if failed {
            break;
        }
    }
    acked
}

/// Opens what is on `m` and checks it holds every block of `acked` exactly, and that any
/// other workload block it has is whole; then that it takes and keeps a new block.
async fn check_blocks(m: MemStorage, acked: &BTreeMap<BlockHash, Vec<u8>>, count: usize) {
    let log = BlockLog::open(block_config(&m))
        .await
        .expect("a crashed block log opens");
    let mut out = Vec::new();
    for (hash, data) in acked {
        assert!(
            log.get(hash, &mut out).await.unwrap(),
            "acknowledged block {hash} lost"
        );
        assert_eq!(&out, data, "acknowledged block {hash} changed");
    }
    for i in 0..count {
        let data = block(i);
        let hash = BlockHash::of(&data);
        if log.get(&hash, &mut out).await.unwrap() {
            assert_eq!(out, data, "block {i} came back damaged");
        }
    }
    let fresh = b"written after recovery".to_vec();
    log.put(BlockHash::of(&fresh), &fresh, true).await.unwrap();
    log.close().await;
    let log = BlockLog::open(block_config(&m)).await.unwrap();
    assert!(log.get(&BlockHash::of(&fresh), &mut out).await.unwrap());
    assert_eq!(out, fresh);
    log.close().await;
}

fn journal_config(m: &MemStorage) -> JournalConfig {
    let mut c = JournalConfig::new("/data/journal");
    // A snapshot and a new journal file every few bursts.
    c.snapshot_after_bytes = 16 << 10;
    c.storage = Rc::new(m.clone());
    c
}

fn setup() -> Vec<JournalRecord> {
    vec![
        JournalRecord::Namespace {
            id: 1,
            owner: 1,
            kind: NamespaceKind::Root,
        },
        JournalRecord::User {
            id: 1,
            name: "ann".into(),
            root_ns: 1,
            admin: true,
        },
    ]
}

/// The commit of version `v` of path `p`, over `parent`.
fn version(p: usize, v: usize, parent: Option<u64>) -> Commit {
    Commit {
        ns: 1,
        path: format!("dir/file-{p}.txt"),
        version: FileVersion {
            kind: EntryKind::File,
            blocklist: vec![BlockHash::of(format!("{p}/{v}").as_bytes())],
            size: (p * 1000 + v + 1) as u64,
            mtime_ms: 1_700_000_000_000 + v as i64,
        },
        parent_jid: parent,
        author: Default::default(),
    }
}

/// What a workload left: each acknowledged path's latest (JID, size), and the commits of
/// the call that failed, which may or may not have landed.
#[derive(Default)]
struct Committed {
    acked: BTreeMap<String, (u64, u64)>,
    unknown: Vec<Commit>,
}

/// Commits versions of a few paths, two commits per call, until done or a call fails.
async fn commit_versions(j: &Journal, rounds: usize) -> Committed {
    let mut acked: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    if j.append(setup()).await.is_err() {
        return Committed::default();
    }
    for v in 0..rounds {
        let commits: Vec<Commit> = (0..2)
            .map(|k| {
                let p = (v * 2 + k) % PATHS;
                let parent = acked.get(&format!("dir/file-{p}.txt")).map(|(jid, _)| *jid);
                version(p, v, parent)
            })
            .collect();
        let Ok(outcomes) = j.commit(commits.clone()).await else {
            return Committed {
                acked,
                unknown: commits,
            };
        };
        for (c, o) in commits.iter().zip(outcomes) {
            let CommitOutcome::Ok { jid } = o else {
                panic!("commit {} refused: {o:?}", c.path)
            };
            acked.insert(c.path.clone(), (jid, c.version.size));
        }
    }
    Committed {
        acked,
        unknown: Vec::new(),
    }
}

/// Opens what is on `m`: each acknowledged path's latest row is the acknowledged version or
/// a later commit of the failed call; the journal takes a new commit.
async fn check_journal(m: MemStorage, committed: &Committed) {
    let j = Journal::open(journal_config(&m))
        .await
        .expect("a crashed journal opens");
    let acked = &committed.acked;
    for (path, (jid, size)) in acked {
        let state = j.state();
        let latest = state
            .latest(1, path)
            .unwrap_or_else(|| panic!("{path} lost"));
        let acknowledged = (latest.jid, latest.version.size) == (*jid, *size);
        let landed_unacknowledged = latest.jid > *jid
            && committed
                .unknown
                .iter()
                .any(|c| c.path == *path && c.version.size == latest.version.size);
        assert!(
            acknowledged || landed_unacknowledged,
            "{path}: latest row ({}, {}) is neither the acknowledged ({jid}, {size}) nor in flight",
            latest.jid,
            latest.version.size
        );
    }
    if let Some(path) = acked.keys().next() {
        let latest = j.state().latest(1, path).map(|r| r.jid);
        let mut c = version(0, 999, latest);
        c.path = path.clone();
        let out = j.commit(vec![c]).await.unwrap();
        assert!(matches!(out[0], CommitOutcome::Ok { .. }), "{out:?}");
    }
    j.close().await;
}
