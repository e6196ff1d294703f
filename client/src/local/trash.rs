//! The deleted-files cache: files the sync deletes or overwrites locally are moved (not
//! copied) into `.holdall/trash/`, bounded in bytes, oldest evicted first, so that a rename
//! or a move seen as "delete here, create there" rebuilds the new file from the old one's
//! blocks instead of downloading them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use holdall_proto::BlockHash;

use crate::local::state::{State, TrashEntry};

/// The cache's folder and entries.
pub struct Trash {
    dir: PathBuf,
    entries: Vec<TrashEntry>,
    bytes_max: u64,
}

impl Trash {
    /// The cache under `state_dir`, as the state records it.
    pub fn open(state_dir: &Path, state: &State, bytes_max: u64) -> Result<Trash> {
        let dir = state_dir.join("trash");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Trash {
            dir,
            entries: state.trash()?,
            bytes_max,
        })
    }

    /// Where entry `id` lives.
    pub fn path_of(&self, id: i64) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// Every cached file with its blocklist.
    pub fn entries(&self) -> &[TrashEntry] {
        &self.entries
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// Moves the file at `path` (whose blocklist is `blocklist`) into the cache, then evicts
    /// the oldest entries beyond the bound. `link` keeps the file in place too (for a file
    /// about to be replaced by a rename over it).
    pub fn keep(
        &mut self,
        state: &mut State,
        path: &Path,
        blocklist: &[BlockHash],
        size: u64,
        link: bool,
    ) -> Result<()> {
        if size == 0 || size > self.bytes_max {
            if !link {
                std::fs::remove_file(path)
                    .with_context(|| format!("deleting {}", path.display()))?;
            }
            return Ok(());
        }
        let id = state.write(|w| w.add_trash(blocklist, size))?;
        let to = self.path_of(id);
        let moved = if link {
            std::fs::hard_link(path, &to)
        } else {
            std::fs::rename(path, &to)
        };
        if let Err(e) = moved {
            state.write(|w| w.delete_trash(id))?;
            return Err(e).with_context(|| format!("moving {} to the cache", path.display()));
        }
        self.entries.push(TrashEntry {
            id,
            blocklist: blocklist.to_vec(),
            size,
        });
        self.evict(state)
    }

    fn evict(&mut self, state: &mut State) -> Result<()> {
        let mut bytes = self.bytes();
        let mut gone = Vec::new();
        while bytes > self.bytes_max && !self.entries.is_empty() {
            let e = self.entries.remove(0);
            bytes -= e.size;
            gone.push(e.id);
        }
        if gone.is_empty() {
            return Ok(());
        }
        state.write(|w| {
            for id in &gone {
                w.delete_trash(*id)?;
            }
            Ok(())
        })?;
        for id in gone {
            let _ = std::fs::remove_file(self.path_of(id));
        }
        Ok(())
    }
}
