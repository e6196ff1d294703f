//! A path's versions, newest first: the latest row from memory, every older one read back
//! from the journal files by following each row's `prev` location. Nothing of the history
//! is kept in memory beyond the latest row of each path.
//!
//! Retention: the latest row is always kept; an older version is kept while the row that
//! superseded it (the next newer one, a version or a deletion) is younger than the
//! retention. The walk stops at the first version outside it: everything older was
//! superseded earlier still.

use holdall_proto::api::NsId;
use tracing::warn;

use super::{io_err, journal_path, Journal, JournalError};
use crate::journal::record::{self, JournalRecord, Row, RowAt, HEADER_BYTES};
use crate::storage::OpenMode;
use crate::{align_up, ALIGN_BYTES};

/// Bytes read first for a row: most rows (a path and a few hashes) fit.
const FIRST_READ_BYTES: u64 = 8192;
/// Latest rows taken from the state at a time by [`Journal::retained_versions`].
const PATHS_PER_PAGE: usize = 256;

/// A walk down one path's history; see [`Journal::history`].
pub struct History<'j> {
    journal: &'j Journal,
    ns: NsId,
    path: String,
    next: Next,
    /// The JID last returned: each older row must have a smaller one, so a damaged chain
    /// cannot loop.
    below: u64,
    /// The walk returned the path's first row (one without a previous row).
    reached_first: bool,
}

/// A walk down one path's history that stops at the first version outside retention; see
/// [`Journal::retained_history`].
pub struct Retained<'j> {
    walk: History<'j>,
    cutoff_ms: u64,
    /// Commit time of the row last returned: when the next one was superseded.
    superseded_ms: Option<u64>,
}

/// Every retained version of every path of one namespace; see
/// [`Journal::retained_versions`].
pub struct NamespaceVersions<'j> {
    journal: &'j Journal,
    ns: NsId,
    cutoff_ms: u64,
    /// Paths of the page of latest rows being walked.
    paths: std::collections::VecDeque<String>,
    /// Where the next page of latest rows starts, and whether there is one.
    cursor: u64,
    more: bool,
    /// The path being walked, and whether its next row is its latest.
    walk: Option<(Retained<'j>, bool)>,
}

/// Whether a version superseded at `superseded_ms` (`None`: it is the latest) is still
/// within retention, given `cutoff_ms` (now less the retention). A time of 0 is unknown
/// (a version-1 row) and keeps the version.
pub fn retained(superseded_ms: Option<u64>, cutoff_ms: u64) -> bool {
    superseded_ms.is_none_or(|ms| ms == 0 || ms >= cutoff_ms)
}

enum Next {
    Latest,
    At(RowAt),
    End,
}

impl Journal {
    /// A walk over the versions of `path` in `ns`, newest first, deletions included. It
    /// ends where the chain does: at the path's first row, at a journal file that was
    /// removed (its rows were outside retention), or at a record that does not check out.
    pub fn history(&self, ns: NsId, path: &str) -> History<'_> {
        History {
            journal: self,
            ns,
            path: path.to_owned(),
            next: Next::Latest,
            below: u64::MAX,
            reached_first: false,
        }
    }

    /// Like [`Journal::history`], but ending before the first version superseded before
    /// `cutoff_ms` (ms since the epoch).
    pub fn retained_history(&self, ns: NsId, path: &str, cutoff_ms: u64) -> Retained<'_> {
        Retained {
            walk: self.history(ns, path),
            cutoff_ms,
            superseded_ms: None,
        }
    }

    /// A walk over every path of `ns` and, for each, its versions within retention
    /// (`cutoff_ms` as for [`Journal::retained_history`]), newest first. It holds one page
    /// of paths at a time, so a namespace of any size is walked in bounded memory.
    pub fn retained_versions(&self, ns: NsId, cutoff_ms: u64) -> NamespaceVersions<'_> {
        NamespaceVersions {
            journal: self,
            ns,
            cutoff_ms,
            paths: std::collections::VecDeque::new(),
            cursor: 0,
            more: true,
            walk: None,
        }
    }

    /// Reads the row record at `at`. `Ok(None)` if its file is gone.
    async fn read_row_at(&self, at: RowAt) -> Result<Option<Row>, JournalError> {
        let path = journal_path(&self.inner.dir, at.generation);
        let ctx = format!("reading history in {}", path.display());
        let file = match self.inner.storage.open(&path, OpenMode::Read).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(ctx)(e)),
        };
        let size = file.size().await.map_err(io_err(ctx.clone()))?;
        let page = at.offset - at.offset % ALIGN_BYTES;
        let skip = (at.offset - page) as usize;
        let mut want = align_up(skip as u64 + HEADER_BYTES as u64).max(FIRST_READ_BYTES);
        loop {
            let len = want.min(size.saturating_sub(page));
            let bytes = file
                .read_at(page, len as usize)
                .await
                .map_err(io_err(ctx.clone()))?;
            let bytes = bytes.get(skip..).unwrap_or_default();
            match record::decode(bytes) {
                Ok((JournalRecord::Row(row) | JournalRecord::Earlier(row), _)) => {
                    return Ok(Some(row))
                }
                Err(record::JournalRecordError::Truncated) if len == want => {
                    let body = bytes
                        .get(8..12)
                        .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
                    let need = align_up(skip as u64 + HEADER_BYTES as u64 + u64::from(body));
                    if need <= want || body as usize > record::BODY_BYTES_MAX {
                        return Ok(None);
                    }
                    want = need;
                }
                Ok(_) | Err(_) => return Ok(None),
            }
        }
    }
}

