//! What the load was told (acknowledged) and what it only attempted, and the rules a server
//! that restarted after a crash must satisfy against it:
//!
//! - a commit that was answered `ok` is there with its JID, unless a later commit of the
//!   same path replaced it;
//! - a commit still unanswered when the server died is either there whole (it became
//!   durable before the answer went out) or not at all;
//! - nothing else is there;
//! - a block that store_batch acknowledged is stored byte-exact.
//!
//! Each load worker owns its paths and commits them one at a time, so per path at most one
//! commit is unanswered.

use std::collections::{BTreeMap, HashMap};

use holdall_proto::api::{EntryKind, Jid, ListEntry};
use holdall_proto::BlockHash;

/// How to make a block again: `holdall_benches::payload(seed, len)` for an even seed, and
/// `text_payload` (which compresses, and goes up compressed) for an odd one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpec {
    /// Generator seed.
    pub seed: u64,
    /// Bytes.
    pub len: usize,
}

impl BlockSpec {
    /// The block's bytes.
    pub fn data(&self) -> Vec<u8> {
        match self.seed % 2 {
            0 => holdall_benches::payload(self.seed, self.len),
            _ => holdall_benches::text_payload(self.seed, self.len),
        }
    }
}

/// One version of a path, as committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// File or tombstone.
    pub kind: EntryKind,
    /// Blocks in file order.
    pub blocklist: Vec<BlockHash>,
    /// Bytes.
    pub size: u64,
}

impl Version {
    fn matches(&self, row: &ListEntry) -> bool {
        self.kind == row.version.kind
            && self.blocklist == row.version.blocklist
            && self.size == row.version.size
    }
}

/// A path's history as far as the load knows it.
#[derive(Debug, Clone, Default)]
pub struct PathState {
    /// The last commit answered `ok`: its JID and version.
    pub acked: Option<(Jid, Version)>,
    /// A commit sent and not (yet) answered.
    pub pending: Option<Version>,
}

/// What a restarted server showed for a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    /// The acknowledged version (or nothing, for a path never acknowledged).
    Kept,
    /// The unanswered commit is there whole: it is adopted as acknowledged.
    Adopted,
    /// The unanswered commit is not there: forgotten.
    Dropped,
}

impl PathState {
    /// Checks the row a restarted server lists for this path (`None`: no row) and settles
    /// the unanswered commit. An error describes a broken promise.
    pub fn reconcile(&mut self, row: Option<&ListEntry>) -> Result<Reconciled, String> {
        let acked_jid = self.acked.as_ref().map(|(j, _)| *j);
        let is_acked = match (&self.acked, row) {
            (None, None) => true,
            (Some((jid, v)), Some(r)) => r.jid == *jid && v.matches(r),
            _ => false,
        };
        let pending = self.pending.take();
        if is_acked {
            return Ok(match pending {
                Some(_) => Reconciled::Dropped,
                None => Reconciled::Kept,
            });
        }
        if let (Some(p), Some(r)) = (&pending, row) {
            if p.matches(r) && acked_jid.is_none_or(|j| r.jid > j) {
                self.acked = Some((r.jid, p.clone()));
                return Ok(Reconciled::Adopted);
            }
        }
        Err(format!(
            "server shows {}; acknowledged: {}; unanswered: {}",
            describe_row(row),
            self.acked
                .as_ref()
                .map_or("nothing".into(), |(j, v)| format!(
                    "jid {j} {}",
                    describe(v)
                )),
            pending.as_ref().map_or("nothing".into(), describe),
        ))
    }
}

fn describe(v: &Version) -> String {
    format!(
        "{:?} of {} bytes in {} blocks",
        v.kind,
        v.size,
        v.blocklist.len()
    )
}

fn describe_row(row: Option<&ListEntry>) -> String {
    row.map_or("no row".into(), |r| {
        format!(
            "jid {} {:?} of {} bytes in {} blocks",
            r.jid,
            r.version.kind,
            r.version.size,
            r.version.blocklist.len()
        )
    })
}

/// One worker's books: its paths, the blocks it made, and the blocks store_batch
/// acknowledged that were not checked yet.
#[derive(Debug, Default)]
pub struct Book {
    /// Per path (the worker's own).
    pub paths: BTreeMap<String, PathState>,
    /// Every block this worker made, by hash.
    pub specs: HashMap<BlockHash, BlockSpec>,
    /// Blocks acknowledged by store_batch since the last check.
    pub unchecked_blocks: Vec<BlockHash>,
    /// Blocks acknowledged and checked: candidates for reuse by later files.
    pub known_blocks: Vec<BlockHash>,
    /// Commits answered `ok` since the last check.
    pub acked_commits: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdall_proto::FileVersion;

    fn version(seed: u8) -> Version {
        Version {
            kind: EntryKind::File,
            blocklist: vec![BlockHash::of(&[seed])],
            size: 1,
        }
    }

    fn row(jid: Jid, v: &Version) -> ListEntry {
        ListEntry {
            ns: 1,
            jid,
            path: "p".into(),
            version: FileVersion {
                kind: v.kind,
                blocklist: v.blocklist.clone(),
                size: v.size,
                mtime_ms: 0,
            },
        }
    }

    #[test]
    fn acknowledged_commits_must_survive() {
        let mut s = PathState {
            acked: Some((3, version(1))),
            pending: None,
        };
        assert_eq!(
            s.reconcile(Some(&row(3, &version(1)))),
            Ok(Reconciled::Kept)
        );
        assert!(s.reconcile(None).is_err(), "lost");
        assert!(
            s.reconcile(Some(&row(4, &version(1)))).is_err(),
            "other jid"
        );
        assert!(
            s.reconcile(Some(&row(3, &version(2)))).is_err(),
            "other bytes"
        );
    }

    #[test]
    fn unanswered_commits_are_all_or_nothing() {
        let fresh = || PathState {
            acked: Some((3, version(1))),
            pending: Some(version(2)),
        };
        let mut s = fresh();
        assert_eq!(
            s.reconcile(Some(&row(3, &version(1)))),
            Ok(Reconciled::Dropped)
        );
        assert!(s.pending.is_none());
        let mut s = fresh();
        assert_eq!(
            s.reconcile(Some(&row(7, &version(2)))),
            Ok(Reconciled::Adopted)
        );
        assert_eq!(s.acked, Some((7, version(2))));
        assert!(
            fresh().reconcile(Some(&row(2, &version(2)))).is_err(),
            "jid went back"
        );
        assert!(
            fresh().reconcile(Some(&row(8, &version(3)))).is_err(),
            "never sent"
        );
        let mut never = PathState {
            acked: None,
            pending: Some(version(2)),
        };
        assert_eq!(never.reconcile(None), Ok(Reconciled::Dropped));
        assert!(PathState::default()
            .reconcile(Some(&row(1, &version(1))))
            .is_err());
    }
}
