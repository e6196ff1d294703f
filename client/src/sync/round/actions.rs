//! The actions of a round, each recorded in the books only once what it describes is
//! durable: local deletions (their blocks kept in the trash), folders, downloads (built,
//! flushed, renamed, flushed, recorded) and commits (intents first, then the upload).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, Result};
use holdall_proto::api::{CommitRequest, EntryKind, NsId};
use holdall_proto::FileVersion;
use tracing::{debug, info, warn};

use super::{syncfs, Report, Syncer};
use crate::local::book::Entries;
use crate::local::place::{place_new, PlaceError};
use crate::local::scan::{placed as placed_stat, unchanged, LocalTree};
use crate::local::stat::{HashEntry, Stat};
use crate::local::state::Intent;
use crate::local::tree::{Node, Place, RemoteNode, Tree};
use crate::transfer::change::{Base, Change};
use crate::transfer::early::Early;
use crate::transfer::reconstruct::{build, BlockSources, Built, Fetch};
use crate::transfer::upload::{upload, Outcome};

/// Most files rebuilt per group. Each group pays two filesystem syncs (15–40 ms here
/// whatever its size), and a crash mid-group loses little: the blocks in its temporary
/// files are found again.
const GROUP_FILES_MAX: usize = 10_000;
/// Bytes rebuilt per group.
const GROUP_BYTES_MAX: u64 = 512 << 20;

impl Syncer {
    /// The commit that makes the server hold `node` (None: a deletion) at `lpath`.
    pub(super) fn change(
        &self,
        lpath: &str,
        node: Option<&Node>,
        remote: &Tree<RemoteNode>,
    ) -> Option<Change> {
        let Place::In(ns, path) = self.layout.place(lpath) else {
            return None;
        };
        let synced = remote.get(lpath);
        let parent_jid = synced.map(|r| r.jid);
        let base = synced
            .filter(|r| r.ns == ns && r.node.kind == EntryKind::File)
            .filter(|_| node.is_some_and(|n| n.kind == EntryKind::File))
            .map(|r| Base {
                jid: r.jid,
                blocklist: r.node.blocklist.clone(),
            });
        let request = CommitRequest {
            ns,
            path,
            version: node.cloned().unwrap_or_else(FileVersion::deleted),
            parent_jid,
        };
        Some(Change {
            lpath: lpath.to_string(),
            request,
            stat: None,
            base,
        })
    }

    pub(super) fn delete_locally(
        &mut self,
        mut paths: Vec<String>,
        local: &LocalTree,
        report: &mut Report,
    ) -> Result<()> {
        // Deepest first, so folders are empty when their turn comes.
        paths.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
        // Recorded first: after a crash before the state below, a path that no longer holds
        // what it held is known to be this deletion (or the user's new content), not a
        // deletion by the user to be sent to the server.
        let mut entries = Entries::new();
        for p in &paths {
            if let Some(n) = local.nodes.get(p) {
                entries.deleting(p, Some(n.clone()));
            }
        }
        self.book.apply(entries)?;
        let paths_asked = paths.clone();
        let mut done = Vec::new();
        for p in paths {
            let full = self.root.join(&p);
            match local.nodes.get(&p).map(|n| n.kind) {
                Some(EntryKind::Dir) => match std::fs::remove_dir(&full) {
                    Ok(()) => done.push(p),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => done.push(p),
                    Err(e) => report.errors.push((p, format!("removing the folder: {e}"))),
                },
                Some(EntryKind::File) => {
                    let (Some(stat), Some(node)) = (local.stats.get(&p), local.nodes.get(&p))
                    else {
                        continue;
                    };
                    if !unchanged(&full, stat) {
                        // Edited since the scan: keep it; the next round sees the edit.
                        continue;
                    }
                    match self.trash.keep(
                        self.book.state_mut(),
                        &full,
                        &node.blocklist,
                        node.size,
                        false,
                    ) {
                        Ok(()) => done.push(p),
                        Err(e) => report.errors.push((p, format!("{e:#}"))),
                    }
                }
                Some(EntryKind::Deleted) | None => done.push(p),
            }
        }
        report.deleted += done.len();
        let mut entries = Entries::new();
        for p in &done {
            entries.synced(p, None).hash(p, None);
        }
        for p in &paths_asked {
            entries.deleting(p, None);
        }
        self.book.apply(entries)
    }

    pub(super) fn make_dirs(&mut self, mut paths: Vec<String>, report: &mut Report) -> Result<()> {
        paths.sort();
        let mut done = Vec::new();
        for p in paths {
            match std::fs::create_dir_all(self.root.join(&p)) {
                Ok(()) => done.push(p),
                Err(e) => report.errors.push((p, format!("creating the folder: {e}"))),
            }
        }
        let mut entries = Entries::new();
        for p in &done {
            entries.synced(p, Some(Node::dir()));
        }
        self.book.apply(entries)
    }

