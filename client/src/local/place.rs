//! Moving rebuilt files into place. A new file is renamed with `RENAME_NOREPLACE`, so
//! whatever appeared at its path since the scan (a file the user just saved, a folder) is
//! never replaced: the next round sees it and keeps both versions. New files are placed on
//! several threads: each rename is a directory update, and 10,000 of them in a row cost
//! about as much as fetching the files.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::pool;

/// Below this many files, placing them on the calling thread is cheaper than threads.
const THREADED_FILES_MIN: usize = 64;

/// Why a file was not placed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// A folder is at the path.
    #[error("a folder is in the way")]
    FolderInTheWay,
    /// A file appeared at the path since the scan; it is left as it is.
    #[error("a file appeared at the path meanwhile")]
    FileAppeared,
    /// The rename failed.
    #[error("moving into place: {0}")]
    Io(#[from] io::Error),
}

/// Renames `from` to `to` unless something is at `to`.
pub fn rename_new(from: &Path, to: &Path) -> Result<(), PlaceError> {
    let (Ok(f), Ok(t)) = (
        CString::new(from.as_os_str().as_bytes()),
        CString::new(to.as_os_str().as_bytes()),
    ) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput).into());
    };
    // SAFETY: both are NUL-terminated paths that live across the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EEXIST) => Err(occupied(to)),
        // A filesystem without RENAME_NOREPLACE: check, then rename (a narrow race).
        Some(libc::EINVAL) | Some(libc::ENOSYS) => match std::fs::symlink_metadata(to) {
            Ok(_) => Err(occupied(to)),
            Err(_) => Ok(std::fs::rename(from, to)?),
        },
        _ => Err(e.into()),
    }
}

fn occupied(to: &Path) -> PlaceError {
    match std::fs::symlink_metadata(to) {
        Ok(m) if m.is_dir() => PlaceError::FolderInTheWay,
        _ => PlaceError::FileAppeared,
    }
}

/// Places each `(from, to)` of `moves` with [`rename_new`] on up to `threads` threads; the
/// outcome of each, in order. A move that fails leaves `from` where it was.
pub fn place_new(moves: &[(PathBuf, PathBuf)], threads: usize) -> Vec<Result<(), PlaceError>> {
    if moves.len() < THREADED_FILES_MIN || threads <= 1 {
        return moves.iter().map(|(f, t)| rename_new(f, t)).collect();
    }
    pool::map(moves, threads, |(from, to)| rename_new(from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_files_never_replace_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut moves = Vec::new();
        for i in 0..100 {
            std::fs::write(d.join(format!("t{i}")), format!("new {i}")).unwrap();
            moves.push((d.join(format!("t{i}")), d.join(format!("f{i}"))));
        }
        std::fs::write(d.join("f7"), "the user's").unwrap();
        std::fs::create_dir(d.join("f9")).unwrap();
        let out = place_new(&moves, 4);
        assert_eq!(out.len(), 100);
        assert!(matches!(out[7], Err(PlaceError::FileAppeared)));
        assert!(matches!(out[9], Err(PlaceError::FolderInTheWay)));
        assert_eq!(std::fs::read_to_string(d.join("f7")).unwrap(), "the user's");
        assert!(d.join("t7").exists() && d.join("t9").exists());
        for i in (0..100).filter(|i| *i != 7 && *i != 9) {
            assert!(out[i].is_ok());
            assert_eq!(
                std::fs::read_to_string(d.join(format!("f{i}"))).unwrap(),
                format!("new {i}")
            );
            assert!(!d.join(format!("t{i}")).exists());
        }
    }
}
