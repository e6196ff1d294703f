//! holdall-chaos: Holdall's reliability harnesses, run by hand for long runs and by the
//! tests for short ones.

mod backups;
mod collections;
mod crash;
mod daemon;
mod devices;
mod ledger;
mod workload;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "holdall-chaos", about = "Holdall's reliability harnesses")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Kill holdalld with SIGKILL under a concurrent upload and commit load, restart it,
    /// and check that everything acknowledged is there byte-exact and nothing
    /// unacknowledged is half there; cycle after cycle.
    Crash {
        /// Kill-and-restart cycles.
        #[arg(long, default_value_t = 20)]
        cycles: u64,
        /// Fixes the load and the kill moments [default: from the clock, printed].
        #[arg(long)]
        seed: Option<u64>,
        /// Scratch folder for the data folders.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The holdalld binary [default: the one beside this binary].
        #[arg(long)]
        holdalld: Option<PathBuf>,
        /// holdalld's shards.
        #[arg(long, default_value_t = 2)]
        shards: usize,
        /// Concurrent load workers.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Cycles on one data folder before starting a fresh one.
        #[arg(long, default_value_t = 50)]
        cycles_per_store: u64,
        /// Longest time from the start of the load to the kill, in milliseconds.
        #[arg(long, default_value_t = 600)]
        kill_after_ms_max: u64,
        /// Force a garbage collection (`POST /v1/admin/gc`) this often during the load, in
        /// milliseconds, so that kills land in collections and compactions; each check
        /// then also reads back every version `history` still lists. 0: none.
        #[arg(long, default_value_t = 0)]
        collect_every_ms: u64,
        /// holdalld's `--history-retention` (short, so that collections free versions).
        #[arg(long)]
        history_retention: Option<String>,
        /// Take an online backup early in each load, while it runs; each one not
        /// cut short must pass fsck and serve every version acknowledged before it.
        #[arg(long)]
        backup: bool,
    },
    /// Real `holdall sync` processes on two to four folders under a seeded schedule of
    /// edits, renames, moves, deletions, syncs killed with SIGKILL and wiped state folders;
    /// then all must settle to the same files with no version lost.
    Devices {
        /// Fixes the schedule [default: from the clock, printed].
        #[arg(long)]
        seed: Option<u64>,
        /// Synced folders (2 to 4).
        #[arg(long, default_value_t = 3)]
        devices: usize,
        /// Scheduled steps.
        #[arg(long, default_value_t = 100)]
        steps: usize,
        /// Scratch folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The holdalld binary [default: the one beside this binary].
        #[arg(long)]
        holdalld: Option<PathBuf>,
        /// The holdall binary [default: the one beside this binary].
        #[arg(long)]
        holdall: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Crash {
            cycles,
            seed,
            dir,
            holdalld,
            shards,
            workers,
            cycles_per_store,
            kill_after_ms_max,
            collect_every_ms,
            history_retention,
            backup,
        } => {
            let seed = seed.unwrap_or_else(clock_seed);
            let opts = crash::Options {
                holdalld: binary(holdalld, "holdalld")?,
                dir,
                cycles,
                seed,
                shards,
                workers,
                cycles_per_store,
                kill_after_max: Duration::from_millis(kill_after_ms_max),
                collect_every: Duration::from_millis(collect_every_ms),
                history_retention,
                backup,
            };
            println!(
                "crash harness: seed {seed}, {cycles} cycles, {workers} workers, {shards} shards"
            );
            let started = Instant::now();
            let s = crash::run(&opts)?;
            println!(
                "ok: {} cycles in {:.0} s; {} commits acknowledged and kept; unanswered at a kill: {} there whole, {} gone; {} rows, {} versions within the retention ({} aged out while read) and {} acknowledged blocks read back byte-exact ({:.1} MB); {} forced collections; {} backups taken under load checked ({} versions acknowledged before them read back)",
                s.cycles,
                started.elapsed().as_secs_f64(),
                s.acked_commits,
                s.adopted_commits,
                s.dropped_commits,
                s.checked_rows,
                s.checked_versions,
                s.aged_out_versions,
                s.checked_blocks,
                s.checked_bytes as f64 / 1e6,
                s.collections,
                s.backups,
                s.backup_versions
            );
        }
        Command::Devices {
            seed,
            devices,
            steps,
            dir,
            holdalld,
            holdall,
        } => {
            let seed = seed.unwrap_or_else(clock_seed);
            let opts = devices::Options {
                holdalld: binary(holdalld, "holdalld")?,
                holdall: binary(holdall, "holdall")?,
                dir,
                seed,
                devices,
                steps,
            };
            println!("device scenario: seed {seed}, {devices} devices, {steps} steps");
            let started = Instant::now();
            let s = devices::run(&opts)?;
            println!(
                "ok: settled in {} passes, {:.0} s; {} syncs started, {} killed, {} state folders wiped; {} versions written, all {} not replaced or deleted kept; {} files on every device",
                s.passes,
                started.elapsed().as_secs_f64(),
                s.syncs,
                s.kills,
                s.wipes,
                s.written,
                s.kept,
                s.files
            );
        }
    }
    Ok(())
}

/// The binary given on the command line, else `name` beside this one.
fn binary(given: Option<PathBuf>, name: &str) -> Result<PathBuf> {
    match given {
        Some(path) => Ok(path),
        None => daemon::sibling(name),
    }
}

/// A seed from the clock, for runs that do not name one.
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}
