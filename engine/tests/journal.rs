//! Journal behaviour: durability across reopen, group commit, conflicts, snapshots, and crash
//! consistency (cuts and bit flips in the journal file, then reopen).

use std::path::Path;
use std::rc::Rc;

use holdall_engine::journal::record::{JournalRecord, NamespaceKind};
use holdall_engine::journal::state::{Commit, CommitOutcome, RecordInvalid};
use holdall_engine::journal::{Journal, JournalConfig, JournalError};
use holdall_engine::runtime;
use holdall_proto::api::EntryKind;
use holdall_proto::{BlockHash, FileVersion};

fn file(ns: u64, path: &str, parent: Option<u64>) -> Commit {
    Commit {
        ns,
        path: path.into(),
        version: FileVersion {
            kind: EntryKind::File,
            blocklist: vec![BlockHash::of(path.as_bytes())],
            size: 100,
            mtime_ms: 1_700_000_000_000,
        },
        parent_jid: parent,
        author: Default::default(),
    }
}

fn setup_records() -> Vec<JournalRecord> {
    vec![
        JournalRecord::Namespace {
            id: 1,
            owner: 1,
            kind: NamespaceKind::Root,
        },
        JournalRecord::User {
            id: 1,
            name: "ann".into(),
            root_ns: 1,
            admin: true,
        },
        JournalRecord::Token {
            user: 1,
            token_sha256: [9; 32],
        },
        JournalRecord::Namespace {
            id: 2,
            owner: 1,
            kind: NamespaceKind::Shared,
        },
        JournalRecord::Mount {
            user: 1,
            ns: 2,
            path: "Team".into(),
        },
    ]
}

/// Everything the state holds, as sorted text, for comparing two states.
fn dump(j: &Journal) -> Vec<String> {
    let mut v: Vec<String> = j
        .state()
        .snapshot_records()
        .map(|r| format!("{r:?}"))
        .collect();
    v.sort();
    v
}

async fn open(dir: &Path, snapshot_after_bytes: u64) -> Journal {
    let mut c = JournalConfig::new(dir);
    c.snapshot_after_bytes = snapshot_after_bytes;
    Journal::open(c).await.unwrap()
}

#[test]
fn everything_survives_reopen_and_jids_continue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        let j = open(&path, 1 << 30).await;
        j.append(setup_records()).await.unwrap();
        let out = j
            .commit(vec![
                file(1, "a", None),
                file(1, "b", None),
                file(2, "x", None),
            ])
            .await
            .unwrap();
        assert_eq!(
            out,
            [
                CommitOutcome::Ok { jid: 1 },
                CommitOutcome::Ok { jid: 2 },
                CommitOutcome::Ok { jid: 1 }
            ]
        );
        let before = dump(&j);
        j.close().await;

        let j = open(&path, 1 << 30).await;
        assert_eq!(dump(&j), before);
        {
            let s = j.state();
            assert_eq!(s.user_by_token(&[9; 32]).unwrap().name, "ann");
            assert_eq!(s.mounts(1), [(2, "Team".to_string())]);
            assert_eq!(s.latest(1, "b").unwrap().jid, 2);
        }
        let out = j.commit(vec![file(1, "a", Some(1))]).await.unwrap();
        assert_eq!(out, [CommitOutcome::Ok { jid: 3 }]);
        j.close().await;
    });
}

#[test]
fn invalid_admin_records_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        let j = open(&path, 1 << 30).await;
        j.append(setup_records()).await.unwrap();
        let written = j.stats().records_written;
        let dup = vec![
            JournalRecord::User {
                id: 5,
                name: "bob".into(),
                root_ns: 5,
                admin: false,
            },
            JournalRecord::User {
                id: 6,
                name: "ann".into(),
                root_ns: 6,
                admin: false,
            },
        ];
        assert_eq!(
            j.append(dup).await,
            Err(JournalError::Invalid(RecordInvalid::NameTaken(
                "ann".into()
            )))
        );
        assert_eq!(j.stats().records_written, written);
        assert!(j.state().user_by_name("bob").is_none());
        j.close().await;
    });
}

