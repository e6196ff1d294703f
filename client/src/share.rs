//! `holdall share PATH --with USER`: makes a synced folder a shared namespace and mounts it
//! for another user.
//!
//! The folder's rows move from the root namespace into the new one without uploading a
//! byte: the namespace is created mounted over the folder (`adopt_existing`), its rows are
//! committed into it with the same blocklists (the blocks are referenced by the caller's
//! live rows, so the server accepts them), and only then are the old rows deleted from the
//! root namespace, where the mount already hides them.

use std::path::Path;

use anyhow::{bail, Result};
use holdall_proto::api::{
    AddMemberRequest, CommitRequest, CommitResult, CreateNamespaceRequest, EntryKind,
};
use holdall_proto::limits::COMMIT_BATCH_MAX;
use holdall_proto::FileVersion;

use crate::local::root::find_root;
use crate::local::scan::STATE_DIR;
use crate::local::state::State;
use crate::net::api::Api;

/// Shares the folder at `path` with `user`, mounted at `as_path` in their folder (default:
/// the folder's name).
pub fn share(api: &Api, path: &Path, user: &str, as_path: Option<&str>) -> Result<()> {
    let (root, lpath) = find_root(path)?;
    if lpath.is_empty() {
        bail!("the synced folder itself cannot be shared; share a folder inside it");
    }
    let account = api.account()?;
    let mount_path = as_path
        .map(str::to_owned)
        .unwrap_or_else(|| lpath.rsplit('/').next().unwrap_or(&lpath).to_string());
    let ns = match account.mounts.iter().find(|m| m.path == lpath) {
        Some(m) => m.ns,
        None => {
            let state = State::open(&root.join(STATE_DIR))?;
            let synced = state.synced()?;
            if synced.get(&lpath).map(|n| n.kind) != Some(EntryKind::Dir) {
                bail!("{lpath} is not a synced folder yet: run `holdall sync --once` first");
            }
            let below = format!("{lpath}/");
            let rows: Vec<_> = state
                .remote_rows()?
                .into_iter()
                .filter(|r| {
                    r.ns == account.root_ns && (r.path == lpath || r.path.starts_with(&below))
                })
                .collect();
            let ns = api
                .create_namespace(&CreateNamespaceRequest {
                    mount_path: lpath.clone(),
                    adopt_existing: true,
                })?
                .ns;
            let copies: Vec<CommitRequest> = rows
                .iter()
                .filter_map(|r| {
                    let rel = r.path.strip_prefix(&below)?;
                    Some(CommitRequest {
                        ns,
                        path: rel.to_string(),
                        version: r.node.node.clone(),
                        parent_jid: None,
                    })
                })
                .collect();
            commit_all(api, copies, "copying the folder into the shared namespace")?;
            let deletions: Vec<CommitRequest> = rows
                .iter()
                .map(|r| CommitRequest {
                    ns: account.root_ns,
                    path: r.path.clone(),
                    version: FileVersion {
                        kind: EntryKind::Deleted,
                        blocklist: Vec::new(),
                        size: 0,
                        mtime_ms: 0,
                    },
                    parent_jid: Some(r.node.jid),
                })
                .collect();
            commit_all(api, deletions, "removing the folder's old rows")?;
            ns
        }
    };
    api.add_member(
        ns,
        &AddMemberRequest {
            user: user.to_string(),
            mount_path: mount_path.clone(),
        },
    )?;
    eprintln!(
        "holdall: {lpath} is shared with {user} (namespace {ns}, at {mount_path} in their folder)"
    );
    Ok(())
}

fn commit_all(api: &Api, commits: Vec<CommitRequest>, what: &str) -> Result<()> {
    for chunk in commits.chunks(COMMIT_BATCH_MAX) {
        let answer = api.commit_batch(chunk.to_vec())?;
        for (c, r) in chunk.iter().zip(answer.results) {
            match r {
                CommitResult::Ok { .. } => {}
                // Someone else already moved it: nothing lost.
                CommitResult::Conflict { .. } => {}
                other => bail!("{what}: {} was refused: {other:?}", c.path),
            }
        }
    }
    Ok(())
}
