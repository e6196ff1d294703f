//! The planner: compares the three trees — local (the disk), remote (the server), synced
//! (what both last agreed on, the merge base) — and decides what to do for each path. It
//! does no I/O; the sync loop carries out its actions and feeds the results back into the
//! trees, so tests drive it with a fake disk, server and clock.
//!
//! For each path, with L, R and S the local, remote and synced nodes:
//! - L = R: nothing to move; S becomes R.
//! - L = S: only the server changed: apply R locally (download, make the folder, delete).
//! - R = S: only the disk changed: commit L (file, folder or deletion).
//! - else both changed. A deletion loses to an edit (the edit is kept, never the deletion);
//!   two different contents keep both: the local one is renamed to a conflicted copy, which
//!   is then uploaded as a new file, and the server's version is downloaded.
//!
//! A folder one side deleted stays when the other side put something in it.

use std::collections::{BTreeSet, HashSet};

use holdall_proto::api::EntryKind;

use crate::local::state::Intent;
use crate::local::tree::{same, Node, RemoteNode, Tree};

/// One thing to do for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Both sides agree; record R as synced (or forget the path if both have none).
    Adopt(String),
    /// Fetch the server's file.
    Download(String),
    /// Create the folder locally.
    MakeDir(String),
    /// Delete the local file or (empty) folder; a file goes to the deleted-files cache.
    DeleteLocal(String),
    /// Commit the local file or folder.
    Upload(String),
    /// Commit the deletion of the path.
    DeleteRemote(String),
    /// Rename the local file or folder to `copy`, keeping it; the path then takes the
    /// server's version and the copy is uploaded.
    ConflictCopy {
        /// The conflicting path.
        path: String,
        /// The conflicted copy's path, beside it.
        copy: String,
    },
}

/// The three trees and what the planner must leave alone.
pub struct Trees<'a> {
    /// What the disk holds.
    pub local: &'a Tree<Node>,
    /// What the server holds (mount points included as folders).
    pub remote: &'a Tree<RemoteNode>,
    /// What both last agreed on.
    pub synced: &'a Tree<Node>,
    /// Folders where namespaces are mounted: never committed or deleted.
    pub mount_points: &'a BTreeSet<String>,
    /// Local paths still being written: planned once they settle.
    pub unsettled: &'a BTreeSet<String>,
}

/// Names conflicted copies: `NAME (conflicted copy YYYY-MM-DD HHMMSS HOST).EXT`.
pub struct CopyNamer {
    /// This machine's name.
    pub host: String,
    /// The moment, already formatted as `YYYY-MM-DD HHMMSS` in local time.
    pub stamp: String,
}

impl CopyNamer {
    /// The copy's path for `path`, with a counter if that name is taken.
    pub fn name(&self, path: &str, taken: impl Fn(&str) -> bool) -> String {
        let (dir, file) = match path.rfind('/') {
            Some(i) => (&path[..=i], &path[i + 1..]),
            None => ("", path),
        };
        // The extension is what follows the last dot, unless the dot starts the name.
        let (stem, ext) = match file.rfind('.') {
            Some(i) if i > 0 => (&file[..i], &file[i..]),
            _ => (file, ""),
        };
        let mut n = 1u32;
        loop {
            let counter = if n == 1 {
                String::new()
            } else {
                format!(" {n}")
            };
            let candidate = format!(
                "{dir}{stem} (conflicted copy {} {}{counter}){ext}",
                self.stamp, self.host
            );
            if !taken(&candidate) {
                return candidate;
            }
            n += 1;
        }
    }
}

/// How a round settles an intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// The server holds what the commit asked for: the merge base takes it, as if the
    /// answer had come.
    Adopt(Option<Node>),
    /// The path moved on to something else, and whether the commit landed before that is
    /// unknown: the merge base forgets the path, so that both sides count as changed and
    /// the planner keeps both versions rather than guess.
    Forget,
}

/// Settles intents against the server tree. An intent whose path still has its parent row
/// waits (its commit may still land); otherwise it is settled. Without this, a deletion
/// whose answer was lost looks, next round, like a deletion by someone else — and a file the
/// user meanwhile put back at that path would be deleted; and when another device changed
/// the path after that deletion landed, the file put back would be overwritten.
pub fn settle_intents(intents: &Tree<Intent>, remote: &Tree<RemoteNode>) -> Vec<(String, Settled)> {
    intents
        .iter()
        .filter_map(|(path, intent)| {
            let row = remote.get(path);
            if row.map(|r| r.jid) == intent.parent_jid {
                return None;
            }
            let holds = row.map(|r| &r.node);
            let settled = match same(holds, intent.node.as_ref()) {
                true => Settled::Adopt(holds.cloned()),
                false => Settled::Forget,
            };
            Some((path.clone(), settled))
        })
        .collect()
}

