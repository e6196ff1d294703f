//! Upload sessions of the Dropbox API (`files/upload_session/*`): a large file sent in
//! pieces, each appended at the offset the session has reached, then committed at once.
//!
//! A session lives on the shard that started it. Its whole blocks are stored as they
//! arrive (deduplicated like any upload, under the uploader's name); only the blocklist and
//! the bytes past the last whole block (under one block) stay here. A collection keeps the
//! blocks of every live session. Sessions are in memory: a restart ends them, and their
//! ids are then answered `not_found`, so a client starts the file again.
//!
//! Every bound is explicit: sessions per user, sessions per shard, bytes per session, idle
//! time and lifetime. A request in progress holds its session (`busy`), so two appends at
//! once cannot both take the same offset.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hashbrown::HashMap;
use holdall_engine::journal::record::UserId;
use holdall_proto::BlockHash;

/// The bounds of one shard's sessions.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Sessions open on the shard.
    pub sessions_max: usize,
    /// Sessions one user holds open on the shard.
    pub sessions_per_user_max: usize,
    /// Bytes one session may hold.
    pub session_bytes_max: u64,
    /// A session not touched for this long ends.
    pub idle_max: Duration,
    /// A session ends this long after its start, touched or not.
    pub lifetime_max: Duration,
}

impl Default for SessionLimits {
    fn default() -> SessionLimits {
        SessionLimits {
            // Each holds at most one block of tail in memory: 128 × 4 MiB = 512 MiB a shard.
            sessions_max: 128,
            sessions_per_user_max: 32,
            session_bytes_max: crate::config::UPLOAD_SESSION_BYTES_MAX_DEFAULT,
            idle_max: Duration::from_secs(3600),
            lifetime_max: Duration::from_secs(48 * 3600),
        }
    }
}

/// Why a session refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No such session here (never started, ended, expired, or another user's).
    #[error("no such upload session")]
    NotFound,
    /// The request's offset is not where the session is.
    #[error("the session is at offset {correct}")]
    IncorrectOffset {
        /// Where the session is.
        correct: u64,
    },
    /// The session was closed; nothing more may be appended.
    #[error("the session is closed")]
    Closed,
    /// A batch finish needs the session closed first.
    #[error("the session is not closed")]
    NotClosed,
    /// The session would pass its byte bound.
    #[error("the session would hold more than {max} bytes")]
    TooLarge {
        /// The bound.
        max: u64,
    },
    /// Another request on the session is in progress.
    #[error("another request on this session is in progress")]
    Busy,
    /// The shard or the user holds the most sessions they may.
    #[error("too many upload sessions are open; finish or abandon some")]
    TooMany,
}

/// One session's content: whole blocks stored, and the bytes after them.
#[derive(Debug, Clone, Default)]
struct Content {
    /// Hashes of the whole blocks appended so far, in order; each is stored.
    blocklist: Vec<BlockHash>,
    /// Bytes after the last whole block: fewer than one block.
    tail: Bytes,
    /// Bytes appended in all.
    offset: u64,
}

/// What one append added.
#[derive(Debug, Clone, Default)]
pub struct Appended {
    /// Whole blocks now stored, in order.
    pub blocks: Vec<BlockHash>,
    /// The bytes after them (the old tail included): fewer than one block.
    pub tail: Bytes,
    /// Bytes the request added.
    pub len: u64,
    /// Close the session.
    pub close: bool,
}

#[derive(Debug)]
struct Session {
    user: UserId,
    content: Content,
    closed: bool,
    busy: bool,
    started: Instant,
    touched: Instant,
}

/// One shard's sessions.
pub struct UploadSessions {
    limits: SessionLimits,
    sessions: HashMap<u64, Session>,
    next_id: u64,
}

impl UploadSessions {
    /// No sessions, kept within `limits`. `seed` makes ids differ between runs.
    pub fn new(limits: SessionLimits, seed: u64) -> UploadSessions {
        assert!(limits.sessions_max > 0 && limits.sessions_per_user_max > 0);
        UploadSessions {
            limits,
            sessions: HashMap::new(),
            next_id: seed,
        }
    }

    /// Opens a session for `user`; its id. `salt` (random per call) keeps ids unguessable.
    pub fn start(&mut self, user: UserId, salt: u64, now: Instant) -> Result<u64, SessionError> {
        self.expire(now);
        let held = self.sessions.values().filter(|s| s.user == user).count();
        if self.sessions.len() >= self.limits.sessions_max
            || held >= self.limits.sessions_per_user_max
        {
            return Err(SessionError::TooMany);
        }
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id ^ salt;
        if self.sessions.contains_key(&id) {
            return Err(SessionError::Busy);
        }
        self.sessions.insert(
            id,
            Session {
                user,
                content: Content::default(),
                closed: false,
                busy: false,
                started: now,
                touched: now,
            },
        );
        Ok(id)
    }

    /// Takes the session for one request adding `len` bytes at `offset`: the bytes after
    /// its last whole block, until [`UploadSessions::append`] or [`UploadSessions::put_back`].
    pub fn take(
        &mut self,
        id: u64,
        user: UserId,
        offset: u64,
        len: u64,
        now: Instant,
    ) -> Result<Bytes, SessionError> {
        self.expire(now);
        let max = self.limits.session_bytes_max;
        let s = self
            .sessions
            .get_mut(&id)
            .filter(|s| s.user == user)
            .ok_or(SessionError::NotFound)?;
        if s.busy {
            return Err(SessionError::Busy);
        }
        if s.content.offset != offset {
            return Err(SessionError::IncorrectOffset {
                correct: s.content.offset,
            });
        }
        if s.closed && len > 0 {
            return Err(SessionError::Closed);
        }
        if offset.saturating_add(len) > max {
            return Err(SessionError::TooLarge { max });
        }
        s.busy = true;
        s.touched = now;
        Ok(std::mem::take(&mut s.content.tail))
    }

