//! Engine measurements: block put/get, index memory, store reopen, journal commit and reopen,
//! prefetch table operations. Async ones must run inside an executor.

use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use holdall_engine::block_log::index::{BlockIndex, Location};
use holdall_engine::block_log::{BlockLog, BlockLogConfig, BlockLogStats};
use holdall_engine::journal::record::{JournalRecord, NamespaceKind};
use holdall_engine::journal::state::{Commit, CommitOutcome};
use holdall_engine::journal::{Journal, JournalConfig};
use holdall_engine::prefetch::{PrefetchConfig, PrefetchTable, Uploader};
use holdall_engine::store_key::StoreKey;
use holdall_proto::api::EntryKind;
use holdall_proto::limits::BLOCK_BYTES_MAX;
use holdall_proto::BlockHash;
use holdall_proto::FileVersion;

/// Result of a put-then-get run.
#[derive(Debug, Clone, Copy)]
pub struct PutGet {
    /// Put throughput, GB/s of payload.
    pub put_gbps: f64,
    /// Get throughput (O_DIRECT, so cold), GB/s of payload.
    pub get_gbps: f64,
    /// Log counters after the puts.
    pub stats: BlockLogStats,
}

/// Puts `blocks` distinct 4 MiB blocks with `concurrency` puts in flight, then reads them
/// all back the same way. Payloads and their hashes are made before the clock starts; with
/// `verify` the log hashes each payload again, as the server does.
pub async fn block_put_get(
    dir: &Path,
    blocks: usize,
    concurrency: usize,
    encrypt: bool,
    verify: bool,
) -> Result<PutGet> {
    let key = encrypt.then(|| Rc::new(StoreKey::from_bytes(&[7; 32])));
    let log = Rc::new(BlockLog::open(BlockLogConfig::new(dir, key)).await?);
    let payloads: Rc<Vec<Vec<u8>>> = Rc::new(
        (0..blocks)
            .map(|i| crate::payload(i as u64, BLOCK_BYTES_MAX))
            .collect(),
    );
    let hashes: Rc<Vec<BlockHash>> = Rc::new(payloads.iter().map(|p| BlockHash::of(p)).collect());
    let t = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (log, payloads, hashes) = (log.clone(), payloads.clone(), hashes.clone());
        tasks.push(holdall_engine::runtime::spawn(async move {
            for i in (worker..blocks).step_by(concurrency) {
                log.put(hashes[i], &payloads[i], verify).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await?;
    }
    let put_s = t.elapsed().as_secs_f64();
    let stats = log.stats();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (log, hashes) = (log.clone(), hashes.clone());
        tasks.push(holdall_engine::runtime::spawn(async move {
            let mut out = Vec::with_capacity(BLOCK_BYTES_MAX);
            for i in (worker..blocks).step_by(concurrency) {
                ensure!(log.get(&hashes[i], &mut out).await?, "block missing");
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await?;
    }
    let get_s = t.elapsed().as_secs_f64();
    let bytes = (blocks * BLOCK_BYTES_MAX) as f64;
    Ok(PutGet {
        put_gbps: bytes / put_s / 1e9,
        get_gbps: bytes / get_s / 1e9,
        stats,
    })
}

/// Heap bytes per block of a [`BlockIndex`] holding `n` blocks.
pub fn index_bytes_per_block(n: usize) -> f64 {
    let mut idx = BlockIndex::new();
    for i in 0..n as u64 {
        idx.insert(
            BlockHash::of(&i.to_le_bytes()),
            Location {
                segment: 1,
                offset_pages: i as u32,
                len_pages: 1,
            },
        );
    }
    idx.allocated_bytes() as f64 / n as f64
}

/// Builds a store of `n` small blocks (one 4 KiB record each) and times its reopen.
/// Returns (build seconds, reopen seconds).
pub async fn store_reopen(dir: &Path, n: usize) -> Result<(f64, f64)> {
    let config = || {
        let mut c = BlockLogConfig::new(dir, Some(Rc::new(StoreKey::from_bytes(&[7; 32]))));
        c.segment_bytes_max = 256 << 20;
        c.queue_records_max = 4096;
        c
    };
    let t = Instant::now();
    let log = Rc::new(BlockLog::open(config()).await?);
    let concurrency = 512;
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let log = log.clone();
        tasks.push(holdall_engine::runtime::spawn(async move {
            for i in (worker..n).step_by(concurrency) {
                let data = (i as u64).to_le_bytes();
                log.put(BlockHash::of(&data), &data, false).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await?;
    }
    let build = t.elapsed().as_secs_f64();
    Rc::try_unwrap(log)
        .map_err(|_| anyhow::anyhow!("log still shared"))?
        .close()
        .await;
    let t = Instant::now();
    let log = BlockLog::open(config()).await?;
    let reopen = t.elapsed().as_secs_f64();
    ensure!(log.stats().blocks == n as u64, "blocks lost across reopen");
    log.close().await;
    Ok((build, reopen))
}

fn row_commit(i: usize) -> Commit {
    Commit {
        ns: 1,
        path: format!("folder{}/file{i}.txt", i % 100),
        version: FileVersion {
            kind: EntryKind::File,
            blocklist: vec![BlockHash::of(&(i as u64).to_le_bytes())],
            size: 4096,
            mtime_ms: 1_700_000_000_000,
        },
        parent_jid: None,
        author: Default::default(),
    }
}

async fn journal_with_ns(dir: &Path) -> Result<Journal> {
    let j = Journal::open(JournalConfig::new(dir)).await?;
    if j.state().namespace(1).is_none() {
        j.append(vec![JournalRecord::Namespace {
            id: 1,
            owner: 1,
            kind: NamespaceKind::Root,
        }])
        .await?;
    }
    Ok(j)
}

/// Commits `n` single-row commits from `concurrency` callers; returns (commits/s, flushes).
pub async fn journal_commits(dir: &Path, n: usize, concurrency: usize) -> Result<(f64, u64)> {
    let j = Rc::new(journal_with_ns(dir).await?);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let j = j.clone();
        tasks.push(holdall_engine::runtime::spawn(async move {
            for i in (worker..n).step_by(concurrency) {
                let out = j.commit(vec![row_commit(i)]).await?;
                ensure!(matches!(out[0], CommitOutcome::Ok { .. }), "{:?}", out[0]);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await?;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    Ok((rate, j.stats().flushes))
}

/// Commits `rows` rows in batches of 1000, `versions` times over (each pass supersedes
/// the one before, so `rows` stay live with `versions - 1` older versions each in the
/// history), then times a reopen. Returns (rows/s while writing, reopen seconds,
/// snapshots written).
pub async fn journal_reopen(dir: &Path, rows: usize, versions: usize) -> Result<(f64, f64, u64)> {
    let (rate, snapshots) = journal_write(dir, rows, versions).await?;
    let reopen = journal_open_timed(dir, rows, versions).await?;
    Ok((rate, reopen, snapshots))
}

/// The writing half of [`journal_reopen`]: (rows/s, snapshots written).
pub async fn journal_write(dir: &Path, rows: usize, versions: usize) -> Result<(f64, u64)> {
    let j = journal_with_ns(dir).await?;
    let t = Instant::now();
    for pass in 0..versions {
        for start in (0..rows).step_by(1000) {
            let batch = (start..(start + 1000).min(rows))
                .map(|i| Commit {
                    // Path i's row of the pass before has JID (pass - 1) * rows + i + 1.
                    parent_jid: (pass > 0).then(|| ((pass - 1) * rows + i + 1) as u64),
                    ..row_commit(i)
                })
                .collect();
            j.commit(batch).await?;
        }
    }
    let rate = (rows * versions) as f64 / t.elapsed().as_secs_f64();
    let snapshots = j.stats().snapshots;
    j.close().await;
    Ok((rate, snapshots))
}

/// Seconds to open the journal [`journal_write`] left in `dir`, checked whole.
pub async fn journal_open_timed(dir: &Path, rows: usize, versions: usize) -> Result<f64> {
    let t = Instant::now();
    let j = Journal::open(JournalConfig::new(dir)).await?;
    let reopen = t.elapsed().as_secs_f64();
    let want = (rows, (rows * versions) as u64);
    ensure!(
        j.state().namespace(1).map(|n| (n.len(), n.last_jid())) == Some(want),
        "rows lost across reopen"
    );
    j.close().await;
    Ok(reopen)
}

/// Nanoseconds per prefetch upsert and per lookup, over `n` entries of 16 blocks.
pub fn prefetch_ns(n: usize) -> (f64, f64) {
    let mut t = PrefetchTable::new(PrefetchConfig {
        ttl: Duration::from_secs(600),
        entries_max: n,
        bytes_max: usize::MAX,
    });
    let now = Instant::now();
    let paths: Vec<String> = (0..n).map(|i| format!("big/file{i}.bin")).collect();
    let lists: Vec<Vec<BlockHash>> = (0..n)
        .map(|i| {
            (0..16u64)
                .map(|b| BlockHash::of(&(i as u64 * 16 + b).to_le_bytes()))
                .collect()
        })
        .collect();
    let start = Instant::now();
    for (i, (p, l)) in paths.iter().zip(lists).enumerate() {
        t.upsert(
            i as u64 % 64,
            p,
            l,
            64 << 20,
            Uploader { user: 1, device: 0 },
            now,
        );
    }
    let insert = start.elapsed().as_nanos() as f64 / n as f64;
    let start = Instant::now();
    let mut found = 0;
    for (i, p) in paths.iter().enumerate() {
        found += usize::from(t.get(i as u64 % 64, p, now).is_some());
    }
    let lookup = start.elapsed().as_nanos() as f64 / n as f64;
    assert_eq!(found, n);
    (insert, lookup)
}
