//! What a path holds, as the planner compares it, and where a local path lives on the server.
//!
//! Local paths are relative to the synced folder, `/`-separated UTF-8 (the protocol's path
//! rules). The user's root namespace maps onto the folder; each mounted namespace onto its
//! mount path, which shadows whatever the root namespace has at and below it.

use std::collections::BTreeMap;

use holdall_proto::api::{Jid, Mount, NsId};
use holdall_proto::FileVersion;

/// One side's view of a path: a file or a folder (a path with nothing has no node; the
/// client never holds a deletion as a node).
pub type Node = FileVersion;

/// Two optional nodes hold the same content (both absent counts).
pub fn same(a: Option<&Node>, b: Option<&Node>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.same_content(b),
        _ => false,
    }
}

/// A path's latest row on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteNode {
    /// Namespace holding the row.
    pub ns: NsId,
    /// The row's JID: the `parent_jid` of the next commit at this path.
    pub jid: Jid,
    /// What it holds.
    pub node: Node,
}

/// A tree keyed by local path.
pub type Tree<T> = BTreeMap<String, T>;

/// Where the user's namespaces appear in the synced folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The user's root namespace, mapped onto the folder itself.
    pub root_ns: NsId,
    /// Mounted namespaces and their paths in the folder.
    pub mounts: Vec<Mount>,
}

/// Where a local path lives on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A path in a namespace.
    In(NsId, String),
    /// The folder a namespace is mounted at: not a row anywhere.
    MountPoint(NsId),
}

fn under<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    if path == prefix {
        return Some("");
    }
    path.strip_prefix(prefix)?.strip_prefix('/')
}

impl Layout {
    /// Every namespace the folder shows.
    pub fn namespaces(&self) -> Vec<NsId> {
        let mut all = vec![self.root_ns];
        all.extend(self.mounts.iter().map(|m| m.ns));
        all
    }

    /// Where `local` lives.
    pub fn place(&self, local: &str) -> Place {
        for m in &self.mounts {
            match under(local, &m.path) {
                Some("") => return Place::MountPoint(m.ns),
                Some(rest) => return Place::In(m.ns, rest.to_string()),
                None => {}
            }
        }
        Place::In(self.root_ns, local.to_string())
    }

    /// The local path of `path` in `ns`, or None when a mount shadows it or `ns` is not
    /// shown.
    pub fn local(&self, ns: NsId, path: &str) -> Option<String> {
        if ns == self.root_ns {
            if self.mounts.iter().any(|m| under(path, &m.path).is_some()) {
                return None;
            }
            return Some(path.to_string());
        }
        let m = self.mounts.iter().find(|m| m.ns == ns)?;
        Some(format!("{}/{path}", m.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            root_ns: 1,
            mounts: vec![Mount {
                ns: 7,
                path: "team/shared".into(),
            }],
        }
    }

    #[test]
    fn local_paths_map_to_namespaces_and_back() {
        let l = layout();
        assert_eq!(l.place("a/b.txt"), Place::In(1, "a/b.txt".into()));
        assert_eq!(l.place("team"), Place::In(1, "team".into()));
        assert_eq!(l.place("team/shared"), Place::MountPoint(7));
        assert_eq!(l.place("team/shared/x"), Place::In(7, "x".into()));
        assert_eq!(
            l.place("team/sharedness"),
            Place::In(1, "team/sharedness".into())
        );
        assert_eq!(l.local(7, "x").as_deref(), Some("team/shared/x"));
        assert_eq!(l.local(1, "team/shared/x"), None, "shadowed by the mount");
        assert_eq!(l.local(1, "team/shared"), None);
        assert_eq!(l.local(1, "a").as_deref(), Some("a"));
        assert_eq!(l.local(9, "a"), None);
        assert_eq!(l.namespaces(), vec![1, 7]);
    }

    #[test]
    fn content_ignores_mtime() {
        use holdall_proto::BlockHash;
        let h = BlockHash::of(b"x");
        let a = Node::file(vec![h], 1, 5);
        let b = Node::file(vec![h], 1, 9);
        assert!(a.same_content(&b));
        assert!(!a.same_content(&Node::dir()));
        assert!(same(None, None));
        assert!(!same(Some(&a), None));
    }
}
