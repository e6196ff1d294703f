//! holdall, the Holdall sync client.

mod local;
mod net;
mod pool;
mod share;
mod status;
mod sync;
mod tokens;
mod transfer;
mod users;
mod versions;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use holdall_proto::content_hash::content_hash_of_blocklist;

use crate::net::api::{Api, Endpoint};
use crate::sync::round::{Options, Syncer};
use holdall_proto::byte_count::parse_bytes;

#[derive(Parser)]
#[command(name = "holdall", version, about = "The Holdall sync client")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Connect {
    /// Server URL, http:// or https://.
    #[arg(long, env = "HOLDALL_SERVER", default_value = "http://127.0.0.1:8340")]
    server: String,
    /// Bearer token of the account.
    #[arg(long, env = "HOLDALL_TOKEN", hide_env_values = true)]
    token: String,
    /// PEM file of a private CA to trust instead of the system's roots.
    #[arg(long, env = "HOLDALL_CA")]
    ca: Option<PathBuf>,
    /// Upload cap in bytes per second (suffixes K, M, G; 0 = none).
    #[arg(long, env = "HOLDALL_UP_LIMIT", default_value = "0", value_parser = parse_bytes)]
    up_limit: u64,
    /// Download cap in bytes per second (suffixes K, M, G; 0 = none).
    #[arg(long, env = "HOLDALL_DOWN_LIMIT", default_value = "0", value_parser = parse_bytes)]
    down_limit: u64,
    /// Compress blocks on the wire where it pays, if the server offers it (`on` or `off`).
    #[arg(long, env = "HOLDALL_COMPRESS", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    compress: bool,
    /// Send and fetch changed blocks of synced files as rsync deltas, if the server offers
    /// them (`on` or `off`).
    #[arg(long, env = "HOLDALL_DELTA", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    delta: bool,
}

/// `on` or `off`.
fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: say on or off")),
    }
}

