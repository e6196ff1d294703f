//! `POST /v1/admin/fsck` on a real holdalld: a clean store is clean; a flipped bit in a
//! block record on disk is found (as a damaged block, or as a retained version's missing
//! block when opening already dropped the record), and nothing is changed by the check.

mod support;

use serde_json::json;
use support::{block, commit_file, create_user, post, store_block, Server};

/// Flips one bit inside the first record of a segment that holds one; the segment and its
/// bytes now.
fn flip_a_bit_in_a_block(data: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let segment = ["shard-0", "shard-1"]
        .iter()
        .flat_map(|shard| std::fs::read_dir(data.join(shard).join("blocks")).unwrap())
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "hblk")
                && std::fs::metadata(p).unwrap().len() > 1 << 20
        })
        .expect("a segment with a record");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[4096 + 65536] ^= 0x10;
    std::fs::write(&segment, &bytes).unwrap();
    (segment, bytes)
}

#[test]
fn fsck_reports_a_clean_store_then_a_flipped_bit_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, 2);
    let admin = server.admin_token();
    let (ana, ns) = create_user(&server, "ana");
    let blocks: Vec<Vec<u8>> = (0..4).map(|i| block(i, 1 << 20)).collect();
    for (i, b) in blocks.iter().enumerate() {
        assert_eq!(store_block(&server, &ana, b).status, 200);
        assert_eq!(commit_file(&server, &ana, ns, &format!("f{i}"), b).0, 200);
    }
    assert_eq!(post(&server, "/v1/admin/fsck", &ana, json!({})).0, 403);
    let (status, v) = post(&server, "/v1/admin/fsck", &admin, json!({}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["clean"].clone(), v["blocks_checked"].clone()),
        (json!(true), json!(4)),
        "{v}"
    );
    assert!(v["bytes_checked"].as_u64().unwrap() >= 4 << 20);
    assert!(server.terminate().success());

    // One bit flipped inside the first record of a segment.
    let (segment, bytes) = flip_a_bit_in_a_block(&data);

    let server = Server::start(&data, 2);
    let (status, v) = post(&server, "/v1/admin/fsck", &admin, json!({}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["clean"], json!(false), "{v}");
    let hashes: Vec<String> = blocks
        .iter()
        .map(|b| holdall_proto::BlockHash::of(b).to_hex())
        .collect();
    let damaged: Vec<&str> = v["damaged_blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    let missing: Vec<&str> = v["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["hash"].as_str().unwrap())
        .collect();
    assert_eq!(damaged.len() + missing.len(), 1, "{v}");
    assert!(
        hashes
            .iter()
            .any(|h| damaged.contains(&h.as_str()) || missing.contains(&h.as_str())),
        "{v}"
    );
    if let Some(m) = v["missing"].as_array().unwrap().first() {
        assert!(
            m["path"].as_str().unwrap().starts_with('f') && m["ns"] == json!(ns),
            "{v}"
        );
    }
    // Read-only: the same answer again, and the segment is as it was.
    let (_, again) = post(&server, "/v1/admin/fsck", &admin, json!({}));
    assert_eq!(
        (
            again["damaged_blocks"].clone(),
            again["missing_total"].clone()
        ),
        (v["damaged_blocks"].clone(), v["missing_total"].clone())
    );
    assert_eq!(std::fs::read(&segment).unwrap(), bytes);
    assert!(server.terminate().success());
}

