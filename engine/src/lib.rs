//! The Holdall storage engine, one instance per shard: an append-only block log of
//! encrypted 4 MiB blocks keyed by SHA-256, the Server File Journal (SFJ) with users,
//! tokens, namespaces and mounts, and the in-memory prefetch table for streaming sync.
//!
//! Everything here is single-threaded per shard (`Rc`, no locks) and runs inside a glommio
//! executor. Every byte kept goes through the [`storage`] seam; the block log and the
//! journal use glommio only for its local channels and tasks. No HTTP.

pub mod backup;
pub mod block_log;
pub mod group_commit;
pub mod journal;
pub mod prefetch;
pub mod runtime;
pub mod storage;
pub mod store_key;
pub mod watchdog;

/// Alignment of every write and every record: the O_DIRECT page size.
pub const ALIGN_BYTES: u64 = 4096;

/// `v` rounded up to a multiple of [`ALIGN_BYTES`].
pub const fn align_up(v: u64) -> u64 {
    (v + ALIGN_BYTES - 1) & !(ALIGN_BYTES - 1)
}
