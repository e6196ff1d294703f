//! The Holdall storage engine, one instance per shard: an append-only block log of
//! encrypted 4 MiB blocks keyed by SHA-256, the Server File Journal (SFJ) with users,
//! tokens, namespaces and mounts, and the in-memory prefetch table for streaming sync.
//!
//! Everything here is single-threaded per shard (`Rc`, no locks) and runs inside a glommio
//! executor; only [`runtime`] and [`dma`] touch glommio directly. No HTTP.

pub mod block_index;
pub mod block_log;
pub mod block_record;
pub mod buffer_pool;
pub mod dma;
pub mod journal;
pub mod journal_record;
pub mod prefetch;

pub mod runtime;
pub mod segment_hint;
pub mod sfj;

pub mod store_key;
pub mod watchdog;

/// Alignment of every write and every record: the O_DIRECT page size.
pub const ALIGN_BYTES: u64 = 4096;

/// `v` rounded up to a multiple of [`ALIGN_BYTES`].
pub const fn align_up(v: u64) -> u64 {
    (v + ALIGN_BYTES - 1) & !(ALIGN_BYTES - 1)
}

/// Numbers `N` of the files named `{prefix}N{suffix}` in `dir`, ascending; other names are
/// ignored. Segments, journal files and snapshots are all named this way.
pub(crate) fn numbered_files(
    dir: &std::path::Path,
    prefix: &str,
    suffix: &str,
) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|n| n.strip_suffix(suffix))
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}
