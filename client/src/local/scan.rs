//! The local tree: walks the synced folder (honouring `.holdallignore`), reuses cached
//! blocklists of files whose size, mtime, ctime and inode did not change, and hashes the
//! rest on several threads. A file that changes while it is hashed is reported unsettled, so
//! torn content is never committed.
//!
//! The stat includes ctime because mtime alone can be put back (`touch -r`, `rsync -t
//! --inplace`, an editor that keeps times): an edit of the same size would then look like
//! no change, never be uploaded, and later be overwritten by a remote version. Nobody can
//! set ctime. And a file that changed just before it was read (see [`Stat::racy`]) is
//! cached as racy and read again at the next scan even if its stat is unchanged: a second
//! write in the same timestamp tick, after the read, would leave every field of the stat as
//! it was.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use holdall_proto::{validate_path, BlockHash, ContentHasher};
use tracing::warn;

use crate::local::stat::{HashEntry, Stat};
use crate::local::tree::{Node, Tree};
use crate::pool;

/// The client's own folder inside the synced folder; never synced.
pub const STATE_DIR: &str = ".holdall";
/// Prefix of files being rebuilt; never synced.
pub const TEMP_PREFIX: &str = ".holdall-tmp-";
/// The ignore file's name (gitignore syntax), in any folder.
pub const IGNORE_FILE: &str = ".holdallignore";

/// Now, in ns since the epoch (the clock file times are stamped from).
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// One entry of the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A regular file.
    File(Stat),
    /// A folder.
    Dir,
}

/// The local tree after hashing.
#[derive(Debug, Default)]
pub struct LocalTree {
    /// Every file and folder, hashed.
    pub nodes: Tree<Node>,
    /// What each file looked like when hashed.
    pub stats: HashMap<String, Stat>,
    /// Files that changed while being read: planned once they settle.
    pub unsettled: BTreeSet<String>,
    /// Blocklists hashed this time, to cache.
    pub hashed: Vec<(String, HashEntry)>,
    /// Bytes hashed this time.
    pub hashed_bytes: u64,
}

/// Walks `root`; returns every syncable entry by local path.
pub fn walk(root: &Path) -> Tree<Seen> {
    let mut out = Tree::new();
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .parents(false)
        .git_ignore(false)
        .git_global(false)
        .git_exclude(false)
        .ignore(false)
        .follow_links(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        .filter_entry(|e| {
            let name = e.file_name().to_string_lossy();
            !(name.starts_with(TEMP_PREFIX) || e.depth() == 1 && name == STATE_DIR)
        })
        .build();
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "skipping an entry the walk could not read");
                continue;
            }
        };
        if entry.depth() == 0 {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(root) else {
            continue;
        };
        let Some(lpath) = rel.to_str().map(str::to_owned) else {
            warn!(path = %entry.path().display(), "skipping a name that is not UTF-8");
            continue;
        };
        if let Err(e) = validate_path(&lpath) {
            warn!(path = %lpath, error = %e, "skipping a path the server would refuse");
            continue;
        }
        let Some(ft) = entry.file_type() else {
            continue;
        };
        if ft.is_dir() {
            out.insert(lpath, Seen::Dir);
        } else if ft.is_file() {
            match entry.metadata() {
                Ok(meta) => {
                    out.insert(lpath, Seen::File(Stat::of(&meta)));
                }
                Err(e) => warn!(path = %lpath, error = %e, "skipping a file that cannot be read"),
            }
        } else if ft.is_symlink() {
            warn!(path = %lpath, "skipping a symbolic link: only files and folders sync");
        } else {
            warn!(path = %lpath, "skipping a special file: only files and folders sync");
        }
    }
    out
}

/// Reads `file` (about `size_hint` bytes long) to its end: its blocklist and size.
pub fn read_blocklist(file: &mut File, size_hint: u64) -> std::io::Result<(Vec<BlockHash>, u64)> {
    let mut hasher = ContentHasher::new();
    // Plain reads rather than a memory map: a map of a file that another program truncates
    // kills the process with SIGBUS, and one copy at memory speed costs little beside
    // SHA-256. The buffer fits the file: a 4 MiB one per small file was an mmap, page
    // faults and a munmap each (a third of the scan's time for 10,000 files of 4 KiB).
    let len = usize::try_from(size_hint.saturating_add(1)).unwrap_or(usize::MAX);
    let mut buf = vec![0u8; len.clamp(8 << 10, holdall_proto::limits::BLOCK_BYTES_MAX)];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let (blocklist, _, size) = hasher.finish();
    Ok((blocklist, size))
}

