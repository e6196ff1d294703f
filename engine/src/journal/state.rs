//! The Server File Journal's in-memory state: namespaces with their latest row per path and
//! those rows ordered by JID, users, tokens and mounts. Pure and deterministic: the journal
//! feeds it records read from disk or just made durable; checks run before anything is
//! written, against this state plus what the same group commit already took.

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashMap, HashSet, HashTable};

use holdall_proto::api::{EntryKind, Jid, NsId};
use holdall_proto::content_hash::block_count;
use holdall_proto::{validate_path, BlockHash, FileVersion, PathError};

use crate::journal::record::{Author, JournalRecord, NamespaceKind, Row, UserId};

/// A commit asked of the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Namespace.
    pub ns: NsId,
    /// Path relative to the namespace root.
    pub path: String,
    /// What the path is to hold.
    pub version: FileVersion,
    /// The path's latest JID as the committer knows it; `None`: the path must not exist or
    /// be deleted.
    pub parent_jid: Option<Jid>,
    /// Who commits it.
    pub author: Author,
}

impl Commit {
    /// The checks that need no state: the path's rules, and a blocklist that fits the size
    /// of a file (folders and deletions have neither).
    pub fn check_shape(&self) -> Result<(), CommitInvalid> {
        validate_path(&self.path)?;
        match self.version.kind {
            EntryKind::File => {
                let expected = block_count(self.version.size);
                if self.version.blocklist.len() as u64 != expected {
                    return Err(CommitInvalid::BlocklistDoesNotFitSize {
                        blocks: self.version.blocklist.len(),
                        expected,
                        size: self.version.size,
                    });
                }
            }
            kind => {
                if !self.version.blocklist.is_empty() || self.version.size != 0 {
                    return Err(CommitInvalid::NotAFile(kind));
                }
            }
        }
        Ok(())
    }
}

/// Why a commit cannot be taken at all (as opposed to a conflict).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitInvalid {
    /// No such namespace in this journal.
    #[error("unknown namespace {0}")]
    UnknownNamespace(NsId),
    /// The path breaks a rule.
    #[error("bad path: {0}")]
    BadPath(#[from] PathError),
    /// A file's block count does not fit its size.
    #[error("a file of {size} bytes has {expected} blocks, the blocklist has {blocks}")]
    BlocklistDoesNotFitSize {
        /// Blocks given.
        blocks: usize,
        /// Blocks the size implies.
        expected: u64,
        /// Size given.
        size: u64,
    },
    /// A folder or deletion with blocks or a size.
    #[error("a {0:?} has no blocks and no size")]
    NotAFile(EntryKind),
}

/// What became of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Durable as this JID.
    Ok {
        /// The new row's JID.
        jid: Jid,
    },
    /// `parent_jid` is not the path's latest JID.
    Conflict {
        /// The path's latest JID.
        current_jid: Option<Jid>,
    },
    /// Refused.
    Invalid(CommitInvalid),
    /// Not written: another commit of its all-or-nothing batch was refused.
    NotWritten,
}

/// Why an admin record cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordInvalid {
    /// User id taken.
    #[error("user id {0} exists")]
    UserExists(UserId),
    /// User name taken.
    #[error("user name {0:?} exists")]
    NameTaken(String),
    /// Empty, over-long, or with `/` or control characters.
    #[error("user name must be 1 to 64 characters without '/' or control characters")]
    BadName,
    /// Token already registered.
    #[error("token exists")]
    TokenExists,
    /// No live token with that SHA-256.
    #[error("no such token")]
    NoSuchToken,
    /// Namespace id taken (or 0).
    #[error("namespace {0} exists")]
    NamespaceExists(NsId),
    /// The user already has something mounted at that path, or has that namespace mounted.
    #[error("user {user} already has a mount at {path:?} or of namespace {ns}")]
    MountTaken {
        /// User.
        user: UserId,
        /// Namespace.
        ns: NsId,
        /// Path.
        path: String,
    },
    /// Rows go through commits.
    #[error("rows are written by commits")]
    RowNotAllowed,
    /// A record about a user who does not exist.
    #[error("no user {0}")]
    NoSuchUser(UserId),
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Unique name.
    pub name: String,
    /// Root namespace.
    pub root_ns: NsId,
    /// May call admin endpoints.
    pub admin: bool,
}

/// A namespace and its rows.
#[derive(Debug, Default)]
pub struct Namespace {
    /// Creator.
    pub owner: UserId,
    /// Root or shared.
    pub shared: bool,
    last_jid: Jid,
    /// JID of each path's latest row with the path's hash; the path itself is compared
    /// with the row's own, so it is kept once (in the row), not twice.
    latest: HashTable<(Jid, u64)>,
    hasher: DefaultHashBuilder,
    /// Latest rows in JID order; a superseded row leaves a `None` until compaction. JIDs only
    /// grow, so appending keeps the order and lookups are binary searches.
    rows: Vec<(Jid, Option<Row>)>,
    live: usize,
    /// Block → how many live rows list it: what the namespace's readers may fetch, and what
    /// a commit may claim without uploading (the Dropship rule).
    blocks: HashMap<BlockHash, u32>,
    /// Logical bytes of the live files: what the namespace counts against its owner's quota.
    live_bytes: u64,
}

