//! Backups of a log: which files a consistent copy takes, and the copy. Both logs only ever
//! append, so a sealed segment (with its hint), a sealed journal file and a snapshot never
//! change: they are hard-linked into the backup (copied where the file system refuses a
//! link; `std::fs::copy` clones extents where it allows). The file being written is copied
//! up to the length it had when the list was taken. A backup folder that holds an earlier
//! backup takes only what is new: an immutable file already there with its size is kept,
//! the growing file is extended from the length it has, and files the log no longer has
//! (compacted, collected) are removed.
//!
//! The copy is blocking file-system work, run off the shards.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The files of one log folder a backup takes.
#[derive(Debug, Clone, Default)]
pub struct FileSet {
    /// The log's folder.
    pub dir: PathBuf,
    /// Files that never change: linked.
    pub immutable: Vec<PathBuf>,
    /// Files that never change and may be removed meanwhile because a newer one in
    /// `immutable` stands for them (older journal snapshots): skipped if gone.
    pub superseded: Vec<PathBuf>,
    /// Files being appended to, with the length to copy.
    pub growing: Vec<(PathBuf, u64)>,
}

/// What a copy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Files hard-linked.
    pub files_linked: u64,
    /// Files copied (all or part).
    pub files_copied: u64,
    /// Bytes copied.
    pub bytes_copied: u64,
    /// Files the backup already held.
    pub files_kept: u64,
    /// Files of an earlier backup the log no longer has, removed.
    pub files_removed: u64,
}

impl CopyStats {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: CopyStats) {
        self.files_linked += other.files_linked;
        self.files_copied += other.files_copied;
        self.bytes_copied += other.bytes_copied;
        self.files_kept += other.files_kept;
        self.files_removed += other.files_removed;
    }
}

/// Bytes one copy step moves.
const COPY_CHUNK_BYTES: usize = 4 << 20;

/// Copies `set` into `dest` (the folder that stands for `set.dir`), durably.
pub fn copy_set(set: &FileSet, dest: &Path) -> io::Result<CopyStats> {
    std::fs::create_dir_all(dest)?;
    let mut stats = CopyStats::default();
    let mut listed = HashSet::new();
    for src in &set.immutable {
        let name = file_name(src)?;
        listed.insert(name.to_owned());
        link_or_copy(src, &dest.join(name), &mut stats)?;
    }
    for src in &set.superseded {
        let name = file_name(src)?;
        match link_or_copy(src, &dest.join(name), &mut stats) {
            Ok(()) => {
                listed.insert(name.to_owned());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    for (src, len) in &set.growing {
        let name = file_name(src)?;
        listed.insert(name.to_owned());
        copy_prefix(src, &dest.join(name), *len, &mut stats)?;
    }
    for entry in std::fs::read_dir(dest)? {
        let entry = entry?;
        let name = entry.file_name();
        if !listed.contains(name.to_string_lossy().as_ref()) {
            std::fs::remove_file(entry.path())?;
            stats.files_removed += 1;
        }
    }
    File::open(dest)?.sync_all()?;
    Ok(stats)
}

fn file_name(path: &Path) -> io::Result<&str> {
    path.file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other(format!("{}: not a file name", path.display())))
}

/// An immutable file: kept if the backup has it at its size, else linked, else copied.
fn link_or_copy(src: &Path, dst: &Path, stats: &mut CopyStats) -> io::Result<()> {
    let len = std::fs::metadata(src)?.len();
    match std::fs::metadata(dst) {
        Ok(m) if m.len() == len => {
            stats.files_kept += 1;
            return Ok(());
        }
        Ok(_) => std::fs::remove_file(dst)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if std::fs::hard_link(src, dst).is_ok() {
        stats.files_linked += 1;
        return Ok(());
    }
    let tmp = dst.with_extension("partial");
    std::fs::copy(src, &tmp)?;
    File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dst)?;
    stats.files_copied += 1;
    stats.bytes_copied += len;
    Ok(())
}

/// A growing file: its first `len` bytes, extending what the backup has when that is a
/// prefix of them (the file only grows), else written anew.
fn copy_prefix(src: &Path, dst: &Path, len: u64, stats: &mut CopyStats) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let from = File::open(src)?;
    // A prefix held by a link would share the inode: the backup would change as the log
    // grows, so such a file is written anew.
    let start = match std::fs::metadata(dst) {
        Ok(m) if m.len() <= len && m.nlink() == 1 => m.len(),
        _ => 0,
    };
    if start == 0 {
        let _ = std::fs::remove_file(dst);
    }
    let to = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(dst)?;
    to.set_len(start)?;
    let mut buf = vec![0u8; COPY_CHUNK_BYTES];
    let mut at = start;
    while at < len {
        let want = ((len - at) as usize).min(buf.len());
        from.read_exact_at(&mut buf[..want], at)?;
        to.write_all_at(&buf[..want], at)?;
        at += want as u64;
    }
    to.sync_all()?;
    stats.files_copied += 1;
    stats.bytes_copied += len - start;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_extends_keeps_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("sealed"), vec![1u8; 10_000]).unwrap();
        std::fs::write(src.join("active"), vec![2u8; 8192]).unwrap();
        let set = FileSet {
            dir: src.clone(),
            immutable: vec![src.join("sealed")],
            superseded: vec![src.join("removed-meanwhile")],
            growing: vec![(src.join("active"), 4096)],
        };
        let first = copy_set(&set, &dst).unwrap();
        assert_eq!(
            (first.files_linked, first.files_copied, first.bytes_copied),
            (1, 1, 4096)
        );
        assert_eq!(std::fs::read(dst.join("active")).unwrap(), vec![2u8; 4096]);

        // The log grew and a file appeared in the backup that the log no longer has.
        std::fs::write(dst.join("compacted"), b"x").unwrap();
        let set = FileSet {
            growing: vec![(src.join("active"), 8192)],
            ..set
        };
        let second = copy_set(&set, &dst).unwrap();
        assert_eq!(
            (second.files_kept, second.bytes_copied, second.files_removed),
            (1, 4096, 1)
        );
        assert_eq!(std::fs::read(dst.join("active")).unwrap(), vec![2u8; 8192]);
        assert!(!dst.join("compacted").exists());
        // The growing file was copied, not linked: later appends do not reach the backup.
        std::fs::write(src.join("active"), vec![3u8; 8192]).unwrap();
        assert_eq!(std::fs::read(dst.join("active")).unwrap(), vec![2u8; 8192]);
    }
}
