//! `files/get_metadata`, `create_folder_v2`, `delete_v2`, `move_v2`, `copy_v2` and
//! `search_v2`. A folder's delete, move or copy is one row per file and folder inside it
//! (at most [`RELOCATE_ENTRIES_MAX`]), committed in one group commit per namespace; a move
//! writes the new paths before the tombstones, so a failure between them loses nothing.
//! A copy copies no bytes: the new rows list the same blocks.

use std::collections::HashSet;

use holdall_engine::journal::record::Row;
use holdall_proto::api::{CommitRequest, EntryKind};
use holdall_proto::FileVersion;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::call::Call;
use super::error::DbxError;
use super::listing::{resolve_folder, scope};
use super::metadata;
use super::owner::{lookup_at, on_owner};
use super::tree::{descendants, is_under, latest_jid, lookup, name_of, Node, Place};
use super::write::{commit_all, dirs_of, parents, renamed, Dirs, AUTORENAME_TRIES_MAX};
use super::{json_ok, names};
use crate::body::Body;

/// Most files and folders one delete, move or copy of a folder touches.
pub const RELOCATE_ENTRIES_MAX: usize = 10_000;
/// Search matches in one answer unless asked for fewer.
const SEARCH_RESULTS_DEFAULT: usize = 100;
/// Most search matches in one answer.
const SEARCH_RESULTS_MAX: usize = 1000;

#[derive(Deserialize)]
struct PathArg {
    path: String,
    #[serde(default)]
    include_deleted: bool,
}

/// `files/get_metadata`.
pub async fn get_metadata(
    call: &Call<'_>,
    req: Request<Incoming>,
) -> Result<Response<Body>, DbxError> {
    let arg: PathArg = call.rpc_arg(req).await?;
    let place = call.tree.place(&arg.path)?;
    if place.path.is_empty() && place.ns == call.tree.root {
        return Err(call.bad_input("request body: path: The root folder is unsupported."));
    }
    match lookup_at(call, &place).await? {
        Some(node) => Ok(json_ok(&node_metadata(call, place.ns, &node))),
        None if arg.include_deleted => {
            let (ns, path) = (place.ns, place.path.clone());
            let deleted = on_owner(call, ns, move |s| s.latest(ns, &path).cloned()).await?;
            match deleted {
                Some(row) => Ok(json_ok(&metadata::deleted(&call.tree, ns, &row.path))),
                None => Err(DbxError::not_found("path")),
            }
        }
        None => Err(DbxError::not_found("path")),
    }
}

fn node_metadata(call: &Call<'_>, ns: u64, node: &Node) -> Value {
    match node {
        Node::File(row) => metadata::file(&call.tree, row),
        Node::Folder(path, _) => metadata::folder(&call.tree, ns, path),
    }
}

#[derive(Deserialize)]
struct CreateFolderArg {
    path: String,
    #[serde(default)]
    autorename: bool,
}

/// `files/create_folder_v2`.
pub async fn create_folder(
    call: &Call<'_>,
    req: Request<Incoming>,
) -> Result<Response<Body>, DbxError> {
    let arg: CreateFolderArg = call.rpc_arg(req).await?;
    let place = call.tree.place(&arg.path)?;
    if place.path.is_empty() {
        return Err(DbxError::tags(&["path", "conflict", "folder"]));
    }
    let (ns, path, autorename) = (place.ns, place.path.clone(), arg.autorename);
    let planned = on_owner(call, ns, move |state| {
        let (exact, dirs) = parents(state, ns, &path)?;
        let mut candidate = exact.clone();
        let mut n = 0;
        while let Some(node) = lookup(state, ns, &candidate) {
            n += 1;
            if !autorename || n > AUTORENAME_TRIES_MAX {
                let kind = if matches!(node, Node::File(_)) {
                    "file"
                } else {
                    "folder"
                };
                return Err(DbxError::tags(&["path", "conflict", kind]));
            }
            candidate = format!("{exact} ({n})");
        }
        let exact = candidate;
        let parent = latest_jid(state, ns, &exact);
        Ok((exact, dirs, parent))
    })
    .await??;
    let (exact, dirs, parent_jid) = planned;
    let mut commits = dirs_of(ns, dirs);
    commits.push(CommitRequest {
        ns,
        path: exact.clone(),
        version: FileVersion::dir(),
        parent_jid,
    });
    commit_all(call, commits, &HashSet::new()).await?;
    Ok(json_ok(
        &json!({ "metadata": metadata::folder(&call.tree, ns, &exact) }),
    ))
}

