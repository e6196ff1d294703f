//! The client's books: the server's rows it knows, the merge base (the synced tree), the
//! hash cache and the list cursors, each kept in the state database and in memory. One
//! call, [`Book::apply`], writes a set of [`Entries`] to SQLite in one transaction and,
//! only once that has committed, to memory, so the two copies cannot drift: a failed
//! transaction changes neither.

use std::collections::HashMap;

use anyhow::Result;
use holdall_proto::api::{Cursors, Jid, NsId};

use crate::local::stat::HashEntry;
use crate::local::state::{Intent, State};
use crate::local::tree::{Node, RemoteNode, Tree};

/// One change to the books.
#[derive(Debug, Clone)]
enum Entry {
    Remote(NsId, String, Option<RemoteNode>),
    Synced(String, Option<Node>),
    Hash(String, Option<HashEntry>),
    Cursor(NsId, Jid),
    Intent(String, Option<Intent>),
    Deleting(String, Option<Node>),
}

/// Changes to write together.
#[derive(Debug, Default, Clone)]
pub struct Entries(Vec<Entry>);

impl Entries {
    /// No changes yet.
    pub fn new() -> Entries {
        Entries::default()
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The server holds `row` at `path` of `ns` (None: no live row).
    pub fn remote(&mut self, ns: NsId, path: &str, row: Option<RemoteNode>) -> &mut Self {
        self.0.push(Entry::Remote(ns, path.to_owned(), row));
        self
    }

    /// The merge base holds `node` at `lpath` (None: nothing).
    pub fn synced(&mut self, lpath: &str, node: Option<Node>) -> &mut Self {
        self.0.push(Entry::Synced(lpath.to_owned(), node));
        self
    }

    /// The hash cache holds `entry` for `lpath` (None: forget it).
    pub fn hash(&mut self, lpath: &str, entry: Option<HashEntry>) -> &mut Self {
        self.0.push(Entry::Hash(lpath.to_owned(), entry));
        self
    }

    /// The list cursor of `ns` moves to `jid`.
    pub fn cursor(&mut self, ns: NsId, jid: Jid) -> &mut Self {
        self.0.push(Entry::Cursor(ns, jid));
        self
    }

    /// A commit of `lpath` is on its way (None: its answer was recorded).
    pub fn intent(&mut self, lpath: &str, intent: Option<Intent>) -> &mut Self {
        self.0.push(Entry::Intent(lpath.to_owned(), intent));
        self
    }

    /// A local deletion of `lpath`, which held `node`, is under way (None: it is over).
    pub fn deleting(&mut self, lpath: &str, node: Option<Node>) -> &mut Self {
        self.0.push(Entry::Deleting(lpath.to_owned(), node));
        self
    }
}

/// The books, on disk and in memory.
pub struct Book {
    state: State,
    rows: HashMap<(NsId, String), RemoteNode>,
    synced: Tree<Node>,
    hashes: HashMap<String, HashEntry>,
    cursors: Cursors,
}

impl Book {
    /// Reads the books of `state` into memory.
    pub fn open(state: State) -> Result<Book> {
        let rows = state
            .remote_rows()?
            .into_iter()
            .map(|r| ((r.ns, r.path), r.node))
            .collect();
        Ok(Book {
            synced: state.synced()?,
            hashes: state.hashes()?,
            cursors: state.cursors()?,
            rows,
            state,
        })
    }

    /// Writes `entries` in one transaction, then to memory, in order.
    pub fn apply(&mut self, entries: Entries) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.state.write(|w| {
            for e in &entries.0 {
                match e {
                    Entry::Remote(ns, path, Some(r)) => w.put_remote(*ns, path, r)?,
                    Entry::Remote(ns, path, None) => w.delete_remote(*ns, path)?,
                    Entry::Synced(p, Some(n)) => w.put_synced(p, n)?,
                    Entry::Synced(p, None) => w.delete_synced(p)?,
                    Entry::Hash(p, Some(h)) => w.put_hash(p, h)?,
                    Entry::Hash(p, None) => w.delete_hash(p)?,
                    Entry::Cursor(ns, jid) => w.set_cursor(*ns, *jid)?,
                    Entry::Intent(p, Some(i)) => w.put_intent(p, i)?,
                    Entry::Intent(p, None) => w.delete_intent(p)?,
                    Entry::Deleting(p, Some(n)) => w.put_deleting(p, n)?,
                    Entry::Deleting(p, None) => w.delete_deleting(p)?,
                }
            }
            Ok(())
        })?;
        for e in entries.0 {
            self.remember(e);
        }
        Ok(())
    }

