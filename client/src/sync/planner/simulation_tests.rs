//! The planner driven by fakes: two to four clients, each with a fake disk and merge base,
//! one fake server (JIDs, parent checks answering 409) and a fake clock. A seeded scheduler
//! interleaves users' edits — writes, deletes, renames and moves of files and folders — with
//! the steps of sync rounds (list and scan, then each action alone, as the sync loop carries
//! them out), while requests fail before or after reaching the server, lists come back
//! stale, clients crash mid-round (losing the round's unrecorded merge-base updates) and
//! lose their state folder. Then, faults off, every client syncs until nothing moves, and:
//!
//! - every disk, every merge base and the server hold the same tree;
//! - every version some user wrote and nobody knowingly replaced or deleted (on a disk that
//!   held it) is on the server: as the final content of a path or as a conflicted copy.
//!
//! Nothing here reads the clock or the disk, so a seed replays exactly:
//! `HOLDALL_SIM_SEEDS=N` runs seeds 1..=N (default 300), `HOLDALL_SIM_SEED=S` only S;
//! a failure prints the last `HOLDALL_SIM_LOG_LINES` (40) steps.

use std::collections::BTreeSet;

use holdall_proto::BlockHash;

use super::{plan, settle_intents, Action, CopyNamer, Intent, Settled, Trees};
use crate::local::tree::{Node, RemoteNode, Tree};
use holdall_proto::api::EntryKind;

/// Seeds a test run takes unless told otherwise.
const SEEDS_DEFAULT: u64 = 300;
/// Scheduler steps per seed, faults on.
const STEPS: usize = 400;
/// Passes of every client, faults off, before convergence is required.
const SETTLE_PASSES_MAX: usize = 40;
/// Files users write to (besides files that exist).
const FILE_PATHS: [&str; 6] = ["a", "b", "d/a", "d/b", "d/e/a", "x/a"];
/// Folders users move things to.
const DIR_PATHS: [&str; 4] = ["d", "d/e", "x", "y"];

/// A path's latest row: its JID and what it holds (`None`: a tombstone).
type Row = (u64, Option<Node>);

struct FakeServer {
    rows: Tree<Row>,
    last_jid: u64,
    /// The rows after each commit, so a list answer can come from an earlier moment.
    history: Vec<Tree<Row>>,
}

impl Default for FakeServer {
    fn default() -> FakeServer {
        FakeServer {
            rows: Tree::new(),
            last_jid: 0,
            history: vec![Tree::new()],
        }
    }
}

impl FakeServer {
    /// Commits `node` (None: a deletion) at `path` if `parent` names the path's latest row
    /// (or is none and the path has no row or a tombstone), as holdalld does. The new JID,
    /// or None for a 409.
    fn commit(&mut self, path: &str, node: Option<&Node>, parent: Option<u64>) -> Option<u64> {
        let ok = match (parent, self.rows.get(path)) {
            (None, None) => true,
            (None, Some((_, n))) => n.is_none(),
            (Some(p), Some((jid, _))) => p == *jid,
            (Some(_), None) => false,
        };
        if !ok {
            return None;
        }
        self.last_jid += 1;
        self.rows
            .insert(path.to_string(), (self.last_jid, node.cloned()));
        self.history.push(self.rows.clone());
        Some(self.last_jid)
    }

    /// The live rows.
    fn tree(&self) -> Tree<Node> {
        self.rows
            .iter()
            .filter_map(|(p, (_, n))| Some((p.clone(), n.clone()?)))
            .collect()
    }

    fn latest_jid(&self, path: &str) -> Option<u64> {
        self.rows.get(path).map(|(j, _)| *j)
    }
}

/// A round between its list and its last action.
struct Round {
    remote: Tree<RemoteNode>,
    scanned: Tree<Node>,
    actions: Vec<Action>,
    next: usize,
    /// Merge-base changes, recorded when the round ends (a crash loses them).
    base_updates: Vec<(String, Option<Node>)>,
    /// Rows its commits' answers gave, recorded with them.
    view_updates: Vec<(String, Row)>,
    /// Intents answered, removed with the merge-base changes.
    answered: Vec<String>,
}

