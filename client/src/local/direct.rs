//! Writes of large blocks that bypass the page cache (O_DIRECT).
//!
//! A rebuilt file is flushed before it is renamed into place anyway, so caching its bytes
//! buys nothing, and writing a large file through the page cache was the slowest and least
//! steady part of a download (the copy into fresh cache pages, then dirty-page throttling;
//! docs/DECISIONS.md). Blocks sit at multiples of 4 MiB in their file,
//! so every block is aligned; a short last block is padded to the alignment and the file is
//! cut to its length when it is finished.
//!
//! Where the filesystem refuses O_DIRECT the write goes through the page cache and its
//! writeback is started at once, which keeps dirty pages from piling up.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use holdall_proto::limits::BLOCK_BYTES_MAX;
use holdall_proto::payload::{Payload, ALIGN_BYTES};

/// How far behind the newest buffered write a large file's writeback is waited for.
const WRITEBACK_WINDOW_BYTES: u64 = 32 << 20;

/// One worker's aligned buffer for direct writes, allocated at its first use and reused.
#[derive(Default)]
pub struct Scratch(Vec<u8>);

impl Scratch {
    /// `data` (at most a block) copied to an aligned place and zero-padded to the
    /// alignment.
    fn aligned(&mut self, data: &[u8]) -> &[u8] {
        debug_assert!(data.len() <= BLOCK_BYTES_MAX);
        self.0.resize(BLOCK_BYTES_MAX + ALIGN_BYTES, 0);
        let skip = self.0.as_ptr().align_offset(ALIGN_BYTES);
        let padded = data.len().next_multiple_of(ALIGN_BYTES);
        let buf = &mut self.0[skip..skip + padded];
        buf[..data.len()].copy_from_slice(data);
        buf[data.len()..].fill(0);
        buf
    }
}

/// Writes `payload` at `offset` (a multiple of 4 MiB) of the file at `path`, creating it.
/// Bytes past it up to the alignment are zeros until the file is cut to its length.
pub fn write_block(
    path: &Path,
    payload: Payload,
    offset: u64,
    scratch: &mut Scratch,
) -> io::Result<()> {
    let data = payload.data();
    if data.len() > BLOCK_BYTES_MAX || !offset.is_multiple_of(ALIGN_BYTES as u64) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a block at a block's offset",
        ));
    }
    let direct = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_DIRECT)
        .open(path);
    match direct {
        Ok(file) => {
            let padded = match payload.padded() {
                Some(p) => p,
                None => scratch.aligned(data),
            };
            file.write_all_at(padded, offset)
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            file.write_all_at(data, offset)?;
            start_writeback(&file, offset, data.len() as u64);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Starts writing `len` bytes at `offset` of `file` back to the disk now, and waits for the
/// writeback started [`WRITEBACK_WINDOW_BYTES`] earlier in the file. Not a durability step:
/// the filesystem sync before the rename is.
fn start_writeback(file: &File, offset: u64, len: u64) {
    let fd = file.as_raw_fd();
    // SAFETY: sync_file_range only reads the descriptor, which `file` keeps open. A
    // failure only loses the hint.
    unsafe {
        libc::sync_file_range(
            fd,
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
        if let Some(behind) = offset.checked_sub(WRITEBACK_WINDOW_BYTES) {
            libc::sync_file_range(
                fd,
                behind as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_land_at_their_offsets_and_short_ones_are_padded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut scratch = Scratch::default();
        let a: Vec<u8> = (0..BLOCK_BYTES_MAX).map(|i| (i % 251) as u8).collect();
        let b: Vec<u8> = (0..5000).map(|i| (i % 13) as u8).collect();
        write_block(
            &path,
            Payload::plain(&b),
            BLOCK_BYTES_MAX as u64,
            &mut scratch,
        )
        .unwrap();
        write_block(&path, Payload::plain(&a), 0, &mut scratch).unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        assert_eq!(
            file.metadata().unwrap().len(),
            (BLOCK_BYTES_MAX + 8192) as u64,
            "the short block is padded to the alignment"
        );
        file.set_len((BLOCK_BYTES_MAX + b.len()) as u64).unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(&back[..BLOCK_BYTES_MAX], &a[..]);
        assert_eq!(&back[BLOCK_BYTES_MAX..], &b[..]);
    }

    #[test]
    fn more_than_a_block_or_a_misaligned_offset_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut scratch = Scratch::default();
        let big = vec![1u8; BLOCK_BYTES_MAX + 1];
        assert!(write_block(&path, Payload::plain(&big), 0, &mut scratch).is_err());
        assert!(write_block(&path, Payload::plain(b"x"), 100, &mut scratch).is_err());
        assert!(!path.exists(), "nothing was created");
    }
}
