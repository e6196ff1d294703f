//! The garbage-collection benchmark behind `holdall-bench gc`: a real holdalld filled with
//! files of 4 MiB blocks, half of them deleted, the retention let pass, then collected.
//! It measures what share of the dead bytes went back to the file system, how fast
//! compaction copies live records (against the disk's O_DIRECT write), and what a second
//! collection, at the default `--gc-rate`, costs a store_batch load running beside it.

use crate::http_client::Target;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use holdall_proto::api::{CommitRequest, CommitResult, EntryKind, GcResponse, Jid, NsId};
use holdall_proto::limits::BLOCK_BYTES_MAX;
use holdall_proto::FileVersion;

use crate::http_client::{host_port, Conn};
use crate::load::{self, Block};
use crate::sync_bench::{start_server_with, Daemon};

/// Blocks of 4 MiB per file: 64 MiB files.
const FILE_BLOCKS: usize = 16;
/// Store_batch requests in flight.
const CONCURRENCY: usize = 4;
/// The retention the server runs with: short, so the deleted files' blocks die at once.
const RETENTION: Duration = Duration::from_secs(2);
/// Flags of every start: the retention, proofs of upload that expire as fast, and no
/// background collection (the benchmark asks for each one).
const FLAGS: [&str; 6] = [
    "--history-retention",
    "2s",
    "--prefetch-ttl-s",
    "2",
    "--gc-interval",
    "0s",
];

/// What the benchmark measured.
#[derive(Debug, Clone, Copy)]
pub struct GcFigures {
    /// Block bytes stored by the fill.
    pub filled_bytes: u64,
    /// Segment bytes on disk before the first collection.
    pub segment_bytes_before: u64,
    /// Segment bytes the deleted files' blocks took (their share of the segments).
    pub dead_bytes: u64,
    /// Segment bytes the first collection gave back to the file system (measured on disk).
    pub reclaimed_bytes: u64,
    /// What the first collection said it reclaimed.
    pub reported_reclaimed_bytes: u64,
    /// Live bytes the first (unbounded) collection copied forward, and in how long.
    pub moved_bytes: u64,
    /// Seconds of the first collection.
    pub collect_s: f64,
    /// Seconds of its sweep and compaction on the slowest shard (the rest was the mark).
    pub sweep_s: f64,
    /// store_batch GB/s on an idle server.
    pub store_idle_gbps: f64,
    /// store_batch GB/s while the second collection (default `--gc-rate`) compacts.
    pub store_during_gbps: f64,
    /// Whether the second collection was still running when that load ended.
    pub overlapped: bool,
}

/// A running holdalld with its address and the admin's token and root namespace.
struct Server {
    _daemon: Daemon,
    addr: String,
    token: String,
    ns: NsId,
}

impl Server {
    fn start(data: &Path, more: &[&str]) -> Result<Server> {
        let flags: Vec<&str> = FLAGS.iter().chain(more).copied().collect();
        let (daemon, url) = start_server_with(data, &flags)?;
        let addr = host_port(&url)?;
        let token = std::fs::read_to_string(data.join("admin.token"))?
            .trim()
            .to_owned();
        let ns = load::root_ns(&Target::plain(&addr), &token)?;
        Ok(Server {
            _daemon: daemon,
            addr,
            token,
            ns,
        })
    }

    fn post(&self, path: &str, body: &[u8]) -> Result<Vec<u8>> {
        let (status, answer) =
            Conn::connect(&self.addr)?.request("POST", path, &self.token, &[body])?;
        ensure!(
            status == 200,
            "{path}: {status} {}",
            String::from_utf8_lossy(&answer)
        );
        Ok(answer)
    }

    fn commit(&self, path: &str, version: FileVersion, parent_jid: Option<Jid>) -> Result<Jid> {
        let commit = CommitRequest {
            ns: self.ns,
            path: path.into(),
            version,
            parent_jid,
        };
        let answer = self.post("/v1/commit", &serde_json::to_vec(&commit)?)?;
        match serde_json::from_slice::<CommitResult>(&answer)? {
            CommitResult::Ok { jid } => Ok(jid),
            other => bail!("commit of {path}: {other:?}"),
        }
    }

    fn collect(&self) -> Result<GcResponse> {
        Ok(serde_json::from_slice(&self.post("/v1/admin/gc", b"")?)?)
    }

    /// The sum over shards of a counter or gauge on `/metrics`.
    fn metric(&self, name: &str) -> Result<u64> {
        Ok(self.metric_per_shard(name)?.iter().sum::<f64>() as u64)
    }

    /// A counter or gauge on `/metrics`, one value per series (shard).
    fn metric_per_shard(&self, name: &str) -> Result<Vec<f64>> {
        crate::http_client::metric_series(&self.addr, name)
    }
}

/// A file the fill committed: its path and latest JID.
struct Stored {
    path: String,
    jid: Jid,
}

