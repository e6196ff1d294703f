//! Crash consistency at every sync point, in process: the real block log and journal run
//! over the in-memory medium, which crashes at the N-th sync (N = 1, 2, … until a run
//! finishes without reaching it). What the crash left, with unsynced pages kept or lost at
//! random, is opened again and must hold every acknowledged write, byte for byte, and
//! nothing damaged; the reopened store must take new writes. A second pass fails I/O on a
//! countdown instead: every failure is a clear error, and what was acknowledged stays.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::rc::Rc;

use holdall_engine::block_log::{BlockLog, BlockLogConfig};
use holdall_engine::journal::record::{JournalRecord, NamespaceKind};
use holdall_engine::journal::state::{Commit, CommitOutcome};
use holdall_engine::journal::{Journal, JournalConfig};
use holdall_engine::runtime;
use holdall_engine::storage::memory::MemStorage;
use holdall_engine::store_key::StoreKey;
use holdall_proto::api::EntryKind;
use holdall_proto::BlockHash;

/// Sync points tried at most, per store; each run of the workloads below has fewer.
const SYNC_POINTS_MAX: u64 = 600;
/// Crash images opened per sync point, each with other unsynced pages kept.
const SEEDS_PER_POINT: u64 = 3;

fn block_config(m: &MemStorage) -> BlockLogConfig {
    let mut c = BlockLogConfig::new("/data/blocks", Some(Rc::new(StoreKey::from_bytes(&[7; 32]))));
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
        assert!(log.get(hash, &mut out).await.unwrap(), "acknowledged block {hash} lost");
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

#[test]
fn the_block_log_keeps_every_acknowledged_block_across_a_crash_at_any_sync() {
    const BLOCKS: usize = 40;
    runtime::run(async {
        for point in 1..=SYNC_POINTS_MAX {
            let m = MemStorage::new();
            m.crash_at_sync(point);
            let acked = match BlockLog::open(block_config(&m)).await {
                Ok(log) => {
                    let acked = put_blocks(&log, BLOCKS).await;
                    log.close().await;
                    acked
                }
                Err(_) => BTreeMap::new(),
            };
            if !m.crashed() {
                assert_eq!(acked.len(), BLOCKS, "no crash, every block acknowledged");
                assert!(point > 20, "the workload reached only {point} sync points");
                return;
            }
            for seed in 0..SEEDS_PER_POINT {
                check_blocks(m.after_crash(point * 100 + seed), &acked, BLOCKS).await;
            }
        }
        panic!("the workload still crashed after {SYNC_POINTS_MAX} sync points");
    });
}

#[test]
fn failing_block_io_is_an_error_and_loses_nothing_acknowledged() {
    const BLOCKS: usize = 24;
    runtime::run(async {
        for ops in (0..400).step_by(7) {
            let m = MemStorage::new();
            m.fail_after(ops, ErrorKind::StorageFull);
            let acked = match BlockLog::open(block_config(&m)).await {
                Ok(log) => {
                    let acked = put_blocks(&log, BLOCKS).await;
                    log.close().await;
                    acked
                }
                Err(_) => BTreeMap::new(),
            };
            // What was acknowledged is on the medium as the engine sees it; a restart (no
            // more faults) reads it back.
            check_blocks(m.after_crash(ops), &acked, BLOCKS).await;
        }
    });
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
        kind: EntryKind::File,
        blocklist: vec![BlockHash::of(format!("{p}/{v}").as_bytes())],
        size: (p * 1000 + v + 1) as u64,
        mtime_ms: 1_700_000_000_000 + v as i64,
        parent_jid: parent,
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
                let p = (v * 2 + k) % 5;
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
            acked.insert(c.path.clone(), (jid, c.size));
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
        let latest = state.latest(1, path).unwrap_or_else(|| panic!("{path} lost"));
        let acknowledged = (latest.jid, latest.size) == (*jid, *size);
        let landed_unacknowledged = latest.jid > *jid
            && committed
                .unknown
                .iter()
                .any(|c| c.path == *path && c.size == latest.size);
        assert!(
            acknowledged || landed_unacknowledged,
            "{path}: latest row ({}, {}) is neither the acknowledged ({jid}, {size}) nor in flight",
            latest.jid,
            latest.size
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

#[test]
fn the_journal_keeps_every_acknowledged_commit_across_a_crash_at_any_sync() {
    const ROUNDS: usize = 60;
    runtime::run(async {
        for point in 1..=SYNC_POINTS_MAX {
            let m = MemStorage::new();
            m.crash_at_sync(point);
            let acked = match Journal::open(journal_config(&m)).await {
                Ok(j) => {
                    let committed = commit_versions(&j, ROUNDS).await;
                    j.close().await;
                    committed
                }
                Err(_) => Committed::default(),
            };
            if !m.crashed() {
                assert_eq!(acked.acked.len(), 5, "no crash, every path acknowledged");
                assert!(point > 20, "the workload reached only {point} sync points");
                return;
            }
            for seed in 0..SEEDS_PER_POINT {
                check_journal(m.after_crash(point * 100 + seed), &acked).await;
            }
        }
        panic!("the workload still crashed after {SYNC_POINTS_MAX} sync points");
    });
}

#[test]
fn failing_journal_io_is_an_error_and_loses_nothing_acknowledged() {
    runtime::run(async {
        for ops in (0..300).step_by(5) {
            let m = MemStorage::new();
            m.fail_after(ops, ErrorKind::Other);
            let acked = match Journal::open(journal_config(&m)).await {
                Ok(j) => {
                    let committed = commit_versions(&j, 30).await;
                    j.close().await;
                    committed
                }
                Err(_) => Committed::default(),
            };
            check_journal(m.after_crash(ops), &acked).await;
        }
    });
}