/// Hashes one file: its blocklist, size and the stat it had, or None if it changed while
/// being read (or vanished).
pub fn hash_file(path: &Path) -> Hashed {
    let mut file = File::open(path).ok()?;
    let before = Stat::of(&file.metadata().ok()?);
    let (blocklist, size) = read_blocklist(&mut file, before.size).ok()?;
    let after = Stat::of(&std::fs::metadata(path).ok()?);
    (before == after && size == after.size).then_some((blocklist, after))
}

/// A file's blocklist and the stat it was read with, or None if it would not hold still.
type Hashed = Option<(Vec<BlockHash>, Stat)>;

fn mtime_ms(stat: &Stat) -> i64 {
    stat.mtime_ns.div_euclid(1_000_000)
}

/// One block of a file hashed in pieces, told as soon as it is hashed.
#[derive(Debug)]
pub struct HashedBlock<'a> {
    /// The file.
    pub path: &'a Path,
    /// Where the block starts in it.
    pub offset: u64,
    /// Its length.
    pub len: usize,
    /// Its hash.
    pub hash: BlockHash,
}

/// Told, on the hashing threads, of each block of every file hashed in pieces.
pub type OnBlock<'a> = &'a (dyn Fn(HashedBlock) + Sync);

/// Whether a file of `size` bytes is hashed in pieces (and its blocks told to an
/// [`OnBlock`]): one of more than two blocks, that is more than a store batch.
pub fn hashed_in_pieces(size: u64) -> bool {
    size > 2 * holdall_proto::limits::BLOCK_BYTES_MAX as u64
}

/// When a scan reads files.
#[derive(Debug, Clone, Copy)]
pub struct ReadAt {
    /// No file is read before this instant ([`now_ns`] when the scan starts; given, so
    /// tests can place the clock).
    pub now_ns: i64,
    /// A changed file whose ctime is this close before `now_ns` is most likely still being
    /// written: it is left unsettled without being read (0: every changed file is read).
    pub quiet_ns: i64,
}

impl ReadAt {
    /// Whether a file with `stat` changed too lately to be read. A ctime after `now_ns` (a
    /// clock set back) does not count: the file would wait forever.
    pub fn too_recent(&self, stat: &Stat) -> bool {
        self.now_ns - self.quiet_ns < stat.ctime_ns && stat.ctime_ns <= self.now_ns
    }
}

/// The local tree of `root`: `seen` from [`walk`], blocklists from `cache` where the file
/// did not change, the rest hashed on `threads` threads (each block of a file hashed in
/// pieces told to `on_block`) as `read` says.
pub fn local_tree(
    root: &Path,
    seen: Tree<Seen>,
    cache: &HashMap<String, HashEntry>,
    threads: usize,
    read: ReadAt,
    on_block: Option<OnBlock>,
) -> LocalTree {
    let mut tree = LocalTree::default();
    let mut todo: Vec<(String, Stat)> = Vec::new();
    for (lpath, s) in seen {
        match s {
            Seen::Dir => {
                tree.nodes.insert(lpath, Node::dir());
            }
            Seen::File(stat) => match cache.get(&lpath) {
                Some(h) if stat.trusts(h) => {
                    tree.nodes.insert(
                        lpath.clone(),
                        Node::file(h.blocklist.clone(), stat.size, mtime_ms(&stat)),
                    );
                    tree.stats.insert(lpath, stat);
                }
                _ if read.too_recent(&stat) => {
                    tree.unsettled.insert(lpath);
                }
                _ => todo.push((lpath, stat)),
            },
        }
    }
    let results = hash_all(root, &todo, threads, PIECE_BYTES, on_block);
    for ((lpath, _), r) in todo.into_iter().zip(results) {
        match r {
            Some((blocklist, stat)) => {
                tree.hashed_bytes += stat.size;
                tree.nodes.insert(
                    lpath.clone(),
                    Node::file(blocklist.clone(), stat.size, mtime_ms(&stat)),
                );
                let racy = stat.racy(read.now_ns);
                tree.hashed.push((
                    lpath.clone(),
                    HashEntry {
                        racy,
                        ..stat.entry(blocklist)
                    },
                ));
                tree.stats.insert(lpath, stat);
            }
            None => {
                tree.unsettled.insert(lpath);
            }
        }
    }
    tree
}

