//! The prefetch table of one shard: blocklists of files still being uploaded, so that other
//! clients can fetch their blocks before the commit lands (streaming sync).
//!
//! In memory only, as the seed keeps it in memcache: losing it costs speed, never data. Every
//! entry lives `ttl` after its last activity (insert, refresh, touch). Because the TTL is the
//! same for all, a FIFO of (expiry, key) is in expiry order: expiry pops from its front with
//! no scan, and eviction under the entry or byte bound takes the front too, which is the
//! entry idle the longest, so an upload in progress (touched as its blocks arrive) is not the
//! one evicted first. All calls take `now`, so tests drive the clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hashbrown::{HashMap, HashSet};
use holdall_proto::api::NsId;
use holdall_proto::BlockHash;

use crate::journal::record::UserId;

/// Bytes charged per entry on top of its path and blocklist.
const ENTRY_OVERHEAD_BYTES: usize = 128;

/// Who uploads a file: a user, and the device they upload from (0: not told). Entries are
/// news to everyone but the uploading device itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Uploader {
    /// The user.
    pub user: UserId,
    /// The device, as the client names it; 0 when it did not.
    pub device: u64,
}

impl Uploader {
    /// Whether `viewer` is someone other than this uploader: another user, or another
    /// device of the same user (when both named their devices).
    pub fn is_other_than(&self, viewer: &Uploader) -> bool {
        self.user != viewer.user
            || (self.device != 0 && viewer.device != 0 && self.device != viewer.device)
    }
}

/// Bounds of a prefetch table.
#[derive(Debug, Clone, Copy)]
pub struct PrefetchConfig {
    /// How long an entry lives after its last activity.
    pub ttl: Duration,
    /// Most entries.
    pub entries_max: usize,
    /// Most bytes (paths, blocklists and overhead).
    pub bytes_max: usize,
}

impl Default for PrefetchConfig {
    /// 10 minutes, 100,000 entries, 256 MiB.
    fn default() -> Self {
        PrefetchConfig {
            ttl: Duration::from_secs(600),
            entries_max: 100_000,
            bytes_max: 256 << 20,
        }
    }
}

/// A live entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefetchEntry {
    /// Block hashes of the file, in order.
    pub blocklist: Vec<BlockHash>,
    /// File size in bytes.
    pub size: u64,
    /// Who is uploading it.
    pub uploader: Uploader,
    /// Changes when the blocklist changes, so a fetcher can tell the entry was replaced.
    pub version: u64,
    expires_at: Instant,
    touch_seq: u64,
}

impl PrefetchEntry {
    /// When the entry expires unless touched.
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    fn bytes(&self, path: &str) -> usize {
        ENTRY_OVERHEAD_BYTES + path.len() + self.blocklist.len() * 32
    }
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    /// A new entry.
    Inserted,
    /// The same blocklist again (a retried commit): its life was extended.
    Refreshed,
    /// A different blocklist replaced the entry (new version).
    Replaced,
    /// The entry alone exceeds the byte bound; nothing was kept.
    TooLarge,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefetchStats {
    /// Live entries.
    pub entries: u64,
    /// Bytes charged.
    pub bytes: u64,
    /// New entries.
    pub inserts: u64,
    /// Retried commits that extended an entry.
    pub refreshes: u64,
    /// Lookups that found a live entry.
    pub hits: u64,
    /// Lookups that found none.
    pub misses: u64,
    /// Entries that reached their TTL.
    pub expirations: u64,
    /// Entries pushed out by the bounds.
    pub evictions: u64,
    /// Entries removed by their file's commit.
    pub removals: u64,
    /// Entries kept alive because their blocks were arriving.
    pub touches: u64,
}

struct QueueItem {
    expires_at: Instant,
    ns: NsId,
    path: String,
    touch_seq: u64,
}

/// One shard's prefetch table.
pub struct PrefetchTable {
    config: PrefetchConfig,
    entries: HashMap<NsId, HashMap<String, PrefetchEntry>>,
    /// The entries of each uploading user, so arriving blocks find theirs without a scan.
    by_user: HashMap<UserId, HashSet<(NsId, String)>>,
    queue: VecDeque<QueueItem>,
    next_seq: u64,
    stats: PrefetchStats,
}

impl PrefetchTable {
    /// An empty table.
    pub fn new(config: PrefetchConfig) -> PrefetchTable {
        PrefetchTable {
            config,
            entries: HashMap::new(),
            by_user: HashMap::new(),
            queue: VecDeque::new(),
            next_seq: 1,
            stats: PrefetchStats::default(),
        }
    }

