//! `holdalld fsck`: the whole store checked offline, by the same code as
//! `POST /v1/admin/fsck`: the shards are opened without a listener (over an in-memory
//! overlay, so nothing on disk changes, unless `--repair`), every block record is read and
//! checked (CRC, GCM tag, SHA-256), every journal record was checked by the open, and every
//! retained version's blocks are looked for. The report is per shard.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use anyhow::{bail, Context, Result};
use holdall_proto::api::FsckResponse;

use crate::config::{Config, DataLock, ServeArgs, STORE_KEY_IN_DATA};
use crate::process::Process;
use crate::serve::{join_shards, start_shards, Mode};

/// Flags of `holdalld fsck`.
#[derive(clap::Args, Debug)]
pub struct FsckArgs {
    /// The data folder to check (holdalld must not be serving it).
    #[arg(long, env = "HOLDALL_DATA")]
    pub data: PathBuf,
    /// Cut torn tails of the block logs and journals, as a start would, and drop damaged
    /// block records from the index for good (they then count as missing and clients
    /// upload them again); without it nothing on disk is changed and the report says what
    /// a start would cut.
    #[arg(long)]
    pub repair: bool,
    /// The store key, when it is kept outside the data folder.
    #[arg(long, env = "HOLDALL_STORE_KEY_FILE")]
    pub store_key_file: Option<PathBuf>,
    /// Most bytes per second read; 0 for no bound [default: 0].
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Print the report as JSON (the shape of `POST /v1/admin/fsck`'s answer).
    #[arg(long)]
    pub json: bool,
}

/// Checks the store; whether it is clean.
pub fn run(args: FsckArgs) -> Result<bool> {
    if !args.data.join("layout.toml").is_file() {
        bail!(
            "{} is not a holdalld data folder (it has no layout.toml)",
            args.data.display()
        );
    }
    if args.store_key_file.is_none() && !args.data.join(STORE_KEY_IN_DATA).is_file() {
        bail!(
            "no store key at {}: give the key the blocks were written under with --store-key-file",
            args.data.join(STORE_KEY_IN_DATA).display()
        );
    }
    let mut cfg = Config::resolve(ServeArgs {
        data: Some(args.data.clone()),
        store_key_file: args.store_key_file.clone(),
        gc_rate: Some(args.rate),
        gc_interval: Some("0s".into()),
        block_cache: Some(0),
        recent_blocks: Some(0),
        ..ServeArgs::default()
    })?;
    cfg.read_only = !args.repair;
    let _lock = DataLock::try_take(&cfg.data)?.with_context(|| {
        format!(
            "a holdalld is serving {}: check it online with POST /v1/admin/fsck",
            cfg.data.display()
        )
    })?;
    let report = check(&cfg)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", human(&report, args.repair));
    }
    Ok(report.clean)
}

/// Opens the shards in check mode and waits for shard 0's report.
fn check(cfg: &Config) -> Result<FsckResponse> {
    let stop = Arc::new(AtomicBool::new(false));
    // A check serves no cursors, and must not create a key file in the folder it checks.
    let cursor_key = holdall_engine::store_key::StoreKey::from_bytes(&[0; 32]);
    let process = Arc::new(Process::new(cfg, None, cursor_key));
    let (tx, rx) = mpsc::channel();
    let (handles, _) = start_shards(cfg, &stop, &process, &Mode::Check(tx))?;
    let report = rx.recv();
    stop.store(true, Ordering::Relaxed);
    join_shards(handles)?;
    report
        .context("the check ended without a report")?
        .map_err(anyhow::Error::msg)
}

/// The report for a person: a line per shard, then every damaged block and missing block.
fn human(r: &FsckResponse, repaired: bool) -> String {
    let cut = if repaired {
        "cut"
    } else {
        "to cut at the next start"
    };
    let mut out = String::new();
    for p in &r.shards {
        out += &format!(
            "shard {}: {} block records ({} bytes) checked, {} damaged ({} dropped from the index); block log damaged at open {}; {} journal records checked, {} damaged (at open {}); torn tails {cut}: {} ({} bytes); missing blocks {}\n",
            p.shard,
            p.blocks_checked,
            p.bytes_checked,
            p.damaged_blocks,
            p.damaged_dropped,
            p.block_log_corrupt_at_open,
            p.journal_records_checked,
            p.journal_damaged_records,
            p.journal_corrupt_records,
            p.torn_tails_cut,
            p.torn_tail_bytes,
            p.missing_blocks,
        );
    }
    for h in &r.damaged_blocks {
        out += &format!("damaged block {h}\n");
    }
    for m in &r.missing {
        out += &format!(
            "missing block {} of ns {} path {:?} jid {}\n",
            m.hash, m.ns, m.path, m.jid
        );
    }
    if r.missing_total > r.missing.len() as u64 {
        out += &format!("… {} missing blocks in all\n", r.missing_total);
    }
    out += &format!(
        "fsck: {} ({} block records, {} bytes, {} ms)\n",
        if r.clean { "clean" } else { "NOT clean" },
        r.blocks_checked,
        r.bytes_checked,
        r.ms
    );
    out
}
