//! The production medium: O_DIRECT files through glommio's io_uring, directory operations
//! through the standard library on the calling thread (they happen only when a store opens,
//! rolls a segment or writes a hint or snapshot).

use std::io;
use std::path::Path;
use std::rc::Rc;

use futures::future::LocalBoxFuture;
use futures::FutureExt;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use super::{OpenMode, ReadBuf, Storage, StorageFile};

/// Files on a local file system, read and written with O_DIRECT.
#[derive(Debug, Default, Clone, Copy)]
pub struct DmaStorage;

impl StorageFile for DmaFile {
    fn write_at(&self, buf: Rc<DmaBuffer>, pos: u64) -> LocalBoxFuture<'_, io::Result<usize>> {
        async move { Ok(self.write_rc_at(buf, pos).await?) }.boxed_local()
    }

    fn read_at(&self, pos: u64, len: usize) -> LocalBoxFuture<'_, io::Result<ReadBuf>> {
        async move { Ok(ReadBuf::Dma(self.read_at_aligned(pos, len).await?)) }.boxed_local()
    }

    fn sync(&self) -> LocalBoxFuture<'_, io::Result<()>> {
        async move { Ok(self.fdatasync().await?) }.boxed_local()
    }

    fn size(&self) -> LocalBoxFuture<'_, io::Result<u64>> {
        async move { Ok(self.file_size().await?) }.boxed_local()
    }
}

impl Storage for DmaStorage {
    fn create_dir(&self, dir: &Path) -> LocalBoxFuture<'_, io::Result<()>> {
        let dir = dir.to_path_buf();
        async move {
            std::fs::create_dir_all(&dir)?;
            probe_device(&dir).await
        }
        .boxed_local()
    }

    fn ready_for_reads(&self, dir: &Path) -> LocalBoxFuture<'_, io::Result<()>> {
        let dir = dir.to_path_buf();
        async move { probe_device_read_only(&dir).await }.boxed_local()
    }

    fn open(
        &self,
        path: &Path,
        mode: OpenMode,
    ) -> LocalBoxFuture<'_, io::Result<Rc<dyn StorageFile>>> {
        let path = path.to_path_buf();
        async move {
            // Files are opened for reading and writing: `DmaFile::create` would open them
            // write-only.
            let mut options = OpenOptions::new();
            options.read(true);
            if mode != OpenMode::Read {
                options
                    .write(true)
                    .create(mode == OpenMode::Create)
                    .mode(0o600);
            }
            let file: Rc<dyn StorageFile> = Rc::new(options.dma_open(&path).await?);
            Ok(file)
        }
        .boxed_local()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    /// On this thread: glommio runs truncation on a helper thread that wakes the executor
    /// when done, and under many executors in one process that wake was sometimes lost and
    /// the executor slept for good. Cutting only happens when a store opens.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        file.set_len(len)?;
        file.sync_data()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    }
}

/// Settles glommio's io_poll probe for the device holding `dir`, on this thread.
///
/// glommio decides per device (cached per thread) whether reads may use the polled ring by
/// reading 512 bytes at offset 0 of the first file opened there. On an empty file that read
/// hits end-of-file and "succeeds", so glommio wrongly enables polling, and every later read
/// on a device without poll queues fails with EOPNOTSUPP. Opening a file that has data first
/// makes the probe see the device's real answer.
async fn probe_device(dir: &Path) -> io::Result<()> {
    let dev = device(dir)?;
    if probed(dev) {
        return Ok(());
    }
    let path = dir.join(".io-probe");
    std::fs::write(&path, [0u8; 4096])?;
    let file = OpenOptions::new().read(true).dma_open(&path).await;
    std::fs::remove_file(&path)?;
    file?.close().await?;
    mark_probed(dev);
    Ok(())
}

/// As [`probe_device`] without writing: the probe reads a file that already has data, in
/// `dir` or the nearest folder above it that exists (a check of a store must not write to
/// it). Nothing is settled if no such file is found there.
async fn probe_device_read_only(dir: &Path) -> io::Result<()> {
    let Some(dir) = dir.ancestors().find(|d| d.is_dir()) else {
        return Ok(());
    };
    let dev = device(dir)?;
    if probed(dev) {
        return Ok(());
    }
    let with_data = std::fs::read_dir(dir)?.flatten().find(|e| {
        e.metadata()
            .is_ok_and(|m| m.is_file() && m.len() >= PROBE_BYTES_MIN)
    });
    if let Some(entry) = with_data {
        let file = OpenOptions::new().read(true).dma_open(entry.path()).await?;
        file.close().await?;
        mark_probed(dev);
    }
    Ok(())
}

/// What glommio's probe reads at offset 0.
const PROBE_BYTES_MIN: u64 = 512;

thread_local!(static PROBED: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) });

fn device(dir: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(dir)?.dev())
}

fn probed(dev: u64) -> bool {
    PROBED.with(|p| p.borrow().contains(&dev))
}

fn mark_probed(dev: u64) {
    PROBED.with(|p| p.borrow_mut().push(dev));
}
