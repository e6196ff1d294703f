//! O_DIRECT file I/O through glommio, kept in one place so the runtime could be replaced.
//!
//! Files are opened for reading and writing (`DmaFile::create` would open write-only),
//! writes and reads are whole and aligned, and short transfers are errors.

use std::io;
use std::path::Path;
use std::rc::Rc;

use glommio::io::OpenOptions;
pub use glommio::io::{DmaBuffer, DmaFile, ReadResult};

/// A DMA-aligned buffer of `len` bytes. Must run inside an executor.
pub fn alloc_buffer(len: usize) -> DmaBuffer {
    glommio::allocate_dma_buffer(len)
}

/// Settles glommio's io_poll probe for the device holding `dir`, on this thread.
///
/// glommio decides per device (cached per thread) whether reads may use the polled ring by
/// reading 512 bytes at offset 0 of the first file opened there. On an empty file that read
/// hits end-of-file and "succeeds", so glommio wrongly enables polling, and every later read
/// on a device without poll queues fails with EOPNOTSUPP. Opening a file that has data first
/// makes the probe see the device's real answer. Call before opening files in `dir`.
pub async fn probe_device(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    thread_local!(static PROBED: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) });
    let dev = std::fs::metadata(dir)?.dev();
    if PROBED.with(|p| p.borrow().contains(&dev)) {
        return Ok(());
    }
    let path = dir.join(".io-probe");
    std::fs::write(&path, [0u8; 4096])?;
    let file = open_ro(&path).await;
    std::fs::remove_file(&path)?;
    file?.close().await?;
    PROBED.with(|p| p.borrow_mut().push(dev));
    Ok(())
}

/// Opens `path` for O_DIRECT reads and writes, creating it (mode 0600) when `create` is set.
pub async fn open_rw(path: &Path, create: bool) -> io::Result<DmaFile> {
    Ok(OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .mode(0o600)
        .dma_open(path)
        .await?)
}

/// Opens `path` for O_DIRECT reads.
pub async fn open_ro(path: &Path) -> io::Result<DmaFile> {
    Ok(OpenOptions::new().read(true).dma_open(path).await?)
}

/// Writes all of `buf` at `pos` (both aligned); a short write is an error. A regular file
/// takes fewer bytes than asked only when its file system has no room for more, so a short
/// write is reported as a full disk (callers answer 507, not 503).
pub async fn write_all_at(file: &DmaFile, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<()> {
    let len = buf.len();
    let written = file.write_rc_at(buf, pos).await?;
    if written != len {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!("disk full: wrote {written} of {len} bytes at {pos}"),
        ));
    }
    Ok(())
}

/// Reads exactly `len` bytes at `pos` (both aligned); fewer bytes is `UnexpectedEof`.
pub async fn read_exact_at(file: &DmaFile, pos: u64, len: usize) -> io::Result<ReadResult> {
    let r = file.read_at_aligned(pos, len).await?;
    if r.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("short read: {} of {len} bytes at {pos}", r.len()),
        ));
    }
    Ok(r)
}

/// Reads up to `len` bytes at `pos`; fewer at the end of the file.
pub async fn read_at(file: &DmaFile, pos: u64, len: usize) -> io::Result<ReadResult> {
    Ok(file.read_at_aligned(pos, len).await?)
}

/// fdatasync.
pub async fn sync(file: &DmaFile) -> io::Result<()> {
    Ok(file.fdatasync().await?)
}

/// Cuts the file at `path` to `len` bytes and fdatasyncs it, on this thread.
///
/// glommio runs truncation on a helper thread that wakes the executor when done; under many
/// executors in one process that wake was sometimes lost and the executor slept for good
/// (tests that cut a torn tail thousands of times hung in about 4 runs out of 10). Cutting
/// only happens when a store opens, so doing it here costs nothing that matters.
pub fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_data()
}

/// The file's size in bytes.
pub async fn size(file: &DmaFile) -> io::Result<u64> {
    Ok(file.file_size().await?)
}

/// fsyncs a directory so that files created or renamed in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
