//! Damage on disk, found by the real holdalld: a bit flipped in a stored block, a bit
//! flipped in a journal row, and garbage after the journal's last record. Each is detected,
//! counted in the metrics, logged, and never served; everything else keeps working, and a
//! damaged block can be uploaded again.

mod support;

use std::path::{Path, PathBuf};

use serde_json::json;
use support::{
    block, commit_file, create_user, fetch_block, hex, listed_paths, metric, store_block, Server,
};

fn commit(server: &Server, token: &str, ns: u64, path: &str, b: &[u8]) {
    let (status, v) = commit_file(server, token, ns, path, b);
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")), "{v}");
}

fn store(server: &Server, token: &str, b: &[u8]) -> serde_json::Value {
    let r = store_block(server, token, b);
    assert_eq!(r.status, 200);
    r.json()
}

fn only_file(dir: &Path, suffix: &str) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().unwrap()
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn damaged_blocks_and_rows_are_found_counted_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, 1);
    let (token, ns) = create_user(&server, "ana");
    let blocks: Vec<Vec<u8>> = (1..=3).map(|i| block(i, 64 << 10)).collect();
    for (i, b) in blocks.iter().enumerate() {
        store(&server, &token, b);
        commit(&server, &token, ns, &format!("file-{i}"), b);
    }
    commit(&server, &token, ns, "a-row-to-damage", &blocks[1]);
    commit(&server, &token, ns, "a-later-row", &blocks[2]);
    assert!(server.terminate().success());

    // The first block's record is the first in its segment, after the header page; its
    // payload starts after the 72-byte record header.
    flip(
        &only_file(&data.join("shard-0/blocks"), ".hblk"),
        4096 + 72 + 100,
    );
    let journal = only_file(&data.join("shard-0/journal"), ".hjnl");
    let bytes = std::fs::read(&journal).unwrap();
    let at = bytes
        .windows(b"a-row-to-damage".len())
        .position(|w| w == b"a-row-to-damage")
        .unwrap();
    flip(&journal, at + 3);

    let server = Server::start(&data, 1);
    assert_eq!(
        fetch_block(&server, &token, ns, "file-0", &blocks[0]),
        None,
        "damaged block served"
    );
    assert_eq!(fetch_block(&server, &token, ns, "file-0", &blocks[0]), None);
    for (i, b) in blocks.iter().enumerate().skip(1) {
        let got = fetch_block(&server, &token, ns, &format!("file-{i}"), b);
        assert_eq!(got.as_deref(), Some(&b[..]), "file-{i}");
    }
    let paths = listed_paths(&server, &token, ns);
    assert!(!paths.iter().any(|p| p.contains("damage")), "{paths:?}");
    for p in ["file-0", "file-1", "file-2", "a-later-row"] {
        assert!(paths.iter().any(|x| x == p), "{p} missing: {paths:?}");
    }
    assert_eq!(metric(&server, "holdall_corrupt_block_records_total"), 1);
    assert!(metric(&server, "holdall_corrupt_journal_records_total") >= 1);
    let log = server.stderr();
    let warned = |module: &str| {
        log.lines()
            .any(|l| l.contains("WARN") && l.contains(module) && l.contains("damaged"))
    };
    assert!(warned("block_log") && warned("journal"), "{log}");

    // The damaged block can be uploaded again, and is then served.
    assert_eq!(
        store(&server, &token, &blocks[0])["stored"],
        json!(hex(&blocks[..1]))
    );
    assert_eq!(
        fetch_block(&server, &token, ns, "file-0", &blocks[0]).as_deref(),
        Some(&blocks[0][..])
    );
    assert!(server.terminate().success());

    // Garbage after the journal's last burst (a torn write, which starts on a fresh page as
    // every burst does): cut at open, counted; new commits and everything before it are kept.
    let mut bytes = std::fs::read(&journal).unwrap();
    assert_eq!(bytes.len() % 4096, 0, "bursts are padded to pages");
    bytes.extend_from_slice(b"HJNL\x02\x01 torn write");
    std::fs::write(&journal, bytes).unwrap();
    let server = Server::start(&data, 1);
    assert_eq!(metric(&server, "holdall_journal_torn_tail_cuts_total"), 1);
    commit(&server, &token, ns, "after-the-cut", &blocks[0]);
    assert!(server.terminate().success());
    let server = Server::start(&data, 1);
    let paths = listed_paths(&server, &token, ns);
    for p in ["file-0", "file-1", "file-2", "a-later-row", "after-the-cut"] {
        assert!(paths.iter().any(|x| x == p), "{p} missing: {paths:?}");
    }
    for (i, b) in blocks.iter().enumerate() {
        let got = fetch_block(&server, &token, ns, &format!("file-{i}"), b);
        assert_eq!(got.as_deref(), Some(&b[..]), "file-{i}");
    }
}
