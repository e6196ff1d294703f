//! Version history read back from the journal files: every version of a path newest first,
//! across snapshots, journal files and reopens, with commit time and author; and a data
//! folder written by a version-1 binary (tests/fixtures/journal-v1) opening unchanged.

use std::path::Path;

use holdall_engine::journal::record::{Author, JournalRecord, NamespaceKind, Row};
use holdall_engine::journal::state::Commit;
use holdall_engine::journal::{Journal, JournalConfig};
use holdall_engine::runtime;
use holdall_proto::api::EntryKind;
use holdall_proto::{BlockHash, FileVersion};

fn version(path: &str, content: &str, parent: Option<u64>, device: &str) -> Commit {
    Commit {
        ns: 1,
        path: path.into(),
        version: FileVersion::file(
            vec![BlockHash::of(content.as_bytes())],
            content.len() as u64,
            7,
        ),
        parent_jid: parent,
        author: Author {
            user: 1,
            device: device.into(),
        },
    }
}

fn deletion(path: &str, parent: u64) -> Commit {
    Commit {
        version: FileVersion::deleted(),
        ..version(path, "", Some(parent), "")
    }
}

async fn open(dir: &Path, snapshot_after_bytes: u64) -> Journal {
    let mut c = JournalConfig::new(dir);
    c.snapshot_after_bytes = snapshot_after_bytes;
    Journal::open(c).await.unwrap()
}

/// A new journal holding namespace 1.
async fn open_with_root(dir: &Path, snapshot_after_bytes: u64) -> Journal {
    let j = open(dir, snapshot_after_bytes).await;
    j.append(vec![JournalRecord::Namespace {
        id: 1,
        owner: 1,
        kind: NamespaceKind::Root,
    }])
    .await
    .unwrap();
    j
}

async fn history(j: &Journal, path: &str) -> Vec<Row> {
    let mut walk = j.history(1, path);
    let mut out = Vec::new();
    while let Some(row) = walk.next().await.unwrap() {
        out.push(row);
    }
    out
}

async fn commit_one(j: &Journal, c: Commit) -> u64 {
    match j.commit(vec![c]).await.unwrap().pop() {
        Some(holdall_engine::journal::state::CommitOutcome::Ok { jid }) => jid,
        other => panic!("{other:?}"),
    }
}

fn jids(rows: &[Row]) -> Vec<u64> {
    rows.iter().map(|r| r.jid).collect()
}

#[test]
fn every_version_reads_back_newest_first_across_snapshots_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        // Small snapshots: the versions spread over many journal files and snapshots.
        let j = open_with_root(&path, 8192).await;
        let mut parent = None;
        let mut expected = Vec::new();
        for v in 0..40 {
            let jid = commit_one(&j, version("a", &format!("a{v}"), parent, "laptop")).await;
            // Other paths between the versions, and two versions of one path in one group.
            commit_one(&j, version(&format!("other{v}"), "x", None, "phone")).await;
            parent = Some(jid);
            expected.push(jid);
        }
        let both = j
            .commit(vec![
                version("a", "g1", parent, "desk"),
                version("a", "g2", parent.map(|p| p + 2), "desk"),
            ])
            .await
            .unwrap();
        assert!(both
            .iter()
            .all(|o| matches!(o, holdall_engine::journal::state::CommitOutcome::Ok { .. })));
        let last = j.state().latest(1, "a").unwrap().jid;
        expected.extend([last - 1, last]);
        let gone = commit_one(&j, deletion("a", last)).await;
        expected.push(gone);
        expected.reverse();
        assert!(j.stats().snapshots > 3, "the test spans snapshots");

        let rows = history(&j, "a").await;
        assert_eq!(jids(&rows), expected);
        assert_eq!(rows[0].version.kind, EntryKind::Deleted);
        assert_eq!(rows[1].version.blocklist, vec![BlockHash::of(b"g2")]);
        assert_eq!(rows[2].version.blocklist, vec![BlockHash::of(b"g1")]);
        assert_eq!(
            rows.last().unwrap().version.blocklist,
            vec![BlockHash::of(b"a0")]
        );
        assert!(rows.iter().all(|r| r.committed_ms > 1_700_000_000_000));
        assert!(rows
            .windows(2)
            .all(|w| w[0].committed_ms >= w[1].committed_ms));
        assert_eq!(rows[1].author.device, "desk");
        assert_eq!(rows[5].author.device, "laptop");
        assert_eq!(history(&j, "never").await.len(), 0);
        j.close().await;

        let j = open(&path, 8192).await;
        assert_eq!(history(&j, "a").await, rows, "the same after a reopen");
        j.close().await;
    });
}