/// Runs the benchmark in a scratch folder under `dir`, filling `fill_gib` GiB.
pub fn run(dir: &Path, fill_gib: usize) -> Result<GcFigures> {
    let scratch = tempfile::tempdir_in(dir)?;
    let data = scratch.path().join("data");
    let server = Server::start(&data, &["--gc-rate", "0"])?;
    let files = (fill_gib << 30) / (FILE_BLOCKS * BLOCK_BYTES_MAX);
    ensure!(files >= 4, "fill at least 1 GiB");
    let mut stored = fill(&server, files)?;
    let filled_bytes = (files * FILE_BLOCKS * BLOCK_BYTES_MAX) as u64;
    // Every other file: the dead blocks lie all through the segments, as in a real store.
    let dead_files = delete_every_other(&server, &mut stored)?;
    std::thread::sleep(RETENTION + Duration::from_secs(1));
    let segment_bytes_before = segment_bytes(&data)?;
    let dead_bytes = segment_bytes_before * dead_files as u64 / files as u64;
    let moved_before = server.metric("holdall_gc_bytes_moved_total")?;
    let swept_before = server.metric_per_shard("holdall_gc_seconds_total")?;
    let started = Instant::now();
    let done = server.collect()?;
    let collect_s = started.elapsed().as_secs_f64();
    // Shards publish their figures every 500 ms.
    std::thread::sleep(Duration::from_millis(1200));
    let swept = server.metric_per_shard("holdall_gc_seconds_total")?;
    let sweep_s = swept
        .iter()
        .zip(&swept_before)
        .map(|(after, before)| after - before)
        .fold(0.0, f64::max);
    let moved_bytes = server.metric("holdall_gc_bytes_moved_total")? - moved_before;
    let reclaimed_bytes = segment_bytes_before.saturating_sub(segment_bytes(&data)?);
    drop(server);

    // The second collection runs at the default --gc-rate, beside a store_batch load.
    let server = Server::start(&data, &[])?;
    let idle = load::unique_blocks(256);
    let store_idle_gbps = load::ingest(
        &Target::plain(&server.addr),
        &server.token,
        &idle,
        CONCURRENCY,
    )?
    .gbps();
    drop(idle);
    delete_every_other(&server, &mut stored)?;
    std::thread::sleep(RETENTION + Duration::from_secs(1));
    let (store_during_gbps, overlapped) = store_while_collecting(&server)?;
    Ok(GcFigures {
        filled_bytes,
        segment_bytes_before,
        dead_bytes,
        reclaimed_bytes,
        reported_reclaimed_bytes: done.bytes_reclaimed,
        moved_bytes,
        collect_s,
        sweep_s,
        store_idle_gbps,
        store_during_gbps,
        overlapped,
    })
}

/// Stores and commits `files` files of fresh blocks.
fn fill(server: &Server, files: usize) -> Result<Vec<Stored>> {
    let mut stored = Vec::with_capacity(files);
    for i in 0..files {
        let blocks: Vec<Block> = load::unique_blocks(FILE_BLOCKS);
        load::ingest(
            &Target::plain(&server.addr),
            &server.token,
            &blocks,
            CONCURRENCY,
        )?;
        let path = format!("gc-bench/f{i:05}");
        let version = FileVersion {
            kind: EntryKind::File,
            blocklist: blocks.iter().map(|b| b.hash).collect(),
            size: blocks.iter().map(|b| b.data.len() as u64).sum(),
            mtime_ms: 0,
        };
        let jid = server.commit(&path, version, None)?;
        stored.push(Stored { path, jid });
    }
    Ok(stored)
}

/// Deletes every other file of `stored`, which keeps the rest; how many were deleted.
fn delete_every_other(server: &Server, stored: &mut Vec<Stored>) -> Result<usize> {
    let all = std::mem::take(stored);
    let mut deleted = 0;
    for (i, file) in all.into_iter().enumerate() {
        if i % 2 == 1 {
            stored.push(file);
            continue;
        }
        server.commit(&file.path, FileVersion::deleted(), Some(file.jid))?;
        deleted += 1;
    }
    Ok(deleted)
}

/// store_batch GB/s while a collection runs, and whether it still ran when the load ended.
fn store_while_collecting(server: &Server) -> Result<(f64, bool)> {
    let blocks = load::unique_blocks(256);
    let collecting = AtomicBool::new(true);
    std::thread::scope(|s| {
        let collector = s.spawn(|| {
            let done = server.collect();
            collecting.store(false, Ordering::Relaxed);
            done
        });
        // Let the mark finish and the copying start.
        std::thread::sleep(Duration::from_millis(300));
        let during = load::ingest(
            &Target::plain(&server.addr),
            &server.token,
            &blocks,
            CONCURRENCY,
        );
        let overlapped = collecting.load(Ordering::Relaxed);
        collector
            .join()
            .map_err(|_| anyhow::anyhow!("the collector panicked"))?
            .context("the collection during the load")?;
        Ok((during?.gbps(), overlapped))
    })
}

/// Bytes of every block-log segment file under `data`.
fn segment_bytes(data: &Path) -> Result<u64> {
    let mut total = 0;
    for shard in std::fs::read_dir(data)? {
        let Ok(entries) = std::fs::read_dir(shard?.path().join("blocks")) else {
            continue;
        };
        for e in entries {
            let e = e?;
            if e.file_name().to_string_lossy().ends_with(".hblk") {
                total += e.metadata()?.len();
            }
        }
    }
    Ok(total)
}