impl Connect {
    fn api(&self) -> Result<Api> {
        Api::new(
            &Endpoint {
                url: self.server.clone(),
                token: self.token.clone(),
                ca: self.ca.clone(),
            },
            self.up_limit,
            self.down_limit,
        )
        .map(|api| api.with_compression(self.compress).with_deltas(self.delta))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Keep DIR in sync with your Holdall folder (shared folders at their mount paths).
    Sync {
        /// The folder to sync (created if missing).
        dir: PathBuf,
        /// One full round: upload local changes, apply remote ones, exit 0 once both agree.
        #[arg(long)]
        once: bool,
        /// Threads hashing and requests in flight.
        #[arg(long, env = "HOLDALL_WORKERS", default_value_t = default_workers())]
        workers: usize,
        /// Bound of the deleted-files cache (suffixes K, M, G).
        #[arg(long, default_value = "1G", value_parser = parse_bytes)]
        trash_limit: u64,
        /// Turn streaming sync off: do not prefetch blocks of files other devices are still
        /// uploading (on by default when the server offers it; `--once` never prefetches).
        #[arg(long, env = "HOLDALL_NO_STREAMING")]
        no_streaming: bool,
        /// Bound of the streaming-sync cache in .holdall/prefetch (suffixes K, M, G).
        #[arg(long, default_value = "1G", value_parser = parse_bytes)]
        prefetch_limit: u64,
        #[command(flatten)]
        connect: Connect,
    },
    /// Print the Dropbox-compatible content hash of each file, as `HASH  PATH` lines.
    Hash {
        /// Files to hash.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show whether DIR is in sync, what is pending, the last error and cache sizes.
    Status {
        /// A synced folder.
        dir: PathBuf,
    },
    /// Make a folder a shared namespace and mount it for another user.
    Share {
        /// A folder inside a synced folder.
        path: PathBuf,
        /// The user to share with.
        #[arg(long = "with")]
        with: String,
        /// Where it appears in their folder (default: the folder's name).
        #[arg(long = "as")]
        as_path: Option<String>,
        #[command(flatten)]
        connect: Connect,
    },
    #[command(flatten)]
    Versions(VersionsCommand),
    /// Administration (needs the admin token).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The account's device tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

/// `holdall token …`.
#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token for another device and print it (shown this once).
    Create {
        /// The device's name, shown in `token list`.
        #[arg(long)]
        device: String,
        #[command(flatten)]
        connect: Connect,
    },
    /// The account's tokens: id, device, made, last used (never the secrets).
    List {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: Connect,
    },
    /// Revoke a token: its next request is refused, on every device using it.
    Revoke {
        /// The token's id, from `token list`.
        id: String,
        #[command(flatten)]
        connect: Connect,
    },
}

/// The commands on the server's version history (`versions`).
#[derive(Subcommand)]
enum VersionsCommand {
    /// List the versions the server keeps of FILE, newest first (deletions included).
    History {
        /// A file (or a deleted file's path) inside a synced folder.
        file: PathBuf,
        /// Print the versions as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: Connect,
    },
    /// Bring back a version of FILE as its newest version on the server (a running sync
    /// then downloads it), or with --to write it to a local file and change nothing.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["jid", "at"])))]
    Restore {
        /// A file (or a deleted file's path) inside a synced folder.
        file: PathBuf,
        /// The version's JID, as `holdall history` shows it.
        #[arg(long)]
        jid: Option<u64>,
        /// The version that was the newest at TIME: 2026-12-03T10:00:00Z, a local
        /// `2026-12-03 10:00`, or an age such as 2h or 3d.
        #[arg(long)]
        at: Option<String>,
        /// Write that version to this file instead; the server is not changed.
        #[arg(long)]
        to: Option<PathBuf>,
        #[command(flatten)]
        connect: Connect,
    },
    /// List deleted files under DIR (default: the current folder) that can still be
    /// brought back.
    Deleted {
        /// A folder inside a synced folder.
        dir: Option<PathBuf>,
        /// Print the entries as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: Connect,
    },
    /// Bring back a deleted file: its last version before the deletion.
    Undelete {
        /// The deleted file's path inside a synced folder.
        path: PathBuf,
        #[command(flatten)]
        connect: Connect,
    },
    /// Put everything under DIR back as it was at TIME (or right after JID J): files get
    /// that version back, files created since are deleted. Says what it will change and
    /// asks first, unless --yes.
    #[command(group(clap::ArgGroup::new("point").required(true).args(["to", "jid"])))]
    Rewind {
        /// A folder inside a synced folder (or the synced folder itself).
        dir: PathBuf,
        /// The time to go back to, as for `restore --at`.
        #[arg(long)]
        to: Option<String>,
        /// The JID to go back to (a folder in one namespace only).
        #[arg(long)]
        jid: Option<u64>,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        connect: Connect,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a user and print its token.
    AddUser {
        /// The new user's name.
        name: String,
        #[command(flatten)]
        connect: Connect,
    },
    /// Set a user's quota (logical bytes of the latest versions in the folders they own),
    /// or remove it with `none`; prints their usage under it.
    SetQuota {
        /// The user.
        name: String,
        /// The quota: bytes, or with a unit (`500M`, `20G`, `2T`; K = 1024), or `none`.
        #[arg(value_parser = parse_quota)]
        quota: Quota,
        #[command(flatten)]
        connect: Connect,
    },
    /// List the users: name, root namespace, usage, quota, disabled.
    ListUsers {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: Connect,
    },
    /// Disable a user: their tokens are refused; nothing of theirs is deleted.
    DisableUser {
        /// The user.
        name: String,
        #[command(flatten)]
        connect: Connect,
    },
    /// Enable a disabled user again.
    EnableUser {
        /// The user.
        name: String,
        #[command(flatten)]
        connect: Connect,
    },
}

/// A quota as the command line gives it: a byte count, or none.
#[derive(Debug, Clone, Copy)]
struct Quota(Option<u64>);

fn parse_quota(text: &str) -> Result<Quota, String> {
    match text {
        "none" => Ok(Quota(None)),
        _ => parse_bytes(text).map(|b| Quota(Some(b))),
    }
}

/// Twice the cores, 4–16: transfers wait on the network and the disks as much as on a core
/// (docs/DECISIONS.md, "Tuning").
fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(4, |n| n.get() * 2)
        .clamp(4, 16)
}

/// The content hash of the file at `path`, as lower-case hex.
fn hash_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata().map_or(0, |m| m.len());
    let (blocklist, _) = local::scan::read_blocklist(&mut file, size)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(content_hash_of_blocklist(&blocklist).to_hex())
}

/// `holdall hash`: each file's content hash; true when every file could be read.
fn hash_files(files: &[PathBuf]) -> bool {
    let mut ok = true;
    for f in files {
        match hash_file(f) {
            Ok(h) => println!("{h}  {}", f.display()),
            Err(e) => {
                eprintln!("holdall: {e:#}");
                ok = false;
            }
        }
    }
    ok
}

/// `holdall sync`: until Ctrl-C, or with `once` rounds until the folder and the server
/// agree; true when nothing failed.
fn sync_folder(dir: &Path, connect: &Connect, opts: Options, once: bool) -> Result<bool> {
    let api = connect
        .api()?
        .with_progress(net::progress::Progress::on_stderr());
    let mut syncer = Syncer::open(dir, api, opts)?;
    if !once {
        sync::watch::run(syncer)?;
        return Ok(true);
    }
    let report = syncer.until_agreed()?;
    for (p, e) in &report.errors {
        eprintln!("holdall: not synced: {p}: {e}");
    }
    let outcome = match report.errors.len() {
        0 => "in sync".to_string(),
        n => format!("not in sync: {n} path(s) failed"),
    };
    eprintln!(
        "holdall: {outcome} ({} committed, {} downloaded, {} deleted, {} conflicts; \
         {} bytes up, {} bytes down, {} blocks reused, {} blocks as deltas)",
        report.committed,
        report.downloaded,
        report.deleted,
        report.conflicts,
        report.up_bytes,
        report.down_bytes,
        report.reused_blocks,
        report.delta_blocks
    );
    Ok(report.errors.is_empty())
}

fn run_token(command: TokenCommand) -> Result<bool> {
    match command {
        TokenCommand::Create { device, connect } => {
            let made = connect.api()?.create_token(&device)?;
            eprintln!("holdall: made token {} for {device:?}", made.id);
            println!("{}", made.token);
        }
        TokenCommand::List { json, connect } => {
            let answer = connect.api()?.list_tokens()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                print!("{}", tokens::table(&answer.tokens));
            }
        }
        TokenCommand::Revoke { id, connect } => {
            connect.api()?.revoke_token(&id)?;
            println!("revoked {id}");
        }
    }
    Ok(true)
}