/// The path of live row `jid` of `rows` (kept in JID order).
fn path_of(rows: &[(Jid, Option<Row>)], jid: Jid) -> Option<&str> {
    let i = rows.binary_search_by_key(&jid, |(j, _)| *j).ok()?;
    rows[i].1.as_ref().map(|r| r.path.as_str())
}

impl Namespace {
    /// Root or shared, as recorded.
    pub fn kind(&self) -> NamespaceKind {
        if self.shared {
            NamespaceKind::Shared
        } else {
            NamespaceKind::Root
        }
    }

    /// The highest JID committed.
    pub fn last_jid(&self) -> Jid {
        self.last_jid
    }

    /// Live rows (latest version of each path).
    pub fn len(&self) -> usize {
        self.live
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Whether a live row of this namespace lists `hash`.
    pub fn references(&self, hash: &BlockHash) -> bool {
        self.blocks.contains_key(hash)
    }

    /// The latest row of every path, deletions included, in JID order.
    pub fn latest_rows(&self) -> impl Iterator<Item = &Row> {
        self.live_rows_after(0)
    }

    /// Logical bytes of the latest versions of its files.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Distinct blocks listed by live rows.
    pub fn blocks_referenced(&self) -> usize {
        self.blocks.len()
    }

    fn position(&self, jid: Jid) -> Result<usize, usize> {
        self.rows.binary_search_by_key(&jid, |(j, _)| *j)
    }

    /// The JID of `path`'s latest row.
    fn latest_jid(&self, path: &str) -> Option<Jid> {
        let (rows, hash) = (&self.rows, self.hasher.hash_one(path));
        self.latest
            .find(hash, |&(jid, h)| {
                h == hash && path_of(rows, jid) == Some(path)
            })
            .map(|&(jid, _)| jid)
    }

    /// Makes room for `additional` more paths.
    fn reserve_paths(&mut self, additional: usize) {
        self.latest.reserve(additional, |&(_, hash)| hash);
    }

    fn row(&self, jid: Jid) -> Option<&Row> {
        let i = self.position(jid).ok()?;
        self.rows[i].1.as_ref()
    }

    fn live_rows_after(&self, cursor: Jid) -> impl Iterator<Item = &Row> {
        let start = match self.position(cursor) {
            Ok(i) => i + 1,
            Err(i) => i,
        };
        self.rows[start..].iter().filter_map(|(_, r)| r.as_ref())
    }

    fn push(&mut self, row: Row) {
        debug_assert!(row.jid > self.last_jid);
        self.last_jid = row.jid;
        let (jid, hash) = (row.jid, self.hasher.hash_one(row.path.as_str()));
        let rows = &self.rows;
        let replaced = self
            .latest
            .find_mut(hash, |&(j, h)| {
                h == hash && path_of(rows, j) == Some(row.path.as_str())
            })
            .map(|slot| std::mem::replace(&mut slot.0, jid));
        if let Some(old) = replaced {
            if let Ok(i) = self.position(old) {
                if let Some(old_row) = self.rows[i].1.take() {
                    self.live_bytes -= old_row.version.counted_bytes();
                    for hash in &old_row.version.blocklist {
                        if let hashbrown::hash_map::Entry::Occupied(mut e) =
                            self.blocks.entry(*hash)
                        {
                            *e.get_mut() -= 1;
                            if *e.get() == 0 {
                                e.remove();
                            }
                        }
                    }
                }
                self.live -= 1;
            }
        }
        for hash in &row.version.blocklist {
            *self.blocks.entry(*hash).or_default() += 1;
        }
        self.live_bytes += row.version.counted_bytes();
        self.rows.push((jid, Some(row)));
        self.live += 1;
        if replaced.is_none() {
            self.latest.insert_unique(hash, (jid, hash), |&(_, h)| h);
        }
        if self.rows.len() > 1024 && self.live < self.rows.len() / 2 {
            self.rows.retain(|(_, r)| r.is_some());
        }
    }
}

/// How many rows, and blocks in them, each namespace is about to get: for sizing its maps
/// once before a load instead of growing them row by row.
#[derive(Debug, Default)]
pub struct Sizing(HashMap<NsId, (usize, usize)>);

impl Sizing {
    /// Counts a row of `ns` listing `blocks` blocks.
    pub fn add(&mut self, ns: NsId, blocks: usize) {
        let n = self.0.entry(ns).or_default();
        n.0 += 1;
        n.1 += blocks;
    }
}

/// One page of `list`.
#[derive(Debug)]
pub struct ListPage<'a> {
    /// Latest rows with JID above the cursor, by JID.
    pub rows: Vec<&'a Row>,
    /// The cursor to send next.
    pub cursor: Jid,
    /// More rows wait.
    pub has_more: bool,
}

/// A live bearer token: whose it is and what it was made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Whose token.
    pub user: UserId,
    /// The device it was made for; empty for an account's first token.
    pub device: String,
    /// When it was made, ms since the Unix epoch; 0 when unknown (older records).
    pub created_ms: u64,
}