    /// Applies one committed entry to memory (intents and deletions live on disk only:
    /// they are read back only after a crash).
    fn remember(&mut self, e: Entry) {
        match e {
            Entry::Remote(ns, path, Some(r)) => {
                self.rows.insert((ns, path), r);
            }
            Entry::Remote(ns, path, None) => {
                self.rows.remove(&(ns, path));
            }
            Entry::Synced(p, Some(n)) => {
                self.synced.insert(p, n);
            }
            Entry::Synced(p, None) => {
                self.synced.remove(&p);
            }
            Entry::Hash(p, Some(h)) => {
                self.hashes.insert(p, h);
            }
            Entry::Hash(p, None) => {
                self.hashes.remove(&p);
            }
            Entry::Cursor(ns, jid) => {
                self.cursors.insert(ns, jid);
            }
            Entry::Intent(..) | Entry::Deleting(..) => {}
        }
    }

    /// The server's live rows this client knows, by namespace and path.
    pub fn rows(&self) -> &HashMap<(NsId, String), RemoteNode> {
        &self.rows
    }

    /// The merge base.
    pub fn synced(&self) -> &Tree<Node> {
        &self.synced
    }

    /// The hash cache.
    pub fn hashes(&self) -> &HashMap<String, HashEntry> {
        &self.hashes
    }

    /// The list cursors.
    pub fn cursors(&self) -> &Cursors {
        &self.cursors
    }

    /// The state database, for what is not in the books (meta, trash, intents read back).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The same, to write what is not in the books.
    pub fn state_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdall_proto::api::EntryKind;
    use holdall_proto::BlockHash;

    fn file(s: &str) -> Node {
        Node {
            kind: EntryKind::File,
            blocklist: vec![BlockHash::of(s.as_bytes())],
            size: s.len() as u64,
            mtime_ms: 1,
        }
    }

    fn books_on_disk(dir: &std::path::Path) -> Book {
        Book::open(State::open(dir).unwrap()).unwrap()
    }

    #[test]
    fn one_call_writes_disk_and_memory_alike() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = books_on_disk(dir.path());
        let row = RemoteNode {
            ns: 1,
            jid: 7,
            node: file("a"),
        };
        let mut e = Entries::new();
        e.remote(1, "a", Some(row.clone()))
            .synced("a", Some(file("a")))
            .hash(
                "a",
                Some(HashEntry {
                    size: 1,
                    mtime_ns: 1,
                    ctime_ns: 2,
                    racy: false,
                    inode: 3,
                    blocklist: file("a").blocklist,
                }),
            )
            .cursor(1, 7)
            .synced("gone", Some(file("g")))
            .synced("gone", None);
        book.apply(e).unwrap();
        let again = books_on_disk(dir.path());
        assert_eq!(book.rows(), again.rows());
        assert_eq!(book.synced(), again.synced());
        assert_eq!(book.hashes(), again.hashes());
        assert_eq!(book.cursors(), again.cursors());
        assert_eq!(book.rows()[&(1, "a".to_string())], row);
        assert!(
            !book.synced().contains_key("gone"),
            "entries apply in order"
        );
    }

    #[test]
    fn a_failed_transaction_changes_neither_copy() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = books_on_disk(dir.path());
        let mut e = Entries::new();
        e.synced("kept", Some(file("k")));
        book.apply(e).unwrap();
        // A database that refuses writes: the transaction fails.
        book.state_mut().refuse_writes_for_tests();
        let mut e = Entries::new();
        e.synced("kept", None).synced("new", Some(file("n")));
        assert!(book.apply(e).is_err());
        assert!(book.synced().contains_key("kept") && !book.synced().contains_key("new"));
    }
}