/// The latest rows of what `place` names: the file, or the folder's own row (if it has
/// one) and every live row inside it. `outer` tags the lookup error.
async fn rows_of(
    call: &Call<'_>,
    place: &Place,
    outer: &str,
) -> Result<(Node, Vec<Row>), DbxError> {
    let node = lookup_at(call, place)
        .await?
        .ok_or_else(|| DbxError::not_found(outer))?;
    let rows = match &node {
        Node::File(row) => vec![row.clone()],
        Node::Folder(folder, own) => {
            let (ns, folder_path) = (place.ns, folder.clone());
            let inside = on_owner(call, ns, move |s| {
                descendants(s, ns, &folder_path, RELOCATE_ENTRIES_MAX)
            })
            .await?
            .ok_or_else(|| DbxError::tags(&["too_many_files"]))?;
            own.iter().cloned().chain(inside).collect()
        }
    };
    Ok((node, rows))
}

#[derive(Deserialize)]
struct DeleteArg {
    path: String,
    #[serde(default)]
    parent_rev: Option<String>,
}

/// `files/delete_v2`.
pub async fn delete(call: &Call<'_>, req: Request<Incoming>) -> Result<Response<Body>, DbxError> {
    let arg: DeleteArg = call.rpc_arg(req).await?;
    let place = call.tree.place(&arg.path)?;
    if place.path.is_empty() {
        return Err(DbxError::tags(&["path_write", "no_write_permission"]));
    }
    let (node, rows) = rows_of(call, &place, "path_lookup").await?;
    if let (Some(rev), Node::File(row)) = (&arg.parent_rev, &node) {
        if *rev != names::rev(row.ns, row.jid) {
            return Err(DbxError::tags(&["path_write", "conflict", "file"]));
        }
    }
    let before = node_metadata(call, place.ns, &node);
    commit_all(call, tombstones(&rows), &HashSet::new()).await?;
    Ok(json_ok(&json!({ "metadata": before })))
}

/// Tombstones for `rows`, each over the row it deletes.
fn tombstones(rows: &[Row]) -> Vec<CommitRequest> {
    rows.iter()
        .map(|r| CommitRequest {
            ns: r.ns,
            path: r.path.clone(),
            version: FileVersion::deleted(),
            parent_jid: Some(r.jid),
        })
        .collect()
}

/// The commits putting `rows` (all under `from_root`) at `target` in `ns`, each over the
/// latest row at its new path; first a folder row for the target when the source folder
/// had none (only its content implied it).
async fn copies(
    call: &Call<'_>,
    ns: u64,
    target: &str,
    from_root: &str,
    rows: &[Row],
    implied: bool,
) -> Result<Vec<CommitRequest>, DbxError> {
    let mut wanted: Vec<(String, FileVersion)> = Vec::with_capacity(rows.len() + 1);
    if implied {
        wanted.push((target.to_owned(), FileVersion::dir()));
    }
    wanted.extend(rows.iter().map(|r| {
        (
            format!("{target}{}", &r.path[from_root.len()..]),
            r.version.clone(),
        )
    }));
    let paths: Vec<String> = wanted.iter().map(|(p, _)| p.clone()).collect();
    let parents = on_owner(call, ns, move |s| {
        paths
            .iter()
            .map(|p| latest_jid(s, ns, p))
            .collect::<Vec<_>>()
    })
    .await?;
    Ok(wanted
        .into_iter()
        .zip(parents)
        .map(|((path, version), parent_jid)| CommitRequest {
            ns,
            path,
            version,
            parent_jid,
        })
        .collect())
}

/// A move or a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relocation {
    /// The source goes away.
    Move,
    /// The source stays.
    Copy,
}

#[derive(Deserialize)]
struct RelocationArg {
    from_path: String,
    to_path: String,
    #[serde(default)]
    autorename: bool,
}

/// `files/move_v2` and `files/copy_v2`.
pub async fn relocate(
    call: &Call<'_>,
    req: Request<Incoming>,
    how: Relocation,
) -> Result<Response<Body>, DbxError> {
    let arg: RelocationArg = call.rpc_arg(req).await?;
    let (from, to) = (
        call.tree.place(&arg.from_path)?,
        call.tree.place(&arg.to_path)?,
    );
    if from.path.is_empty() {
        return Err(DbxError::tags(&["from_write", "no_write_permission"]));
    }
    if to.path.is_empty() {
        return Err(DbxError::tags(&["to", "conflict", "folder"]));
    }
    let (node, rows) = rows_of(call, &from, "from_lookup").await?;
    let from_root = match &node {
        Node::File(row) => row.path.clone(),
        Node::Folder(path, _) => path.clone(),
    };
    let target = plan_target(call, &from, &from_root, &to, arg.autorename).await?;
    if matches!(node, Node::Folder(..)) && from.ns == to.ns && is_under(&target.0, &from_root) {
        return Err(DbxError::tags(&["cant_move_folder_into_itself"]));
    }
    let (target_path, dirs) = target;
    let ns = to.ns;
    let implied = matches!(node, Node::Folder(_, None));
    let mut commits = dirs_of(ns, dirs);
    commits.extend(copies(call, ns, &target_path, &from_root, &rows, implied).await?);
    commit_all(call, commits, &HashSet::new()).await?;
    if how == Relocation::Move {
        commit_all(call, tombstones(&rows), &HashSet::new()).await?;
    }
    let answer = match lookup_at(
        call,
        &Place {
            ns,
            path: target_path.clone(),
        },
    )
    .await?
    {
        Some(node) => node_metadata(call, ns, &node),
        None => metadata::folder(&call.tree, ns, &target_path),
    };
    Ok(json_ok(&json!({ "metadata": answer })))
}

