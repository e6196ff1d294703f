//! What the client knows of a local file without reading it: its stat, and the hash cache
//! entry that says which blocklist a file with that stat holds.

use std::os::unix::fs::MetadataExt;

use holdall_proto::BlockHash;

/// How long before its read a file on a filesystem with sub-second times must have last
/// changed for its hash to be trusted later: several ticks of the slowest kernel clock
/// (100 Hz).
pub const FINE_RACY_NS: i64 = 50_000_000;

/// The same for a filesystem whose times are whole seconds.
pub const COARSE_RACY_NS: i64 = 3_000_000_000;

/// What the walk saw of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status change time, ns since the epoch: moves on every write, rename or time change.
    pub ctime_ns: i64,
    /// Inode number.
    pub inode: u64,
}

impl Stat {
    /// Reads the stat of `meta`.
    pub fn of(meta: &std::fs::Metadata) -> Stat {
        Stat {
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            inode: meta.ino(),
        }
    }

    /// Whether this file has the stat a cached hash was taken with (it may still need
    /// reading again if the entry is racy; see [`Stat::trusts`]).
    pub fn matches(&self, h: &HashEntry) -> bool {
        self.size == h.size
            && self.mtime_ns == h.mtime_ns
            && self.ctime_ns == h.ctime_ns
            && self.inode == h.inode
    }

    /// Whether a cached hash describes this file without reading it again.
    pub fn trusts(&self, h: &HashEntry) -> bool {
        self.matches(h) && !h.racy
    }

    /// The cache entry saying this file holds `blocklist` (not racy).
    pub fn entry(&self, blocklist: Vec<BlockHash>) -> HashEntry {
        HashEntry {
            size: self.size,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
            inode: self.inode,
            racy: false,
            blocklist,
        }
    }

    /// Whether the file changed so shortly before `read_from_ns` (when its reading began,
    /// ns since the epoch) that a change after the read could have left this stat as it is.
    /// Filesystems stamp times from a clock that moves in ticks, and two writes within one
    /// tick get the same times. Linux's local filesystems tick every few milliseconds; a
    /// filesystem whose ctime has no fraction of a second ticks in seconds (or more: FAT's
    /// two), so it gets the wide window.
    pub fn racy(&self, read_from_ns: i64) -> bool {
        let window_ns = if self.ctime_ns.rem_euclid(1_000_000_000) == 0 {
            COARSE_RACY_NS
        } else {
            FINE_RACY_NS
        };
        self.ctime_ns > read_from_ns.saturating_sub(window_ns)
    }
}

/// What a file looked like when it was hashed: if size, mtime, ctime and inode still match,
/// the blocklist still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashEntry {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status change time, ns since the epoch (0 in entries written before it was kept,
    /// which therefore never match: those files are hashed once more).
    pub ctime_ns: i64,
    /// The file had changed just before it was read: read it again even if the stat
    /// matches (see `scan`).
    pub racy: bool,
    /// Inode number.
    pub inode: u64,
    /// The file's blocklist.
    pub blocklist: Vec<BlockHash>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_racy_window_follows_the_filesystems_time_resolution() {
        let stat = |ctime_ns| Stat {
            size: 1,
            mtime_ns: 0,
            ctime_ns,
            inode: 1,
        };
        let fine_ns = 1_700_000_000_123_456_789;
        assert!(stat(fine_ns).racy(fine_ns + FINE_RACY_NS - 1));
        assert!(!stat(fine_ns).racy(fine_ns + FINE_RACY_NS));
        assert!(stat(fine_ns).racy(fine_ns - 1), "changed during the read");
        let whole_s = 1_700_000_000_000_000_000;
        assert!(stat(whole_s).racy(whole_s + FINE_RACY_NS));
        assert!(stat(whole_s).racy(whole_s + COARSE_RACY_NS - 1));
        assert!(!stat(whole_s).racy(whole_s + COARSE_RACY_NS));
    }
}
