//! An in-memory medium for tests that break things: it keeps, beside what the engine sees,
//! what a power cut would leave, and can fail I/O on a countdown or crash at the N-th sync.
//!
//! The model is strict POSIX: a file's bytes and size are durable once it is synced; a
//! directory entry (a create, rename or remove) once its directory is synced. At a crash,
//! each page written since the last sync independently keeps its new bytes, keeps its old
//! ones, or (past the synced end) reads as zeros, chosen by a seed; unsynced entries vanish.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use futures::future::LocalBoxFuture;
use futures::FutureExt;
use glommio::io::DmaBuffer;

use super::{OpenMode, ReadBuf, Storage, StorageFile};
use crate::ALIGN_BYTES;

/// One file: what the engine sees, and what a crash would keep.
#[derive(Debug, Default, Clone)]
struct Node {
    data: Vec<u8>,
    synced: Vec<u8>,
}

/// What goes wrong, and when.
#[derive(Debug, Default)]
struct Faults {
    /// Operations (reads, writes, syncs, directory changes) that still succeed; then all fail.
    ops_left: Option<u64>,
    /// The error kind of a failed operation.
    kind: Option<io::ErrorKind>,
    /// Syncs that happened.
    syncs: u64,
    /// The sync (1-based) at which the medium crashes: it and everything after fail.
    crash_at_sync: Option<u64>,
    crashed: bool,
    /// An operation was refused by the countdown.
    refused: bool,
}

#[derive(Debug, Default)]
struct Inner {
    live: BTreeMap<PathBuf, Rc<RefCell<Node>>>,
    durable: BTreeMap<PathBuf, Rc<RefCell<Node>>>,
    dirs: BTreeSet<PathBuf>,
    faults: Faults,
}

/// Files in memory, with faults on request. Clones share the same files.
#[derive(Debug, Default, Clone)]
pub struct MemStorage {
    inner: Rc<RefCell<Inner>>,
}

impl MemStorage {
    /// An empty medium.
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// After `ops` more operations succeed, every later one fails with `kind`.
    pub fn fail_after(&self, ops: u64, kind: io::ErrorKind) {
        let mut inner = self.inner.borrow_mut();
        inner.faults.ops_left = Some(ops);
        inner.faults.kind = Some(kind);
    }

    /// Crashes at the `n`-th sync from now (1 = the next one): that sync and every later
    /// operation fail, and [`MemStorage::after_crash`] tells what survived.
    pub fn crash_at_sync(&self, n: u64) {
        assert!(n >= 1, "syncs are counted from 1");
        let mut inner = self.inner.borrow_mut();
        inner.faults.crash_at_sync = Some(inner.faults.syncs + n);
    }

    /// Whether the medium has crashed.
    pub fn crashed(&self) -> bool {
        self.inner.borrow().faults.crashed
    }

    /// Whether a fault struck: the medium crashed or refused an operation.
    pub fn faulted(&self) -> bool {
        let f = &self.inner.borrow().faults;
        f.crashed || f.refused
    }

    /// Syncs so far (file syncs, directory syncs, small-file writes).
    pub fn syncs(&self) -> u64 {
        self.inner.borrow().faults.syncs
    }

    /// A new medium holding what a power cut now would leave, without faults; pages written
    /// since their file's last sync survive or not as `seed` decides.
    pub fn after_crash(&self, seed: u64) -> MemStorage {
        let inner = self.inner.borrow();
        let mut rng = fastrand::Rng::with_seed(seed);
        let durable = inner
            .durable
            .iter()
            .map(|(path, node)| {
                let kept = torn(&node.borrow(), &mut rng);
                let node = Node {
                    data: kept.clone(),
                    synced: kept,
                };
                (path.clone(), Rc::new(RefCell::new(node)))
            })
            .collect::<BTreeMap<_, _>>();
        MemStorage {
            inner: Rc::new(RefCell::new(Inner {
                live: durable.clone(),
                durable,
                dirs: inner.dirs.clone(),
                faults: Faults::default(),
            })),
        }
    }