fn run_versions(command: VersionsCommand) -> Result<bool> {
    match command {
        VersionsCommand::History {
            file,
            json,
            connect,
        } => versions::history(&connect.api()?, &file, json).map(|()| true),
        VersionsCommand::Restore {
            file,
            jid,
            at,
            to,
            connect,
        } => {
            let which = match (jid, at) {
                (Some(jid), _) => versions::Which::Jid(jid),
                (None, Some(at)) => versions::Which::At(versions::parse_time(&at)?),
                (None, None) => anyhow::bail!("give --jid or --at"),
            };
            versions::restore(&connect.api()?, &file, which, to.as_deref()).map(|()| true)
        }
        VersionsCommand::Deleted { dir, json, connect } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("."));
            versions::deleted(&connect.api()?, &dir, json).map(|()| true)
        }
        VersionsCommand::Undelete { path, connect } => {
            versions::undelete(&connect.api()?, &path).map(|()| true)
        }
        VersionsCommand::Rewind {
            dir,
            to,
            jid,
            yes,
            connect,
        } => {
            let point = match (jid, to) {
                (Some(jid), _) => versions::Point::Jid(jid),
                (None, Some(to)) => versions::Point::Ms(versions::parse_time(&to)?),
                (None, None) => anyhow::bail!("give --to or --jid"),
            };
            versions::rewind(&connect.api()?, &dir, point, yes)
        }
    }
}

fn run(command: Command) -> Result<bool> {
    match command {
        Command::Hash { files } => Ok(hash_files(&files)),
        Command::Sync {
            dir,
            once,
            workers,
            trash_limit,
            no_streaming,
            prefetch_limit,
            connect,
        } => {
            let opts = Options {
                workers: workers.max(1),
                trash_bytes_max: trash_limit,
                streaming: !no_streaming,
                prefetch_bytes_max: prefetch_limit,
                quiet: match once {
                    true => std::time::Duration::ZERO,
                    false => sync::watch::QUIET,
                },
            };
            sync_folder(&dir, &connect, opts, once)
        }
        Command::Status { dir } => status::print(&dir),
        Command::Share {
            path,
            with,
            as_path,
            connect,
        } => {
            share::share(&connect.api()?, &path, &with, as_path.as_deref())?;
            Ok(true)
        }
        Command::Versions(command) => run_versions(command),
        Command::Admin {
            command: AdminCommand::AddUser { name, connect },
        } => {
            let user = connect.api()?.create_user(&name)?;
            eprintln!(
                "holdall: created user {} (root namespace {})",
                user.user, user.root_ns
            );
            println!("{}", user.token);
            Ok(true)
        }
        Command::Admin {
            command:
                AdminCommand::SetQuota {
                    name,
                    quota,
                    connect,
                },
        } => {
            let answer = connect.api()?.set_quota(&name, quota.0)?;
            let quota = answer
                .usage
                .quota_bytes
                .map_or("no quota".to_owned(), |q| format!("quota {q} bytes"));
            println!(
                "{}: {} bytes used, {quota}",
                answer.user, answer.usage.bytes
            );
            Ok(true)
        }
        Command::Token { command } => run_token(command),
        Command::Admin {
            command: AdminCommand::ListUsers { json, connect },
        } => {
            let answer = connect.api()?.list_users()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                print!("{}", users::table(&answer.users));
            }
            Ok(true)
        }
        Command::Admin {
            command: AdminCommand::DisableUser { name, connect },
        } => {
            let answer = connect.api()?.set_disabled(&name, true)?;
            println!("{}: disabled (their tokens are refused)", answer.user);
            Ok(true)
        }
        Command::Admin {
            command: AdminCommand::EnableUser { name, connect },
        } => {
            let answer = connect.api()?.set_disabled(&name, false)?;
            println!("{}: enabled", answer.user);
            Ok(true)
        }
    }
}

fn main() -> ExitCode {
    // Colours only on a terminal: a log piped to a file or a journal stays plain text.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HOLDALL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Cli::parse().command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("holdall: {e:#}");
            ExitCode::FAILURE
        }
    }
}
