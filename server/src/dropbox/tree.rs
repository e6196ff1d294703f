//! The user's files as one tree, the way Dropbox presents them: the root namespace at `/`
//! and each mounted shared namespace at its mount path. Dropbox paths are compared without
//! case; Holdall's are exact, so a path given in another case finds the existing one and a
//! new path takes the case of the folders it goes into.

use holdall_engine::journal::record::Row;
use holdall_engine::journal::state::{State, User};
use holdall_proto::api::{EntryKind, NsId};
use holdall_proto::validate_path;

use super::error::DbxError;
use super::names;

/// The user's root namespace and mounts, as their directory replica has them now.
#[derive(Debug, Clone)]
pub struct Tree {
    /// The root namespace.
    pub root: NsId,
    /// Each mounted namespace and its path in the root (no leading `/`).
    pub mounts: Vec<(NsId, String)>,
}

/// A place in one namespace: `path` is relative to its root, "" for the root itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The namespace.
    pub ns: NsId,
    /// The path within it, as given (its case not resolved yet).
    pub path: String,
}

/// What a path names in a namespace, its case resolved.
#[derive(Debug, Clone)]
pub enum Node {
    /// A file's latest row.
    File(Row),
    /// A folder: its exact path and its row (none for a namespace root or a folder only
    /// its contents imply).
    Folder(String, Option<Row>),
}

impl Tree {
    /// `user`'s tree by `directory`.
    pub fn of(directory: &State, user: &User) -> Tree {
        Tree {
            root: user.root_ns,
            mounts: directory.mounts(user.id).to_vec(),
        }
    }

    /// Every namespace of the tree, the root first.
    pub fn namespaces(&self) -> Vec<NsId> {
        std::iter::once(self.root)
            .chain(self.mounts.iter().map(|(ns, _)| *ns))
            .collect()
    }

    /// Where Dropbox path `dbx` is: `""` or `/…` (case as given), or an `id:`.
    pub fn place(&self, dbx: &str) -> Result<Place, DbxError> {
        if dbx.starts_with("id:") {
            let (ns, path) = names::parse_file_id(dbx)
                .filter(|(ns, _)| self.namespaces().contains(ns))
                .ok_or_else(|| DbxError::not_found("path"))?;
            return Ok(Place { ns, path });
        }
        let rel = match dbx {
            "" | "/" => "",
            _ => dbx.strip_prefix('/').ok_or_else(|| {
                DbxError::BadInput(format!(
                    "path {dbx:?} must be \"\" (the root), start with \"/\", or be an id:"
                ))
            })?,
        };
        if !rel.is_empty() && validate_path(rel).is_err() {
            return Err(DbxError::tags(&["path", "malformed_path"]));
        }
        let lower = rel.to_lowercase();
        for (ns, at) in &self.mounts {
            let mount = at.to_lowercase();
            if lower == mount {
                return Ok(Place {
                    ns: *ns,
                    path: String::new(),
                });
            }
            if let Some(rest) = lower.strip_prefix(&format!("{mount}/")) {
                // Cut by byte length of the lowered mount: lowering can change lengths, so
                // fall back to the lowered rest when the original does not split there.
                let original = rel
                    .len()
                    .checked_sub(rest.len())
                    .and_then(|at| rel.get(at..))
                    .unwrap_or(rest);
                return Ok(Place {
                    ns: *ns,
                    path: original.to_owned(),
                });
            }
        }
        Ok(Place {
            ns: self.root,
            path: rel.to_owned(),
        })
    }

    /// The Dropbox path of `path` in `ns` (`/` and the mount path first for a mount).
    pub fn display(&self, ns: NsId, path: &str) -> String {
        let base = self
            .mounts
            .iter()
            .find(|(m, _)| *m == ns)
            .map_or("", |(_, at)| at.as_str());
        match (base.is_empty(), path.is_empty()) {
            (true, _) => format!("/{path}"),
            (false, true) => format!("/{base}"),
            (false, false) => format!("/{base}/{path}"),
        }
    }

    /// The mounts directly or deeply inside root-namespace folder `folder` ("" for the
    /// root), as (namespace, mount path).
    pub fn mounts_under(&self, folder: &str) -> Vec<(NsId, String)> {
        let lower = folder.to_lowercase();
        self.mounts
            .iter()
            .filter(|(_, at)| {
                lower.is_empty() || at.to_lowercase().starts_with(&format!("{lower}/"))
            })
            .cloned()
            .collect()
    }
}

/// Whether `path` is inside folder `folder` ("" holds everything).
pub fn is_under(path: &str, folder: &str) -> bool {
    folder.is_empty()
        || (path.len() > folder.len()
            && path.starts_with(folder)
            && path.as_bytes()[folder.len()] == b'/')
}