    /// Gives a taken session back with `len` more bytes: `blocks` stored, then `tail`;
    /// closed too if `close`. Refused, changing nothing, past the session's byte bound (a
    /// body longer than it said); the caller then puts it back.
    pub fn append(
        &mut self,
        id: u64,
        appended: Appended,
        now: Instant,
    ) -> Result<(), SessionError> {
        let max = self.limits.session_bytes_max;
        let s = self.sessions.get_mut(&id).ok_or(SessionError::NotFound)?;
        debug_assert!(s.busy, "appended to a session not taken");
        debug_assert!(appended.tail.len() < holdall_proto::limits::BLOCK_BYTES_MAX);
        if s.content.offset.saturating_add(appended.len) > max {
            return Err(SessionError::TooLarge { max });
        }
        s.content.blocklist.extend(appended.blocks);
        s.content.tail = appended.tail;
        s.content.offset += appended.len;
        s.closed |= appended.close;
        s.busy = false;
        s.touched = now;
        Ok(())
    }

    /// Gives a taken session back unchanged: the request failed.
    pub fn put_back(&mut self, id: u64, tail: Bytes) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.content.tail = tail;
            s.busy = false;
        }
    }

    /// The whole blocks of a taken session, for its finish.
    pub fn blocklist(&self, id: u64) -> Vec<BlockHash> {
        self.sessions
            .get(&id)
            .map(|s| s.content.blocklist.clone())
            .unwrap_or_default()
    }

    /// Whether session `id` is closed.
    pub fn is_closed(&self, id: u64) -> bool {
        self.sessions.get(&id).is_some_and(|s| s.closed)
    }

    /// Ends the session (its file committed).
    pub fn end(&mut self, id: u64) {
        self.sessions.remove(&id);
    }

    /// Every block the live sessions hold, for a collection to keep.
    pub fn hashes(&self) -> impl Iterator<Item = BlockHash> + '_ {
        self.sessions
            .values()
            .flat_map(|s| s.content.blocklist.iter().copied())
    }

    /// Sessions open.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    fn expire(&mut self, now: Instant) {
        let (idle, life) = (self.limits.idle_max, self.limits.lifetime_max);
        self.sessions.retain(|_, s| {
            s.busy || (now.duration_since(s.touched) < idle && now.duration_since(s.started) < life)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SessionLimits {
        SessionLimits {
            sessions_max: 3,
            sessions_per_user_max: 2,
            session_bytes_max: 100,
            idle_max: Duration::from_secs(10),
            lifetime_max: Duration::from_secs(60),
        }
    }

    #[test]
    fn appends_go_at_the_session_offset_one_at_a_time() {
        let now = Instant::now();
        let mut s = UploadSessions::new(limits(), 7);
        let id = s.start(1, 99, now).unwrap();
        assert_eq!(
            s.take(id, 2, 0, 1, now).unwrap_err(),
            SessionError::NotFound
        );
        let tail = s.take(id, 1, 0, 10, now).unwrap();
        assert!(tail.is_empty());
        assert_eq!(s.take(id, 1, 0, 10, now).unwrap_err(), SessionError::Busy);
        let hash = BlockHash::of(b"x");
        let appended = Appended {
            blocks: vec![hash],
            tail: Bytes::from_static(b"abc"),
            len: 10,
            close: false,
        };
        s.append(id, appended, now).unwrap();
        assert_eq!(
            s.take(id, 1, 0, 1, now).unwrap_err(),
            SessionError::IncorrectOffset { correct: 10 }
        );
        assert_eq!(
            s.take(id, 1, 10, 91, now).unwrap_err(),
            SessionError::TooLarge { max: 100 }
        );
        let tail = s.take(id, 1, 10, 5, now).unwrap();
        assert_eq!(&tail[..], b"abc");
        // A failed request leaves the session as it was.
        s.put_back(id, tail);
        let tail = s.take(id, 1, 10, 0, now).unwrap();
        assert_eq!(&tail[..], b"abc");
        let close = Appended {
            tail,
            close: true,
            ..Appended::default()
        };
        s.append(id, close, now).unwrap();
        assert!(s.is_closed(id));
        assert_eq!(s.take(id, 1, 10, 5, now).unwrap_err(), SessionError::Closed);
        // A closed session is still taken for its finish (no bytes).
        assert!(s.take(id, 1, 10, 0, now).is_ok());
        assert_eq!(s.blocklist(id), vec![hash]);
        assert_eq!(s.hashes().count(), 1);
        s.end(id);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn sessions_are_bounded_and_expire() {
        let now = Instant::now();
        let mut s = UploadSessions::new(limits(), 0);
        s.start(1, 0, now).unwrap();
        s.start(1, 0, now).unwrap();
        assert_eq!(s.start(1, 0, now).unwrap_err(), SessionError::TooMany);
        let id = s.start(2, 0, now).unwrap();
        assert_eq!(s.start(3, 0, now).unwrap_err(), SessionError::TooMany);
        let later = now + Duration::from_secs(11);
        assert_eq!(
            s.take(id, 2, 0, 0, later).unwrap_err(),
            SessionError::NotFound
        );
        assert_eq!(s.len(), 0);
        s.start(3, 0, later).unwrap();
        assert_eq!(s.len(), 1);
    }
}
