//! What can go wrong below the handlers: the engine's own errors, the mesh's, and the few
//! refusals the shard layer itself makes. `reply` gives each its HTTP status.

use holdall_engine::block_log::BlockLogError;
use holdall_engine::journal::JournalError;

use crate::mesh::MeshError;

/// A failure of a shard operation.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The block log failed.
    #[error(transparent)]
    Blocks(#[from] BlockLogError),
    /// A journal failed or refused a record.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Another shard could not be reached.
    #[error(transparent)]
    Mesh(#[from] MeshError),
    /// The shards have not all joined the mesh yet.
    #[error("the shards are still starting")]
    Starting,
    /// A mount would overlap one the user has.
    #[error("{0}")]
    MountConflict(String),
    /// A backup's copying failed (the store is untouched).
    #[error("backup failed: {0}")]
    Backup(String),
    /// A broken invariant of the server itself.
    #[error("{0}")]
    Internal(String),
}