#[derive(Default)]
struct FakeClient {
    disk: Tree<Node>,
    synced: Tree<Node>,
    round: Option<Round>,
    /// The server's rows as this client knows them (the state's `remote` table): merged
    /// from list answers, newer JIDs winning, and from its own commits' answers.
    view: Tree<Row>,
    /// The moment (server history index) of the newest answer it has had (a list, or a
    /// commit's answer): a later list answer cannot show the server from before it.
    seen_at: usize,
    /// Commits sent whose answers are not recorded (in the state folder: they survive a
    /// crash).
    intents: Tree<Intent>,
    /// What the sync is deleting locally, recorded before the deletion (in the state
    /// folder): after a crash, a path that no longer holds it is known to be the sync's
    /// doing (gone) or the user's (something new there).
    deleting: Tree<Node>,
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len() as u64) as usize])
    }
}

/// Version `id` of some file: its size is the id, so versions are told apart.
fn content(id: u64) -> Node {
    Node::file(vec![BlockHash::of(&id.to_le_bytes())], id, 0)
}

fn parent_of(path: &str) -> Option<&str> {
    path.rfind('/').map(|i| &path[..i])
}

fn is_under(path: &str, dir: &str) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

/// Makes the folders above `path`; false if a file is in the way.
fn make_parents(disk: &mut Tree<Node>, path: &str) -> bool {
    let mut dirs = Vec::new();
    let mut at = parent_of(path);
    while let Some(dir) = at {
        dirs.push(dir.to_string());
        at = parent_of(dir);
    }
    for dir in dirs.into_iter().rev() {
        match disk.get(&dir) {
            Some(n) if n.kind == EntryKind::File => return false,
            Some(_) => {}
            None => {
                disk.insert(dir, Node::dir());
            }
        }
    }
    true
}

/// Moves `from` and everything under it to `to`.
fn move_tree(disk: &mut Tree<Node>, from: &str, to: &str) {
    let moved: Vec<(String, Node)> = disk
        .iter()
        .filter(|(p, _)| *p == from || is_under(p, from))
        .map(|(p, n)| (format!("{to}{}", &p[from.len()..]), n.clone()))
        .collect();
    disk.retain(|p, _| !(p == from || is_under(p, from)));
    disk.extend(moved);
}

