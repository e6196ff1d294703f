//! A medium that never changes the one under it: files are read from the base, and every
//! write, cut, creation, rename and removal is kept in memory on top of it. Opening an
//! engine over it runs its recovery (torn tails cut, a missing file created) exactly as a
//! real open would, and reports what it found, while the folder stays byte for byte as it
//! was: what `holdalld fsck` without `--repair` needs. Memory grows with what is written,
//! which for an open and a check is a few pages.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use futures::future::{FutureExt, LocalBoxFuture};

use super::{DmaBuffer, OpenMode, ReadBuf, Storage, StorageFile};

/// The base medium, read only, under what was written in memory.
pub struct OverlayStorage {
    base: Rc<dyn Storage>,
    state: RefCell<Layers>,
}

#[derive(Default)]
struct Layers {
    /// Files opened, created or cut through the overlay, by the name they have now.
    files: HashMap<PathBuf, Rc<OverlayFile>>,
    /// Small files written whole.
    small: HashMap<PathBuf, Vec<u8>>,
    /// Base files renamed: new name → base name.
    renamed: HashMap<PathBuf, PathBuf>,
    /// Names that no longer exist (removed, or renamed away).
    gone: HashSet<PathBuf>,
}

impl OverlayStorage {
    /// An overlay on `base`.
    pub fn new(base: Rc<dyn Storage>) -> OverlayStorage {
        OverlayStorage {
            base,
            state: RefCell::new(Layers::default()),
        }
    }

    /// The base name of `path`: itself, or what it was renamed from.
    fn base_name(&self, path: &Path) -> PathBuf {
        let state = self.state.borrow();
        state
            .renamed
            .get(path)
            .cloned()
            .unwrap_or_else(|| path.to_path_buf())
    }
}

/// A file as the overlay shows it: the base's bytes up to `base_len`, then zeros, under the
/// pages written, up to `len`.
pub struct OverlayFile {
    base: Option<Rc<dyn StorageFile>>,
    /// How much of the base file shows through (less after a cut).
    base_len: Cell<u64>,
    len: Cell<u64>,
    /// Written bytes by offset, applied in offset order over the base; a write removes the
    /// earlier ranges it covers whole and is patched over those it covers partly.
    written: RefCell<BTreeMap<u64, Vec<u8>>>,
}

impl OverlayFile {
    fn empty() -> OverlayFile {
        OverlayFile {
            base: None,
            base_len: Cell::new(0),
            len: Cell::new(0),
            written: RefCell::new(BTreeMap::new()),
        }
    }

    /// Cuts the file to `len`.
    fn cut(&self, len: u64) {
        self.base_len.set(self.base_len.get().min(len));
        self.len.set(len);
        let mut written = self.written.borrow_mut();
        written.split_off(&len);
        if let Some((&at, bytes)) = written.range_mut(..len).next_back() {
            bytes.truncate((len - at) as usize);
        }
    }

    /// The base, if `len` bytes at `pos` are all the base's, with nothing written over them.
    fn untouched(&self, pos: u64, len: usize) -> Option<&Rc<dyn StorageFile>> {
        let end = pos + len as u64;
        let overlaps = self
            .written
            .borrow()
            .range(..end)
            .any(|(&at, bytes)| at + bytes.len() as u64 > pos);
        (end <= self.base_len.get() && !overlaps)
            .then_some(self.base.as_ref())
            .flatten()
    }

    /// Overwrites `out` (the bytes at `pos`) with every written range that overlaps it.
    fn patch(&self, pos: u64, out: &mut [u8]) {
        let end = pos + out.len() as u64;
        for (&at, bytes) in self.written.borrow().range(..end) {
            let from = at.max(pos);
            let to = (at + bytes.len() as u64).min(end);
            if from < to {
                out[(from - pos) as usize..(to - pos) as usize]
                    .copy_from_slice(&bytes[(from - at) as usize..(to - at) as usize]);
            }
        }
    }
}