    /// The bytes of the file at `path` as the engine sees them.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let inner = self.inner.borrow();
        inner.live.get(path).map(|n| n.borrow().data.clone())
    }

    /// Counts one operation; fails it when the faults say so. A sync may be the crash.
    fn op(&self, sync: bool) -> io::Result<()> {
        let mut inner = self.inner.borrow_mut();
        let f = &mut inner.faults;
        if f.crashed {
            return Err(io::Error::other("the medium crashed"));
        }
        if sync {
            f.syncs += 1;
            if f.crash_at_sync == Some(f.syncs) {
                f.crashed = true;
                return Err(io::Error::other("the medium crashed"));
            }
        }
        match &mut f.ops_left {
            Some(0) => {
                f.refused = true;
                Err(io::Error::new(
                    f.kind.unwrap_or(io::ErrorKind::Other),
                    "injected I/O failure",
                ))
            }
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn node(&self, path: &Path) -> io::Result<Rc<RefCell<Node>>> {
        self.inner
            .borrow()
            .live
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{path:?}")))
    }
}

/// What a crash leaves of `node`: its synced bytes, with each page written since (inside
/// the synced length: overwritten; past it: appended) kept, lost or, past the end, zero.
fn torn(node: &Node, rng: &mut fastrand::Rng) -> Vec<u8> {
    let page = ALIGN_BYTES as usize;
    let mut out = node.synced.clone();
    let common = out.len().min(node.data.len());
    for start in (0..common).step_by(page) {
        let end = (start + page).min(common);
        if out[start..end] != node.data[start..end] && rng.bool() {
            out[start..end].copy_from_slice(&node.data[start..end]);
        }
    }
    if node.data.len() > out.len() {
        // The size may have grown by any number of pages; each kept page holds its new
        // bytes or zeros (the size was updated, the data not).
        let extra = node.data.len() - out.len();
        let kept = rng.usize(0..=extra.div_ceil(page)) * page;
        let from = out.len();
        for start in (from..from + kept.min(extra)).step_by(page) {
            let end = (start + page).min(node.data.len());
            match rng.bool() {
                true => out.extend_from_slice(&node.data[start..end]),
                false => out.resize(end, 0),
            }
        }
    }
    out
}

/// An open file of a [`MemStorage`]: it stays the same file across renames, like an inode.
struct MemFile {
    storage: MemStorage,
    node: Rc<RefCell<Node>>,
}

impl StorageFile for MemFile {
    fn write_at(&self, buf: Rc<DmaBuffer>, pos: u64) -> LocalBoxFuture<'_, io::Result<usize>> {
        async move {
            self.storage.op(false)?;
            let mut node = self.node.borrow_mut();
            let (pos, len) = (pos as usize, buf.len());
            if node.data.len() < pos + len {
                node.data.resize(pos + len, 0);
            }
            node.data[pos..pos + len].copy_from_slice(buf.as_bytes());
            Ok(len)
        }
        .boxed_local()
    }

    fn read_at(&self, pos: u64, len: usize) -> LocalBoxFuture<'_, io::Result<ReadBuf>> {
        async move {
            self.storage.op(false)?;
            let node = self.node.borrow();
            let start = (pos as usize).min(node.data.len());
            let end = (start + len).min(node.data.len());
            Ok(ReadBuf::Owned(node.data[start..end].to_vec()))
        }
        .boxed_local()
    }

    fn sync(&self) -> LocalBoxFuture<'_, io::Result<()>> {
        async move {
            self.storage.op(true)?;
            let mut node = self.node.borrow_mut();
            node.synced = node.data.clone();
            Ok(())
        }
        .boxed_local()
    }

    fn size(&self) -> LocalBoxFuture<'_, io::Result<u64>> {
        async move { Ok(self.node.borrow().data.len() as u64) }.boxed_local()
    }
}