    /// Where blocks can be found locally: files whose blocklists are known, and the
    /// deleted-files cache.
    pub(super) fn block_sources(&self, local: &LocalTree) -> BlockSources {
        let mut sources = BlockSources::default();
        for (p, n) in &local.nodes {
            if n.kind == EntryKind::File {
                sources.add_file(self.root.join(p), &n.blocklist, n.size);
            }
        }
        for e in self.trash.entries() {
            sources.add_file(self.trash.path_of(e.id), &e.blocklist, e.size);
        }
        for (path, pieces, size) in &self.leftovers {
            sources.add_file(path.clone(), pieces, *size);
        }
        if let Some(cache) = &self.prefetch {
            sources.add_prefetched(cache.clone());
        }
        sources
    }

    pub(super) fn download(
        &mut self,
        paths: Vec<String>,
        local: &LocalTree,
        remote: &Tree<RemoteNode>,
        report: &mut Report,
    ) -> Result<()> {
        if paths.is_empty() {
            return Ok(());
        }
        let sources = self.block_sources(local);
        let fetches: Vec<Fetch> = paths
            .iter()
            .filter_map(|p| {
                let r = remote.get(p)?;
                let Place::In(ns, path) = self.layout.place(p) else {
                    return None;
                };
                Some(Fetch {
                    lpath: p.clone(),
                    ns,
                    path,
                    jid: r.jid,
                    node: r.node.clone(),
                })
            })
            .collect();
        let mut start = 0;
        while start < fetches.len() {
            let mut end = start;
            let mut bytes = 0u64;
            while end < fetches.len()
                && end - start < GROUP_FILES_MAX
                && (end == start || bytes + fetches[end].node.size <= GROUP_BYTES_MAX)
            {
                bytes += fetches[end].node.size;
                end += 1;
            }
            self.download_group(&fetches[start..end], &sources, local, report)?;
            start = end;
        }
        Ok(())
    }

    pub(super) fn download_group(
        &mut self,
        fetches: &[Fetch],
        sources: &BlockSources,
        local: &LocalTree,
        report: &mut Report,
    ) -> Result<()> {
        let started = Instant::now();
        let Built {
            files: built,
            errors,
            stats,
        } = build(
            &self.api,
            &self.root,
            self.limits.batch_bytes_max,
            self.opts.workers,
            fetches,
            sources,
        )?;
        report.down_bytes += stats.fetched_bytes + stats.delta_bytes;
        report.delta_blocks += stats.delta_blocks;
        report.reused_blocks += stats.reused_blocks;
        report.prefetched_blocks += stats.prefetched_blocks;
        for (i, e) in errors {
            if let Some(f) = fetches.get(i) {
                report.errors.push((f.lpath.clone(), e));
            }
        }
        let built_ms = started.elapsed().as_millis();
        // The new files' bytes are durable before any of them replaces anything.
        syncfs(&self.root)?;
        let flushed_ms = started.elapsed().as_millis();
        let placed = self.place_built(fetches, built, local, report);
        let renamed_ms = started.elapsed().as_millis();
        // The renames are durable before the state says these files are synced.
        syncfs(&self.root)?;
        let renames_flushed_ms = started.elapsed().as_millis();
        if let Some(cache) = &self.prefetch {
            cache.count_hits(stats.prefetched_blocks);
            let keys: Vec<(NsId, String)> = placed
                .iter()
                .map(|(i, _)| (fetches[*i].ns, fetches[*i].path.clone()))
                .collect();
            cache.finished(&keys);
        }
        report.downloaded += placed.len();
        self.record_placed(fetches, placed)?;
        debug!(
            files = fetches.len(),
            built_ms,
            flushed_ms,
            renamed_ms,
            renames_flushed_ms,
            recorded_ms = started.elapsed().as_millis(),
            "download group done"
        );
        Ok(())
    }

    /// Moves the built files into place: over a file only if it still has the stat the
    /// scan saw (its blocks kept in the trash), new paths never over anything. The placed
    /// fetches, with the stats their builds left.
    pub(super) fn place_built(
        &mut self,
        fetches: &[Fetch],
        built: Vec<(usize, PathBuf, Stat)>,
        local: &LocalTree,
        report: &mut Report,
    ) -> Vec<(usize, Stat)> {
        let mut placed: Vec<(usize, Stat)> = Vec::new();
        // New paths: renamed on several threads, never over anything (see place.rs).
        let mut new_files: Vec<(usize, Stat)> = Vec::new();
        let mut moves: Vec<(PathBuf, PathBuf)> = Vec::new();
        for (i, temp, built_stat) in built {
            let f = &fetches[i];
            let target = self.root.join(&f.lpath);
            let Some(stat) = local.stats.get(&f.lpath) else {
                new_files.push((i, built_stat));
                moves.push((temp, target));
                continue;
            };
            let node = &local.nodes[&f.lpath];
            if !unchanged(&target, stat) {
                // Edited since the scan: the next round decides with the edit in view.
                let _ = std::fs::remove_file(&temp);
                continue;
            }
            if let Err(e) = self.trash.keep(
                self.book.state_mut(),
                &target,
                &node.blocklist,
                node.size,
                true,
            ) {
                warn!(path = %f.lpath, error = %format!("{e:#}"), "could not keep the replaced file's blocks");
            }
            match std::fs::rename(&temp, &target) {
                Ok(()) => placed.push((i, built_stat)),
                Err(e) => {
                    let _ = std::fs::remove_file(&temp);
                    report
                        .errors
                        .push((f.lpath.clone(), format!("moving into place: {e}")));
                }
            }
        }
        let outcomes = place_new(&moves, self.opts.workers);
        for (((i, stat), (temp, _)), outcome) in new_files.into_iter().zip(&moves).zip(outcomes) {
            match outcome {
                Ok(()) => placed.push((i, stat)),
                Err(e) => {
                    let _ = std::fs::remove_file(temp);
                    // A file saved there since the scan is the user's: the next round
                    // keeps both versions.
                    if !matches!(e, PlaceError::FileAppeared) {
                        report
                            .errors
                            .push((fetches[i].lpath.clone(), e.to_string()));
                    }
                }
            }
        }
        placed
    }