impl History<'_> {
    /// Whether the walk has returned a row without a previous row: the path's first row,
    /// or a row written by format version 1 (`committed_ms` 0), whose predecessors were
    /// never recorded. A walk cut by a damaged record or a removed file has not.
    pub fn reached_first(&self) -> bool {
        self.reached_first
    }

    /// The next older version, or `None` at the end of the chain.
    pub async fn next(&mut self) -> Result<Option<Row>, JournalError> {
        let row = match std::mem::replace(&mut self.next, Next::End) {
            Next::End => return Ok(None),
            Next::Latest => self.journal.state().latest(self.ns, &self.path).cloned(),
            Next::At(at) => {
                let row = self.journal.read_row_at(at).await?;
                match row {
                    Some(r) if r.ns == self.ns && r.path == self.path && r.jid < self.below => {
                        Some(Row { at: Some(at), ..r })
                    }
                    Some(r) => {
                        warn!(ns = self.ns, path = %self.path, generation = at.generation, offset = at.offset, found = %r.path, jid = r.jid, "history chain points at another path's row or a newer one");
                        self.journal.inner.stats.borrow_mut().corrupt_records += 1;
                        None
                    }
                    None => None,
                }
            }
        };
        if let Some(r) = &row {
            self.below = r.jid;
            match r.prev {
                Some(prev) => self.next = Next::At(prev),
                None => self.reached_first = true,
            }
        }
        Ok(row)
    }
}

impl Retained<'_> {
    /// See [`History::reached_first`].
    pub fn reached_first(&self) -> bool {
        self.walk.reached_first()
    }

    /// The next older version still within retention, or `None`.
    pub async fn next(&mut self) -> Result<Option<Row>, JournalError> {
        if !retained(self.superseded_ms, self.cutoff_ms) {
            return Ok(None);
        }
        let row = self.walk.next().await?;
        if let Some(r) = &row {
            self.superseded_ms = Some(r.committed_ms);
        }
        Ok(row)
    }
}

impl NamespaceVersions<'_> {
    /// The next retained version, and whether it is its path's latest row; `None` at the
    /// end of the namespace.
    pub async fn next(&mut self) -> Result<Option<(Row, bool)>, JournalError> {
        loop {
            if let Some((walk, latest)) = &mut self.walk {
                if let Some(row) = walk.next().await? {
                    return Ok(Some((row, std::mem::replace(latest, false))));
                }
                self.walk = None;
            }
            let Some(path) = self.next_path() else {
                return Ok(None);
            };
            let walk = self
                .journal
                .retained_history(self.ns, &path, self.cutoff_ms);
            self.walk = Some((walk, true));
        }
    }

    fn next_path(&mut self) -> Option<String> {
        if self.paths.is_empty() && self.more {
            let state = self.journal.state();
            match state.list(self.ns, self.cursor, PATHS_PER_PAGE) {
                None => self.more = false,
                Some(page) => {
                    debug_assert!(
                        !page.has_more || page.cursor > self.cursor,
                        "the walk moves forward"
                    );
                    self.paths = page.rows.iter().map(|r| r.path.clone()).collect();
                    self.cursor = page.cursor;
                    self.more = page.has_more;
                }
            }
        }
        self.paths.pop_front()
    }
}