#[test]
fn concurrent_commits_share_flushes_and_conflict_correctly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        let j = Rc::new(open(&path, 1 << 30).await);
        j.append(setup_records()).await.unwrap();
        let flushes_before = j.stats().flushes;
        let mut tasks = Vec::new();
        for i in 0..200 {
            let j = j.clone();
            tasks.push(runtime::spawn(async move {
                // Half the commits race for the same path with the same parent.
                let c = if i % 2 == 0 {
                    file(1, "contended", None)
                } else {
                    file(1, &format!("f{i}"), None)
                };
                j.commit(vec![c]).await.unwrap()
            }));
        }
        let mut ok = 0;
        let mut conflicts = 0;
        for t in tasks {
            match t.await[0] {
                CommitOutcome::Ok { .. } => ok += 1,
                CommitOutcome::Conflict { current_jid } => {
                    assert!(current_jid.is_some());
                    conflicts += 1
                }
                ref other => panic!("{other:?}"),
            }
        }
        assert_eq!((ok, conflicts), (101, 99));
        let flushes = j.stats().flushes - flushes_before;
        assert!(flushes < 50, "group commit: {flushes} flushes for 101 rows");
        let s = j.state();
        assert_eq!(s.namespace(1).unwrap().last_jid(), 101);
        let page = s.list(1, 0, 1000).unwrap();
        let jids: Vec<u64> = page.rows.iter().map(|r| r.jid).collect();
        assert_eq!(jids, (1..=101).collect::<Vec<_>>(), "JIDs have no gaps");
    });
}

#[test]
fn snapshots_roll_the_journal_and_reopen_identically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        let j = open(&path, 16 * 1024).await;
        j.append(setup_records()).await.unwrap();
        let mut jid = None;
        for round in 0..300u64 {
            let out = j
                .commit(vec![
                    file(1, "hot", jid),
                    file(1, &format!("cold{round}"), None),
                ])
                .await
                .unwrap();
            let CommitOutcome::Ok { jid: j1 } = out[0] else {
                panic!("{out:?}")
            };
            jid = Some(j1);
        }
        assert!(j.stats().snapshots >= 2, "{:?}", j.stats());
        let before = dump(&j);
        j.close().await;

        let j = open(&path, 16 * 1024).await;
        assert_eq!(dump(&j), before);
        assert!(j.stats().records_replayed < 300, "{:?}", j.stats());
        j.close().await;

        // A damaged newest snapshot: the older one and the journals rebuild the same state.
        let mut snaps: Vec<_> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "hsnp"))
            .collect();
        snaps.sort();
        let newest = snaps.last().unwrap().clone();
        let mut bytes = std::fs::read(&newest).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(&newest, bytes).unwrap();
        let j = open(&path, 16 * 1024).await;
        assert_eq!(dump(&j), before);
        assert_eq!(
            j.stats().corrupt_records,
            1,
            "the damaged snapshot is counted"
        );
        j.close().await;

        // No snapshot at all: the journal files alone rebuild it.
        for s in snaps {
            std::fs::remove_file(s).unwrap();
        }
        let j = open(&path, 16 * 1024).await;
        assert_eq!(dump(&j), before);
        j.close().await;
    });
}

/// Builds a journal of three flushes; returns the file bytes and where the last flush starts.
async fn build(dir: &Path) -> (std::path::PathBuf, Vec<u8>, usize, usize) {
    let j = open(dir, 1 << 30).await;
    j.append(setup_records()).await.unwrap();
    j.commit(vec![file(1, "a", None), file(1, "b", None)])
        .await
        .unwrap();
    let second_end = std::fs::metadata(dir.join("journal-0000000001.hjnl"))
        .unwrap()
        .len() as usize;
    j.commit(vec![file(1, "c", None)]).await.unwrap();
    j.close().await;
    let path = dir.join("journal-0000000001.hjnl");
    let bytes = std::fs::read(&path).unwrap();
    let body_end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    (path, bytes, second_end, body_end)
}

async fn paths_after(dir: &Path, journal: &Path, bytes: &[u8]) -> (Vec<String>, u64, u64) {
    std::fs::write(journal, bytes).unwrap();
    let j = open(dir, 1 << 30).await;
    let mut paths: Vec<String> = j
        .state()
        .list(1, 0, 100)
        .unwrap()
        .rows
        .iter()
        .map(|r| r.path.clone())
        .collect();
    paths.sort();
    let s = j.stats();
    // The journal must take new commits after recovery, and keep them.
    let next = j.state().namespace(1).unwrap().last_jid();
    let out = j.commit(vec![file(1, "after", None)]).await.unwrap();
    assert_eq!(out, [CommitOutcome::Ok { jid: next + 1 }]);
    j.close().await;
    let j = open(dir, 1 << 30).await;
    assert_eq!(j.state().latest(1, "after").map(|r| r.jid), Some(next + 1));
    j.close().await;
    (paths, s.torn_tail_cuts, s.corrupt_records)
}

#[test]
fn torn_tail_cut_at_every_offset_of_the_last_flush() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        let (file_path, bytes, last_start, body_end) = build(&path).await;
        for cut in last_start..body_end {
            let (paths, cuts, _) = paths_after(&path, &file_path, &bytes[..cut]).await;
            assert_eq!(paths, ["a", "b"], "cut at {cut}");
            assert_eq!(cuts, u64::from(cut > last_start), "cut at {cut}");
        }
        let (paths, cuts, corrupt) = paths_after(&path, &file_path, &bytes).await;
        assert_eq!(
            (paths, cuts, corrupt),
            (vec!["a".into(), "b".into(), "c".into()], 0, 0)
        );
    });
}