/// Files over two blocks are hashed in pieces of this many bytes on several threads (each
/// block's hash is independent of the others), so one large file is not hashed on one core
/// while the others wait, and each block can be told as soon as it is hashed.
const PIECE_BYTES: u64 = 16 * holdall_proto::limits::BLOCK_BYTES_MAX as u64;

/// One piece of hashing work: a whole file, or blocks `first..first + count` of a large one.
struct Job {
    file: usize,
    first_block: u64,
    blocks: u64,
    whole: bool,
}

/// Hashes each of `todo` (relative paths and the stats the walk saw) on `threads` threads,
/// files [`hashed_in_pieces`] in pieces of `piece_bytes` (a multiple of the block size),
/// each of their blocks told to `on_block`; one result per file, in order.
fn hash_all(
    root: &Path,
    todo: &[(String, Stat)],
    threads: usize,
    piece_bytes: u64,
    on_block: Option<OnBlock>,
) -> Vec<Hashed> {
    let block = holdall_proto::limits::BLOCK_BYTES_MAX as u64;
    assert!(
        piece_bytes >= block && piece_bytes.is_multiple_of(block),
        "pieces are whole blocks"
    );
    let in_pieces = |st: &Stat| hashed_in_pieces(st.size);
    let jobs = jobs_of(todo, piece_bytes);
    // Per file: its result (whole files), or its block hashes so far and whether it held
    // still (pieces).
    let whole: Vec<Mutex<Hashed>> = todo.iter().map(|_| Mutex::new(None)).collect();
    let pieces: Vec<Mutex<(Vec<Option<BlockHash>>, bool)>> = todo
        .iter()
        .map(|(_, st)| {
            let blocks = if in_pieces(st) {
                st.size.div_ceil(block)
            } else {
                0
            };
            Mutex::new((vec![None; blocks as usize], true))
        })
        .collect();
    let hashed: Result<(), std::convert::Infallible> = pool::run(
        &jobs,
        threads,
        || (),
        |_, _, job| {
            let (lpath, stat) = &todo[job.file];
            let full: PathBuf = root.join(lpath);
            if job.whole {
                *whole[job.file].lock().unwrap_or_else(|e| e.into_inner()) = hash_file(&full);
                return Ok(());
            }
            let hashes = hash_piece(&full, stat, job.first_block, job.blocks, on_block);
            let mut slot = pieces[job.file].lock().unwrap_or_else(|e| e.into_inner());
            match hashes {
                Some(hashes) => {
                    for (k, h) in hashes.into_iter().enumerate() {
                        slot.0[job.first_block as usize + k] = Some(h);
                    }
                }
                None => slot.1 = false,
            }
            Ok(())
        },
    );
    let Ok(()) = hashed;
    collect(root, todo, whole, pieces)
}

/// The hashing jobs of `todo`: a whole file each for small files, pieces of
/// `piece_bytes` for those hashed in pieces.
fn jobs_of(todo: &[(String, Stat)], piece_bytes: u64) -> Vec<Job> {
    let block = holdall_proto::limits::BLOCK_BYTES_MAX as u64;
    let mut jobs = Vec::new();
    for (file, (_, stat)) in todo.iter().enumerate() {
        if !hashed_in_pieces(stat.size) {
            jobs.push(Job {
                file,
                first_block: 0,
                blocks: 0,
                whole: true,
            });
            continue;
        }
        let blocks = stat.size.div_ceil(block);
        let per_piece = piece_bytes / block;
        for first_block in (0..blocks).step_by(per_piece as usize) {
            jobs.push(Job {
                file,
                first_block,
                blocks: per_piece.min(blocks - first_block),
                whole: false,
            });
        }
    }
    jobs
}

