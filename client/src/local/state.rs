//! The client's local state in `DIR/.holdall/state.db` (SQLite, WAL): the server's tree
//! and cursors, the synced tree (the merge base), the hash cache and the deleted-files cache.
//!
//! Every change of a sync step lands in one transaction, after the files it describes are
//! durable, so a crash loses at most the last step's bookkeeping — and the planner adopts
//! paths whose two sides agree, so that costs neither an upload nor a download.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use holdall_proto::api::{Cursors, Jid, NsId};
use holdall_proto::BlockHash;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use holdall_proto::api::EntryKind;

use crate::local::stat::HashEntry;
use crate::local::tree::{Node, RemoteNode};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (ns INTEGER PRIMARY KEY, jid INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS remote (
    ns INTEGER NOT NULL, path TEXT NOT NULL, jid INTEGER NOT NULL, kind INTEGER NOT NULL,
    blocklist BLOB NOT NULL, size INTEGER NOT NULL, mtime_ms INTEGER NOT NULL,
    PRIMARY KEY (ns, path));
CREATE TABLE IF NOT EXISTS synced (
    lpath TEXT PRIMARY KEY, kind INTEGER NOT NULL, blocklist BLOB NOT NULL,
    size INTEGER NOT NULL, mtime_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS hashes (
    lpath TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL, blocklist BLOB NOT NULL,
    ctime_ns INTEGER NOT NULL DEFAULT 0, racy INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS trash (
    id INTEGER PRIMARY KEY, blocklist BLOB NOT NULL, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deleting (
    lpath TEXT PRIMARY KEY, kind INTEGER NOT NULL, blocklist BLOB NOT NULL,
    size INTEGER NOT NULL, mtime_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS intents (
    lpath TEXT PRIMARY KEY, parent_jid INTEGER, kind INTEGER,
    blocklist BLOB NOT NULL, size INTEGER NOT NULL, mtime_ms INTEGER NOT NULL);
";

/// A commit this client sent and has not recorded the answer of: what it asked a path to
/// hold, over which row. Kept in the state before the commit is sent, removed with the
/// answer; a crash or a lost answer leaves it for the next round to settle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// The row the commit replaced (`None`: the path had none).
    pub parent_jid: Option<Jid>,
    /// What the path was to hold (`None`: a deletion).
    pub node: Option<Node>,
}

/// A file in the deleted-files cache (`.holdall/trash/<id>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrashEntry {
    /// File name under `.holdall/trash/`.
    pub id: i64,
    /// Its blocklist.
    pub blocklist: Vec<BlockHash>,
    /// Its size.
    pub size: u64,
}

/// A server row as kept locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRow {
    /// Namespace.
    pub ns: NsId,
    /// Path in the namespace.
    pub path: String,
    /// The row.
    pub node: RemoteNode,
}

/// The open state database.
pub struct State {
    conn: Connection,
}

fn blob(blocklist: &[BlockHash]) -> Vec<u8> {
    blocklist.iter().flat_map(|h| h.0).collect()
}

fn unblob(bytes: &[u8]) -> rusqlite::Result<Vec<BlockHash>> {
    if !bytes.len().is_multiple_of(32) {
        return Err(rusqlite::Error::InvalidColumnType(
            0,
            "blocklist".into(),
            rusqlite::types::Type::Blob,
        ));
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            BlockHash(h)
        })
        .collect())
}

fn kind_code(kind: EntryKind) -> i64 {
    match kind {
        EntryKind::File => 0,
        EntryKind::Dir => 1,
        EntryKind::Deleted => 2,
    }
}

fn kind_of(code: i64) -> rusqlite::Result<EntryKind> {
    match code {
        0 => Ok(EntryKind::File),
        1 => Ok(EntryKind::Dir),
        2 => Ok(EntryKind::Deleted),
        _ => Err(rusqlite::Error::IntegralValueOutOfRange(0, code)),
    }
}

/// States written before the hash cache kept ctime get the columns, ctime 0 in every old
/// entry: those never match a file's stat, so each file is hashed once more, never trusted
/// on size and mtime alone.
fn add_hash_columns(conn: &Connection) -> rusqlite::Result<()> {
    for column in ["ctime_ns", "racy"] {
        let has: bool = conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('hashes') WHERE name = ?1",
            [column],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )?;
        if !has {
            conn.execute_batch(&format!(
                "ALTER TABLE hashes ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"
            ))?;
        }
    }
    Ok(())
}