#[test]
fn bit_flips_lose_only_the_damaged_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        let (file_path, bytes, last_start, body_end) = build(&path).await;
        // In the last record: cut as a torn tail.
        for i in last_start..body_end {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            let (paths, cuts, _) = paths_after(&path, &file_path, &bad).await;
            assert_eq!(paths, ["a", "b"], "flip at {i}");
            assert_eq!(cuts, 1, "flip at {i}");
        }
        // In the second flush's first row ("a"): skipped; "b" and "c" survive.
        let second_start = last_start - 4096;
        for i in (second_start..second_start + 60).step_by(3) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let (paths, cuts, corrupt) = paths_after(&path, &file_path, &bad).await;
            assert_eq!(paths, ["b", "c"], "flip at {i}");
            assert_eq!((cuts, corrupt), (0, 1), "flip at {i}");
        }
    });
}

#[test]
fn damage_in_a_sealed_journal_file_costs_only_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        let j = open(&path, 16 * 1024).await;
        j.append(setup_records()).await.unwrap();
        for round in 0..200u64 {
            j.commit(vec![file(1, &format!("p{round:03}"), None)])
                .await
                .unwrap();
        }
        let before = dump(&j);
        j.close().await;
        // Without snapshots every journal file is replayed; the older ones are sealed.
        let mut journals = Vec::new();
        for entry in std::fs::read_dir(&path).unwrap() {
            let p = entry.unwrap().path();
            match p.extension().and_then(|e| e.to_str()) {
                Some("hsnp") => std::fs::remove_file(&p).unwrap(),
                Some("hjnl") => journals.push(p),
                _ => {}
            }
        }
        journals.sort();
        assert!(journals.len() >= 3, "{journals:?}");
        let (sealed, last) = (&journals[1], journals.last().unwrap());

        // A bit flipped inside a sealed file: one record lost, counted; the rest replayed.
        let mut bytes = std::fs::read(sealed).unwrap();
        let at = bytes.windows(4).position(|w| w == b"HJNL").unwrap() + 40;
        bytes[at] ^= 0x04;
        std::fs::write(sealed, &bytes).unwrap();
        let j = open(&path, 1 << 30).await;
        let after = dump(&j);
        assert!(j.stats().corrupt_records >= 1, "{:?}", j.stats());
        assert_eq!(after.len() + 1, before.len(), "exactly one row lost");
        assert!(after.iter().all(|r| before.contains(r)));
        j.close().await;

        // A sealed file cut inside its last record: left out, counted, never truncated (only
        // the newest file's tail is cut), and the newer files still replay.
        let end = bytes.iter().rposition(|&b| b != 0).unwrap() as u64;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(sealed)
            .unwrap();
        f.set_len(end - 10).unwrap();
        drop(f);
        let j = open(&path, 1 << 30).await;
        assert!(j.stats().corrupt_records >= 2, "{:?}", j.stats());
        let rows = dump(&j);
        let newest_path = format!("p{:03}", 199);
        assert!(
            rows.iter().any(|r| r.contains(&newest_path)),
            "newer files replayed"
        );
        assert_eq!(std::fs::metadata(sealed).unwrap().len(), end - 10);
        assert!(std::fs::metadata(last).unwrap().len() > 0);
        j.close().await;
    });
}

#[test]
fn a_requested_snapshot_rolls_the_file_and_verify_reads_what_an_open_skips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        let j = open(&path, 64 << 20).await;
        j.append(setup_records()).await.unwrap();
        for i in 0..10 {
            j.commit(vec![file(1, &format!("before{i}"), None)])
                .await
                .unwrap();
        }
        j.snapshot().await.unwrap();
        j.snapshot().await.unwrap();
        assert_eq!(j.stats().snapshots, 1, "an empty file is not rolled again");
        j.commit(vec![file(1, "after", None)]).await.unwrap();
        let (records, damaged) = j.verify().await.unwrap();
        assert_eq!(damaged, 0);
        assert!(records >= 11, "{records}");
        let before = dump(&j);
        j.close().await;

        // Damage inside the first file, which the snapshot covers: an open does not read
        // it, verify does.
        let first = path.join("journal-0000000001.hjnl");
        let mut bytes = std::fs::read(&first).unwrap();
        bytes[100] ^= 0x40;
        std::fs::write(&first, &bytes).unwrap();
        let j = open(&path, 64 << 20).await;
        assert_eq!(dump(&j), before, "opened from the snapshot");
        assert_eq!(j.stats().corrupt_records, 0);
        let (_, damaged) = j.verify().await.unwrap();
        assert_eq!(damaged, 1);
        j.close().await;
    });
}
