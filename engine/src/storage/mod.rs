//! The storage seam: every byte the block log and the journal keep goes through
//! [`Storage`] and [`StorageFile`], so that the medium can be swapped without touching them.
//!
//! Implementations: [`dma::DmaStorage`], the production one (O_DIRECT through glommio's
//! io_uring), and [`memory::MemStorage`], which keeps files in memory, tracks what a crash
//! would keep (synced bytes, synced directory entries), and can fail I/O on a countdown or
//! crash at the N-th sync. Crash-consistency tests drive the real engine code over it.
//! [`overlay::OverlayStorage`] sits on another medium and keeps every change in memory, so
//! an engine can be opened and checked without changing a byte on disk.
//!
//! The seam is a file medium: positional aligned reads and writes, fdatasync, truncation,
//! and the directory operations the engine uses (list, rename, remove, directory fsync).
//! What a caller may assume of it is in docs/FORMATS.md ("What the formats assume of the
//! medium"). Object storage is not a file medium (no appends, no fsync); it plugs in one
//! level up, as another block store behind the same put/get contract (docs/DECISIONS.md).

pub mod dma;
pub mod memory;
pub mod overlay;

use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use futures::future::LocalBoxFuture;
pub use glommio::io::DmaBuffer;
use glommio::io::ReadResult;

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Reads only; the file must exist.
    Read,
    /// Reads and writes; the file must exist.
    ReadWrite,
    /// Reads and writes; the file is created (mode 0600) if missing.
    Create,
}

/// Bytes read from a file: a slice of a DMA buffer, or owned bytes.
pub enum ReadBuf {
    /// What an O_DIRECT read returned.
    Dma(ReadResult),
    /// A copy (the in-memory medium).
    Owned(Vec<u8>),
}

impl Deref for ReadBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            ReadBuf::Dma(r) => r,
            ReadBuf::Owned(v) => v,
        }
    }
}

/// An open file of a [`Storage`]. Offsets and lengths of reads and writes are multiples of
/// [`crate::ALIGN_BYTES`].
pub trait StorageFile {
    /// Writes `buf` at `pos` and returns how many bytes were taken (fewer only when the
    /// medium has no room).
    fn write_at(&self, buf: Rc<DmaBuffer>, pos: u64) -> LocalBoxFuture<'_, io::Result<usize>>;
    /// Reads up to `len` bytes at `pos`; fewer at the end of the file.
    fn read_at(&self, pos: u64, len: usize) -> LocalBoxFuture<'_, io::Result<ReadBuf>>;
    /// Makes everything written so far, and the file's size, durable (fdatasync).
    fn sync(&self) -> LocalBoxFuture<'_, io::Result<()>>;
    /// The file's size in bytes.
    fn size(&self) -> LocalBoxFuture<'_, io::Result<u64>>;
}

/// A medium holding the engine's files.
pub trait Storage {
    /// Creates `dir` (and its parents) and readies the medium for files in it.
    fn create_dir(&self, dir: &Path) -> LocalBoxFuture<'_, io::Result<()>>;
    /// Readies the medium for reading files in `dir`, or the nearest folder above it that
    /// exists, without writing anything.
    fn ready_for_reads(&self, _dir: &Path) -> LocalBoxFuture<'_, io::Result<()>> {
        Box::pin(async { Ok(()) })
    }
    /// Opens the file at `path`.
    fn open(
        &self,
        path: &Path,
        mode: OpenMode,
    ) -> LocalBoxFuture<'_, io::Result<Rc<dyn StorageFile>>>;
    /// The names of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Cuts the file at `path` to `len` bytes, durably.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Makes the entries created, renamed or removed in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Removes the file at `path` (durable after [`Storage::sync_dir`]).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to` (durable after [`Storage::sync_dir`]).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// The whole content of a small file (hints, snapshots), through the page cache.
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Creates or replaces the small file at `path` with `bytes` and fsyncs it (its name is
    /// durable after [`Storage::sync_dir`]).
    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
}

/// Replaces the small file at `path` with `bytes` so that a crash leaves the old content or
/// the new, never a mix: written to a temporary name, fsynced, renamed, directory fsynced.
pub fn replace_file(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    storage.write_file(&tmp, bytes)?;
    storage.rename(&tmp, path)?;
    storage.sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Writes all of `buf` at `pos`; a short write is reported as a full disk (callers answer
/// 507, not 503): a regular file takes fewer bytes only when there is no room for more.
pub async fn write_all_at(file: &dyn StorageFile, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<()> {
    let len = buf.len();
    let written = file.write_at(buf, pos).await?;
    if written != len {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!("disk full: wrote {written} of {len} bytes at {pos}"),
        ));
    }
    Ok(())
}

/// Reads exactly `len` bytes at `pos`; fewer is `UnexpectedEof`.
pub async fn read_exact_at(file: &dyn StorageFile, pos: u64, len: usize) -> io::Result<ReadBuf> {
    let r = file.read_at(pos, len).await?;
    if r.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("short read: {} of {len} bytes at {pos}", r.len()),
        ));
    }
    Ok(r)
}

/// Numbers `N` of the entries named `{prefix}N{suffix}` in `dir`, ascending; other names
/// are ignored. Segments, journal files and snapshots are all named this way.
pub fn numbered_files(
    storage: &dyn Storage,
    dir: &Path,
    prefix: &str,
    suffix: &str,
) -> io::Result<Vec<u64>> {
    let mut out: Vec<u64> = storage
        .list(dir)?
        .iter()
        .filter_map(|n| n.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok())
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// A DMA-aligned buffer of `len` bytes. Must run inside an executor.
pub fn alloc_buffer(len: usize) -> DmaBuffer {
    glommio::allocate_dma_buffer(len)
}