fn copy_fixture(to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal-v1");
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn a_version_1_journal_opens_unchanged_and_its_rows_join_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    copy_fixture(&path);
    runtime::run(async move {
        // Written by a version-1 binary: "a" three times, "b" then deleted, "c", folder "d";
        // snapshots after journal files 2 and 3.
        let j = open(&path, 8192).await;
        {
            let state = j.state();
            let a = state.latest(1, "a").unwrap();
            assert_eq!((a.jid, a.committed_ms), (5, 0));
            assert_eq!(a.author, Author::default());
            assert_eq!(a.version.blocklist, vec![BlockHash::of(b"a3")]);
            assert_eq!(
                state.latest(1, "b").unwrap().version.kind,
                EntryKind::Deleted
            );
            assert_eq!(state.latest(1, "d").unwrap().version.kind, EntryKind::Dir);
            assert_eq!(state.namespace(1).unwrap().last_jid(), 7);
            assert_eq!(state.user_by_name("ann").unwrap().id, 1);
        }
        assert_eq!(
            jids(&history(&j, "a").await),
            [5],
            "version 1 kept no chain"
        );
        let new = commit_one(&j, version("a", "a4", Some(5), "laptop")).await;
        assert_eq!(new, 8);
        let rows = history(&j, "a").await;
        assert_eq!(jids(&rows), [8, 5], "the old latest row is history now");
        assert_eq!(rows[1].version.blocklist, vec![BlockHash::of(b"a3")]);
        assert_eq!(rows[1].committed_ms, 0);
        j.close().await;

        let j = open(&path, 8192).await;
        assert_eq!(history(&j, "a").await, rows);
        // Enough writes for a version-2 snapshot; the chain survives it.
        let mut parent = 8;
        for v in 5..60 {
            parent = commit_one(&j, version("a", &format!("a{v}"), Some(parent), "")).await;
        }
        assert!(j.stats().snapshots > 0);
        j.close().await;
        let j = open(&path, 8192).await;
        let rows = history(&j, "a").await;
        assert_eq!(rows.len(), 57);
        assert_eq!(jids(&rows[55..]), [8, 5]);
        j.close().await;
    });
}

async fn retained_jids(j: &Journal, path: &str, cutoff_ms: u64) -> Vec<u64> {
    let mut walk = j.retained_history(1, path, cutoff_ms);
    let mut out = Vec::new();
    while let Some(row) = walk.next().await.unwrap() {
        out.push(row.jid);
    }
    out
}

#[test]
fn retention_keeps_the_latest_row_and_what_was_superseded_since_the_cutoff() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        let j = open_with_root(&path, 1 << 20).await;
        let mut parent = None;
        for v in 0..4 {
            parent = Some(commit_one(&j, version("a", &format!("a{v}"), parent, "")).await);
            // Distinct commit times, so each cutoff below splits the versions.
            glommio::timer::sleep(std::time::Duration::from_millis(3)).await;
        }
        let rows = history(&j, "a").await;
        let times: Vec<u64> = rows.iter().map(|r| r.committed_ms).collect();
        assert!(times.windows(2).all(|w| w[0] > w[1]), "{times:?}");
        // Version i (newest first) was superseded at times[i - 1].
        assert_eq!(retained_jids(&j, "a", 0).await, jids(&rows));
        assert_eq!(retained_jids(&j, "a", times[1]).await, jids(&rows[..3]));
        assert_eq!(retained_jids(&j, "a", times[1] + 1).await, jids(&rows[..2]));
        assert_eq!(retained_jids(&j, "a", u64::MAX).await, jids(&rows[..1]));
        assert!(retained_jids(&j, "never", 0).await.is_empty());
        j.close().await;
    });
}