/// Where a move or copy of `from` (exact path `from_root`) to `to` lands: the exact path
/// and the parent folders to make. A path taken is `to/conflict/…` unless `autorename`; a
/// path that is the source itself in another case is a rename.
async fn plan_target(
    call: &Call<'_>,
    from: &Place,
    from_root: &str,
    to: &Place,
    autorename: bool,
) -> Result<(String, Dirs), DbxError> {
    let (ns, path, same_ns, from_root) = (
        to.ns,
        to.path.clone(),
        from.ns == to.ns,
        from_root.to_owned(),
    );
    on_owner(call, ns, move |state| {
        let (exact, dirs) = parents(state, ns, &path)
            .map_err(|_| DbxError::tags(&["to", "conflict", "file_ancestor"]))?;
        let taken = |p: &str| match lookup(state, ns, p) {
            Some(Node::File(r)) if !(same_ns && r.path == from_root) => Some("file"),
            Some(Node::Folder(f, _)) if !(same_ns && f == from_root) => Some("folder"),
            _ => None,
        };
        let Some(kind) = taken(&exact) else {
            return Ok((exact, dirs));
        };
        if autorename {
            for n in 1..=AUTORENAME_TRIES_MAX {
                let candidate = renamed(&exact, n);
                if taken(&candidate).is_none() && lookup(state, ns, &candidate).is_none() {
                    return Ok((candidate, dirs));
                }
            }
        }
        Err(DbxError::tags(&["to", "conflict", kind]))
    })
    .await?
}

#[derive(Deserialize)]
struct SearchArg {
    query: String,
    #[serde(default)]
    options: Option<SearchOptions>,
}

#[derive(Deserialize, Default)]
struct SearchOptions {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    max_results: Option<usize>,
    #[serde(default)]
    file_status: Option<Value>,
}

/// `files/search_v2`: files and folders whose name holds every word of the query, without
/// case, under `options.path`; deleted ones with `file_status` deleted.
pub async fn search(call: &Call<'_>, req: Request<Incoming>) -> Result<Response<Body>, DbxError> {
    let arg: SearchArg = call.rpc_arg(req).await?;
    let options = arg.options.unwrap_or_default();
    let words: Vec<String> = arg
        .query
        .to_lowercase()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if words.is_empty() {
        return Err(DbxError::tags(&["invalid_argument"]));
    }
    let max = options
        .max_results
        .unwrap_or(SEARCH_RESULTS_DEFAULT)
        .clamp(1, SEARCH_RESULTS_MAX);
    let status = options.file_status.as_ref().and_then(|v| {
        v.as_str()
            .or_else(|| v.get(".tag")?.as_str())
            .map(str::to_owned)
    });
    let want_deleted = status.as_deref() == Some("deleted");
    let place = call.tree.place(options.path.as_deref().unwrap_or(""))?;
    let folder = resolve_folder(call, &place).await?;
    let mut matches = Vec::new();
    let mut has_more = false;
    for (ns, within) in scope(&call.tree, place.ns, &folder, true) {
        let words = words.clone();
        let found: Vec<Row> = on_owner(call, ns, move |state| {
            let Some(n) = state.namespace(ns) else {
                return Vec::new();
            };
            n.latest_rows()
                .filter(|r| {
                    (r.version.kind == EntryKind::Deleted) == want_deleted
                        && is_under(&r.path, &within)
                })
                .filter(|r| {
                    let name = name_of(&r.path).to_lowercase();
                    words.iter().all(|w| name.contains(w.as_str()))
                })
                .take(max + 1)
                .cloned()
                .collect()
        })
        .await?;
        for row in found {
            if matches.len() == max {
                has_more = true;
                break;
            }
            let md = metadata::of_row(&call.tree, &row);
            matches.push(json!({ "match_type": { ".tag": "filename" }, "metadata": { ".tag": "metadata", "metadata": md } }));
        }
    }
    Ok(json_ok(
        &json!({ "matches": matches, "has_more": has_more }),
    ))
}