impl State {
    /// Opens (creating) the state in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<State> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let path = state_dir.join("state.db");
        let conn =
            Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        // WAL with NORMAL sync: a commit is one sequential append; a power cut may lose the
        // last few commits, which the planner recovers from (see the module doc).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Every writer statement stays prepared (parsing them cost more than the writes).
        conn.set_prepared_statement_cache_capacity(32);
        conn.execute_batch(SCHEMA)
            .with_context(|| format!("creating the tables of {}", path.display()))?;
        add_hash_columns(&conn)
            .with_context(|| format!("adding columns to the hash cache of {}", path.display()))?;
        Ok(State { conn })
    }

    /// Binds the state to one server and user, refusing another (a folder syncs with one
    /// account; reusing its state for another would mix their trees).
    pub fn bind(&self, server: &str, user: &str) -> Result<()> {
        let get = |key: &str| -> Result<Option<String>> {
            Ok(self
                .conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()?)
        };
        match (get("server")?, get("user")?) {
            (Some(s), Some(u)) if s == server && u == user => Ok(()),
            (Some(s), Some(u)) => bail!(
                "this folder syncs with user {u:?} on {s}, not {user:?} on {server}; \
                 use another folder (or delete its .holdall/ to start over)"
            ),
            _ => {
                self.conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('server', ?1), ('user', ?2)",
                    params![server, user],
                )?;
                Ok(())
            }
        }
    }

    /// This folder's device name, made up (random) the first time.
    pub fn device(&mut self) -> Result<String> {
        if let Some(d) = self.meta("device")? {
            return Ok(d);
        }
        use std::hash::{BuildHasher, Hasher};
        let half = || {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            h.write_u32(std::process::id());
            h.finish()
        };
        let device = format!("{:016x}{:016x}", half(), half());
        self.write(|w| w.set_meta("device", &device))?;
        Ok(device)
    }

    /// A free-form value (last error, counters).
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Last seen JID per namespace.
    pub fn cursors(&self) -> Result<Cursors> {
        let mut stmt = self.conn.prepare("SELECT ns, jid FROM cursors")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every live server row known.
    pub fn remote_rows(&self) -> Result<Vec<RemoteRow>> {
        let mut stmt = self
            .conn
            .prepare("SELECT ns, path, jid, kind, blocklist, size, mtime_ms FROM remote")?;
        let rows = stmt.query_map([], |r| {
            Ok(RemoteRow {
                ns: r.get::<_, i64>(0)? as u64,
                path: r.get(1)?,
                node: RemoteNode {
                    ns: r.get::<_, i64>(0)? as u64,
                    jid: r.get::<_, i64>(2)? as u64,
                    node: Node {
                        kind: kind_of(r.get(3)?)?,
                        blocklist: unblob(&r.get::<_, Vec<u8>>(4)?)?,
                        size: r.get::<_, i64>(5)? as u64,
                        mtime_ms: r.get(6)?,
                    },
                },
            })
        })?;
        rows.collect::<rusqlite::Result<_>>()
            .context("reading the server tree from the state")
    }

    /// The synced tree.
    pub fn synced(&self) -> Result<crate::local::tree::Tree<Node>> {
        self.nodes("synced")
            .context("reading the synced tree from the state")
    }

    /// Every (lpath, node) row of `table` (`synced` or `deleting`).
    fn nodes(&self, table: &str) -> Result<crate::local::tree::Tree<Node>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT lpath, kind, blocklist, size, mtime_ms FROM {table}"
        ))?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Node {
                    kind: kind_of(r.get(1)?)?,
                    blocklist: unblob(&r.get::<_, Vec<u8>>(2)?)?,
                    size: r.get::<_, i64>(3)? as u64,
                    mtime_ms: r.get(4)?,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The hash cache.
    pub fn hashes(&self) -> Result<HashMap<String, HashEntry>> {
        let mut stmt = self.conn.prepare(
            "SELECT lpath, size, mtime_ns, inode, blocklist, ctime_ns, racy FROM hashes",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                HashEntry {
                    size: r.get::<_, i64>(1)? as u64,
                    mtime_ns: r.get(2)?,
                    ctime_ns: r.get(5)?,
                    racy: r.get(6)?,
                    inode: r.get::<_, i64>(3)? as u64,
                    blocklist: unblob(&r.get::<_, Vec<u8>>(4)?)?,
                },
            ))
        })?;
        rows.collect::<rusqlite::Result<_>>()
            .context("reading the hash cache from the state")
    }

    /// The deleted-files cache, oldest first.
    pub fn trash(&self) -> Result<Vec<TrashEntry>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, blocklist, size FROM trash ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(TrashEntry {
                id: r.get(0)?,
                blocklist: unblob(&r.get::<_, Vec<u8>>(1)?)?,
                size: r.get::<_, i64>(2)? as u64,
            })
        })?;
        rows.collect::<rusqlite::Result<_>>()
            .context("reading the deleted-files cache from the state")
    }

    /// What the sync set out to delete locally and has not recorded as deleted.
    pub fn deleting(&self) -> Result<crate::local::tree::Tree<Node>> {
        self.nodes("deleting")
            .context("reading the pending local deletions from the state")
    }

    /// Commits sent whose answers are not recorded yet.
    pub fn intents(&self) -> Result<crate::local::tree::Tree<Intent>> {
        let mut stmt = self
            .conn
            .prepare("SELECT lpath, parent_jid, kind, blocklist, size, mtime_ms FROM intents")?;
        let rows = stmt.query_map([], |r| {
            let node = match r.get::<_, Option<i64>>(2)? {
                Some(code) => Some(Node {
                    kind: kind_of(code)?,
                    blocklist: unblob(&r.get::<_, Vec<u8>>(3)?)?,
                    size: r.get::<_, i64>(4)? as u64,
                    mtime_ms: r.get(5)?,
                }),
                None => None,
            };
            let parent_jid = r.get::<_, Option<i64>>(1)?.map(|j| j as Jid);
            Ok((r.get::<_, String>(0)?, Intent { parent_jid, node }))
        })?;
        rows.collect::<rusqlite::Result<_>>()
            .context("reading the commit intents from the state")
    }

    /// Makes every later write fail, as a full or broken disk would.
    #[cfg(test)]
    pub fn refuse_writes_for_tests(&mut self) {
        self.conn
            .pragma_update(None, "query_only", true)
            .expect("query_only");
    }

    /// Runs `f` in one transaction.
    pub fn write<T>(&mut self, f: impl FnOnce(&Writer<'_>) -> Result<T>) -> Result<T> {
        let tx = self.conn.transaction()?;
        let out = f(&Writer { tx: &tx })?;
        tx.commit().context("committing the client state")?;
        Ok(out)
    }
}