/// The SFJ state of one shard.
#[derive(Debug, Default)]
pub struct State {
    namespaces: HashMap<NsId, Namespace>,
    users: HashMap<UserId, User>,
    user_names: HashMap<String, UserId>,
    tokens: HashMap<[u8; 32], TokenInfo>,
    mounts: BTreeMap<UserId, Vec<(NsId, String)>>,
    quotas: HashMap<UserId, u64>,
    disabled: HashSet<UserId>,
    /// Owner → logical bytes of the live files in the namespaces they own here.
    usage: HashMap<UserId, u64>,
    rows_total: u64,
    skipped_records: u64,
}

/// What a group commit has taken so far, for checking the next commit of the same group.
#[derive(Debug, Default, Clone)]
pub struct Pending {
    last_jid: HashMap<NsId, Jid>,
    latest: HashMap<(NsId, String), (Jid, EntryKind)>,
    committed_ms: u64,
}

impl Pending {
    /// A group committed at `committed_ms` (the server's clock, ms since the epoch).
    pub fn at(committed_ms: u64) -> Pending {
        Pending {
            committed_ms,
            ..Pending::default()
        }
    }
}

/// Whether `name` may name a user: 1 to 64 characters, no `/` and no control characters.
pub fn valid_user_name(name: &str) -> bool {
    (1..=64).contains(&name.chars().count()) && !name.chars().any(|c| c == '/' || c.is_control())
}

impl State {
    /// The namespace `ns`, if this journal holds it.
    pub fn namespace(&self, ns: NsId) -> Option<&Namespace> {
        self.namespaces.get(&ns)
    }

