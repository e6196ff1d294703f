//! holdall-bench: measures this machine's limits and the engine's and server's figures in one
//! run, and prints them side by side (docs/BENCHMARKS.md keeps the results).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use holdall_benches::server_cpu::{measured, ServerCpu};
use holdall_benches::streaming_bench::{self, Link, ASYMMETRIC, EQUAL, SEED_TABLE};
use holdall_benches::{
    delta_bench, dropbox_bench, engine_runs, gc_bench, http_client, limits, load, median,
    restart_bench, sync_bench, tls_bench, versus_nginx, wire_bench,
};
use holdall_engine::runtime;
use holdall_proto::frame::FrameFormat;

#[derive(Parser)]
#[command(name = "holdall-bench", about = "Holdall benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Flags of the load generator.
#[derive(clap::Args)]
struct LoadArgs {
    /// The running holdalld, e.g. http://127.0.0.1:8340.
    #[arg(long, env = "HOLDALL_SERVER")]
    server: String,
    /// A user's bearer token (the admin's is in DATA/admin.token).
    #[arg(long, env = "HOLDALL_TOKEN")]
    token: String,
    /// Unique 4 MiB blocks per run.
    #[arg(long, default_value_t = 256)]
    blocks: usize,
    /// Requests in flight (one connection and thread each).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Repetitions (the median is printed).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// A folder on the server's disk, for the O_DIRECT limits.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// For an https:// server: the PEM CA that signed its certificate.
    #[arg(long, env = "HOLDALL_CA")]
    ca: Option<PathBuf>,
    /// store_batch frames: `1`, `2` (raw frames in format 2), or `both`, alternated in
    /// each run with their ratio printed.
    #[arg(long, default_value = "1")]
    frame_format: String,
}

