//! holdalld, the Holdall server: `holdalld serve` runs it; `holdalld demo` exercises the
//! storage engine alone.

mod access;
mod admin;
mod blocks;
mod body;
mod body_pool;
mod commit;
mod config;
mod demo;
mod directory;
mod http;
mod list;
mod mesh;
mod metrics;
mod recent;
mod retrieve;
mod routes;
mod serve;
mod shard;
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
    Serve(config::ServeArgs),
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,glommio=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve::run(config::Config::resolve(args)?),
        Command::Demo { data, mib } => runtime::run(demo::demo(data, mib)),
    }
}
