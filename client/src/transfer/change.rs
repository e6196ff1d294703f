//! A change to commit: the commit, the local file it comes from, and the synced row it
//! replaces.

use holdall_proto::api::{CommitRequest, Jid};
use holdall_proto::BlockHash;

use crate::local::stat::Stat;

/// One change to commit.
#[derive(Debug, Clone)]
pub struct Change {
    /// Local path.
    pub lpath: String,
    /// The commit.
    pub request: CommitRequest,
    /// The file's stat when it was hashed (None for folders and deletions).
    pub stat: Option<Stat>,
    /// The synced row of the file this change replaces, if it was a file of the same
    /// namespace: what its changed blocks may go up as deltas against.
    pub base: Option<Base>,
}

/// A file's row as last synced.
#[derive(Debug, Clone)]
pub struct Base {
    /// The row's JID (the change's `parent_jid`).
    pub jid: Jid,
    /// Its blocks.
    pub blocklist: Vec<BlockHash>,
}