/// Each file's blocklist from its job results: a file hashed in pieces counts only if every
/// piece held still and the file still has the stat they saw.
fn collect(
    root: &Path,
    todo: &[(String, Stat)],
    whole: Vec<Mutex<Hashed>>,
    pieces: Vec<Mutex<(Vec<Option<BlockHash>>, bool)>>,
) -> Vec<Hashed> {
    let mut out = Vec::with_capacity(todo.len());
    for (file, (lpath, stat)) in todo.iter().enumerate() {
        if !hashed_in_pieces(stat.size) {
            out.push(whole[file].lock().unwrap_or_else(|e| e.into_inner()).take());
            continue;
        }
        let (hashes, held) =
            std::mem::take(&mut *pieces[file].lock().unwrap_or_else(|e| e.into_inner()));
        // The file still has the stat every piece saw, so the pieces are of one version.
        let still = std::fs::metadata(root.join(lpath)).is_ok_and(|m| Stat::of(&m) == *stat);
        let blocklist: Option<Vec<BlockHash>> = hashes.into_iter().collect();
        out.push(match (held && still, blocklist) {
            (true, Some(blocklist)) => Some((blocklist, stat.clone())),
            _ => None,
        });
    }
    out
}

/// The hashes of blocks `first..first + count` of the file at `path`, which must have
/// `stat` before and after they are read; each told to `on_block` once hashed.
fn hash_piece(
    path: &Path,
    stat: &Stat,
    first: u64,
    count: u64,
    on_block: Option<OnBlock>,
) -> Option<Vec<BlockHash>> {
    use std::os::unix::fs::FileExt;
    let block = holdall_proto::limits::BLOCK_BYTES_MAX as u64;
    let file = File::open(path).ok()?;
    let same = |f: &File| f.metadata().is_ok_and(|m| Stat::of(&m) == *stat);
    if !same(&file) {
        return None;
    }
    let mut buf = vec![0u8; block as usize];
    let mut out = Vec::with_capacity(count as usize);
    for b in first..first + count {
        let len = (stat.size - b * block).min(block) as usize;
        file.read_exact_at(&mut buf[..len], b * block).ok()?;
        let hash = BlockHash::of(&buf[..len]);
        if let Some(tell) = on_block {
            tell(HashedBlock {
                path,
                offset: b * block,
                len,
                hash,
            });
        }
        out.push(hash);
    }
    same(&file).then_some(out)
}

/// Temporary files a stopped client left behind, with the hash of each block-sized piece:
/// the blocks it had already fetched are found there instead of being fetched again.
pub fn leftovers(root: &Path) -> Vec<(PathBuf, Vec<BlockHash>, u64)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let name = e.file_name();
            if ft.is_dir() && !(dir == root && name == STATE_DIR) {
                dirs.push(e.path());
            } else if ft.is_file() && name.to_string_lossy().starts_with(TEMP_PREFIX) {
                if let Some(pieces) = hash_pieces(&e.path()) {
                    out.push((e.path(), pieces.0, pieces.1));
                }
            }
        }
    }
    out
}

fn hash_pieces(path: &Path) -> Option<(Vec<BlockHash>, u64)> {
    let mut file = File::open(path).ok()?;
    let size = file.metadata().ok()?.len();
    let mut buf = vec![0u8; holdall_proto::limits::BLOCK_BYTES_MAX];
    let mut pieces = Vec::new();
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(_) => return None,
            }
        }
        if filled == 0 {
            break;
        }
        pieces.push(BlockHash::of(&buf[..filled]));
    }
    Some((pieces, size))
}

/// The stat of a file this client just renamed into place at `path`, if it is still the
/// file that was built with stat `built` (the rename moved its ctime, nothing else): the
/// stat to cache its blocklist under. None if anything else changed meanwhile; the next
/// scan then hashes it.
pub fn placed(path: &Path, built: &Stat) -> Option<Stat> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let now = Stat::of(&meta);
    (meta.is_file()
        && now.size == built.size
        && now.mtime_ns == built.mtime_ns
        && now.inode == built.inode)
        .then_some(now)
}