/// Decides the actions that bring the three trees together.
pub fn plan(t: &Trees<'_>, namer: &CopyNamer) -> Vec<Action> {
    let paths: BTreeSet<&String> = t
        .local
        .keys()
        .chain(t.remote.keys())
        .chain(t.synced.keys())
        .collect();
    let mut actions = Vec::new();
    let mut copies: BTreeSet<String> = BTreeSet::new();
    for path in paths {
        if t.unsettled.contains(path) {
            continue;
        }
        let l = t.local.get(path);
        let r = t.remote.get(path).map(|r| &r.node);
        let s = t.synced.get(path);
        let mount_point = t.mount_points.contains(path);
        let action = if same(l, r) {
            if same(s, r) {
                continue;
            }
            Action::Adopt(path.clone())
        } else if same(l, s) || (mount_point && l.is_none()) {
            apply_remote(path, r)
        } else if same(r, s) {
            if mount_point {
                continue;
            }
            commit_local(path, l)
        } else {
            match (l, r) {
                (None, _) => apply_remote(path, r),
                (_, None) => commit_local(path, l),
                (Some(_), Some(_)) => {
                    let copy = namer.name(path, |c| {
                        copies.contains(c) || t.local.contains_key(c) || t.remote.contains_key(c)
                    });
                    copies.insert(copy.clone());
                    Action::ConflictCopy {
                        path: path.clone(),
                        copy,
                    }
                }
            }
        };
        actions.push(action);
    }
    keep_folders_in_use(t, actions)
}

fn apply_remote(path: &str, r: Option<&Node>) -> Action {
    match r {
        None => Action::DeleteLocal(path.to_string()),
        Some(n) if n.kind == EntryKind::Dir => Action::MakeDir(path.to_string()),
        Some(_) => Action::Download(path.to_string()),
    }
}

fn commit_local(path: &str, l: Option<&Node>) -> Action {
    match l {
        None => Action::DeleteRemote(path.to_string()),
        Some(_) => Action::Upload(path.to_string()),
    }
}

/// A folder deleted on one side but given new content on the other is kept: its deletion
/// becomes a commit (or a mkdir) of the folder.
fn keep_folders_in_use(t: &Trees<'_>, mut actions: Vec<Action>) -> Vec<Action> {
    // Sets of the deletions first: a scan of the actions per path was quadratic (10,000
    // new files: 100 million comparisons).
    let mut deleted_locally: HashSet<&str> = HashSet::new();
    let mut deleted_remotely: HashSet<&str> = HashSet::new();
    for a in &actions {
        match a {
            Action::DeleteLocal(p) => deleted_locally.insert(p.as_str()),
            Action::DeleteRemote(p) => deleted_remotely.insert(p.as_str()),
            _ => false,
        };
    }
    let kept_locally: BTreeSet<String> = t
        .local
        .keys()
        .filter(|p| !deleted_locally.contains(p.as_str()))
        .cloned()
        .collect();
    let kept_remotely: BTreeSet<String> = t
        .remote
        .keys()
        .filter(|p| !deleted_remotely.contains(p.as_str()))
        .cloned()
        .collect();
    let has_below = |set: &BTreeSet<String>, dir: &str| {
        let prefix = format!("{dir}/");
        set.range(prefix.clone()..)
            .next()
            .is_some_and(|p| p.starts_with(&prefix))
    };
    for a in &mut actions {
        match a {
            Action::DeleteLocal(p)
                if t.local
                    .get(p.as_str())
                    .is_some_and(|n| n.kind == EntryKind::Dir)
                    && has_below(&kept_locally, p) =>
            {
                *a = Action::Upload(p.clone());
            }
            Action::DeleteRemote(p)
                if t.remote
                    .get(p.as_str())
                    .is_some_and(|n| n.node.kind == EntryKind::Dir)
                    && has_below(&kept_remotely, p) =>
            {
                *a = Action::MakeDir(p.clone());
            }
            _ => {}
        }
    }
    actions
}

