//! `POST /v1/admin/fsck` on a real holdalld: a clean store is clean; a flipped bit in a
//! block record on disk is found (as a damaged block, or as a retained version's missing
//! block when opening already dropped the record), and nothing is changed by the check.

mod support;

use serde_json::json;
use support::{block, commit_file, create_user, post, store_block, Server};

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