struct Sim {
    rng: Rng,
    server: FakeServer,
    clients: Vec<FakeClient>,
    clock_s: u64,
    next_id: u64,
    written: BTreeSet<u64>,
    /// Versions some user knowingly replaced or deleted.
    superseded: BTreeSet<u64>,
    faults: bool,
    log: Vec<String>,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let clients = 2 + rng.below(3) as usize;
        Sim {
            rng,
            server: FakeServer::default(),
            clients: (0..clients).map(|_| FakeClient::default()).collect(),
            clock_s: 0,
            next_id: 1,
            written: BTreeSet::new(),
            superseded: BTreeSet::new(),
            faults: true,
            log: Vec::new(),
        }
    }

    fn note(&mut self, line: String) {
        self.log.push(line);
    }

    /// Files under (or at) `path` on a disk: their versions are gone with it.
    fn supersede_under(&mut self, who: usize, path: &str) {
        let ids: Vec<u64> = self.clients[who]
            .disk
            .iter()
            .filter(|(p, n)| n.kind == EntryKind::File && (*p == path || is_under(p, path)))
            .map(|(_, n)| n.size)
            .collect();
        self.superseded.extend(ids);
    }

    /// A user's edit on client `who`'s disk.
    fn edit(&mut self, who: usize) {
        let existing_files: Vec<String> = self.clients[who]
            .disk
            .iter()
            .filter(|(_, n)| n.kind == EntryKind::File)
            .map(|(p, _)| p.clone())
            .collect();
        let existing: Vec<String> = self.clients[who].disk.keys().cloned().collect();
        match self.rng.below(10) {
            0..=4 => {
                let path = match self.rng.chance(50) {
                    true => self.rng.pick(&FILE_PATHS).map(|p| p.to_string()),
                    false => self.rng.pick(&existing_files).cloned(),
                };
                let Some(path) = path else { return };
                let disk = &mut self.clients[who].disk;
                if disk.get(&path).is_some_and(|n| n.kind == EntryKind::Dir)
                    || !make_parents(disk, &path)
                {
                    return;
                }
                self.supersede_under(who, &path);
                let id = self.next_id;
                self.next_id += 1;
                self.written.insert(id);
                self.clients[who].disk.insert(path.clone(), content(id));
                self.note(format!("client {who} writes {path} = v{id}"));
            }
            5..=6 => {
                let Some(path) = self.rng.pick(&existing).cloned() else {
                    return;
                };
                self.supersede_under(who, &path);
                self.clients[who]
                    .disk
                    .retain(|p, _| !(*p == path || is_under(p, &path)));
                self.note(format!("client {who} deletes {path}"));
            }
            _ => {
                let Some(from) = self.rng.pick(&existing).cloned() else {
                    return;
                };
                let disk = &mut self.clients[who].disk;
                let to = match disk[&from].kind {
                    EntryKind::File => self.rng.pick(&FILE_PATHS),
                    EntryKind::Dir => self.rng.pick(&DIR_PATHS),
                    EntryKind::Deleted => None,
                };
                let Some(to) = to.map(|t| t.to_string()) else {
                    return;
                };
                if disk.contains_key(&to) || to == from || is_under(&to, &from) {
                    return;
                }
                if !make_parents(disk, &to) {
                    return;
                }
                move_tree(disk, &from, &to);
                self.note(format!("client {who} moves {from} to {to}"));
            }
        }
    }

    /// Lists and scans: a new round with its plan.
    fn start_round(&mut self, who: usize) {
        let now = self.server.history.len() - 1;
        let c = &mut self.clients[who];
        // A slow answer shows the server at some moment since the newest answer before it.
        let stale = self.faults && self.rng.chance(10) && c.seen_at < now;
        let at = match stale {
            true => c.seen_at + self.rng.below((now - c.seen_at) as u64) as usize,
            false => now,
        };
        self.clock_s += 1;
        for (p, row) in &self.server.history[at] {
            if c.view.get(p).is_none_or(|(j, _)| row.0 > *j) {
                c.view.insert(p.clone(), row.clone());
            }
        }
        c.seen_at = c.seen_at.max(at);
        let remote: Tree<RemoteNode> = c
            .view
            .iter()
            .filter_map(|(p, (jid, n))| {
                let node = n.clone()?;
                Some((
                    p.clone(),
                    RemoteNode {
                        ns: 1,
                        jid: *jid,
                        node,
                    },
                ))
            })
            .collect();
        for (p, n) in std::mem::take(&mut c.deleting) {
            if c.disk.get(&p) != Some(&n) {
                c.synced.remove(&p);
            }
        }
        for (p, settled) in settle_intents(&c.intents, &remote) {
            c.intents.remove(&p);
            match settled {
                Settled::Adopt(Some(n)) => {
                    c.synced.insert(p, n);
                }
                Settled::Adopt(None) | Settled::Forget => {
                    c.synced.remove(&p);
                }
            }
        }
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
                host: format!("host{who}"),
                stamp: format!("2026-11-21 {:06}", self.clock_s),
            },
        );
        let line = format!(
            "client {who} plans{} {actions:?}",
            if stale { " (stale list)" } else { "" }
        );
        c.round = Some(Round {
            remote,
            scanned: c.disk.clone(),
            actions,
            next: 0,
            base_updates: Vec::new(),
            view_updates: Vec::new(),
            answered: Vec::new(),
        });
        self.note(line);
    }

    /// Carries out the next action of `who`'s round (or ends the round); false if it had
    /// no round.
    fn step(&mut self, who: usize) -> bool {
        let lost_before = self.faults && self.rng.chance(8);
        let lost_after = self.faults && self.rng.chance(8);
        let c = &mut self.clients[who];
        let Some(round) = c.round.as_mut() else {
            return false;
        };
        let Some(action) = round.actions.get(round.next).cloned() else {
            let round = c.round.take().expect("checked");
            for (p, n) in round.base_updates {
                match n {
                    Some(n) => c.synced.insert(p, n),
                    None => c.synced.remove(&p),
                };
            }
            for p in round.answered {
                c.intents.remove(&p);
            }
            c.deleting.clear();
            for (p, row) in round.view_updates {
                if c.view.get(&p).is_none_or(|(j, _)| row.0 > *j) {
                    c.view.insert(p, row);
                }
            }
            return true;
        };
        round.next += 1;
        // The sync loop never acts on a path that changed on disk since its scan.
        let untouched = |p: &str| c.disk.get(p) == round.scanned.get(p);
        let outcome = match &action {
            Action::Adopt(p) => {
                let n = round.remote.get(p).map(|r| r.node.clone());
                round.base_updates.push((p.clone(), n));
                "adopted"
            }
            Action::Download(p) | Action::MakeDir(p) => {
                let r = &round.remote[p];
                let still_latest = self.server.latest_jid(p) == Some(r.jid);
                if lost_before || !untouched(p) || !still_latest {
                    "skipped"
                } else if !make_parents(&mut c.disk, p) {
                    "blocked by a file"
                } else if c.disk.get(p).is_some_and(|n| n.kind == EntryKind::Dir)
                    && r.node.kind == EntryKind::File
                {
                    "blocked by a folder"
                } else {
                    c.disk.insert(p.clone(), r.node.clone());
                    round.base_updates.push((p.clone(), Some(r.node.clone())));
                    "done"
                }
            }
            Action::DeleteLocal(p) => {
                let has_children = c.disk.keys().any(|x| is_under(x, p));
                if !untouched(p) || has_children {
                    "skipped"
                } else {
                    if let Some(n) = c.disk.remove(p) {
                        c.deleting.insert(p.clone(), n);
                    }
                    round.base_updates.push((p.clone(), None));
                    "done"
                }
            }
            Action::Upload(p) | Action::DeleteRemote(p) => {
                let node = c.disk.get(p).cloned();
                let parent_jid = round.remote.get(p).map(|r| r.jid);
                if !untouched(p) {
                    "skipped"
                } else {
                    let intent = Intent {
                        parent_jid,
                        node: node.clone(),
                    };
                    c.intents.insert(p.clone(), intent);
                    if lost_before {
                        "lost before the server"
                    } else {
                        let answer = self.server.commit(p, node.as_ref(), parent_jid);
                        if !(answer.is_some() && lost_after) {
                            c.seen_at = self.server.history.len() - 1;
                        }
                        match answer {
                            None => {
                                round.answered.push(p.clone());
                                "409"
                            }
                            Some(_) if lost_after => "committed, answer lost",
                            Some(jid) => {
                                round.answered.push(p.clone());
                                round.view_updates.push((p.clone(), (jid, node.clone())));
                                round.base_updates.push((p.clone(), node));
                                "done"
                            }
                        }
                    }
                }
            }
            Action::ConflictCopy { path, copy } => {
                if !untouched(path) || c.disk.contains_key(copy) {
                    "skipped"
                } else {
                    move_tree(&mut c.disk, path, copy);
                    "done"
                }
            }
        };
        self.note(format!("client {who} {action:?}: {outcome}"));
        true
    }

    fn crash(&mut self, who: usize) {
        self.clients[who].round = None;
        self.note(format!("client {who} crashes"));
    }

    fn wipe_state(&mut self, who: usize) {
        let c = &mut self.clients[who];
        c.round = None;
        c.synced.clear();
        c.view.clear();
        // Its next requests are new: their answers show the server from now on.
        c.seen_at = self.server.history.len() - 1;
        c.intents.clear();
        c.deleting.clear();
        self.note(format!("client {who} loses its state folder"));
    }

    fn run(&mut self) {
        for _ in 0..STEPS {
            let who = self.rng.below(self.clients.len() as u64) as usize;
            match self.rng.below(100) {
                0..=34 => self.edit(who),
                35..=94 => {
                    if !self.step(who) {
                        self.start_round(who);
                    }
                }
                95..=98 => self.crash(who),
                _ => self.wipe_state(who),
            }
        }
    }

    /// Faults off: rounds until a pass of every client moves nothing. False if it never
    /// settles.
    fn settle(&mut self) -> bool {
        self.faults = false;
        for who in 0..self.clients.len() {
            while self.step(who) {}
        }
        for _ in 0..SETTLE_PASSES_MAX {
            let mut moved = 0;
            for who in 0..self.clients.len() {
                self.start_round(who);
                moved += self.clients[who]
                    .round
                    .as_ref()
                    .map_or(0, |r| r.actions.len());
                while self.step(who) {}
            }
            if moved == 0 {
                return true;
            }
        }
        false
    }

    /// What must hold at the end; a description of the first broken rule.
    fn check(&self) -> Result<(), String> {
        let server = self.server.tree();
        for (who, c) in self.clients.iter().enumerate() {
            if c.disk != server {
                return Err(format!(
                    "client {who}'s disk differs from the server:\n  disk   {:?}\n  server {server:?}",
                    c.disk
                ));
            }
            if c.synced != server {
                return Err(format!("client {who}'s merge base differs from the server"));
            }
        }
        let kept: BTreeSet<u64> = server
            .values()
            .filter(|n| n.kind == EntryKind::File)
            .map(|n| n.size)
            .collect();
        for id in self.written.difference(&self.superseded) {
            if !kept.contains(id) {
                return Err(format!(
                    "version v{id} was lost: nobody replaced or deleted it"
                ));
            }
        }
        Ok(())
    }
}

