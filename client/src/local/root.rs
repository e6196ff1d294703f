//! Which synced folder holds a path: the nearest folder above it with a state database,
//! and the path relative to it. The path itself need not exist (a deleted file's history).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

use crate::local::scan::STATE_DIR;

/// The synced folder holding `path`, and `path` relative to it (`""` for the folder
/// itself), `/`-separated.
pub fn find_root(path: &Path) -> Result<(PathBuf, String)> {
    let full = resolve(path)?;
    let mut dir = full.as_path();
    loop {
        if dir.join(STATE_DIR).join("state.db").is_file() {
            let rel = full
                .strip_prefix(dir)
                .ok()
                .and_then(|r| r.to_str())
                .ok_or_else(|| anyhow!("{} is not a UTF-8 path", full.display()))?;
            return Ok((dir.to_path_buf(), rel.to_string()));
        }
        dir = dir.parent().ok_or_else(|| {
            anyhow!(
                "{} is not inside a synced folder (run `holdall sync DIR` first)",
                full.display()
            )
        })?;
    }
}

/// `path` made absolute with its links resolved as far as it exists; the missing rest is
/// appended as given (a `..` in it has no name, and is refused).
fn resolve(path: &Path) -> Result<PathBuf> {
    let absolute =
        std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?;
    let mut existing = absolute.as_path();
    let mut missing = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(mut real) => {
                for part in missing.iter().rev() {
                    real.push(part);
                }
                return Ok(real);
            }
            Err(_) => {
                let name = existing
                    .file_name()
                    .ok_or_else(|| anyhow!("{} does not exist", path.display()))?;
                missing.push(name.to_owned());
                existing = existing
                    .parent()
                    .ok_or_else(|| anyhow!("{} does not exist", path.display()))?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_synced_folder_of_paths_that_exist_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("synced");
        std::fs::create_dir_all(root.join(STATE_DIR)).unwrap();
        std::fs::write(root.join(STATE_DIR).join("state.db"), b"").unwrap();
        std::fs::create_dir_all(root.join("a")).unwrap();
        let real = root.canonicalize().unwrap();
        assert_eq!(find_root(&root).unwrap(), (real.clone(), String::new()));
        assert_eq!(
            find_root(&root.join("a")).unwrap(),
            (real.clone(), "a".into())
        );
        assert_eq!(
            find_root(&root.join("a/gone/file.txt")).unwrap(),
            (real, "a/gone/file.txt".into())
        );
        assert!(find_root(dir.path()).is_err());
        assert!(find_root(&root.join("gone/../../x")).is_err());
    }
}
