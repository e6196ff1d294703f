//! holdalld, the Holdall server: `holdalld serve` runs it; `holdalld demo` exercises the
//! storage engine alone.

mod auth;
mod backup_cli;
mod block_bytes;
mod block_cache;
mod body;
mod check;
mod config;
mod demo;
mod directory;
mod dropbox;
mod handlers;
mod http;
mod mesh;
mod metrics;
mod process;
mod rate_limit;
mod reply;
mod request;
mod routes;
mod serve;
mod shard;
mod start;
mod tls;
mod transport;
mod upload_sessions;
mod uploads;
mod waiters;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use holdall_engine::runtime;

#[derive(Parser)]
#[command(name = "holdalld", version, about = "The Holdall sync server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: one shard per core, HTTP on --listen, data in --data.
    Serve(Box<config::ServeArgs>),
    /// Write a new store key (32 random bytes, mode 0600) to PATH, for `--store-key-file`;
    /// an existing file is never overwritten.
    Keygen {
        /// Where to write it: outside the data folder, e.g. /etc/holdall/store.key.
        path: PathBuf,
    },
    /// Check a data folder offline: every block record (CRC, tag, SHA-256), every journal
    /// record, every retained version's blocks. Exit status 0 clean, 1 damage found, 2 the
    /// check could not run.
    Fsck(check::FsckArgs),
    /// Back the store up into a folder: online through the holdalld serving it, or, with
    /// none serving it, offline. Linked where the file system allows, incremental.
    Backup(backup_cli::BackupArgs),
    /// Store a file's blocks and commit it with the embedded engine, then reopen and check.
    Demo {
        /// Data folder (the demo uses its demo/ subfolder).
        #[arg(long, env = "HOLDALL_DATA", default_value = "./holdall-data")]
        data: PathBuf,
        /// Size of the demo file in MiB.
        #[arg(long, default_value_t = 64)]
        mib: usize,
    },
}

fn main() -> Result<()> {
    // Colours only on a terminal: a log piped to a file or a journal stays plain text.
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,glommio=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    keep_large_allocations_mapped();
    match Cli::parse().command {
        Command::Serve(args) => serve::run(config::Config::resolve(*args)?),
        Command::Keygen { path } => {
            let key = holdall_engine::store_key::StoreKey::create(&path)?;
            println!(
                "wrote a new store key to {} (fingerprint {:016x}); keep a copy apart from the data",
                path.display(),
                key.fingerprint()
            );
            Ok(())
        }
        Command::Fsck(args) => match check::run(args) {
            Ok(clean) => std::process::exit(if clean { 0 } else { 1 }),
            Err(e) => {
                eprintln!("holdalld fsck: {e:#}");
                std::process::exit(2)
            }
        },
        Command::Backup(args) => {
            let done = backup_cli::run(args)?;
            println!("{}", serde_json::to_string(&done)?);
            Ok(())
        }
        Command::Demo { data, mib } => runtime::run(demo::demo(data, mib)),
    }
}

/// Largest allocation glibc's malloc serves from its heaps instead of a fresh mmap.
const MMAP_THRESHOLD_BYTES: i32 = 32 << 20;

/// Free memory at the top of a heap that glibc keeps instead of returning to the kernel.
const TRIM_THRESHOLD_BYTES: i32 = 256 << 20;

/// Store bodies (8 MiB), blocks read for retrieves and glommio's read buffers (4 MiB) are
/// allocated and freed all the time. With glibc's defaults many came as a fresh mmap (or a
/// heap grown and trimmed again): a page fault and a zeroed page per 4 KiB of every block
/// moved, 6–10 % of holdalld's CPU while storing and a third of its kernel time while
/// serving. Served from the heaps and kept there, they reuse memory already mapped.
fn keep_large_allocations_mapped() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
    }
}
