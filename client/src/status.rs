//! `holdall status DIR`: what the state and a quick look at the disk say, without the
//! network: in sync or not, local changes not yet uploaded, the last error, cache sizes.

use std::path::Path;

use anyhow::{bail, Result};

use crate::local::scan::{walk, Seen, STATE_DIR};
use crate::local::state::State;

/// Prints the status of the synced folder `dir`; true when it is in sync.
pub fn print(dir: &Path) -> Result<bool> {
    let state_dir = dir.join(STATE_DIR);
    if !state_dir.join("state.db").is_file() {
        bail!(
            "{} is not a synced folder (no {STATE_DIR}/state.db)",
            dir.display()
        );
    }
    let state = State::open(&state_dir)?;
    let meta = |k: &str| -> Result<String> { Ok(state.meta(k)?.unwrap_or_default()) };
    let synced = state.synced()?;
    let hashes = state.hashes()?;
    let seen = walk(dir);
    let mut changed = 0usize;
    let mut added = 0usize;
    for (p, s) in &seen {
        match (s, synced.get(p)) {
            (_, None) => added += 1,
            (Seen::File(stat), Some(_)) => {
                if !hashes.get(p).is_some_and(|h| stat.matches(h)) {
                    changed += 1;
                }
            }
            (Seen::Dir, Some(_)) => {}
        }
    }
    let deleted = synced.keys().filter(|p| !seen.contains_key(*p)).count();
    let pending = changed + added + deleted;
    let in_sync = meta("in_sync")? == "yes" && pending == 0;
    let db_bytes: u64 = ["state.db", "state.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(state_dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    println!("folder:       {}", dir.display());
    println!("server:       {} (user {})", meta("server")?, meta("user")?);
    println!(
        "status:       {}",
        if in_sync { "in sync" } else { "not in sync" }
    );
    println!("last round:   {}", meta("last_round")?);
    println!("pending:      {added} new, {changed} changed, {deleted} deleted locally (server changes show after the next round)");
    let last_error = meta("last_error")?;
    println!(
        "last error:   {}",
        if last_error.is_empty() {
            "none"
        } else {
            &last_error
        }
    );
    for line in meta("path_errors")?.lines() {
        println!("not synced:   {line}");
    }
    println!("synced paths: {}", synced.len());
    println!(
        "caches:       deleted files {} bytes, state {} bytes",
        meta("trash_bytes")?,
        db_bytes
    );
    let prefetched = meta("prefetched_blocks")?;
    if prefetched.is_empty() {
        println!("streaming:    off (or no round of a continuous sync yet)");
    } else {
        println!(
            "streaming:    {} uploads followed, {prefetched} blocks prefetched, {} used to build files, cache {} bytes",
            meta("prefetch_followed")?,
            meta("prefetch_hits")?,
            meta("prefetch_cache_bytes")?
        );
    }
    Ok(in_sync)
}