fn run_seed(seed: u64) -> Result<(), String> {
    let mut sim = Sim::new(seed);
    sim.run();
    let outcome = match sim.settle() {
        true => sim.check(),
        false => Err("did not settle".into()),
    };
    outcome.map_err(|e| {
        let keep = std::env::var("HOLDALL_SIM_LOG_LINES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(40);
        let tail = sim.log.len().saturating_sub(keep);
        format!(
            "seed {seed} ({} clients): {e}\nlast steps:\n{}",
            sim.clients.len(),
            sim.log[tail..].join("\n")
        )
    })
}

#[test]
fn clients_under_faults_converge_and_lose_no_version() {
    let seeds: Vec<u64> = match std::env::var("HOLDALL_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("HOLDALL_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("HOLDALL_SIM_SEEDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(SEEDS_DEFAULT);
            (1..=n).collect()
        }
    };
    for seed in seeds {
        if let Err(e) = run_seed(seed) {
            panic!("{e}\nreplay: HOLDALL_SIM_SEED={seed} cargo test -p holdall-client clients_under_faults");
        }
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let trace = |seed| {
        let mut sim = Sim::new(seed);
        sim.run();
        sim.settle();
        sim.log
    };
    assert_eq!(trace(7), trace(7));
    assert_ne!(trace(7), trace(8));
}

#[test]
fn concurrent_edits_of_one_file_all_survive() {
    let mut sim = Sim::new(1);
    sim.clients = (0..3).map(|_| FakeClient::default()).collect();
    for who in 0..3 {
        let id = 100 + who as u64;
        sim.written.insert(id);
        sim.clients[who].disk.insert("a".into(), content(id));
    }
    assert!(sim.settle());
    sim.check().unwrap();
    assert_eq!(sim.server.tree().len(), 3, "{:?}", sim.server.rows.keys());
}

#[test]
fn a_wiped_state_folder_deletes_nothing_on_the_server() {
    let mut sim = Sim::new(1);
    sim.clients = (0..2).map(|_| FakeClient::default()).collect();
    sim.written.extend([1, 2]);
    sim.clients[0].disk.insert("a".into(), content(1));
    sim.clients[0].disk.insert("b".into(), content(2));
    assert!(sim.settle());
    // Client 1 holds both; it loses its state and its copy of "a" meanwhile.
    sim.wipe_state(1);
    sim.clients[1].disk.remove("a");
    sim.start_round(1);
    let actions = &sim.clients[1].round.as_ref().unwrap().actions;
    assert!(
        !actions.iter().any(|a| matches!(a, Action::DeleteRemote(_))),
        "{actions:?}"
    );
    assert!(sim.settle());
    sim.check().unwrap();
    assert!(sim.server.tree().contains_key("a"));
}