    /// Namespace ids held.
    pub fn namespace_ids(&self) -> impl Iterator<Item = NsId> + '_ {
        self.namespaces.keys().copied()
    }

    /// The latest row of `path` in `ns`.
    pub fn latest(&self, ns: NsId, path: &str) -> Option<&Row> {
        let n = self.namespaces.get(&ns)?;
        n.row(n.latest_jid(path)?)
    }

    /// The row `jid` of `ns`, if it is still the latest of its path.
    pub fn row(&self, ns: NsId, jid: Jid) -> Option<&Row> {
        self.namespaces.get(&ns)?.row(jid)
    }

    /// Latest rows of `ns` with a JID above `cursor`, at most `limit`.
    pub fn list(&self, ns: NsId, cursor: Jid, limit: usize) -> Option<ListPage<'_>> {
        let n = self.namespaces.get(&ns)?;
        let mut rows = Vec::with_capacity(limit.min(1024));
        let mut iter = n.live_rows_after(cursor);
        for row in iter.by_ref().take(limit) {
            rows.push(row);
        }
        let has_more = iter.next().is_some();
        let next = match rows.last() {
            Some(r) if has_more => r.jid,
            _ => n.last_jid.max(cursor),
        };
        Some(ListPage {
            rows,
            cursor: next,
            has_more,
        })
    }

    /// Forgets the file location of every latest row that lives in a journal file older
    /// than `generation` (removed, or about to be): the path's next commit then writes the
    /// row again, as an `Earlier` copy, for its history to point at. How many it forgot.
    pub fn forget_locations_before(&mut self, generation: u64) -> u64 {
        let mut forgotten = 0;
        for n in self.namespaces.values_mut() {
            for row in n.rows.iter_mut().filter_map(|(_, r)| r.as_mut()) {
                if row.at.is_some_and(|at| at.generation < generation) {
                    row.at = None;
                    forgotten += 1;
                }
            }
        }
        forgotten
    }

    /// Whether `ns` has a live row (not a deletion) at `path` or below it.
    pub fn path_in_use(&self, ns: NsId, path: &str) -> bool {
        let Some(n) = self.namespaces.get(&ns) else {
            return false;
        };
        let below = format!("{path}/");
        n.latest_rows().any(|r| {
            (r.path == path || r.path.starts_with(&below)) && r.version.kind != EntryKind::Deleted
        })
    }

    /// A user by id.
    pub fn user(&self, id: UserId) -> Option<&User> {
        self.users.get(&id)
    }

    /// A user by name.
    pub fn user_by_name(&self, name: &str) -> Option<&User> {
        self.users.get(self.user_names.get(name)?)
    }

    /// The user whose token hashes to `token_sha256`.
    pub fn user_by_token(&self, token_sha256: &[u8; 32]) -> Option<&User> {
        self.users.get(&self.tokens.get(token_sha256)?.user)
    }

    /// `user`'s live tokens, by their SHA-256.
    pub fn tokens_of(&self, user: UserId) -> Vec<([u8; 32], &TokenInfo)> {
        self.tokens
            .iter()
            .filter(|(_, t)| t.user == user)
            .map(|(sha, t)| (*sha, t))
            .collect()
    }

    /// `user`'s quota in bytes, if they have one.
    pub fn quota(&self, user: UserId) -> Option<u64> {
        self.quotas.get(&user).copied()
    }

    /// Whether `user` is disabled (their tokens are refused).
    pub fn is_disabled(&self, user: UserId) -> bool {
        self.disabled.contains(&user)
    }

    /// Every user, by id.
    pub fn users(&self) -> Vec<&User> {
        let mut users: Vec<&User> = self.users.values().collect();
        users.sort_by_key(|u| u.id);
        users
    }

    /// Logical bytes of the live files here of every owner that has any.
    pub fn usage_by_owner(&self) -> HashMap<UserId, u64> {
        self.usage.clone()
    }

    /// Logical bytes of the latest versions of the files in the namespaces `user` owns that
    /// this state holds.
    pub fn usage(&self, user: UserId) -> u64 {
        self.usage.get(&user).copied().unwrap_or(0)
    }

    /// Namespaces mounted in `user`'s root, with their paths.
    pub fn mounts(&self, user: UserId) -> &[(NsId, String)] {
        self.mounts.get(&user).map_or(&[], Vec::as_slice)
    }

    /// Highest user id and namespace id seen, for allocating new ones.
    pub fn max_ids(&self) -> (UserId, NsId) {
        (
            self.users.keys().copied().max().unwrap_or(0),
            self.namespaces.keys().copied().max().unwrap_or(0),
        )
    }

    /// Rows applied (all versions), since the state was built.
    pub fn rows_total(&self) -> u64 {
        self.rows_total
    }

    /// Records from disk that broke a rule and were left out.
    pub fn skipped_records(&self) -> u64 {
        self.skipped_records
    }

    /// Checks `c` against this state and `pending`; on success records it in `pending` and
    /// returns the row to write.
    pub fn check_commit(&self, c: &Commit, pending: &mut Pending) -> Result<Row, CommitOutcome> {
        let invalid = |e: CommitInvalid| CommitOutcome::Invalid(e);
        let ns = self
            .namespaces
            .get(&c.ns)
            .ok_or(invalid(CommitInvalid::UnknownNamespace(c.ns)))?;
        c.check_shape().map_err(invalid)?;
        let key = (c.ns, c.path.clone());
        let current = match pending.latest.get(&key) {
            Some(&(jid, kind)) => Some((jid, kind)),
            None => ns
                .latest_jid(&c.path)
                .and_then(|jid| ns.row(jid))
                .map(|r| (r.jid, r.version.kind)),
        };
        let parent_ok = match (c.parent_jid, current) {
            (None, None) => true,
            (None, Some((_, kind))) => kind == EntryKind::Deleted,
            (Some(p), Some((jid, _))) => p == jid,
            (Some(_), None) => false,
        };
        if !parent_ok {
            return Err(CommitOutcome::Conflict {
                current_jid: current.map(|(jid, _)| jid),
            });
        }
        let last = pending.last_jid.get(&c.ns).copied().unwrap_or(ns.last_jid);
        let jid = last + 1;
        pending.last_jid.insert(c.ns, jid);
        pending.latest.insert(key, (jid, c.version.kind));
        Ok(Row {
            ns: c.ns,
            jid,
            path: c.path.clone(),
            version: c.version.clone(),
            committed_ms: pending.committed_ms,
            author: c.author.clone(),
            prev: None,
            at: None,
        })
    }

    /// Checks admin records (users, tokens, namespaces, mounts) in order, each against this
    /// state and the records before it.
    pub fn check_records(&self, records: &[JournalRecord]) -> Result<(), RecordInvalid> {
        let mut scratch = Vec::new();
        for r in records {
            self.check_record(r, &scratch)?;
            scratch.push(r);
        }
        Ok(())
    }

    fn check_record(
        &self,
        r: &JournalRecord,
        earlier: &[&JournalRecord],
    ) -> Result<(), RecordInvalid> {
        let earlier_has = |f: &dyn Fn(&JournalRecord) -> bool| earlier.iter().any(|e| f(e));
        match r {
            JournalRecord::Row(_) | JournalRecord::Earlier(_) => {
                return Err(RecordInvalid::RowNotAllowed)
            }
            JournalRecord::User { id, name, .. } => {
                if self.users.contains_key(id)
                    || earlier_has(&|e| matches!(e, JournalRecord::User { id: i, .. } if i == id))
                {
                    return Err(RecordInvalid::UserExists(*id));
                }
                if !valid_user_name(name) {
                    return Err(RecordInvalid::BadName);
                }
                if self.user_names.contains_key(name)
                    || earlier_has(
                        &|e| matches!(e, JournalRecord::User { name: n, .. } if n == name),
                    )
                {
                    return Err(RecordInvalid::NameTaken(name.clone()));
                }
            }
            JournalRecord::Token { token_sha256, .. }
            | JournalRecord::DeviceToken { token_sha256, .. } => {
                let same = |e: &JournalRecord| match e {
                    JournalRecord::Token {
                        token_sha256: t, ..
                    }
                    | JournalRecord::DeviceToken {
                        token_sha256: t, ..
                    } => t == token_sha256,
                    _ => false,
                };
                if self.tokens.contains_key(token_sha256) || earlier_has(&same) {
                    return Err(RecordInvalid::TokenExists);
                }
            }
            JournalRecord::TokenRevoked { token_sha256 } => {
                if !self.tokens.contains_key(token_sha256) {
                    return Err(RecordInvalid::NoSuchToken);
                }
            }
            JournalRecord::Namespace { id, .. } => {
                if *id == 0
                    || self.namespaces.contains_key(id)
                    || earlier_has(
                        &|e| matches!(e, JournalRecord::Namespace { id: i, .. } if i == id),
                    )
                {
                    return Err(RecordInvalid::NamespaceExists(*id));
                }
            }
            JournalRecord::Quota { user, .. } | JournalRecord::UserDisabled { user, .. } => {
                let created =
                    earlier_has(&|e| matches!(e, JournalRecord::User { id, .. } if id == user));
                if !self.users.contains_key(user) && !created {
                    return Err(RecordInvalid::NoSuchUser(*user));
                }
            }
            JournalRecord::Mount { user, ns, path } => {
                let clash = |(n, p): (&NsId, &String)| n == ns || p == path;
                let taken = self.mounts(*user).iter().any(|(n, p)| clash((n, p)))
                    || earlier_has(
                        &|e| matches!(e, JournalRecord::Mount { user: u, ns: n, path: p } if u == user && clash((n, p))),
                    );
                if taken {
                    return Err(RecordInvalid::MountTaken {
                        user: *user,
                        ns: *ns,
                        path: path.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Applies durable records in order, sizing each namespace's maps for its rows first.
    pub fn apply_all(&mut self, records: Vec<JournalRecord>) {
        let mut sizing = Sizing::default();
        for r in &records {
            if let JournalRecord::Row(row) = r {
                sizing.add(row.ns, row.version.blocklist.len());
            }
        }
        let mut sizing = Some(sizing);
        for r in records {
            self.apply_sized(r, &mut sizing);
        }
    }

    /// Applies `record`; before the first row, sizes the namespaces' maps by `sizing`
    /// (taken, so it is used once).
    pub fn apply_sized(&mut self, record: JournalRecord, sizing: &mut Option<Sizing>) {
        if matches!(record, JournalRecord::Row(_)) {
            if let Some(sizing) = sizing.take() {
                self.reserve(sizing);
            }
        }
        self.apply(record);
    }

    // Namespaces come before their rows in snapshots; in journal files they exist already
    // or are created by an earlier record of the same batch.
    fn reserve(&mut self, sizing: Sizing) {
        for (ns, (rows, blocks)) in sizing.0 {
            if let Some(namespace) = self.namespaces.get_mut(&ns) {
                // A namespace loaded from scratch (a snapshot) gets every row once: its
                // blocks are about the rows' blocks. Replayed rows may supersede each other,
                // so their blocks are not counted in advance.
                if namespace.rows.is_empty() {
                    namespace.blocks.reserve(blocks);
                }
                namespace.reserve_paths(rows);
                namespace.rows.reserve(rows);
            }
        }
    }

    /// Applies a durable record. Records that break a rule (possible only if the files were
    /// damaged or edited) are counted and left out, so one bad record cannot stop a start.
    pub fn apply(&mut self, record: JournalRecord) {
        let ok = match record {
            JournalRecord::Row(row) => self.apply_row(row),
            JournalRecord::Earlier(_) => true,
            JournalRecord::User {
                id,
                name,
                root_ns,
                admin,
            } => {
                let free = !self.users.contains_key(&id) && !self.user_names.contains_key(&name);
                if free {
                    self.user_names.insert(name.clone(), id);
                    self.users.insert(
                        id,
                        User {
                            id,
                            name,
                            root_ns,
                            admin,
                        },
                    );
                }
                free
            }
            JournalRecord::Token { user, token_sha256 } => {
                let info = TokenInfo {
                    user,
                    device: String::new(),
                    created_ms: 0,
                };
                self.tokens.insert(token_sha256, info).is_none()
            }
            JournalRecord::DeviceToken {
                user,
                token_sha256,
                device,
                created_ms,
            } => {
                let info = TokenInfo {
                    user,
                    device,
                    created_ms,
                };
                self.tokens.insert(token_sha256, info).is_none()
            }
            JournalRecord::TokenRevoked { token_sha256 } => {
                self.tokens.remove(&token_sha256).is_some()
            }
            JournalRecord::Namespace { id, owner, kind } => {
                let free = id != 0 && !self.namespaces.contains_key(&id);
                if free {
                    self.namespaces.insert(
                        id,
                        Namespace {
                            owner,
                            shared: kind == NamespaceKind::Shared,
                            ..Namespace::default()
                        },
                    );
                }
                free
            }
            JournalRecord::Mount { user, ns, path } => {
                let mounts = self.mounts.entry(user).or_default();
                let free = !mounts.iter().any(|(n, p)| *n == ns || *p == path);
                if free {
                    mounts.push((ns, path));
                }
                free
            }
            JournalRecord::Quota { user, bytes } => {
                let known = self.users.contains_key(&user);
                match bytes {
                    Some(b) if known => self.quotas.insert(user, b),
                    _ => self.quotas.remove(&user),
                };
                known
            }
            JournalRecord::UserDisabled { user, disabled } => {
                let known = self.users.contains_key(&user);
                if known && disabled {
                    self.disabled.insert(user);
                } else {
                    self.disabled.remove(&user);
                }
                known
            }
        };
        if !ok {
            self.skipped_records += 1;
        }
    }

    fn apply_row(&mut self, row: Row) -> bool {
        let Some(ns) = self.namespaces.get_mut(&row.ns) else {
            return false;
        };
        if row.jid <= ns.last_jid {
            return false;
        }
        let before = ns.live_bytes;
        ns.push(row);
        // Folders and deletions of nothing change no usage: no map entry to touch.
        if ns.live_bytes != before {
            let usage = self.usage.entry(ns.owner).or_default();
            *usage = *usage + ns.live_bytes - before;
        }
        self.rows_total += 1;
        true
    }

    /// Every record needed to rebuild this state: users, tokens, namespaces, mounts, then the
    /// latest row of every path (superseded rows stay in the journal files).
    pub fn snapshot_records(&self) -> impl Iterator<Item = JournalRecord> + '_ {
        let users = self.users.values().map(|u| JournalRecord::User {
            id: u.id,
            name: u.name.clone(),
            root_ns: u.root_ns,
            admin: u.admin,
        });
        let tokens = self
            .tokens
            .iter()
            .map(|(t, info)| JournalRecord::DeviceToken {
                user: info.user,
                token_sha256: *t,
                device: info.device.clone(),
                created_ms: info.created_ms,
            });
        let namespaces = self
            .namespaces
            .iter()
            .map(|(id, n)| JournalRecord::Namespace {
                id: *id,
                owner: n.owner,
                kind: if n.shared {
                    NamespaceKind::Shared
                } else {
                    NamespaceKind::Root
                },
            });
        let mounts = self.mounts.iter().flat_map(|(user, ms)| {
            ms.iter().map(move |(ns, path)| JournalRecord::Mount {
                user: *user,
                ns: *ns,
                path: path.clone(),
            })
        });
        let quotas = self.quotas.iter().map(|(u, b)| JournalRecord::Quota {
            user: *u,
            bytes: Some(*b),
        });
        let disabled = self.disabled.iter().map(|u| JournalRecord::UserDisabled {
            user: *u,
            disabled: true,
        });
        let rows = self
            .namespaces
            .values()
            .flat_map(|n| n.live_rows_after(0).cloned().map(JournalRecord::Row));
        users
            .chain(tokens)
            .chain(namespaces)
            .chain(mounts)
            .chain(quotas)
            .chain(disabled)
            .chain(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdall_proto::limits::BLOCK_BYTES_MAX;

    fn state_with_ns(ns: NsId) -> State {
        let mut s = State::default();
        s.apply(JournalRecord::Namespace {
            id: ns,
            owner: 1,
            kind: NamespaceKind::Root,
        });
        s
    }

    fn file(ns: NsId, path: &str, parent: Option<Jid>) -> Commit {
        Commit {
            ns,
            path: path.into(),
            version: FileVersion {
                kind: EntryKind::File,
                blocklist: vec![BlockHash::of(path.as_bytes())],
                size: 10,
                mtime_ms: 0,
            },
            parent_jid: parent,
            author: Author::default(),
        }
    }

    fn commit(s: &mut State, c: &Commit) -> Result<Jid, CommitOutcome> {
        let row = s.check_commit(c, &mut Pending::default())?;
        let jid = row.jid;
        s.apply(JournalRecord::Row(row));
        Ok(jid)
    }

    #[test]
    fn parent_jid_rules() {
        let mut s = state_with_ns(1);
        assert_eq!(commit(&mut s, &file(1, "a", None)), Ok(1));
        assert_eq!(
            commit(&mut s, &file(1, "a", None)),
            Err(CommitOutcome::Conflict {
                current_jid: Some(1)
            })
        );
        assert_eq!(
            commit(&mut s, &file(1, "a", Some(7))),
            Err(CommitOutcome::Conflict {
                current_jid: Some(1)
            })
        );
        assert_eq!(
            commit(&mut s, &file(1, "b", Some(1))),
            Err(CommitOutcome::Conflict { current_jid: None })
        );
        assert_eq!(commit(&mut s, &file(1, "a", Some(1))), Ok(2));
        let del = Commit {
            version: FileVersion::deleted(),
            ..file(1, "a", Some(2))
        };
        assert_eq!(commit(&mut s, &del), Ok(3));
        // A deleted path may be created again with a null parent, or with the tombstone's JID.
        assert_eq!(commit(&mut s, &file(1, "a", None)), Ok(4));
        assert_eq!(s.latest(1, "a").unwrap().jid, 4);
        assert_eq!(s.namespace(1).unwrap().last_jid(), 4);
        assert_eq!(
            s.namespace(1).unwrap().len(),
            1,
            "only the latest row per path"
        );
        assert_eq!(s.rows_total(), 4);
    }

    #[test]
    fn block_references_follow_live_rows() {
        let mut s = state_with_ns(1);
        let shared = BlockHash::of(b"shared");
        let with = |path: &str, blocks: Vec<BlockHash>, parent| {
            let size = (blocks.len() as u64).saturating_sub(1) * BLOCK_BYTES_MAX as u64
                + u64::from(!blocks.is_empty());
            Commit {
                version: FileVersion::file(blocks, size, 0),
                ..file(1, path, parent)
            }
        };
        let only_a = BlockHash::of(b"a");
        commit(&mut s, &with("a", vec![only_a, shared], None)).unwrap();
        commit(&mut s, &with("b", vec![shared], None)).unwrap();
        let ns = |s: &State| s.namespace(1).unwrap().references(&shared);
        assert!(ns(&s));
        // Rewriting a drops its blocks; b still holds the shared one.
        commit(&mut s, &with("a", vec![], Some(1))).unwrap();
        assert!(!s.namespace(1).unwrap().references(&only_a));
        assert!(ns(&s));
        let del = Commit {
            version: FileVersion::deleted(),
            ..file(1, "b", Some(2))
        };
        commit(&mut s, &del).unwrap();
        assert!(!ns(&s), "no live row lists it any more");
        assert_eq!(s.namespace(1).unwrap().blocks_referenced(), 0);
    }

    #[test]
    fn invalid_commits() {
        let s = state_with_ns(1);
        let mut p = Pending::default();
        let bad = |c: Commit| match s.check_commit(&c, &mut Pending::default()) {
            Err(CommitOutcome::Invalid(e)) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(bad(file(2, "a", None)), CommitInvalid::UnknownNamespace(2));
        assert_eq!(
            bad(file(1, "../a", None)),
            CommitInvalid::BadPath(PathError::DotDot)
        );
        assert!(matches!(
            bad({
                let mut c = file(1, "a", None);
                c.version.size = BLOCK_BYTES_MAX as u64 + 1;
                c
            }),
            CommitInvalid::BlocklistDoesNotFitSize { expected: 2, .. }
        ));
        assert!(matches!(
            bad({
                let mut c = file(1, "a", None);
                c.version.size = 0;
                c
            }),
            CommitInvalid::BlocklistDoesNotFitSize { expected: 0, .. }
        ));
        assert_eq!(
            bad({
                let mut c = file(1, "a", None);
                c.version.kind = EntryKind::Dir;
                c
            }),
            CommitInvalid::NotAFile(EntryKind::Dir)
        );
        assert!(s.check_commit(&file(1, "a", None), &mut p).is_ok());
    }

    #[test]
    fn pending_sees_earlier_commits_of_the_group() {
        let s = state_with_ns(1);
        let mut p = Pending::default();
        assert_eq!(s.check_commit(&file(1, "a", None), &mut p).unwrap().jid, 1);
        assert_eq!(
            s.check_commit(&file(1, "a", None), &mut p),
            Err(CommitOutcome::Conflict {
                current_jid: Some(1)
            })
        );
        assert_eq!(
            s.check_commit(&file(1, "a", Some(1)), &mut p).unwrap().jid,
            2
        );
        assert_eq!(s.check_commit(&file(1, "b", None), &mut p).unwrap().jid, 3);
    }

    #[test]
    fn list_pages_by_jid_over_latest_rows() {
        let mut s = state_with_ns(1);
        for i in 0..10 {
            commit(&mut s, &file(1, &format!("f{i}"), None)).unwrap();
        }
        // Rewrite f0: its old row (jid 1) leaves the view, the new one is jid 11.
        commit(&mut s, &file(1, "f0", Some(1))).unwrap();
        let page = s.list(1, 0, 4).unwrap();
        let jids: Vec<_> = page.rows.iter().map(|r| r.jid).collect();
        assert_eq!(jids, [2, 3, 4, 5]);
        assert!(page.has_more);
        assert_eq!(page.cursor, 5);
        let page = s.list(1, 5, 100).unwrap();
        let jids: Vec<_> = page.rows.iter().map(|r| r.jid).collect();
        assert_eq!(jids, [6, 7, 8, 9, 10, 11]);
        assert!(!page.has_more);
        assert_eq!(page.cursor, 11);
        let page = s.list(1, 11, 100).unwrap();
        assert!(page.rows.is_empty());
        assert_eq!(page.cursor, 11);
        assert!(s.list(2, 0, 1).is_none());
    }

    #[test]
    fn superseded_rows_are_compacted_away() {
        let mut s = state_with_ns(1);
        let mut parents = [None; 10];
        for i in 0..3000 {
            let p = i % 10;
            parents[p] = Some(commit(&mut s, &file(1, &format!("p{p}"), parents[p])).unwrap());
        }
        let n = s.namespace(1).unwrap();
        assert_eq!(n.len(), 10);
        assert!(
            n.rows.len() < 2048,
            "tombstones are compacted: {}",
            n.rows.len()
        );
        let page = s.list(1, 0, 100).unwrap();
        let jids: Vec<_> = page.rows.iter().map(|r| r.jid).collect();
        assert_eq!(jids, (2991..=3000).collect::<Vec<_>>());
        assert_eq!(s.list(1, 2995, 100).unwrap().rows.len(), 5);
        for (p, parent) in parents.iter().enumerate() {
            assert_eq!(s.latest(1, &format!("p{p}")).unwrap().jid, parent.unwrap());
        }
        assert!(s.row(1, 5).is_none(), "superseded rows leave the view");
    }

    #[test]
    fn path_in_use_sees_live_rows_at_and_below() {
        let mut s = state_with_ns(1);
        commit(&mut s, &file(1, "docs/a.txt", None)).unwrap();
        let jid = commit(&mut s, &file(1, "gone", None)).unwrap();
        let del = Commit {
            version: FileVersion::deleted(),
            ..file(1, "gone", Some(jid))
        };
        commit(&mut s, &del).unwrap();
        assert!(s.path_in_use(1, "docs"));
        assert!(s.path_in_use(1, "docs/a.txt"));
        assert!(!s.path_in_use(1, "doc"));
        assert!(!s.path_in_use(1, "gone"), "a deletion frees the path");
        assert!(!s.path_in_use(2, "docs"));
    }

    #[test]
    fn admin_record_checks() {
        let s = state_with_ns(1);
        let user = |id, name: &str| JournalRecord::User {
            id,
            name: name.into(),
            root_ns: 1,
            admin: false,
        };
        assert!(s.check_records(&[user(1, "ann")]).is_ok());
        assert_eq!(
            s.check_records(&[user(1, "ann"), user(2, "ann")]),
            Err(RecordInvalid::NameTaken("ann".into()))
        );
        assert_eq!(
            s.check_records(&[user(3, "a/b")]),
            Err(RecordInvalid::BadName)
        );
        assert_eq!(
            s.check_records(&[JournalRecord::Namespace {
                id: 1,
                owner: 1,
                kind: NamespaceKind::Shared
            }]),
            Err(RecordInvalid::NamespaceExists(1))
        );
        let mount = |ns, path: &str| JournalRecord::Mount {
            user: 5,
            ns,
            path: path.into(),
        };
        assert!(matches!(
            s.check_records(&[mount(7, "x"), mount(8, "x")]),
            Err(RecordInvalid::MountTaken { .. })
        ));
        assert!(s.check_records(&[mount(7, "x"), mount(8, "y")]).is_ok());
    }

    #[test]
    fn usage_follows_the_live_files_of_each_owner_and_quotas_survive_a_snapshot() {
        let mut s = state_with_ns(1);
        s.apply(JournalRecord::User {
            id: 1,
            name: "ann".into(),
            root_ns: 1,
            admin: false,
        });
        let sized = |path: &str, size: u64, parent| Commit {
            version: FileVersion {
                size,
                ..file(1, path, None).version
            },
            ..file(1, path, parent)
        };
        let a = commit(&mut s, &sized("a", 10, None)).unwrap();
        commit(&mut s, &sized("b", 7, None)).unwrap();
        assert_eq!((s.usage(1), s.namespace(1).unwrap().live_bytes()), (17, 17));
        let a = commit(&mut s, &sized("a", 3, Some(a))).unwrap();
        assert_eq!(s.usage(1), 10);
        let gone = Commit {
            version: FileVersion::deleted(),
            ..file(1, "a", Some(a))
        };
        commit(&mut s, &gone).unwrap();
        assert_eq!((s.usage(1), s.usage(2)), (7, 0));

        assert_eq!(
            s.check_records(&[JournalRecord::Quota {
                user: 2,
                bytes: Some(1)
            }]),
            Err(RecordInvalid::NoSuchUser(2))
        );
        s.apply(JournalRecord::Quota {
            user: 1,
            bytes: Some(100),
        });
        let mut copy = State::default();
        copy.apply_all(s.snapshot_records().collect());
        assert_eq!((copy.quota(1), copy.usage(1)), (Some(100), 7));
        s.apply(JournalRecord::Quota {
            user: 1,
            bytes: None,
        });
        assert_eq!(s.quota(1), None);
    }

    #[test]
    fn disabled_users_are_known_listed_and_survive_a_snapshot() {
        let mut s = State::default();
        for (id, name) in [(2, "bo"), (1, "ann")] {
            s.apply(JournalRecord::User {
                id,
                name: name.into(),
                root_ns: id,
                admin: false,
            });
        }
        let disable = |user, disabled| JournalRecord::UserDisabled { user, disabled };
        assert_eq!(
            s.check_records(&[disable(3, true)]),
            Err(RecordInvalid::NoSuchUser(3))
        );
        s.apply(disable(2, true));
        assert!(s.is_disabled(2) && !s.is_disabled(1));
        let names: Vec<&str> = s.users().iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["ann", "bo"], "by id");
        let mut copy = State::default();
        copy.apply_all(s.snapshot_records().collect());
        assert!(copy.is_disabled(2) && !copy.is_disabled(1));
        s.apply(disable(2, false));
        assert!(!s.is_disabled(2));
    }
}