    /// How long an entry lives after its last activity.
    pub fn ttl(&self) -> Duration {
        self.config.ttl
    }

    /// Counters.
    pub fn stats(&self) -> PrefetchStats {
        self.stats
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn enqueue(&mut self, ns: NsId, path: &str, expires_at: Instant, touch_seq: u64) {
        self.queue.push_back(QueueItem {
            expires_at,
            ns,
            path: path.to_owned(),
            touch_seq,
        });
        // Refreshes leave stale items behind; drop them before they outnumber live ones.
        if self.queue.len() > 2 * self.stats.entries as usize + 1024 {
            let entries = &self.entries;
            self.queue.retain(|q| {
                entries
                    .get(&q.ns)
                    .and_then(|m| m.get(&q.path))
                    .is_some_and(|e| e.touch_seq == q.touch_seq)
            });
        }
    }

    /// Publishes (or refreshes) the entry of a file being uploaded.
    pub fn upsert(
        &mut self,
        ns: NsId,
        path: &str,
        blocklist: Vec<BlockHash>,
        size: u64,
        uploader: Uploader,
        now: Instant,
    ) -> Upsert {
        self.expire(now);
        let expires_at = now + self.config.ttl;
        let seq = self.seq();
        let version = self.seq();
        let bytes_new = ENTRY_OVERHEAD_BYTES + path.len() + blocklist.len() * 32;
        if bytes_new > self.config.bytes_max {
            self.remove_entry(ns, path);
            return Upsert::TooLarge;
        }
        let map = self.entries.entry(ns).or_default();
        let outcome = match map.get_mut(path) {
            Some(e) if e.blocklist == blocklist && e.uploader == uploader && e.size == size => {
                e.expires_at = expires_at;
                e.touch_seq = seq;
                self.stats.refreshes += 1;
                Upsert::Refreshed
            }
            existing => {
                let entry = PrefetchEntry {
                    blocklist,
                    size,
                    uploader,
                    version,
                    expires_at,
                    touch_seq: seq,
                };
                self.stats.bytes += bytes_new as u64;
                match existing {
                    Some(e) => {
                        self.stats.bytes -= e.bytes(path) as u64;
                        let old_user = e.uploader.user;
                        *e = entry;
                        if old_user != uploader.user {
                            unindex(&mut self.by_user, old_user, ns, path);
                            index(&mut self.by_user, uploader.user, ns, path);
                        }
                        Upsert::Replaced
                    }
                    None => {
                        map.insert(path.to_owned(), entry);
                        index(&mut self.by_user, uploader.user, ns, path);
                        self.stats.entries += 1;
                        self.stats.inserts += 1;
                        Upsert::Inserted
                    }
                }
            }
        };
        self.enqueue(ns, path, expires_at, seq);
        self.enforce_bounds();
        outcome
    }

    /// Extends the life of an entry whose upload is making progress.
    pub fn touch(&mut self, ns: NsId, path: &str, now: Instant) -> bool {
        self.expire(now);
        let seq = self.seq();
        let expires_at = now + self.config.ttl;
        let Some(e) = self.entries.get_mut(&ns).and_then(|m| m.get_mut(path)) else {
            return false;
        };
        e.expires_at = expires_at;
        e.touch_seq = seq;
        self.enqueue(ns, path, expires_at, seq);
        true
    }

    /// Extends the life of `user`'s entries that list any of `hashes`, blocks the user has
    /// just stored: an upload in progress stays young, so the bounds evict idle entries
    /// first. Returns how many entries were touched.
    pub fn touch_uploads(&mut self, user: UserId, hashes: &[BlockHash], now: Instant) -> usize {
        self.expire(now);
        let Some(keys) = self.by_user.get(&user) else {
            return 0;
        };
        let hit: Vec<(NsId, String)> = keys
            .iter()
            .filter(|(ns, path)| {
                self.entries
                    .get(ns)
                    .and_then(|m| m.get(path))
                    .is_some_and(|e| hashes.iter().any(|h| e.blocklist.contains(h)))
            })
            .cloned()
            .collect();
        for (ns, path) in &hit {
            self.touch(*ns, path, now);
        }
        self.stats.touches += hit.len() as u64;
        hit.len()
    }

    /// Removes the entry of a file whose commit succeeded.
    pub fn remove(&mut self, ns: NsId, path: &str) -> bool {
        let removed = self.remove_entry(ns, path);
        if removed {
            self.stats.removals += 1;
        }
        removed
    }

    fn remove_entry(&mut self, ns: NsId, path: &str) -> bool {
        let Some(map) = self.entries.get_mut(&ns) else {
            return false;
        };
        let Some(e) = map.remove(path) else {
            return false;
        };
        if map.is_empty() {
            self.entries.remove(&ns);
        }
        unindex(&mut self.by_user, e.uploader.user, ns, path);
        self.stats.entries -= 1;
        self.stats.bytes -= e.bytes(path) as u64;
        true
    }

    /// The live entry of `path` in `ns` (counted as a hit or a miss).
    pub fn get(&mut self, ns: NsId, path: &str, now: Instant) -> Option<&PrefetchEntry> {
        self.expire(now);
        let e = self.entries.get(&ns).and_then(|m| m.get(path));
        if e.is_some() {
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
        }
        e
    }

    /// Live entries of `ns`, in no particular order.
    pub fn entries_of(
        &mut self,
        ns: NsId,
        now: Instant,
    ) -> impl Iterator<Item = (&str, &PrefetchEntry)> {
        self.expire(now);
        self.entries
            .get(&ns)
            .into_iter()
            .flat_map(|m| m.iter().map(|(p, e)| (p.as_str(), e)))
    }

    /// Drops entries whose TTL has passed; costs only the expired ones.
    pub fn expire(&mut self, now: Instant) {
        while let Some(front) = self.queue.front() {
            if front.expires_at > now {
                break;
            }
            let q = self.queue.pop_front().expect("front exists");
            if self.is_current(&q) {
                self.remove_entry(q.ns, &q.path);
                self.stats.expirations += 1;
            }
        }
    }

    fn is_current(&self, q: &QueueItem) -> bool {
        self.entries
            .get(&q.ns)
            .and_then(|m| m.get(&q.path))
            .is_some_and(|e| e.touch_seq == q.touch_seq)
    }

    fn enforce_bounds(&mut self) {
        while self.stats.entries as usize > self.config.entries_max
            || self.stats.bytes as usize > self.config.bytes_max
        {
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            if self.is_current(&q) {
                self.remove_entry(q.ns, &q.path);
                self.stats.evictions += 1;
            }
        }
    }
}

fn index(by_user: &mut HashMap<UserId, HashSet<(NsId, String)>>, u: UserId, ns: NsId, p: &str) {
    by_user.entry(u).or_default().insert((ns, p.to_owned()));
}

fn unindex(by_user: &mut HashMap<UserId, HashSet<(NsId, String)>>, u: UserId, ns: NsId, p: &str) {
    if let Some(keys) = by_user.get_mut(&u) {
        keys.remove(&(ns, p.to_owned()));
        if keys.is_empty() {
            by_user.remove(&u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: Uploader = Uploader { user: 7, device: 0 };

    fn bl(n: u64) -> Vec<BlockHash> {
        (0..n).map(|i| BlockHash::of(&i.to_le_bytes())).collect()
    }

    fn table(entries_max: usize) -> PrefetchTable {
        PrefetchTable::new(PrefetchConfig {
            ttl: Duration::from_secs(10),
            entries_max,
            bytes_max: 1 << 20,
        })
    }

    #[test]
    fn insert_refresh_replace_remove() {
        let t0 = Instant::now();
        let mut t = table(10);
        assert_eq!(t.upsert(1, "a", bl(3), 10, U, t0), Upsert::Inserted);
        let v = t.get(1, "a", t0).unwrap().version;
        assert_eq!(t.upsert(1, "a", bl(3), 10, U, t0), Upsert::Refreshed);
        assert_eq!(
            t.get(1, "a", t0).unwrap().version,
            v,
            "a refresh keeps the version"
        );
        assert_eq!(t.upsert(1, "a", bl(4), 10, U, t0), Upsert::Replaced);
        assert_ne!(t.get(1, "a", t0).unwrap().version, v);
        assert_eq!(t.stats().entries, 1);
        assert!(t.remove(1, "a"));
        assert!(!t.remove(1, "a"));
        assert!(t.get(1, "a", t0).is_none());
        let s = t.stats();
        assert_eq!(
            (s.inserts, s.refreshes, s.removals, s.entries, s.bytes),
            (1, 1, 1, 0, 0)
        );
        assert_eq!((s.hits, s.misses), (3, 1));
    }

    #[test]
    fn entries_expire_after_ttl_unless_touched() {
        let t0 = Instant::now();
        let mut t = table(10);
        t.upsert(1, "a", bl(1), 1, U, t0);
        t.upsert(1, "b", bl(1), 1, U, t0);
        assert!(t.touch(1, "b", t0 + Duration::from_secs(9)));
        assert!(t.get(1, "a", t0 + Duration::from_secs(9)).is_some());
        assert!(t.get(1, "a", t0 + Duration::from_secs(10)).is_none());
        assert!(t.get(1, "b", t0 + Duration::from_secs(18)).is_some());
        assert_eq!(t.entries_of(1, t0 + Duration::from_secs(19)).count(), 0);
        assert_eq!(t.stats().expirations, 2);
        assert!(!t.touch(1, "b", t0 + Duration::from_secs(20)));
    }

    #[test]
    fn eviction_takes_the_longest_idle_entry() {
        let t0 = Instant::now();
        let mut t = table(3);
        for (i, p) in ["a", "b", "c"].iter().enumerate() {
            t.upsert(1, p, bl(1), 1, U, t0 + Duration::from_millis(i as u64));
        }
        // "a" is being uploaded: touched, so "b" is now the longest idle.
        t.touch(1, "a", t0 + Duration::from_millis(5));
        t.upsert(2, "d", bl(1), 1, U, t0 + Duration::from_millis(6));
        let now = t0 + Duration::from_millis(7);
        assert!(t.get(1, "b", now).is_none());
        assert!(t.get(1, "a", now).is_some());
        assert!(t.get(1, "c", now).is_some());
        assert!(t.get(2, "d", now).is_some());
        assert_eq!(t.stats().evictions, 1);
    }

    #[test]
    fn arriving_blocks_keep_their_upload_young() {
        let t0 = Instant::now();
        let mut t = table(2);
        let ms = Duration::from_millis;
        t.upsert(1, "uploading", bl(4), 1, U, t0);
        t.upsert(
            1,
            "idle",
            bl(1),
            1,
            Uploader { user: 8, device: 0 },
            t0 + ms(1),
        );
        // Another user's blocks touch nothing; the uploader's block of "uploading" does.
        assert_eq!(t.touch_uploads(8, &bl(4)[2..3], t0 + ms(2)), 0);
        assert_eq!(t.touch_uploads(7, &bl(4)[2..3], t0 + ms(3)), 1);
        t.upsert(2, "new", bl(1), 1, U, t0 + ms(4));
        let now = t0 + ms(5);
        assert!(t.get(1, "idle", now).is_none(), "the idle entry goes first");
        assert!(t.get(1, "uploading", now).is_some());
        assert_eq!(t.stats().touches, 1);
        t.remove(1, "uploading");
        t.remove(2, "new");
        assert!(t.by_user.is_empty(), "the index forgets removed entries");
    }

    #[test]
    fn own_device_is_not_news() {
        let a = Uploader {
            user: 1,
            device: 10,
        };
        assert!(!a.is_other_than(&a));
        assert!(a.is_other_than(&Uploader {
            user: 1,
            device: 11
        }));
        assert!(a.is_other_than(&Uploader {
            user: 2,
            device: 10
        }));
        assert!(!a.is_other_than(&Uploader { user: 1, device: 0 }));
        assert!(!Uploader { user: 1, device: 0 }.is_other_than(&a));
    }

    #[test]
    fn byte_bound_and_oversized_entries() {
        let t0 = Instant::now();
        let mut t = PrefetchTable::new(PrefetchConfig {
            ttl: Duration::from_secs(10),
            entries_max: 100,
            bytes_max: 10_000,
        });
        assert_eq!(t.upsert(1, "huge", bl(400), 1, U, t0), Upsert::TooLarge);
        assert_eq!(t.stats().entries, 0);
        for i in 0..10 {
            t.upsert(1, &format!("f{i}"), bl(50), 1, U, t0);
        }
        let s = t.stats();
        assert!(s.bytes <= 10_000, "{s:?}");
        assert!(s.evictions > 0);
        assert!(t.get(1, "f9", t0).is_some(), "the newest stays");
    }

    #[test]
    fn stale_queue_items_stay_bounded() {
        let t0 = Instant::now();
        let mut t = table(10);
        t.upsert(1, "a", bl(1), 1, U, t0);
        for i in 0..100_000u64 {
            t.touch(1, "a", t0 + Duration::from_micros(i));
        }
        assert!(
            t.queue.len() <= 2 + 1024 + 1,
            "one live entry, stale items pruned"
        );
    }
}
