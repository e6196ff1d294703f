//! Reading back blocks of local files: only from a file that still has the stat it was
//! hashed with, or only bytes that still hash to their name, so torn content never leaves.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use holdall_proto::BlockHash;

use crate::local::stat::Stat;

/// The file at `path`, opened, if it has `stat` (when given).
pub fn open_unchanged(path: &Path, stat: Option<&Stat>) -> Option<File> {
    let file = File::open(path).ok()?;
    unchanged(&file, stat).then_some(file)
}

/// Fills `data` from `offset` of the file at `path`; false unless the file has `stat`
/// (when given) before and after the read.
pub fn read_unchanged(path: &Path, offset: u64, data: &mut [u8], stat: Option<&Stat>) -> bool {
    open_unchanged(path, stat)
        .is_some_and(|file| file.read_exact_at(data, offset).is_ok() && unchanged(&file, stat))
}

/// Whether `file` still has `stat` (always, when none is given).
pub fn unchanged(file: &File, stat: Option<&Stat>) -> bool {
    stat.is_none_or(|s| file.metadata().is_ok_and(|m| Stat::of(&m) == *s))
}

/// Reads `len` bytes at `offset` of `path` if they still hash to `hash`.
pub fn read_block(path: &Path, offset: u64, len: usize, hash: &BlockHash) -> Option<Vec<u8>> {
    let file = File::open(path).ok()?;
    let mut data = vec![0u8; len];
    file.read_exact_at(&mut data, offset).ok()?;
    (BlockHash::of(&data) == *hash).then_some(data)
}