#[cfg(test)]
mod simulation_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use holdall_proto::BlockHash;

    fn file(content: &str) -> Node {
        Node::file(
            vec![BlockHash::of(content.as_bytes())],
            content.len() as u64,
            0,
        )
    }

    fn remote(n: Node) -> RemoteNode {
        RemoteNode {
            ns: 1,
            jid: 1,
            node: n,
        }
    }

    fn namer() -> CopyNamer {
        CopyNamer {
            host: "laptop".into(),
            stamp: "2026-11-21 101500".into(),
        }
    }

    fn plan_of(
        local: &[(&str, Node)],
        remote_: &[(&str, Node)],
        synced: &[(&str, Node)],
    ) -> Vec<Action> {
        let l: Tree<Node> = local
            .iter()
            .map(|(p, n)| (p.to_string(), n.clone()))
            .collect();
        let r: Tree<RemoteNode> = remote_
            .iter()
            .map(|(p, n)| (p.to_string(), remote(n.clone())))
            .collect();
        let s: Tree<Node> = synced
            .iter()
            .map(|(p, n)| (p.to_string(), n.clone()))
            .collect();
        let none = BTreeSet::new();
        plan(
            &Trees {
                local: &l,
                remote: &r,
                synced: &s,
                mount_points: &none,
                unsettled: &none,
            },
            &namer(),
        )
    }

    #[test]
    fn one_sided_changes_flow_the_right_way() {
        let a = file("a");
        let b = file("b");
        assert_eq!(
            plan_of(
                &[("x", a.clone())],
                &[("x", a.clone())],
                &[("x", a.clone())]
            ),
            vec![]
        );
        assert_eq!(
            plan_of(
                &[("x", b.clone())],
                &[("x", a.clone())],
                &[("x", a.clone())]
            ),
            vec![Action::Upload("x".into())]
        );
        assert_eq!(
            plan_of(
                &[("x", a.clone())],
                &[("x", b.clone())],
                &[("x", a.clone())]
            ),
            vec![Action::Download("x".into())]
        );
        assert_eq!(
            plan_of(&[], &[("x", a.clone())], &[("x", a.clone())]),
            vec![Action::DeleteRemote("x".into())]
        );
        assert_eq!(
            plan_of(&[("x", a.clone())], &[], &[("x", a.clone())]),
            vec![Action::DeleteLocal("x".into())]
        );
        assert_eq!(
            plan_of(&[], &[("d", Node::dir())], &[]),
            vec![Action::MakeDir("d".into())]
        );
        assert_eq!(
            plan_of(&[("d", Node::dir())], &[], &[]),
            vec![Action::Upload("d".into())]
        );
    }

    #[test]
    fn agreement_is_adopted_and_lost_state_never_deletes() {
        let a = file("a");
        // State lost (synced empty): equal files are adopted, local-only files uploaded,
        // remote-only files downloaded; nothing is deleted.
        assert_eq!(
            plan_of(
                &[("same", a.clone()), ("mine", a.clone())],
                &[("same", a.clone()), ("theirs", a.clone())],
                &[]
            ),
            vec![
                Action::Upload("mine".into()),
                Action::Adopt("same".into()),
                Action::Download("theirs".into()),
            ]
        );
        // Both deleted: forget.
        assert_eq!(
            plan_of(&[], &[], &[("x", a)]),
            vec![Action::Adopt("x".into())]
        );
    }

    #[test]
    fn both_changed_keeps_both_sides() {
        let (a, b, c) = (file("a"), file("b"), file("c"));
        assert_eq!(
            plan_of(
                &[("docs/r.txt", b.clone())],
                &[("docs/r.txt", c.clone())],
                &[("docs/r.txt", a.clone())]
            ),
            vec![Action::ConflictCopy {
                path: "docs/r.txt".into(),
                copy: "docs/r (conflicted copy 2026-11-21 101500 laptop).txt".into(),
            }]
        );
        // Both created different files with no merge base: a conflict too.
        assert!(matches!(
            plan_of(&[("x", b.clone())], &[("x", c.clone())], &[])[..],
            [Action::ConflictCopy { .. }]
        ));
        // Edit beats deletion on either side.
        assert_eq!(
            plan_of(&[], &[("x", c.clone())], &[("x", a.clone())]),
            vec![Action::Download("x".into())]
        );
        assert_eq!(
            plan_of(&[("x", b)], &[], &[("x", a)]),
            vec![Action::Upload("x".into())]
        );
        // A file against a folder: the local side is kept as a copy.
        assert!(matches!(
            plan_of(&[("x", c)], &[("x", Node::dir())], &[])[..],
            [Action::ConflictCopy { .. }]
        ));
    }

    #[test]
    fn copy_names_keep_extensions_and_avoid_taken_names() {
        let n = namer();
        assert_eq!(
            n.name("a/b/report.final.pdf", |_| false),
            "a/b/report.final (conflicted copy 2026-11-21 101500 laptop).pdf"
        );
        assert_eq!(
            n.name(".bashrc", |_| false),
            ".bashrc (conflicted copy 2026-11-21 101500 laptop)"
        );
        assert_eq!(
            n.name("Makefile", |_| false),
            "Makefile (conflicted copy 2026-11-21 101500 laptop)"
        );
        let first = n.name("x.txt", |_| false);
        assert_eq!(
            n.name("x.txt", |c| c == first),
            "x (conflicted copy 2026-11-21 101500 laptop 2).txt"
        );
    }

    #[test]
    fn folders_with_new_content_survive_deletion_on_the_other_side() {
        let a = file("a");
        let d = Node::dir();
        // The server deleted d, but a new file was put in it locally: keep d.
        let actions = plan_of(
            &[("d", d.clone()), ("d/new", a.clone())],
            &[],
            &[("d", d.clone())],
        );
        assert_eq!(
            actions,
            vec![Action::Upload("d".into()), Action::Upload("d/new".into())]
        );
        // Deleted locally while someone added a file in it: make it again.
        let actions = plan_of(
            &[],
            &[("d", d.clone()), ("d/theirs", a.clone())],
            &[("d", d.clone())],
        );
        assert_eq!(
            actions,
            vec![
                Action::MakeDir("d".into()),
                Action::Download("d/theirs".into())
            ]
        );
        // Deleted locally with everything in it: the deletions go up.
        let actions = plan_of(
            &[],
            &[("d", d.clone()), ("d/f", a.clone())],
            &[("d", d), ("d/f", a)],
        );
        assert_eq!(
            actions,
            vec![
                Action::DeleteRemote("d".into()),
                Action::DeleteRemote("d/f".into())
            ]
        );
    }

    #[test]
    fn mount_points_and_unsettled_paths_are_left_alone() {
        let a = file("a");
        let l: Tree<Node> = [("f".to_string(), a.clone())].into();
        let r: Tree<RemoteNode> = [("m".to_string(), remote(Node::dir()))].into();
        let s: Tree<Node> = [("m".to_string(), Node::dir())].into();
        let mounts: BTreeSet<String> = ["m".to_string()].into();
        let unsettled: BTreeSet<String> = ["f".to_string()].into();
        let actions = plan(
            &Trees {
                local: &l,
                remote: &r,
                synced: &s,
                mount_points: &mounts,
                unsettled: &unsettled,
            },
            &namer(),
        );
        // The mount point was deleted locally: made again, never committed as a deletion.
        assert_eq!(actions, vec![Action::MakeDir("m".into())]);
    }

    #[test]
    fn intents_wait_for_their_row_then_adopt_or_forget() {
        let intent = |parent_jid, node: Option<Node>| Intent { parent_jid, node };
        let at = |jid, n: Node| RemoteNode {
            ns: 1,
            jid,
            node: n,
        };
        let intents: Tree<Intent> = [
            ("waits".to_string(), intent(Some(3), None)),
            ("deleted".to_string(), intent(Some(3), None)),
            ("landed".to_string(), intent(None, Some(file("v")))),
            ("overtaken".to_string(), intent(Some(2), Some(file("v")))),
        ]
        .into();
        let remote: Tree<RemoteNode> = [
            ("waits".to_string(), at(3, file("old"))),
            ("landed".to_string(), at(8, file("v"))),
            ("overtaken".to_string(), at(9, file("w"))),
        ]
        .into();
        assert_eq!(
            settle_intents(&intents, &remote),
            vec![
                ("deleted".to_string(), Settled::Adopt(None)),
                ("landed".to_string(), Settled::Adopt(Some(file("v")))),
                ("overtaken".to_string(), Settled::Forget),
            ]
        );
    }
}