/// Changes inside one transaction.
pub struct Writer<'a> {
    tx: &'a Transaction<'a>,
}

impl Writer<'_> {
    /// Sets a free-form value.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.tx
            .prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
            .execute(params![key, value])?;
        Ok(())
    }

    /// Records the cursor of `ns`.
    pub fn set_cursor(&self, ns: NsId, jid: Jid) -> Result<()> {
        self.tx
            .prepare_cached("INSERT OR REPLACE INTO cursors (ns, jid) VALUES (?1, ?2)")?
            .execute(params![ns as i64, jid as i64])?;
        Ok(())
    }

    /// Records a live server row.
    pub fn put_remote(&self, ns: NsId, path: &str, r: &RemoteNode) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO remote (ns, path, jid, kind, blocklist, size, mtime_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                ns as i64,
                path,
                r.jid as i64,
                kind_code(r.node.kind),
                blob(&r.node.blocklist),
                r.node.size as i64,
                r.node.mtime_ms
            ])?;
        Ok(())
    }

    /// Forgets a server row (the path was deleted).
    pub fn delete_remote(&self, ns: NsId, path: &str) -> Result<()> {
        self.tx
            .prepare_cached("DELETE FROM remote WHERE ns = ?1 AND path = ?2")?
            .execute(params![ns as i64, path])?;
        Ok(())
    }

    /// Records what both sides agree `lpath` holds.
    pub fn put_synced(&self, lpath: &str, n: &Node) -> Result<()> {
        self.put_node(
            "INSERT OR REPLACE INTO synced (lpath, kind, blocklist, size, mtime_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            lpath,
            n,
        )
    }

    /// Runs `sql`, an insert of an (lpath, node) row into `synced` or `deleting`.
    fn put_node(&self, sql: &str, lpath: &str, n: &Node) -> Result<()> {
        self.tx.prepare_cached(sql)?.execute(params![
            lpath,
            kind_code(n.kind),
            blob(&n.blocklist),
            n.size as i64,
            n.mtime_ms
        ])?;
        Ok(())
    }

    /// Both sides agree `lpath` holds nothing.
    pub fn delete_synced(&self, lpath: &str) -> Result<()> {
        self.tx
            .prepare_cached("DELETE FROM synced WHERE lpath = ?1")?
            .execute([lpath])?;
        Ok(())
    }

    /// Records that the sync is about to delete `n` at `lpath` locally.
    pub fn put_deleting(&self, lpath: &str, n: &Node) -> Result<()> {
        self.put_node(
            "INSERT OR REPLACE INTO deleting (lpath, kind, blocklist, size, mtime_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            lpath,
            n,
        )
    }

    /// The local deletion of `lpath` is recorded (or settled).
    pub fn delete_deleting(&self, lpath: &str) -> Result<()> {
        self.tx
            .prepare_cached("DELETE FROM deleting WHERE lpath = ?1")?
            .execute([lpath])?;
        Ok(())
    }

    /// Records a commit about to be sent (a deletion when `intent.node` is none).
    pub fn put_intent(&self, lpath: &str, intent: &Intent) -> Result<()> {
        let empty = Node::dir();
        let n = intent.node.as_ref().unwrap_or(&empty);
        self.tx.prepare_cached(
            "INSERT OR REPLACE INTO intents (lpath, parent_jid, kind, blocklist, size, mtime_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(
            params![
                lpath,
                intent.parent_jid.map(|j| j as i64),
                intent.node.as_ref().map(|n| kind_code(n.kind)),
                blob(&n.blocklist),
                n.size as i64,
                n.mtime_ms
            ],
        )?;
        Ok(())
    }

    /// The commit's answer is recorded (or the intent is settled).
    pub fn delete_intent(&self, lpath: &str) -> Result<()> {
        self.tx
            .prepare_cached("DELETE FROM intents WHERE lpath = ?1")?
            .execute([lpath])?;
        Ok(())
    }

    /// Caches a file's blocklist.
    pub fn put_hash(&self, lpath: &str, h: &HashEntry) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO hashes
                 (lpath, size, mtime_ns, inode, blocklist, ctime_ns, racy)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                lpath,
                h.size as i64,
                h.mtime_ns,
                h.inode as i64,
                blob(&h.blocklist),
                h.ctime_ns,
                h.racy
            ])?;
        Ok(())
    }

    /// Drops a cached blocklist.
    pub fn delete_hash(&self, lpath: &str) -> Result<()> {
        self.tx
            .prepare_cached("DELETE FROM hashes WHERE lpath = ?1")?
            .execute([lpath])?;
        Ok(())
    }

    /// Adds a file to the deleted-files cache; returns its id.
    pub fn add_trash(&self, blocklist: &[BlockHash], size: u64) -> Result<i64> {
        self.tx
            .prepare_cached("INSERT INTO trash (blocklist, size) VALUES (?1, ?2)")?
            .execute(params![blob(blocklist), size as i64])?;
        Ok(self.tx.last_insert_rowid())
    }

    /// Drops a file from the deleted-files cache.
    pub fn delete_trash(&self, id: i64) -> Result<()> {
        self.tx
            .prepare_cached("DELETE FROM trash WHERE id = ?1")?
            .execute([id])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_written_reads_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let h = BlockHash::of(b"x");
        {
            let mut s = State::open(dir.path()).unwrap();
            s.bind("http://a", "ann").unwrap();
            s.write(|w| {
                w.set_cursor(3, 9)?;
                w.put_remote(
                    3,
                    "p",
                    &RemoteNode {
                        ns: 3,
                        jid: 9,
                        node: Node::file(vec![h], 1, 5),
                    },
                )?;
                w.put_synced("p", &Node::file(vec![h], 1, 5))?;
                w.put_synced("d", &Node::dir())?;
                w.put_hash(
                    "p",
                    &HashEntry {
                        size: 1,
                        mtime_ns: 7,
                        ctime_ns: 6,
                        inode: 8,
                        racy: true,
                        blocklist: vec![h],
                    },
                )?;
                w.add_trash(&[h, h], 2)?;
                w.put_intent(
                    "p",
                    &Intent {
                        parent_jid: Some(9),
                        node: Some(Node::file(vec![h], 1, 5)),
                    },
                )?;
                w.put_intent(
                    "gone",
                    &Intent {
                        parent_jid: Some(4),
                        node: None,
                    },
                )?;
                w.put_intent(
                    "new",
                    &Intent {
                        parent_jid: None,
                        node: Some(Node::dir()),
                    },
                )?;
                w.delete_intent("new")?;
                w.put_deleting("d", &Node::dir())?;
                w.put_deleting("q", &Node::file(vec![h], 1, 5))?;
                w.delete_deleting("q")?;
                Ok(())
            })
            .unwrap();
        }
        let s = State::open(dir.path()).unwrap();
        s.bind("http://a", "ann").unwrap();
        assert!(
            s.bind("http://a", "bob").is_err(),
            "another user is refused"
        );
        assert_eq!(s.cursors().unwrap(), [(3, 9)].into());
        let rows = s.remote_rows().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].node.node.blocklist, vec![h]);
        assert_eq!(s.synced().unwrap().len(), 2);
        assert_eq!(s.hashes().unwrap()["p"].inode, 8);
        assert_eq!(s.hashes().unwrap()["p"].ctime_ns, 6);
        assert!(s.hashes().unwrap()["p"].racy);
        assert_eq!(s.trash().unwrap()[0].blocklist, vec![h, h]);
        assert_eq!(
            s.deleting().unwrap(),
            [("d".to_string(), Node::dir())].into()
        );
        let intents = s.intents().unwrap();
        assert_eq!(intents.len(), 2);
        assert_eq!(intents["p"].node, Some(Node::file(vec![h], 1, 5)));
        assert_eq!(
            intents["gone"],
            Intent {
                parent_jid: Some(4),
                node: None
            }
        );
    }

    #[test]
    fn a_damaged_blocklist_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        s.conn
            .execute("INSERT INTO synced VALUES ('x', 0, x'0102', 2, 0)", [])
            .unwrap();
        assert!(s.synced().is_err());
    }

    #[test]
    fn a_hash_cache_without_ctime_gains_it_and_old_entries_never_match() {
        let dir = tempfile::tempdir().unwrap();
        let h = BlockHash::of(b"x");
        {
            let conn = Connection::open(dir.path().join("state.db")).unwrap();
            conn.execute_batch(
                "CREATE TABLE hashes (lpath TEXT PRIMARY KEY, size INTEGER NOT NULL,
                 mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, blocklist BLOB NOT NULL)",
            )
            .unwrap();
            conn.execute("INSERT INTO hashes VALUES ('p', 1, 7, 8, ?1)", [blob(&[h])])
                .unwrap();
        }
        let mut s = State::open(dir.path()).unwrap();
        let old = &s.hashes().unwrap()["p"];
        assert_eq!(
            (old.size, old.mtime_ns, old.inode, old.ctime_ns),
            (1, 7, 8, 0)
        );
        assert_eq!(old.blocklist, vec![h]);
        assert!(!old.racy);
        let now = crate::local::stat::Stat {
            size: 1,
            mtime_ns: 7,
            ctime_ns: 9,
            inode: 8,
        };
        assert!(!now.matches(old), "an entry without ctime is hashed again");
        s.write(|w| w.put_hash("p", &now.entry(vec![h]))).unwrap();
        drop(s);
        let s = State::open(dir.path()).unwrap();
        assert!(
            now.matches(&s.hashes().unwrap()["p"]),
            "opening twice keeps the column"
        );
    }
}