impl StorageFile for OverlayFile {
    fn write_at(&self, buf: Rc<DmaBuffer>, pos: u64) -> LocalBoxFuture<'_, io::Result<usize>> {
        async move {
            let bytes = buf.as_bytes().to_vec();
            let end = pos + bytes.len() as u64;
            let mut written = self.written.borrow_mut();
            // Ranges wholly under the new one go; partly covered ones are patched over.
            let covered: Vec<u64> = written
                .range(pos..end)
                .filter(|(&at, b)| at + b.len() as u64 <= end)
                .map(|(&at, _)| at)
                .collect();
            for at in covered {
                written.remove(&at);
            }
            let n = bytes.len();
            written.insert(pos, bytes);
            self.len.set(self.len.get().max(end));
            Ok(n)
        }
        .boxed_local()
    }

    fn read_at(&self, pos: u64, len: usize) -> LocalBoxFuture<'_, io::Result<ReadBuf>> {
        async move {
            // What nothing was written over reads straight from the base, uncopied (a
            // check reads every record of a store this way).
            if let Some(base) = self.untouched(pos, len) {
                return base.read_at(pos, len).await;
            }
            let end = (pos + len as u64).min(self.len.get());
            if pos >= end {
                return Ok(ReadBuf::Owned(Vec::new()));
            }
            let mut out = vec![0u8; (end - pos) as usize];
            let shown = self.base_len.get().min(end);
            if let (Some(base), true) = (&self.base, pos < shown) {
                let want = (shown - pos) as usize;
                let got = base
                    .read_at(pos, want.next_multiple_of(crate::ALIGN_BYTES as usize))
                    .await?;
                let n = got.len().min(want);
                out[..n].copy_from_slice(&got[..n]);
            }
            self.patch(pos, &mut out);
            Ok(ReadBuf::Owned(out))
        }
        .boxed_local()
    }

    fn sync(&self) -> LocalBoxFuture<'_, io::Result<()>> {
        async { Ok(()) }.boxed_local()
    }

    fn size(&self) -> LocalBoxFuture<'_, io::Result<u64>> {
        async move { Ok(self.len.get()) }.boxed_local()
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl Storage for OverlayStorage {
    fn create_dir(&self, dir: &Path) -> LocalBoxFuture<'_, io::Result<()>> {
        // Nothing is made (listing a folder that is only in the overlay shows its files);
        // the base is readied for reading what is there.
        self.base.ready_for_reads(dir)
    }

    fn open(
        &self,
        path: &Path,
        mode: OpenMode,
    ) -> LocalBoxFuture<'_, io::Result<Rc<dyn StorageFile>>> {
        let path = path.to_path_buf();
        async move {
            if let Some(f) = self.state.borrow().files.get(&path) {
                return Ok(f.clone() as Rc<dyn StorageFile>);
            }
            let gone = self.state.borrow().gone.contains(&path);
            let base_name = self.base_name(&path);
            let file = match (gone, self.base.open(&base_name, OpenMode::Read).await) {
                (false, Ok(base)) => {
                    let len = base.size().await?;
                    OverlayFile {
                        base: Some(base),
                        base_len: Cell::new(len),
                        len: Cell::new(len),
                        written: RefCell::new(BTreeMap::new()),
                    }
                }
                (false, Err(e)) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ if mode == OpenMode::Create => OverlayFile::empty(),
                _ => return Err(not_found(&path)),
            };
            let file = Rc::new(file);
            let mut state = self.state.borrow_mut();
            state.gone.remove(&path);
            state.files.insert(path, file.clone());
            Ok(file as Rc<dyn StorageFile>)
        }
        .boxed_local()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names: HashSet<String> = match self.base.list(dir) {
            Ok(names) => names.into_iter().collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => HashSet::new(),
            Err(e) => return Err(e),
        };
        let state = self.state.borrow();
        let in_dir = |p: &PathBuf| {
            (p.parent() == Some(dir))
                .then(|| p.file_name()?.to_str().map(str::to_owned))
                .flatten()
        };
        names.extend(state.files.keys().filter_map(in_dir));
        names.extend(state.small.keys().filter_map(in_dir));
        names.extend(state.renamed.keys().filter_map(in_dir));
        for gone in state.gone.iter().filter_map(in_dir) {
            names.remove(&gone);
        }
        Ok(names.into_iter().collect())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        match self.state.borrow().files.get(path) {
            Some(f) => {
                f.cut(len);
                Ok(())
            }
            // The engine cuts only files it has open.
            None => Err(io::Error::other(format!(
                "{}: cut before it was opened",
                path.display()
            ))),
        }
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.files.remove(path);
        state.small.remove(path);
        state.renamed.remove(path);
        state.gone.insert(path.to_path_buf());
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let base_from = self.base_name(from);
        let mut state = self.state.borrow_mut();
        state.files.remove(to);
        state.small.remove(to);
        state.renamed.remove(to);
        if let Some(f) = state.files.remove(from) {
            state.files.insert(to.to_path_buf(), f);
        } else if let Some(b) = state.small.remove(from) {
            state.small.insert(to.to_path_buf(), b);
        } else {
            state.renamed.remove(from);
            state.renamed.insert(to.to_path_buf(), base_from);
        }
        state.gone.remove(to);
        state.gone.insert(from.to_path_buf());
        Ok(())
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.state.borrow();
        if let Some(b) = state.small.get(path) {
            return Ok(b.clone());
        }
        if state.gone.contains(path) || state.files.contains_key(path) {
            // Whole-file reads are of small files only; one opened as a file is not one.
            return Err(not_found(path));
        }
        drop(state);
        self.base.read_file(&self.base_name(path))
    }

    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.files.remove(path);
        state.renamed.remove(path);
        state.gone.remove(path);
        state.small.insert(path.to_path_buf(), bytes.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemStorage;
    use crate::storage::{read_exact_at, write_all_at};

    const ALIGN_BYTES: usize = crate::ALIGN_BYTES as usize;

    fn page(byte: u8, pages: usize) -> Rc<DmaBuffer> {
        let mut b = crate::storage::alloc_buffer(ALIGN_BYTES * pages);
        b.as_bytes_mut().fill(byte);
        Rc::new(b)
    }

    #[test]
    fn writes_cuts_renames_and_removals_stay_above_the_base() {
        crate::runtime::run(async {
            let base = Rc::new(MemStorage::new());
            let dir = Path::new("/d");
            base.create_dir(dir).await.unwrap();
            let f = base.open(&dir.join("seg"), OpenMode::Create).await.unwrap();
            write_all_at(&*f, page(1, 3), 0).await.unwrap();
            base.write_file(&dir.join("hint"), b"hint").unwrap();
            let o = OverlayStorage::new(base.clone());

            // Write over the middle page and past the end, then cut inside the write.
            let g = o.open(&dir.join("seg"), OpenMode::ReadWrite).await.unwrap();
            write_all_at(&*g, page(2, 1), ALIGN_BYTES as u64)
                .await
                .unwrap();
            write_all_at(&*g, page(3, 2), 3 * ALIGN_BYTES as u64)
                .await
                .unwrap();
            let all = read_exact_at(&*g, 0, 5 * ALIGN_BYTES).await.unwrap();
            let at = |p: usize| all[p * ALIGN_BYTES];
            assert_eq!([at(0), at(1), at(2), at(3), at(4)], [1, 2, 1, 3, 3]);
            // A page nothing was written over is the base's, read straight from it.
            let untouched = read_exact_at(&*g, 2 * ALIGN_BYTES as u64, ALIGN_BYTES)
                .await
                .unwrap();
            assert!(untouched.iter().all(|&b| b == 1));
            o.truncate(&dir.join("seg"), 2 * ALIGN_BYTES as u64)
                .unwrap();
            assert_eq!(g.size().await.unwrap(), 2 * ALIGN_BYTES as u64);
            // Grown again after the cut: what was cut reads as zeros, not the base.
            write_all_at(&*g, page(4, 1), 3 * ALIGN_BYTES as u64)
                .await
                .unwrap();
            let all = read_exact_at(&*g, 0, 4 * ALIGN_BYTES).await.unwrap();
            let at = |p: usize| all[p * ALIGN_BYTES];
            assert_eq!([at(0), at(1), at(2), at(3)], [1, 2, 0, 4]);

            o.rename(&dir.join("hint"), &dir.join("hint2")).unwrap();
            assert_eq!(o.read_file(&dir.join("hint2")).unwrap(), b"hint");
            assert!(o.read_file(&dir.join("hint")).is_err());
            o.write_file(&dir.join("new"), b"n").unwrap();
            o.remove(&dir.join("seg")).unwrap();
            let mut names = o.list(dir).unwrap();
            names.sort();
            assert_eq!(names, ["hint2", "new"]);
            assert!(o.open(&dir.join("seg"), OpenMode::Read).await.is_err());

            // The base is as it was.
            let mut names = base.list(dir).unwrap();
            names.sort();
            assert_eq!(names, ["hint", "seg"]);
            assert_eq!(f.size().await.unwrap(), 3 * ALIGN_BYTES as u64);
            let all = read_exact_at(&*f, 0, 3 * ALIGN_BYTES).await.unwrap();
            assert!(all.iter().all(|&b| b == 1));
            assert_eq!(base.read_file(&dir.join("hint")).unwrap(), b"hint");
        });
    }
}