/// Whether the file at `path` still has `stat` (nobody changed it since it was scanned).
pub fn unchanged(path: &Path, stat: &Stat) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && Stat::of(&m) == *stat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::stat::COARSE_RACY_NS;

    /// Reading at `now_ns`, every changed file.
    fn read_at(now_ns: i64) -> ReadAt {
        ReadAt {
            now_ns,
            quiet_ns: 0,
        }
    }

    #[test]
    fn walk_skips_state_temp_ignored_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join(".holdall")).unwrap();
        std::fs::write(root.join(".holdall/state.db"), b"x").unwrap();
        std::fs::create_dir_all(root.join("a/build")).unwrap();
        std::fs::write(root.join("a/keep.txt"), b"k").unwrap();
        std::fs::write(root.join("a/build/out.o"), b"o").unwrap();
        std::fs::write(root.join("a/x.log"), b"l").unwrap();
        std::fs::write(root.join(".holdallignore"), b"*.log\nbuild/\n").unwrap();
        std::fs::write(root.join(".holdall-tmp-abc"), b"t").unwrap();
        std::os::unix::fs::symlink("a/keep.txt", root.join("link")).unwrap();
        let seen = walk(root);
        let paths: Vec<&str> = seen.keys().map(String::as_str).collect();
        assert_eq!(paths, vec![".holdallignore", "a", "a/keep.txt"]);
    }

    #[test]
    fn large_files_hashed_in_pieces_match_the_whole_file_hash() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let block = holdall_proto::limits::BLOCK_BYTES_MAX;
        let data: Vec<u8> = (0..5 * block + 123).map(|i| (i * 7 % 253) as u8).collect();
        std::fs::write(root.join("big"), &data).unwrap();
        std::fs::write(root.join("small"), b"small").unwrap();
        let seen = walk(root);
        let todo: Vec<(String, Stat)> = seen
            .into_iter()
            .filter_map(|(p, s)| match s {
                Seen::File(st) => Some((p, st)),
                Seen::Dir => None,
            })
            .collect();
        // Pieces of one block: "big" is hashed as six pieces on three threads, each block
        // told as it is hashed; "small" is hashed whole and not told.
        let told = Mutex::new(Vec::new());
        let tell = |b: HashedBlock| {
            told.lock()
                .unwrap()
                .push((b.path.to_path_buf(), b.offset, b.len, b.hash))
        };
        let got = hash_all(root, &todo, 3, block as u64, Some(&tell));
        let (big, _) = got[0].clone().expect("big held still");
        assert_eq!(big, holdall_proto::blocklist_of(&data));
        assert_eq!(got[1].as_ref().unwrap().0, vec![BlockHash::of(b"small")]);
        let mut told = told.into_inner().unwrap();
        told.sort_by_key(|t| t.1);
        let expected: Vec<_> = big
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let len = block.min(data.len() - i * block);
                (root.join("big"), (i * block) as u64, len, *h)
            })
            .collect();
        assert_eq!(told, expected);
        // A file whose stat no longer matches the walk's is not taken.
        std::fs::write(root.join("big"), &data[..block]).unwrap();
        assert!(hash_all(root, &todo, 3, block as u64, None)[0].is_none());
    }

    /// The cache `local_tree` would have written for `root`'s files had they been hashed
    /// long enough after they changed.
    fn settled_cache(root: &Path) -> HashMap<String, HashEntry> {
        let t = local_tree(
            root,
            walk(root),
            &HashMap::new(),
            2,
            read_at(now_ns()),
            None,
        );
        t.stats
            .iter()
            .map(|(p, st)| (p.clone(), st.entry(t.nodes[p].blocklist.clone())))
            .collect()
    }

    fn file_stat(path: &Path) -> Stat {
        Stat::of(&std::fs::metadata(path).unwrap())
    }

    /// Past one tick of the filesystem's clock, so the next change gets new times.
    fn next_tick() {
        std::thread::sleep(std::time::Duration::from_millis(30));
    }

    #[test]
    fn cached_blocklists_are_reused_and_changes_rehashed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("f"), b"hello").unwrap();
        let cache = settled_cache(root);
        assert_eq!(cache["f"].blocklist, vec![BlockHash::of(b"hello")]);
        let again = local_tree(root, walk(root), &cache, 2, read_at(now_ns()), None);
        assert_eq!(again.hashed_bytes, 0, "an unchanged file is not read");
        assert_eq!(again.nodes["f"].blocklist, vec![BlockHash::of(b"hello")]);
        next_tick();
        std::fs::write(root.join("f"), b"hello, world").unwrap();
        let changed = local_tree(root, walk(root), &cache, 2, read_at(now_ns()), None);
        assert_eq!(changed.hashed_bytes, 12);
        assert_eq!(changed.nodes["f"].size, 12);
    }

    #[test]
    fn an_edit_that_puts_size_and_mtime_back_is_still_seen() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let f = root.join("f");
        std::fs::write(&f, b"version one").unwrap();
        let cache = settled_cache(root);
        let before = file_stat(&f);
        next_tick();
        // Same size, and the old mtime put back (as `touch -r` or `rsync -t --inplace` do).
        std::fs::write(&f, b"version two").unwrap();
        let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
        let old = SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(before.mtime_ns as u64);
        assert_ne!(mtime, old);
        File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let after = file_stat(&f);
        assert_eq!(
            (after.size, after.mtime_ns, after.inode),
            (before.size, before.mtime_ns, before.inode)
        );
        let t = local_tree(root, walk(root), &cache, 2, read_at(now_ns()), None);
        assert_eq!(t.nodes["f"].blocklist, vec![BlockHash::of(b"version two")]);
    }

    #[test]
    fn a_file_that_changed_just_before_its_read_is_read_again_at_the_next_scan() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("fresh"), b"just written").unwrap();
        let changed_ns = file_stat(&root.join("fresh")).ctime_ns;
        let t = local_tree(
            root,
            walk(root),
            &HashMap::new(),
            2,
            read_at(changed_ns + 1),
            None,
        );
        let want = vec![BlockHash::of(b"just written")];
        assert_eq!(t.nodes["fresh"].blocklist, want, "used this round");
        let cache: HashMap<_, _> = t.hashed.into_iter().collect();
        assert!(cache["fresh"].racy);
        assert!(file_stat(&root.join("fresh")).matches(&cache["fresh"]));
        let later_ns = changed_ns + COARSE_RACY_NS + 1;
        let again = local_tree(root, walk(root), &cache, 2, read_at(later_ns), None);
        assert_eq!(again.hashed_bytes, 12, "read again with the same stat");
        let cache: HashMap<_, _> = again.hashed.into_iter().collect();
        assert!(!cache["fresh"].racy, "long enough after the change");
        let third = local_tree(root, walk(root), &cache, 2, read_at(later_ns), None);
        assert_eq!(third.hashed_bytes, 0);
        assert_eq!(third.nodes["fresh"].blocklist, want);
    }

    #[test]
    fn a_file_changed_within_the_quiet_time_is_left_for_later_unread() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("f"), b"still being written").unwrap();
        let ctime_ns = file_stat(&root.join("f")).ctime_ns;
        let quiet_ns = 1_000_000_000;
        let scan = |now_ns: i64| {
            let read = ReadAt { now_ns, quiet_ns };
            local_tree(root, walk(root), &HashMap::new(), 2, read, None)
        };
        let soon = scan(ctime_ns + quiet_ns / 10);
        assert!(soon.unsettled.contains("f") && !soon.nodes.contains_key("f"));
        assert_eq!(soon.hashed_bytes, 0, "not read");
        let later = scan(ctime_ns + 2 * quiet_ns);
        assert!(later.unsettled.is_empty() && later.nodes.contains_key("f"));
        // A ctime after the scan's clock (the clock was set back) does not hold it back.
        let back = scan(ctime_ns - 1);
        assert!(back.unsettled.is_empty() && back.nodes.contains_key("f"));
    }

    #[test]
    fn a_placed_file_is_cached_under_the_stat_its_rename_left() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("temp"), b"built").unwrap();
        let built = file_stat(&root.join("temp"));
        next_tick();
        std::fs::rename(root.join("temp"), root.join("f")).unwrap();
        let now = placed(&root.join("f"), &built).expect("the same file");
        assert_ne!(now.ctime_ns, built.ctime_ns, "a rename moves ctime");
        next_tick();
        std::fs::write(root.join("f"), b"other").unwrap();
        assert!(
            placed(&root.join("f"), &built).is_none(),
            "an edit is not cached"
        );
        assert!(placed(&root.join("gone"), &built).is_none());
    }
}