/// The last segment of a path: a file or folder's name.
pub fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// What `path` names in namespace `ns`, its case resolved: the exact row first, else the
/// one live row or folder that matches without case. A scan of the namespace when the case
/// differs.
pub fn lookup(state: &State, ns: NsId, path: &str) -> Option<Node> {
    if path.is_empty() {
        return Some(Node::Folder(String::new(), None));
    }
    if let Some(row) = state.latest(ns, path) {
        match row.version.kind {
            EntryKind::File => return Some(Node::File(row.clone())),
            EntryKind::Dir => return Some(Node::Folder(row.path.clone(), Some(row.clone()))),
            EntryKind::Deleted => {}
        }
    }
    let lower = path.to_lowercase();
    let mut implied = None;
    for row in state.namespace(ns)?.latest_rows() {
        if row.version.kind == EntryKind::Deleted {
            continue;
        }
        let row_lower = row.path.to_lowercase();
        if row_lower == lower {
            return Some(match row.version.kind {
                EntryKind::File => Node::File(row.clone()),
                _ => Node::Folder(row.path.clone(), Some(row.clone())),
            });
        }
        if implied.is_none() && is_under(&row_lower, &lower) {
            // The folder's own case, as its content spells it.
            let segments = path.matches('/').count() + 1;
            let exact: Vec<&str> = row.path.split('/').take(segments).collect();
            implied = Some(exact.join("/"));
        }
    }
    implied.map(|p| Node::Folder(p, None))
}

/// The live rows inside folder `folder` of `ns` ("" for all), at most `max`; `None` past it.
pub fn descendants(state: &State, ns: NsId, folder: &str, max: usize) -> Option<Vec<Row>> {
    let mut out = Vec::new();
    let Some(n) = state.namespace(ns) else {
        return Some(out);
    };
    for row in n.latest_rows() {
        if row.version.kind != EntryKind::Deleted && is_under(&row.path, folder) {
            if out.len() == max {
                return None;
            }
            out.push(row.clone());
        }
    }
    Some(out)
}

/// The exact path of `path`'s latest row in `ns`, a deleted one included.
pub fn exact_path(state: &State, ns: NsId, path: &str) -> Option<String> {
    if state.latest(ns, path).is_some() {
        return Some(path.to_owned());
    }
    let lower = path.to_lowercase();
    state
        .namespace(ns)?
        .latest_rows()
        .find(|r| r.path.to_lowercase() == lower)
        .map(|r| r.path.clone())
}

/// The JID of the latest row of exactly `path` (a tombstone included): the parent a new
/// commit of it names.
pub fn latest_jid(state: &State, ns: NsId, path: &str) -> Option<u64> {
    state.latest(ns, path).map(|r| r.jid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_land_in_the_root_or_a_mount() {
        let tree = Tree {
            root: 1,
            mounts: vec![(9, "Team/Shared".into())],
        };
        let at = |p: &str| tree.place(p).ok();
        assert_eq!(
            at(""),
            Some(Place {
                ns: 1,
                path: "".into()
            })
        );
        assert_eq!(
            at("/a/B.txt"),
            Some(Place {
                ns: 1,
                path: "a/B.txt".into()
            })
        );
        assert_eq!(
            at("/team/shared"),
            Some(Place {
                ns: 9,
                path: "".into()
            })
        );
        assert_eq!(
            at("/TEAM/Shared/x/Y"),
            Some(Place {
                ns: 9,
                path: "x/Y".into()
            })
        );
        assert!(matches!(tree.place("a"), Err(DbxError::BadInput(_))));
        assert!(matches!(tree.place("/a/../b"), Err(DbxError::Route { .. })));
        assert_eq!(tree.display(9, "x"), "/Team/Shared/x");
        assert_eq!(tree.display(9, ""), "/Team/Shared");
        assert_eq!(tree.display(1, "x"), "/x");
        assert_eq!(tree.mounts_under("team").len(), 1);
        assert_eq!(tree.mounts_under("teams").len(), 0);
        let id = names::file_id(9, "x");
        assert_eq!(
            at(&id),
            Some(Place {
                ns: 9,
                path: "x".into()
            })
        );
        assert!(tree.place(&names::file_id(5, "x")).is_err());
        // A name that grows when lowered must not cut the path out of bounds.
        let wide = Tree {
            root: 1,
            mounts: vec![(9, "İ".into())],
        };
        assert_eq!(wide.place("/İ/İİİİİ").unwrap().ns, 9);
    }
}