#[derive(Subcommand)]
enum Command {
    /// store_batch GB/s into a running holdalld, beside this machine's limits.
    Ingest(LoadArgs),
    /// retrieve_batch GB/s from a running holdalld, beside this machine's limits.
    Fetch(LoadArgs),
    /// Sync end to end: holdalld and two holdall clients; time until B holds what A wrote,
    /// for one large file and for many small files, beside the limits of the same run.
    Sync {
        /// Scratch folder on the disk to measure.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Size of the large file in MiB.
        #[arg(long, default_value_t = 1024)]
        large_mib: usize,
        /// Folders of small files.
        #[arg(long, default_value_t = 100)]
        folders: usize,
        /// Small files per folder.
        #[arg(long, default_value_t = 100)]
        per_folder: usize,
        /// Bytes per small file.
        #[arg(long, default_value_t = 4096)]
        small_bytes: usize,
        /// Repetitions (the median is printed).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// What TLS costs: store_batch, retrieve_batch and a one-file sync against a plain and
    /// an HTTPS holdalld (a private CA made for the run), alternated, in one invocation.
    Tls {
        /// Scratch folder on the disk to measure.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Unique 4 MiB blocks per run.
        #[arg(long, default_value_t = 256)]
        blocks: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Repetitions (medians are printed).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Size of the synced file in MiB.
        #[arg(long, default_value_t = 1024)]
        file_mib: usize,
    },
    /// One file through the official Dropbox Python SDK (upload session, download)
    /// against the same through `holdall sync`, on one HTTPS holdalld, in one invocation.
    Dropbox {
        /// Scratch folder on the disk to measure.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Size of the file in MiB.
        #[arg(long, default_value_t = 1024)]
        file_mib: usize,
        /// Repetitions (medians are printed).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// A Python with the `dropbox` SDK (the venv `cargo test` makes from
        /// client/tests/dropbox/requirements.txt).
        #[arg(long, default_value = "target/dropbox-sdk-venv/bin/python")]
        python: PathBuf,
    },
    /// SHA-256 per core and the disk's O_DIRECT sequential write/read.
    Limits {
        /// Scratch folder on the disk to measure.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Journal only: commit `rows` rows in batches of 1000, then time a reopen.
    JournalReopen {
        /// Scratch folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Rows to write.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// Versions of each row: passes that each supersede the one before (history).
        #[arg(long, default_value_t = 1)]
        versions: usize,
        /// Only time the opening of the journal written in this folder (the benchmark runs
        /// itself so, so that the reopen is a fresh process's, as after a restart).
        #[arg(long, hide = true)]
        open_only: Option<PathBuf>,
    },
    /// Block log puts and gets only.
    Blocks {
        /// Scratch folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// 4 MiB blocks per run.
        #[arg(long, default_value_t = 256)]
        blocks: usize,
        /// Puts in flight.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Store in the clear.
        #[arg(long)]
        plain: bool,
        /// Let the log hash every payload.
        #[arg(long)]
        verify: bool,
    },
    /// The streaming-sync experiment: the seed's table (20, 40, 100, 500 MB; with and without
    /// streaming) on an asymmetric and an equal link emulated with the clients' caps.
    Streaming {
        /// Scratch folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// One size (100 MB) on the equal link; exits non-zero unless streaming is at least
        /// 1.5 × faster (for CI).
        #[arg(long)]
        quick: bool,
    },
    /// Garbage collection on a real holdalld: fill, delete half, let the retention pass,
    /// collect; space given back, compaction rate and store_batch beside a collection,
    /// against the disk's O_DIRECT write measured in the same run.
    Gc {
        /// Scratch folder on the disk to measure.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// GiB to fill before deleting half.
        #[arg(long, default_value_t = 4)]
        fill_gib: usize,
    },
    /// holdalld's restart: shards' namespaces filled with rows, then the time from start to
    /// listening (the medians of `runs` restarts).
    Restart {
        /// Scratch folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Shards.
        #[arg(long, default_value_t = 2)]
        shards: usize,
        /// Rows in each shard's namespace.
        #[arg(long, default_value_t = 500_000)]
        rows_per_shard: usize,
        /// Restarts timed.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// holdalld against nginx (WebDAV PUT, GET) in one invocation: the same new blocks and
    /// client threads for both, each run alternating; GB/s and server core-s/GB per path.
    /// benches/versus-nginx.sh installs nginx and runs this.
    VersusNginx {
        /// Scratch folder on the disk to measure (both servers keep their data there).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Unique 4 MiB blocks per run.
        #[arg(long, default_value_t = 512)]
        blocks: usize,
        /// Requests in flight against either server.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Runs (medians are printed).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// The engine's figures beside the limits measured in the same run.
    /// Wire compression: zstd's levels against SHA-256, then text and random trees synced
    /// A → B with and without compression, on loopback and on a capped link.
    Wire {
        /// Scratch folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// MB in each tree.
        #[arg(long, default_value_t = 512)]
        mb: u64,
        /// The capped link's rate each way, MB/s.
        #[arg(long, default_value_t = 25)]
        link_mb_s: u64,
        /// Runs per cell (the median is printed).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Deltas: the delta code's rates against SHA-256, then a large file edited in place
    /// and synced A → B on a capped link with deltas and with whole blocks.
    Delta {
        /// Scratch folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// MiB in the file.
        #[arg(long, default_value_t = 1024)]
        mb: u64,
        /// 1 KiB edits per round.
        #[arg(long, default_value_t = 100)]
        edits: u64,
        /// The capped link's rate each way, MB/s.
        #[arg(long, default_value_t = 25)]
        link_mb_s: u64,
        /// Runs (the median is printed).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    Engine {
        /// Scratch folder on the disk to measure.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Repetitions of each measurement (the median is printed).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// 4 MiB blocks per put/get run.
        #[arg(long, default_value_t = 256)]
        blocks: usize,
        /// Blocks in the reopen run.
        #[arg(long, default_value_t = 1_000_000)]
        reopen_blocks: usize,
        /// Rows in the journal reopen run.
        #[arg(long, default_value_t = 1_000_000)]
        journal_rows: usize,
    },
}

fn limits_row(dir: &std::path::Path, runs: usize) -> Result<(f64, f64, f64, f64)> {
    let mut sha = Vec::new();
    let mut aes = Vec::new();
    let mut w = Vec::new();
    let mut r = Vec::new();
    for _ in 0..runs {
        sha.push(limits::sha256_gbps(512 << 20));
        aes.push(limits::aes_gcm_gbps(1 << 30));
        let d = tempfile::tempdir_in(dir)?;
        let p = d.path().to_path_buf();
        let (wr, rd) = runtime::run(async move { limits::odirect_gbps(&p, 1 << 30).await })?;
        w.push(wr);
        r.push(rd);
    }
    Ok((
        median(&mut sha),
        median(&mut aes),
        median(&mut w),
        median(&mut r),
    ))
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Limits { dir } => {
            let (sha, aes, w, r) = limits_row(&dir, 3)?;
            println!("SHA-256, one core, 4 MiB blocks: {sha:.2} GB/s");
            println!("AES-256-GCM seal, one core, 4 MiB blocks: {aes:.2} GB/s");
            println!("O_DIRECT sequential write, 4 MiB, QD2: {w:.2} GB/s");
            println!("O_DIRECT sequential read, 4 MiB, QD2: {r:.2} GB/s");
        }
        Command::Blocks {
            dir,
            blocks,
            concurrency,
            plain,
            verify,
        } => {
            let d = tempfile::tempdir_in(&dir)?;
            let p = d.path().to_path_buf();
            let r = runtime::run(async move {
                engine_runs::block_put_get(&p, blocks, concurrency, !plain, verify).await
            })?;
            println!(
                "put {:.2} GB/s, get {:.2} GB/s, {:.1} records per flush",
                r.put_gbps,
                r.get_gbps,
                r.stats.flushed_records as f64 / r.stats.flushes.max(1) as f64
            );
        }
        Command::JournalReopen {
            dir: _,
            rows,
            versions,
            open_only: Some(p),
        } => {
            let reopen =
                runtime::run(
                    async move { engine_runs::journal_open_timed(&p, rows, versions).await },
                )?;
            println!("{reopen:.3}");
        }
        Command::JournalReopen {
            dir,
            rows,
            versions,
            open_only: None,
        } => journal_reopen(&dir, rows, versions)?,
        Command::Engine {
            dir,
            runs,
            blocks,
            reopen_blocks,
            journal_rows,
        } => engine(&dir, runs, blocks, reopen_blocks, journal_rows)?,
        Command::Ingest(args) => load(&args, false)?,
        Command::Fetch(args) => load(&args, true)?,
        Command::Sync {
            dir,
            large_mib,
            folders,
            per_folder,
            small_bytes,
            runs,
        } => sync(&dir, large_mib, folders, per_folder, small_bytes, runs)?,
        Command::Streaming { dir, quick } => streaming(&dir, quick)?,
        Command::Wire {
            dir,
            mb,
            link_mb_s,
            runs,
        } => print!("{}", wire_bench::report(&dir, mb, link_mb_s, runs)?),
        Command::Delta {
            dir,
            mb,
            edits,
            link_mb_s,
            runs,
        } => print!("{}", delta_bench::report(&dir, mb, edits, link_mb_s, runs)?),
        Command::Gc { dir, fill_gib } => gc(&dir, fill_gib)?,
        Command::VersusNginx {
            dir,
            blocks,
            concurrency,
            runs,
        } => versus_nginx(&dir, blocks, concurrency, runs)?,
        Command::Tls {
            dir,
            blocks,
            concurrency,
            runs,
            file_mib,
        } => {
            let (sha, aes, _, _) = limits_row(&dir, 1)?;
            let tcp = limits::loopback_gbps(2 << 30)?;
            println!("limits: SHA-256 one core {sha:.2} GB/s, AES-256-GCM seal one core {aes:.2} GB/s, loopback TCP {tcp:.2} GB/s");
            let report = tls_bench::run(&dir, blocks, concurrency, runs, file_mib)?;
            print!("{}", report.table(file_mib));
        }
        Command::Dropbox {
            dir,
            file_mib,
            runs,
            python,
        } => {
            let (sha, _, _, _) = limits_row(&dir, 1)?;
            let tcp = limits::loopback_gbps(2 << 30)?;
            println!("limits: SHA-256 one core {sha:.2} GB/s, loopback TCP {tcp:.2} GB/s");
            let report = dropbox_bench::run(&dir, file_mib, runs, &python)?;
            print!("{}", report.table());
        }
        Command::Restart {
            dir,
            shards,
            rows_per_shard,
            runs,
        } => {
            let mut times = restart_bench::run(&dir, shards, rows_per_shard, runs)?;
            let spread = format!("{:.3}–{:.3}", min(&times), max(&times));
            println!(
                "restart of {shards} shards × {rows_per_shard} rows: median {:.3} s ({spread} s over {runs})",
                median(&mut times)
            );
        }
    }
    Ok(())
}

/// Writes the journal here, then times its opening in a fresh process (a restart's: this
/// one's allocator holds the freed state of the writing).
fn journal_reopen(dir: &std::path::Path, rows: usize, versions: usize) -> Result<()> {
    let d = tempfile::tempdir_in(dir)?;
    let p = d.path().to_path_buf();
    let (rate, snaps) =
        runtime::run(async move { engine_runs::journal_write(&p, rows, versions).await })?;
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["journal-reopen", "--rows", &rows.to_string()])
        .args(["--versions", &versions.to_string(), "--open-only"])
        .arg(d.path())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "the reopen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reopen = String::from_utf8(out.stdout)?.trim().to_owned();
    println!(
        "{rows} rows × {versions} versions at {rate:.0} rows/s ({snaps} snapshots); reopened by a fresh process in {reopen} s"
    );
    Ok(())
}

/// Reads ahead and writes in flight in the disk's copy: as many as a compaction keeps.
const COPY_DEPTH: usize = 16;

/// The GC benchmark's figures beside the disk's limits of the same run, with the goals.
fn gc(dir: &std::path::Path, fill_gib: usize) -> Result<()> {
    let (_, _, w, r) = limits_row(dir, 3)?;
    let mut copies = Vec::new();
    for _ in 0..3 {
        let d = tempfile::tempdir_in(dir)?;
        let p = d.path().to_path_buf();
        copies.push(runtime::run(async move {
            limits::odirect_copy_gbps(&p, 1 << 30, COPY_DEPTH).await
        })?);
    }
    let copy = median(&mut copies);
    println!(
        "limits: O_DIRECT write {w:.2} GB/s, read {r:.2} GB/s, file-to-file copy ({COPY_DEPTH} in flight) {copy:.2} GB/s (medians of 3)"
    );
    let g = gc_bench::run(dir, fill_gib)?;
    let gb = |b: u64| b as f64 / 1e9;
    let reclaimed = g.reclaimed_bytes as f64 / g.dead_bytes as f64;
    let rate = g.moved_bytes as f64 / g.collect_s / 1e9;
    let during = g.store_during_gbps / g.store_idle_gbps;
    println!(
        "filled {:.2} GB; segments {:.2} GB, of them dead {:.2} GB (half the files deleted)",
        gb(g.filled_bytes),
        gb(g.segment_bytes_before),
        gb(g.dead_bytes)
    );
    println!(
        "| figure | value | against | goal |\n|---|---:|---:|---|\n\
         | space given back (on disk) | {:.2} GB ({:.2} GB reported) | {:.1} % of the dead bytes | ≥ 95 %: {} |\n\
         | compaction, unbounded --gc-rate | {:.2} GB copied in {:.2} s (sweeps {:.2} s) = {rate:.2} GB/s | {:.2} × O_DIRECT write, {:.2} × the disk's copy | ≥ 0.5 × write: {} |\n\
         | store_batch beside a collection at the default --gc-rate | {:.2} GB/s (idle {:.2}) | {during:.2} × idle{} | ≥ 0.7 ×: {} |",
        gb(g.reclaimed_bytes),
        gb(g.reported_reclaimed_bytes),
        reclaimed * 100.0,
        met(reclaimed >= 0.95),
        gb(g.moved_bytes),
        g.collect_s,
        g.sweep_s,
        rate / w,
        rate / copy,
        met(rate / w >= 0.5),
        g.store_during_gbps,
        g.store_idle_gbps,
        if g.overlapped { "" } else { " (the collection ended before the load)" },
        met(during >= 0.7),
    );
    Ok(())
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

fn met(yes: bool) -> &'static str {
    if yes {
        "met"
    } else {
        "missed"
    }
}

/// The size `--quick` syncs, in MB.
const QUICK_MB: u64 = 100;

/// Smallest speedup `--quick` accepts at 100 MB on the equal link (the model says about 1.9
/// there; 1.84× measured), with room for a loaded CI machine.
const QUICK_SPEEDUP_MIN: f64 = 1.5;

/// The streaming experiment: the seed's table beside ours, per link.
fn streaming(dir: &std::path::Path, quick: bool) -> Result<()> {
    if quick {
        let without = streaming_bench::run(dir, EQUAL, &[QUICK_MB], false)?[0];
        let with = streaming_bench::run(dir, EQUAL, &[QUICK_MB], true)?[0];
        let speedup = without / with;
        println!(
            "{QUICK_MB} MB over the {}: {without:.2} s without streaming, {with:.2} s with: {speedup:.2}× (at least {QUICK_SPEEDUP_MIN}× wanted)",
            EQUAL.name
        );
        anyhow::ensure!(
            speedup >= QUICK_SPEEDUP_MIN,
            "streaming sync is only {speedup:.2}× faster"
        );
        return Ok(());
    }
    let sizes: Vec<u64> = SEED_TABLE.iter().map(|r| r.0).collect();
    for (link, goal) in [(ASYMMETRIC, None), (EQUAL, Some(1.8))] {
        let without = streaming_bench::run(dir, link, &sizes, false)?;
        let with = streaming_bench::run(dir, link, &sizes, true)?;
        print_table(link, goal, &without, &with);
    }
    Ok(())
}

fn print_table(link: Link, goal: Option<f64>, without: &[f64], with: &[f64]) {
    let model = streaming_bench::model_speedup(link);
    println!("\n{} (the model's speedup: {model:.2}×)", link.name);
    println!("| size | seed without | seed with | seed speedup | ours without | ours with | our speedup | goal |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---|");
    for (i, &(mb, seed_without, seed_with)) in SEED_TABLE.iter().enumerate() {
        let speedup = without[i] / with[i];
        let verdict = match (mb >= 100, goal) {
            (false, _) => "-".to_string(),
            (true, Some(min)) => {
                format!(
                    "≥ {min}×: {}",
                    if speedup >= min { "met" } else { "missed" }
                )
            }
            (true, None) => {
                let met = (speedup / model - 1.0).abs() <= 0.10;
                format!("{model:.2}× ± 10 %: {}", if met { "met" } else { "missed" })
            }
        };
        println!(
            "| {mb} MB | {seed_without:.0} s | {seed_with:.0} s | {:.2}× | {:.2} s | {:.2} s | {speedup:.2}× | {verdict} |",
            seed_without / seed_with,
            without[i],
            with[i],
        );
    }
}

/// The sync benchmark's medians beside the limits of the same run.
fn sync(
    dir: &std::path::Path,
    large_mib: usize,
    folders: usize,
    per_folder: usize,
    small_bytes: usize,
    runs: usize,
) -> Result<()> {
    let (sha, _, w, r) = limits_row(dir, 1)?;
    let large = large_mib << 20;
    let goal_s = 2.0 * (large as f64 / 1e9 / sha + large as f64 / 1e9 / w);
    println!(
        "limits: SHA-256 {sha:.2} GB/s one core; O_DIRECT write {w:.2} GB/s, read {r:.2} GB/s"
    );
    let files = folders * per_folder;
    // The small-file runs' folders are deleted at the end (see `Kept`); the large file's
    // right away (a few files, and 3 GiB each).
    let mut kept = sync_bench::Kept::default();
    for mode in [sync_bench::Mode::AfterA, sync_bench::Mode::Running] {
        let label = match mode {
            sync_bench::Mode::AfterA => "B's --once after A's",
            sync_bench::Mode::Running => "B already running",
        };
        let times = (0..runs)
            .map(|_| {
                let mut k = sync_bench::Kept::default();
                sync_bench::run(dir, &[], &|a| sync_bench::one_file(a, large), mode, &mut k)
            })
            .collect::<Result<Vec<_>>>()?;
        let (up, down, total) = medians(&times);
        println!(
            "one {large_mib} MiB file, {label}: A up {up:.2} s, then B {down:.2} s; B holds it \
             after {total:.2} s (goal {goal_s:.2} s = 2 × (SHA-256 once + O_DIRECT write once); \
             {:.2} × the goal)",
            total / goal_s
        );
        let times = (0..runs)
            .map(|_| {
                sync_bench::run(
                    dir,
                    &[],
                    &|a| sync_bench::small_files(a, folders, per_folder, small_bytes),
                    mode,
                    &mut kept,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let (up, down, total) = medians(&times);
        println!(
            "{files} files of {small_bytes} B in {folders} folders, {label}: A up {up:.2} s, \
             then B {down:.2} s; B holds them after {total:.2} s = {:.0} files/s (goal 5000)",
            files as f64 / total
        );
    }
    Ok(())
}

/// Medians of A's time, B's time after it, and their sum.
fn medians(times: &[sync_bench::SyncTimes]) -> (f64, f64, f64) {
    let mut up: Vec<f64> = times.iter().map(|t| t.up_s).collect();
    let mut down: Vec<f64> = times.iter().map(|t| t.down_s).collect();
    let mut total: Vec<f64> = times.iter().map(|t| t.total_s()).collect();
    (median(&mut up), median(&mut down), median(&mut total))
}

/// holdalld and nginx side by side, beside the disk's O_DIRECT read of the same run.
fn versus_nginx(
    dir: &std::path::Path,
    blocks: usize,
    concurrency: usize,
    runs: usize,
) -> Result<()> {
    let (_, _, w, r) = limits_row(dir, 3)?;
    let tcp = limits::loopback_gbps(2 << 30)?;
    println!(
        "limits: O_DIRECT write {w:.2} / read {r:.2} GB/s, loopback TCP {tcp:.2} GB/s (medians)"
    );
    let rep = versus_nginx::run(dir, blocks, concurrency, runs)?;
    let rows = [
        (
            "store",
            &rep.holdall_store,
            &rep.nginx_put,
            "PUT to the page cache",
            "≥ 1 ×, ≤ 1.0 core-s/GB",
        ),
        (
            "store",
            &rep.holdall_store,
            &rep.nginx_put_synced,
            "PUT, then syncfs",
            "—",
        ),
        (
            "retrieve, cold",
            &rep.holdall_cold,
            &rep.nginx_cold,
            "GET, evicted",
            "≥ 0.9 × O_DIRECT read, ≤ 0.5 core-s/GB",
        ),
        (
            "retrieve, again",
            &rep.holdall_warm,
            &rep.nginx_warm,
            "GET, page cache",
            "≥ 1 ×",
        ),
    ];
    println!("{blocks} blocks of 4 MiB, {concurrency} in flight, medians of {runs}\n");
    println!(
        "| path | holdalld GB/s | core-s/GB | nginx | GB/s | core-s/GB | holdalld ÷ nginx | goal |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|---|");
    for (path, h, n, how, goal) in rows {
        let ((hg, hc), (ng, nc)) = (versus_nginx::medians(h), versus_nginx::medians(n));
        println!(
            "| {path} | {hg:.2} | {hc:.2} | {how} | {ng:.2} | {nc:.2} | {:.2} × | {goal} |",
            hg / ng
        );
    }
    let (cold, _) = versus_nginx::medians(&rep.holdall_cold);
    let mut workers: Vec<f64> = rep
        .holdall_store
        .iter()
        .map(|m| m.io_workers_core_s_per_gb)
        .collect();
    println!(
        "\nholdalld cold retrieve = {:.2} × O_DIRECT read; its store's io_uring workers: {:.2} core-s/GB",
        cold / r,
        median(&mut workers)
    );
    Ok(())
}

/// Runs the load generator and prints its median beside the limits of the same run.
fn load(args: &LoadArgs, fetch: bool) -> Result<()> {
    let target = http_client::Target::parse(&args.server, args.ca.as_deref())?;
    let (sha, _, w, r) = limits_row(&args.dir, 1)?;
    let tcp = limits::loopback_gbps(2 << 30)?;
    println!("limits: SHA-256 one core {sha:.2} GB/s, O_DIRECT write {w:.2} / read {r:.2} GB/s, loopback TCP {tcp:.2} GB/s");
    let cpu = ServerCpu::listening_on(target.port()?)?;
    let ns = load::root_ns(&target, &args.token)?;
    let (mut rates, mut costs) = (Vec::new(), Vec::new());
    // One run: its GB/s, and the server's core-seconds per GB over it.
    let mut measure = |what: &str, run: &dyn Fn() -> Result<load::Run>| -> Result<f64> {
        let m = measured(&cpu, run)?;
        println!(
            "  {what} run: {:.2} GB/s, server {:.2} core-s/GB (io_uring workers {:.2})",
            m.gbps, m.core_s_per_gb, m.io_workers_core_s_per_gb
        );
        rates.push(m.gbps);
        costs.push(m.core_s_per_gb);
        Ok(m.gbps)
    };
    if fetch {
        let blocks = load::unique_blocks(args.blocks);
        load::ingest(&target, &args.token, &blocks, args.concurrency)?;
        let path = format!("holdall-bench/{}", blocks[0].hash);
        load::commit_file(&target, &args.token, ns, &path, &blocks)?;
        let hashes: Vec<_> = blocks.iter().map(|b| b.hash).collect();
        drop(blocks);
        for _ in 0..args.runs {
            measure("retrieve_batch", &|| {
                load::fetch(&target, &args.token, ns, &path, &hashes, args.concurrency)
            })?;
        }
        let (m, c) = (median(&mut rates), median(&mut costs));
        println!(
            "retrieve_batch, {} blocks of 4 MiB, {} in flight: {m:.2} GB/s = {:.2} × O_DIRECT read, {:.2} × loopback TCP; server {c:.2} core-s/GB",
            args.blocks,
            args.concurrency,
            m / r,
            m / tcp
        );
    } else {
        let formats = match args.frame_format.as_str() {
            "1" => vec![FrameFormat::V1],
            "2" => vec![FrameFormat::V2],
            "both" => vec![FrameFormat::V1, FrameFormat::V2],
            other => anyhow::bail!("--frame-format takes 1, 2 or both, not {other:?}"),
        };
        let mut by_format: Vec<Vec<f64>> = vec![Vec::new(); formats.len()];
        for run in 0..args.runs {
            for k in 0..formats.len() {
                // Alternate which format goes first.
                let i = (k + run) % formats.len();
                let blocks = load::unique_blocks(args.blocks);
                let gbps = measure(&format!("store_batch, format {:?}", formats[i]), &|| {
                    load::ingest_as(&target, &args.token, &blocks, args.concurrency, formats[i])
                })?;
                by_format[i].push(gbps);
            }
        }
        if let [v1, v2] = &mut by_format[..] {
            let (a, b) = (median(v1), median(v2));
            println!(
                "format 1 {a:.2} GB/s, format 2 (raw frames) {b:.2} GB/s: {:.3} ×",
                b / a
            );
        }
        let (m, c) = (median(&mut rates), median(&mut costs));
        println!(
            "store_batch, {} blocks of 4 MiB, {} in flight: {m:.2} GB/s = {:.2} × one core's SHA-256, {:.2} × O_DIRECT write, {:.2} × loopback TCP; server {c:.2} core-s/GB",
            args.blocks,
            args.concurrency,
            m / sha,
            m / w,
            m / tcp
        );
    }
    Ok(())
}

fn engine(
    dir: &std::path::Path,
    runs: usize,
    blocks: usize,
    reopen_blocks: usize,
    journal_rows: usize,
) -> Result<()> {
    let (sha, aes, w, r) = limits_row(dir, runs)?;
    println!("| limit | GB/s |\n| --- | --- |");
    println!("| SHA-256, one core, 4 MiB | {sha:.2} |");
    println!("| AES-256-GCM seal, one core, 4 MiB | {aes:.2} |");
    println!("| O_DIRECT write, 4 MiB, QD2 | {w:.2} |");
    println!("| O_DIRECT read, 4 MiB, QD2 | {r:.2} |\n");

    println!("| block log run | put GB/s | × O_DIRECT write | get GB/s | × O_DIRECT read | records per flush |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (label, concurrency, encrypt, verify) in [
        ("plain, 1 in flight", 1, false, false),
        ("plain, 4 in flight", 4, false, false),
        ("plain, 16 in flight", 16, false, false),
        ("encrypted, 1 in flight", 1, true, false),
        ("encrypted, 4 in flight", 4, true, false),
        ("encrypted, 16 in flight", 16, true, false),
        ("encrypted + SHA-256 verify, 16 in flight", 16, true, true),
    ] {
        let mut put = Vec::new();
        let mut get = Vec::new();
        let mut per_flush = Vec::new();
        for _ in 0..runs {
            let d = tempfile::tempdir_in(dir)?;
            let p = d.path().to_path_buf();
            let res = runtime::run(async move {
                engine_runs::block_put_get(&p, blocks, concurrency, encrypt, verify).await
            })?;
            put.push(res.put_gbps);
            get.push(res.get_gbps);
            per_flush.push(res.stats.flushed_records as f64 / res.stats.flushes.max(1) as f64);
        }
        let (put, get) = (median(&mut put), median(&mut get));
        println!(
            "| {label} | {put:.2} | {:.2} | {get:.2} | {:.2} | {:.1} |",
            put / w,
            get / r,
            median(&mut per_flush)
        );
    }

    println!();
    for n in [100_000, 1_000_000, 1_500_000] {
        println!(
            "index: {n} blocks → {:.1} bytes per block",
            engine_runs::index_bytes_per_block(n)
        );
    }
    let (ins, look) = engine_runs::prefetch_ns(100_000);
    println!("prefetch table, 100,000 entries: upsert {ins:.0} ns, lookup {look:.0} ns");

    let d = tempfile::tempdir_in(dir)?;
    let p = d.path().to_path_buf();
    let (build, reopen) =
        runtime::run(async move { engine_runs::store_reopen(&p, reopen_blocks).await })?;
    println!(
        "store of {reopen_blocks} blocks: built in {build:.1} s ({:.0} puts/s), reopened in {reopen:.3} s",
        reopen_blocks as f64 / build
    );

    let mut rates = Vec::new();
    let mut flushes = Vec::new();
    for _ in 0..runs {
        let d = tempfile::tempdir_in(dir)?;
        let p = d.path().to_path_buf();
        let (rate, f) =
            runtime::run(async move { engine_runs::journal_commits(&p, 20_000, 256).await })?;
        rates.push(rate);
        flushes.push(f as f64);
    }
    println!(
        "journal: 20,000 single-row commits from 256 callers: {:.0} commits/s, {:.0} flushes",
        median(&mut rates),
        median(&mut flushes)
    );
    let d = tempfile::tempdir_in(dir)?;
    let p = d.path().to_path_buf();
    let (rate, reopen, snaps) =
        runtime::run(async move { engine_runs::journal_reopen(&p, journal_rows, 1).await })?;
    println!(
        "journal: {journal_rows} rows in batches of 1000 at {rate:.0} rows/s ({snaps} snapshots); reopened in {reopen:.3} s"
    );
    Ok(())
}
