//! holdall, the Holdall sync client.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use holdall_proto::ContentHasher;

#[derive(Parser)]
#[command(name = "holdall", version, about = "The Holdall sync client")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the Dropbox-compatible content hash of each file, as `HASH  PATH` lines.
    Hash {
        /// Files to hash.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn hash_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = ContentHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish().1.to_hex())
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Hash { files } => {
            let mut failed = false;
            for f in &files {
                match hash_file(f) {
                    Ok(h) => println!("{h}  {}", f.display()),
                    Err(e) => {
                        eprintln!("holdall: {e:#}");
                        failed = true;
                    }
                }
            }
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}
