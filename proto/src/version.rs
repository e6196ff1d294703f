//! One version of a path's content: what a commit asks a path to hold, what an SFJ row
//! holds, what a list answer names and what the client compares. Defined once, here; the
//! wire bodies carry its fields inline (`#[serde(flatten)]`), so JSON is unchanged.

use serde::{Deserialize, Serialize};

use crate::BlockHash;

/// What an SFJ row says a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A file with a blocklist.
    File,
    /// A folder.
    Dir,
    /// A tombstone: the path was deleted.
    Deleted,
}

/// A file's blocklist, size and mtime, a folder, or a deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileVersion {
    /// File, folder or deletion.
    pub kind: EntryKind,
    /// Block hashes of a file, in order; empty for folders, deletions and empty files.
    #[serde(default)]
    pub blocklist: Vec<BlockHash>,
    /// Size in bytes; 0 for folders and deletions.
    #[serde(default)]
    pub size: u64,
    /// Modification time, milliseconds since the Unix epoch (not part of the content).
    #[serde(default)]
    pub mtime_ms: i64,
}

impl FileVersion {
    /// A file.
    pub fn file(blocklist: Vec<BlockHash>, size: u64, mtime_ms: i64) -> FileVersion {
        FileVersion {
            kind: EntryKind::File,
            blocklist,
            size,
            mtime_ms,
        }
    }

    /// A folder.
    pub fn dir() -> FileVersion {
        FileVersion {
            kind: EntryKind::Dir,
            blocklist: Vec::new(),
            size: 0,
            mtime_ms: 0,
        }
    }

    /// A deletion (a tombstone row).
    pub fn deleted() -> FileVersion {
        FileVersion {
            kind: EntryKind::Deleted,
            ..FileVersion::dir()
        }
    }

    /// Logical bytes this version takes against a quota: a file's size, nothing for a
    /// folder or a deletion.
    pub fn counted_bytes(&self) -> u64 {
        match self.kind {
            EntryKind::File => self.size,
            EntryKind::Dir | EntryKind::Deleted => 0,
        }
    }

    /// Whether this is a deletion.
    pub fn is_deleted(&self) -> bool {
        self.kind == EntryKind::Deleted
    }

    /// Same kind and same bytes (mtime aside).
    pub fn same_content(&self, other: &FileVersion) -> bool {
        self.kind == other.kind && self.size == other.size && self.blocklist == other.blocklist
    }
}
