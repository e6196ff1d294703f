//! An online backup: a consistent copy of the store in another folder while it serves.
//! The lists of files are taken on the shards, every journal's first (the shards', then the
//! directory's), then every block log's: a row can only name blocks that were durable
//! before it was written, and a namespace is recorded in the directory before any row of
//! it, so every commit acknowledged before the backup began, and every block and namespace
//! it needs, is in the lists. No collection runs meanwhile (one at a time, on shard 0), so
//! nothing listed is removed before it is copied. Every journal first writes a fresh
//! snapshot, so the copy opens fast. The copying runs off the shards.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use holdall_engine::backup::{copy_set, CopyStats, FileSet};
use holdall_proto::api::BackupResponse;

use super::{Shard, ShardError};

/// Files at the top of the data folder a backup takes (the store key only when it is kept
/// there), written last.
const TOP_FILES: [&str; 3] = [
    "admin.token",
    crate::config::STORE_KEY_IN_DATA,
    "layout.toml",
];

impl Shard {
    /// Backs the store up into `to` (on any shard; on shard 0, after any collection).
    pub async fn backup_all(self: &Rc<Self>, to: PathBuf) -> Result<BackupResponse, ShardError> {
        self.submit_to(0, move |s| {
            let s = s.clone();
            async move {
                let _no_collection = s.collecting.lock().await;
                s.backup_now(to).await
            }
        })
        .await?
    }

    async fn backup_now(self: &Rc<Self>, to: PathBuf) -> Result<BackupResponse, ShardError> {
        let started = Instant::now();
        let directory = self
            .directory_journal
            .as_ref()
            .ok_or_else(|| ShardError::Internal("a backup runs on shard 0".into()))?;
        // A fresh snapshot in every journal, so that the copy opens without a long replay.
        self.on_every_shard(|s| {
            let s = s.clone();
            async move { Ok(s.journal().snapshot().await?) }
        })
        .await?;
        directory.snapshot().await?;
        let mut sets: Vec<FileSet> = self
            .on_every_shard(|s| std::future::ready(s.journal().backup_files().map_err(Into::into)))
            .await?;
        sets.push(directory.backup_files()?);
        sets.extend(
            self.on_every_shard(|s| std::future::ready(Ok(s.blocks().backup_files())))
                .await?,
        );
        let data = self.data.clone();
        let copied = glommio::executor()
            .spawn_blocking(move || copy_store(&sets, &data, &to))
            .await
            .map_err(|e| ShardError::Backup(format!("{e:#}")))?;
        Ok(BackupResponse {
            files_linked: copied.files_linked,
            files_copied: copied.files_copied,
            bytes_copied: copied.bytes_copied,
            files_kept: copied.files_kept,
            files_removed: copied.files_removed,
            ms: started.elapsed().as_millis() as u64,
        })
    }
}

/// Copies every set from under `data` to the same place under `to`, then the top files.
pub(crate) fn copy_store(sets: &[FileSet], data: &Path, to: &Path) -> anyhow::Result<CopyStats> {
    use anyhow::Context;
    let mut stats = CopyStats::default();
    for set in sets {
        let rel = set
            .dir
            .strip_prefix(data)
            .with_context(|| format!("{} is outside {}", set.dir.display(), data.display()))?;
        let dest = to.join(rel);
        stats
            .add(copy_set(set, &dest).with_context(|| format!("copying into {}", dest.display()))?);
    }
    for name in TOP_FILES {
        let src = data.join(name);
        if !src.exists() {
            continue;
        }
        let tmp = to.join(format!("{name}.partial"));
        std::fs::copy(&src, &tmp).with_context(|| format!("copying {}", src.display()))?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, to.join(name))?;
        stats.files_copied += 1;
    }
    std::fs::File::open(to)?.sync_all()?;
    Ok(stats)
}