#[test]
fn an_all_or_nothing_batch_with_one_refusal_writes_nothing() {
    use holdall_engine::journal::state::CommitOutcome;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        let j = open_with_root(&path, 1 << 20).await;
        let a = commit_one(&j, version("a", "a0", None, "")).await;
        // Queued together, so they share a group: the refused batch must leave no trace
        // in what the plain commit behind it is checked against.
        let (batch, plain) = futures::join!(
            j.commit_all_or_nothing(vec![
                version("x", "x0", None, ""),
                version("a", "a1", Some(a + 100), ""),
            ]),
            j.commit(vec![version("x", "x1", None, "")]),
        );
        assert_eq!(
            batch.unwrap(),
            vec![
                CommitOutcome::NotWritten,
                CommitOutcome::Conflict {
                    current_jid: Some(a)
                }
            ]
        );
        assert_eq!(plain.unwrap(), vec![CommitOutcome::Ok { jid: a + 1 }]);
        let both = j
            .commit_all_or_nothing(vec![
                version("y", "y0", None, ""),
                version("a", "a2", Some(a), ""),
            ])
            .await
            .unwrap();
        assert_eq!(
            both,
            vec![
                CommitOutcome::Ok { jid: a + 2 },
                CommitOutcome::Ok { jid: a + 3 }
            ]
        );
        assert_eq!(jids(&history(&j, "a").await), [a + 3, a]);
        assert_eq!(jids(&history(&j, "x").await), [a + 1]);
        j.close().await;
    });
}

/// The oldest journal generation holding a row that some path's history reaches past its
/// latest row, walking only what `cutoff_ms` retains.
async fn needed_from(j: &Journal, paths: &[&str], cutoff_ms: u64) -> u64 {
    let mut oldest = u64::MAX;
    for path in paths {
        let mut walk = j.retained_history(1, path, cutoff_ms);
        let mut first = true;
        while let Some(row) = walk.next().await.unwrap() {
            if let (false, Some(at)) = (first, row.at) {
                oldest = oldest.min(at.generation);
            }
            first = false;
        }
    }
    oldest
}

fn journal_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".hjnl")
        })
        .count()
}

#[test]
fn journal_files_outside_retention_go_and_the_latest_rows_keep_their_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        let j = open_with_root(&path, 8192).await;
        let still = commit_one(&j, version("still", "never changes", None, "pc")).await;
        let mut parent = None;
        for i in 0..300 {
            parent = Some(commit_one(&j, version("busy", &format!("v{i}"), parent, "pc")).await);
        }
        let files = journal_files(&path);
        assert!(files > 10, "{files} journal files");
        // Everything retained: only files before the oldest version of "busy" may go.
        let all = needed_from(&j, &["still", "busy"], 0).await;
        let before = j.remove_files_before(all).await.unwrap();
        assert!(before < all, "{before} removed below generation {all}");
        assert_eq!(
            history(&j, "busy").await.len(),
            300,
            "every retained version reads back"
        );
        // A cutoff in the future: every superseded version is outside retention.
        let future = holdall_engine::journal::now_ms() + 3_600_000;
        let none = needed_from(&j, &["still", "busy"], future).await;
        assert_eq!(none, u64::MAX);
        let removed = j.remove_files_before(none).await.unwrap();
        let left = journal_files(&path);
        assert!(
            left <= 3,
            "{left} of {files} journal files left ({removed} removed)"
        );
        assert_eq!(jids(&history(&j, "still").await), vec![still]);
        // The next version of a row whose file is gone still chains to it.
        let next = commit_one(&j, version("still", "changed", Some(still), "pc")).await;
        j.close().await;
        let j = open(&path, 8192).await;
        assert_eq!(jids(&history(&j, "still").await), vec![next, still]);
        let left = history(&j, "busy").await.len();
        assert!(
            left < 50,
            "older versions went with their files ({left} left)"
        );
        j.close().await;
        // Without the snapshots that cover them, the removed files are missed, loudly.
        for e in std::fs::read_dir(&path).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "hsnp") {
                std::fs::remove_file(p).unwrap();
            }
        }
        let mut c = JournalConfig::new(&path);
        c.snapshot_after_bytes = 8192;
        assert!(matches!(
            Journal::open(c).await,
            Err(holdall_engine::journal::JournalError::FilesMissing { .. })
        ));
    });
}
