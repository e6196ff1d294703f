//! The planner driven by fakes: several clients over a fake disk each, one fake server (JIDs,
//! parent checks, 409s) and a fake clock, edited at random and interleaved at random; in
//! the end every disk and the server agree, and no edit is lost.

use std::collections::{BTreeMap, BTreeSet};

use holdall_proto::BlockHash;

use super::{plan, Action, CopyNamer, Trees};
use crate::tree::{Kind, Node, RemoteNode, Tree};

#[derive(Default)]
struct FakeServer {
    rows: BTreeMap<String, (u64, Node)>,
    last_jid: u64,
}

impl FakeServer {
    fn commit(&mut self, path: &str, node: Option<&Node>, parent: Option<u64>) -> bool {
        if self.rows.get(path).map(|(j, _)| *j) != parent {
            return false;
        }
        self.last_jid += 1;
        match node {
            Some(n) => {
                self.rows
                    .insert(path.to_string(), (self.last_jid, n.clone()));
            }
            None => {
                self.rows.remove(path);
            }
        }
        true
    }

    fn list(&self) -> Tree<RemoteNode> {
        self.rows
            .iter()
            .map(|(p, (jid, n))| {
                (
                    p.clone(),
                    RemoteNode {
                        ns: 1,
                        jid: *jid,
                        node: n.clone(),
                    },
                )
            })
            .collect()
    }
}

#[derive(Default)]
struct FakeClient {
    disk: Tree<Node>,
    synced: Tree<Node>,
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn content(id: u64) -> Node {
    Node::file(vec![BlockHash::of(&id.to_le_bytes())], 8, 0)
}

/// One round of one client: list, plan, act. Returns the number of actions.
fn round(c: &mut FakeClient, server: &mut FakeServer, host: &str, clock_s: u64) -> usize {
    let remote = server.list();
    let none = BTreeSet::new();
    let actions = plan(
        &Trees {
            local: &c.disk,
            remote: &remote,
            synced: &c.synced,
            mount_points: &none,
            unsettled: &none,
        },
        &CopyNamer {
            host: host.into(),
            stamp: format!("2026-11-21 {:06}", clock_s),
        },
    );
    for a in &actions {
        match a {
            Action::Adopt(p) => match remote.get(p) {
                Some(r) => {
                    c.synced.insert(p.clone(), r.node.clone());
                }
                None => {
                    c.synced.remove(p);
                }
            },
            Action::Download(p) | Action::MakeDir(p) => {
                let n = remote[p].node.clone();
                c.disk.insert(p.clone(), n.clone());
                c.synced.insert(p.clone(), n);
            }
            Action::DeleteLocal(p) => {
                c.disk.remove(p);
                c.synced.remove(p);
            }
            Action::Upload(p) => {
                let n = c.disk[p].clone();
                if server.commit(p, Some(&n), remote.get(p).map(|r| r.jid)) {
                    c.synced.insert(p.clone(), n);
                }
            }
            Action::DeleteRemote(p) => {
                if server.commit(p, None, remote.get(p).map(|r| r.jid)) {
                    c.synced.remove(p);
                }
            }
            Action::ConflictCopy { path, copy } => {
                let n = c.disk.remove(path).expect("a conflict has a local side");
                c.disk.insert(copy.clone(), n);
            }
        }
    }
    actions.len()
}

#[test]
fn random_edits_by_three_clients_converge_without_losing_edits() {
    for seed in 1..=20u64 {
        let mut rng = Rng(seed * 0x9E37_79B9 + 7);
        let mut server = FakeServer::default();
        let mut clients: Vec<FakeClient> = (0..3).map(|_| FakeClient::default()).collect();
        let paths = ["a", "b", "c", "d", "e/f", "e/g"];
        let mut next_content = 1u64;
        let mut clock_s = 0u64;
        for _ in 0..300 {
            clock_s += 1;
            let who = rng.below(3) as usize;
            let c = &mut clients[who];
            match rng.below(4) {
                0 | 1 => {
                    let p = paths[rng.below(paths.len() as u64) as usize];
                    if p.starts_with("e/") {
                        c.disk.insert("e".into(), Node::dir());
                    }
                    c.disk.insert(p.into(), content(next_content));
                    next_content += 1;
                }
                2 => {
                    let files: Vec<String> = c
                        .disk
                        .iter()
                        .filter(|(_, n)| n.kind == Kind::File)
                        .map(|(p, _)| p.clone())
                        .collect();
                    if !files.is_empty() {
                        let p = &files[rng.below(files.len() as u64) as usize];
                        c.disk.remove(p);
                    }
                }
                _ => {
                    round(c, &mut server, &format!("host{who}"), clock_s);
                }
            }
        }
        // Every client edits the same path at once: all three versions must survive.
        let mut last_edits = Vec::new();
        for c in clients.iter_mut() {
            let n = content(next_content);
            next_content += 1;
            c.disk.insert("a".into(), n.clone());
            last_edits.push(n);
        }
        for _ in 0..20 {
            let mut busy = 0;
            for (who, c) in clients.iter_mut().enumerate() {
                clock_s += 1;
                busy += round(c, &mut server, &format!("host{who}"), clock_s);
            }
            if busy == 0 {
                break;
            }
        }
        let expected: Tree<Node> = server
            .rows
            .iter()
            .map(|(p, (_, n))| (p.clone(), n.clone()))
            .collect();
        for (who, c) in clients.iter().enumerate() {
            assert_eq!(
                c.disk, expected,
                "seed {seed}: client {who} differs from the server"
            );
            assert_eq!(c.synced, expected, "seed {seed}: client {who}'s merge base");
        }
        for n in &last_edits {
            assert!(
                expected.values().any(|x| x == n),
                "seed {seed}: a concurrent edit was lost"
            );
        }
    }
}