impl Storage for MemStorage {
    fn create_dir(&self, dir: &Path) -> LocalBoxFuture<'_, io::Result<()>> {
        let dir = dir.to_path_buf();
        async move {
            self.op(false)?;
            let mut inner = self.inner.borrow_mut();
            for d in dir.ancestors() {
                inner.dirs.insert(d.to_path_buf());
            }
            Ok(())
        }
        .boxed_local()
    }

    fn open(
        &self,
        path: &Path,
        mode: OpenMode,
    ) -> LocalBoxFuture<'_, io::Result<Rc<dyn StorageFile>>> {
        let path = path.to_path_buf();
        async move {
            self.op(false)?;
            let node = match (self.node(&path), mode) {
                (Ok(node), _) => node,
                (Err(_), OpenMode::Create) => {
                    let node = Rc::new(RefCell::new(Node::default()));
                    self.inner.borrow_mut().live.insert(path, node.clone());
                    node
                }
                (Err(e), _) => return Err(e),
            };
            let file: Rc<dyn StorageFile> = Rc::new(MemFile {
                storage: self.clone(),
                node,
            });
            Ok(file)
        }
        .boxed_local()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let inner = self.inner.borrow();
        if !inner.dirs.contains(dir) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{dir:?}")));
        }
        Ok(inner
            .live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        self.op(true)?;
        let node = self.node(path)?;
        let mut node = node.borrow_mut();
        node.data.truncate(len as usize);
        node.synced = node.data.clone();
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.op(true)?;
        let mut inner = self.inner.borrow_mut();
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        inner.durable.retain(|p, _| !in_dir(p));
        let entries: Vec<_> = inner
            .live
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, n)| (p.clone(), n.clone()))
            .collect();
        inner.durable.extend(entries);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.op(false)?;
        self.node(path)?;
        self.inner.borrow_mut().live.remove(path);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.op(false)?;
        let node = self.node(from)?;
        let mut inner = self.inner.borrow_mut();
        inner.live.remove(from);
        inner.live.insert(to.to_path_buf(), node);
        Ok(())
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.op(false)?;
        Ok(self.node(path)?.borrow().data.clone())
    }

    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.op(true)?;
        let node = Node {
            data: bytes.to_vec(),
            synced: bytes.to_vec(),
        };
        let mut inner = self.inner.borrow_mut();
        inner
            .live
            .insert(path.to_path_buf(), Rc::new(RefCell::new(node)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{replace_file, write_all_at};

    fn page(byte: u8) -> Rc<DmaBuffer> {
        let mut b = crate::storage::alloc_buffer(ALIGN_BYTES as usize);
        b.as_bytes_mut().fill(byte);
        Rc::new(b)
    }

    #[test]
    fn a_crash_keeps_synced_bytes_and_synced_entries_only() {
        crate::runtime::run(async {
            let m = MemStorage::new();
            let dir = Path::new("/d");
            m.create_dir(dir).await.unwrap();
            let kept = m.open(&dir.join("kept"), OpenMode::Create).await.unwrap();
            write_all_at(&*kept, page(1), 0).await.unwrap();
            kept.sync().await.unwrap();
            m.sync_dir(dir).unwrap();
            let lost = m.open(&dir.join("lost"), OpenMode::Create).await.unwrap();
            write_all_at(&*lost, page(2), 0).await.unwrap();
            lost.sync().await.unwrap();
            for seed in 0..32 {
                let after = m.after_crash(seed);
                assert_eq!(after.contents(&dir.join("kept")), Some(vec![1; 4096]));
                assert_eq!(
                    after.contents(&dir.join("lost")),
                    None,
                    "its entry was never synced"
                );
            }
            write_all_at(&*kept, page(3), 4096).await.unwrap();
            let seen: BTreeSet<usize> = (0..64)
                .map(|seed| {
                    m.after_crash(seed)
                        .contents(&dir.join("kept"))
                        .unwrap()
                        .len()
                })
                .collect();
            assert_eq!(
                seen,
                [4096, 8192].into(),
                "an unsynced append may or may not survive"
            );
        });
    }

    #[test]
    fn replacing_a_file_leaves_the_old_or_the_new_content() {
        crate::runtime::run(async {
            let m = MemStorage::new();
            let dir = Path::new("/d");
            m.create_dir(dir).await.unwrap();
            let path = dir.join("f");
            replace_file(&m, &path, b"old").unwrap();
            for n in 1..=3 {
                let m2 = m.after_crash(0);
                m2.crash_at_sync(n);
                let r = replace_file(&m2, &path, b"new");
                let after = m2.after_crash(n);
                let got = after.contents(&path).unwrap();
                assert!(got == b"old" || got == b"new", "{got:?}");
                if r.is_ok() {
                    assert_eq!(got, b"new", "acknowledged means durable");
                }
            }
        });
    }

    #[test]
    fn the_countdown_fails_every_operation_after_it() {
        crate::runtime::run(async {
            let m = MemStorage::new();
            m.create_dir(Path::new("/d")).await.unwrap();
            m.fail_after(1, io::ErrorKind::StorageFull);
            let f = m.open(Path::new("/d/f"), OpenMode::Create).await.unwrap();
            let e = write_all_at(&*f, page(1), 0).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::StorageFull);
            assert!(f.sync().await.is_err());
        });
    }
}