    /// Records placed files as synced, each cached under the stat its rename left.
    pub(super) fn record_placed(
        &mut self,
        fetches: &[Fetch],
        placed: Vec<(usize, Stat)>,
    ) -> Result<()> {
        // Cached under the stat the rename left (it moved ctime); a file changed since is
        // only marked synced, and the next scan hashes it.
        let placed: Vec<(usize, Option<HashEntry>)> = placed
            .into_iter()
            .map(|(i, built)| {
                let f = &fetches[i];
                let entry = placed_stat(&self.root.join(&f.lpath), &built)
                    .map(|now| now.entry(f.node.blocklist.clone()));
                (i, entry)
            })
            .collect();
        let mut entries = Entries::new();
        for (i, entry) in placed {
            let f = &fetches[i];
            entries.synced(&f.lpath, Some(f.node.clone()));
            if entry.is_some() {
                entries.hash(&f.lpath, entry);
            }
        }
        self.book.apply(entries)
    }

    pub(super) fn commit(
        &mut self,
        mut changes: Vec<Change>,
        local: &LocalTree,
        early: Option<Early>,
        report: &mut Report,
    ) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        // Recorded before anything is sent: if the answers are lost, the next round can
        // still tell this client's own commits from other devices' changes.
        let mut entries = Entries::new();
        for c in &changes {
            let node = match c.request.version.kind {
                EntryKind::Deleted => None,
                _ => local.nodes.get(&c.lpath).cloned(),
            };
            let intent = Intent {
                parent_jid: c.request.parent_jid,
                node,
            };
            entries.intent(&c.lpath, Some(intent));
        }
        self.book.apply(entries)?;
        // Folders before what they hold; deletions after everything else.
        changes.sort_by(|a, b| {
            let del = |c: &Change| c.request.version.kind == EntryKind::Deleted;
            (del(a), a.lpath.as_str()).cmp(&(del(b), b.lpath.as_str()))
        });
        let mut done = Vec::new();
        let result = upload(
            &self.api,
            &self.root,
            self.limits.batch_bytes_max,
            self.opts.workers,
            changes,
            early,
            &mut done,
        );
        let mut committed = Vec::new();
        let answered: Vec<String> = done.iter().map(|(c, _)| c.lpath.clone()).collect();
        for (change, outcome) in done {
            match outcome {
                Outcome::Committed(jid) => committed.push((change, jid)),
                Outcome::Conflict => {
                    info!(path = %change.lpath, "changed on the server meanwhile; listing again")
                }
                Outcome::Changed => report.unsettled += 1,
                Outcome::Refused(why) => report.errors.push((change.lpath, why)),
            }
        }
        report.committed += committed.len();
        self.book
            .apply(committed_entries(&answered, &committed, local)?)?;
        match result {
            Ok(stats) => {
                report.up_bytes += stats.bytes + stats.delta_bytes;
                report.delta_blocks += stats.delta_blocks;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// What the answers of commits change in the books: their intents are settled, and each
/// committed path's row and merge base are what it committed.
fn committed_entries(
    answered: &[String],
    committed: &[(Change, u64)],
    local: &LocalTree,
) -> Result<Entries> {
    let mut entries = Entries::new();
    for lpath in answered {
        entries.intent(lpath, None);
    }
    for (c, jid) in committed {
        let (ns, path) = (c.request.ns, &c.request.path);
        if c.request.version.kind == EntryKind::Deleted {
            entries.remote(ns, path, None).synced(&c.lpath, None);
            continue;
        }
        let node = local
            .nodes
            .get(&c.lpath)
            .cloned()
            .ok_or_else(|| anyhow!("committed {} without a local node", c.lpath))?;
        let row = RemoteNode {
            ns,
            jid: *jid,
            node: node.clone(),
        };
        entries
            .remote(ns, path, Some(row))
            .synced(&c.lpath, Some(node));
    }
    Ok(entries)
}