/// Every file under `dir` and its bytes.
fn files(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// `holdalld fsck ARGS`: its exit code and stdout.
fn fsck(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_holdalld"))
        .arg("fsck")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn offline_fsck_reports_a_flipped_bit_and_a_torn_journal_tail_exactly_and_repairs_only_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let server = Server::start(&data, 2);
    let (ana, ns) = create_user(&server, "ana");
    let blocks: Vec<Vec<u8>> = (0..6).map(|i| block(100 + i, 1 << 20)).collect();
    for (i, b) in blocks.iter().enumerate() {
        assert_eq!(store_block(&server, &ana, b).status, 200);
        assert_eq!(commit_file(&server, &ana, ns, &format!("f{i}"), b).0, 200);
    }
    assert!(server.terminate().success());
    let (code, out, err) = fsck(&["--data", d]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("fsck: clean (6 block records"), "{out}");

    // A flipped bit in a block record, and a torn tail on ana's shard's journal.
    let (segment, bytes) = flip_a_bit_in_a_block(&data);
    let shard = (ns % 2) as usize;
    let journal = std::fs::read_dir(data.join(format!("shard-{shard}/journal")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hjnl"))
        .max()
        .unwrap();
    let mut tail = std::fs::read(&journal).unwrap();
    let intact = tail.len();
    tail.extend(std::iter::repeat_n(0xAB, 100));
    std::fs::write(&journal, &tail).unwrap();
    let before = files(&data);
    // The segment put back: a torn tail alone is reported, and the store is clean.
    let flipped = std::fs::read(&segment).unwrap();
    let mut original = flipped.clone();
    original[4096 + 65536] ^= 0x10;
    std::fs::write(&segment, &original).unwrap();
    let (code, out, _) = fsck(&["--data", d]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("torn tails to cut at the next start: 1"),
        "{out}"
    );
    std::fs::write(&segment, &flipped).unwrap();

    let (code, out, err) = fsck(&["--data", d, "--json"]);
    assert_eq!(code, 1, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["clean"], json!(false));
    let hashes: Vec<String> = blocks
        .iter()
        .map(|b| holdall_proto::BlockHash::of(b).to_hex())
        .collect();
    let found: Vec<String> = v["damaged_blocks"]
        .as_array()
        .unwrap()
        .iter()
        .chain(v["missing"].as_array().unwrap().iter().map(|m| &m["hash"]))
        .map(|h| h.as_str().unwrap().to_string())
        .collect();
    assert_eq!(found.len(), 1, "{v}");
    assert!(hashes.contains(&found[0]), "{v}");
    let parts = v["shards"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[shard]["torn_tails_cut"], json!(1), "{v}");
    let torn = parts[shard]["torn_tail_bytes"].as_u64().unwrap();
    assert!((100..=100 + 4096).contains(&torn), "{v}");
    assert_eq!(parts[1 - shard]["torn_tails_cut"], json!(0), "{v}");
    // Every journal record was read: ana's six commits on her shard, the directory's on 0.
    assert!(
        parts[shard]["journal_records_checked"].as_u64().unwrap() >= 6,
        "{v}"
    );
    assert!(
        parts[0]["journal_records_checked"].as_u64().unwrap() >= 3,
        "{v}"
    );
    assert_eq!(parts[shard]["journal_damaged_records"], json!(0), "{v}");
    assert_eq!(
        files(&data),
        before,
        "a check without --repair changes nothing"
    );

    // The human report says the same, per shard.
    let (code, out, _) = fsck(&["--data", d]);
    assert_eq!(code, 1);
    assert!(out.contains(&format!("shard {shard}: ")), "{out}");
    assert!(
        out.contains("torn tails to cut at the next start: 1"),
        "{out}"
    );
    assert!(out.contains("fsck: NOT clean"), "{out}");

    // --repair cuts the tail and nothing else: the damaged block is still reported.
    let (code, out, _) = fsck(&["--data", d, "--repair"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("torn tails cut: 1"), "{out}");
    assert!(std::fs::metadata(&journal).unwrap().len() <= intact as u64);
    assert_eq!(std::fs::read(&segment).unwrap(), bytes);
    let (code, out, _) = fsck(&["--data", d, "--json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["shards"][shard]["torn_tails_cut"], json!(0), "{v}");

    // Not a data folder: a clear error, status 2.
    let (code, _, err) = fsck(&["--data", dir.path().to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("not a holdalld data folder"), "{err}");
}
