//! The fuzz targets' properties in CI: every file of `fuzz/corpus/<target>/` (the seeds and
//! what cargo fuzz kept), and every single-bit flip and every truncation of each valid input
//! below, through the same functions the fuzzers run.
//!
//! `HOLDALL_WRITE_FUZZ_SEEDS=1 cargo test -p holdall-fuzz-checks` writes the valid inputs
//! into the corpus folders as `seed-<n>` (the starting corpus of a fuzzing run).

use std::path::PathBuf;

use holdall_engine::block_log::hint::{self as segment_hint, HintEntry};
use holdall_engine::block_log::record as block_record;
use holdall_engine::block_log::record::SEGMENT_HEADER_BYTES;
use holdall_engine::journal::record::{self as journal_record, Author, JournalRecord, Row, RowAt};
use holdall_fuzz_checks::TARGETS;
use holdall_proto::api::EntryKind;
use holdall_proto::frame::{encode_retrieve_frame, encode_store_frame, RetrieveStatus};
use holdall_proto::BlockHash;
use holdall_proto::FileVersion;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Valid inputs per target.
fn valid_inputs(target: &str) -> Vec<Vec<u8>> {
    let h = |s: &[u8]| BlockHash::of(s);
    match target {
        "store_frames" => {
            let mut body = Vec::new();
            encode_store_frame(&mut body, &h(b"one"), b"one");
            encode_store_frame(&mut body, &h(b""), b"");
            vec![body]
        }
        "retrieve_frames" => {
            let mut body = Vec::new();
            encode_retrieve_frame(&mut body, &h(b"a"), RetrieveStatus::Ok, b"a");
            encode_retrieve_frame(&mut body, &h(b"b"), RetrieveStatus::Pending, b"");
            encode_retrieve_frame(&mut body, &h(b"c"), RetrieveStatus::NotFound, b"");
            vec![body]
        }
        "store_stream" | "retrieve_stream" => {
            let mut store = Vec::new();
            encode_store_frame(&mut store, &h(b"one"), b"one");
            encode_store_frame(&mut store, &h(b""), b"");
            let page = vec![5u8; 4099];
            encode_store_frame(&mut store, &h(&page), &page);
            let mut retrieve = Vec::new();
            encode_retrieve_frame(&mut retrieve, &h(&page), RetrieveStatus::Ok, &page);
            encode_retrieve_frame(&mut retrieve, &h(b"b"), RetrieveStatus::Pending, b"");
            encode_retrieve_frame(&mut retrieve, &h(b"a"), RetrieveStatus::Ok, b"a");
            let body = if target == "store_stream" {
                store
            } else {
                retrieve
            };
            // Every chunking the seed byte picks (large, aligned blocks: tests/streams.rs).
            (0..8u8)
                .map(|seed| [vec![seed], body.clone()].concat())
                .collect()
        }
        "delta_apply" => {
            use holdall_fuzz_checks::{delta_base, DELTA_BASE_BYTES};
            use holdall_proto::delta::{delta_of, parse_signature, signature_of};
            let base = delta_base();
            let signature = parse_signature(signature_of(base)).unwrap();
            let declared = ((DELTA_BASE_BYTES / 16) as u16).to_le_bytes();
            [0usize, 2048, 30_000, DELTA_BASE_BYTES - 100]
                .into_iter()
                .map(|at| {
                    let mut block = base.to_vec();
                    block[at..at + 100].fill(7);
                    let delta = delta_of(&signature, &block, block.len()).unwrap();
                    [declared.to_vec(), delta].concat()
                })
                .collect()
        }
        "store_stream_v2" => {
            use holdall_proto::frame::{store_frame_header_v2, StoreHeader};
            let page = vec![5u8; 4099];
            let raw = StoreHeader {
                hash: h(&page),
                raw_len: 4099,
                wire_len: 4099,
                zstd: false,
                delta: false,
            };
            let packed = StoreHeader {
                hash: h(&page),
                raw_len: 4099,
                wire_len: 3,
                zstd: true,
                delta: false,
            };
            let mut body = store_frame_header_v2(&raw).to_vec();
            body.extend_from_slice(&page);
            body.extend_from_slice(&store_frame_header_v2(&packed));
            body.extend_from_slice(b"zst");
            (0..8u8)
                .map(|seed| [vec![seed], body.clone()].concat())
                .collect()
        }
        "retrieve_stream_v2" => {
            use holdall_proto::frame::retrieve_frame_header_v2;
            let text = b"a line of a log file, again and again\n".repeat(200);
            let packed = zstd::bulk::compress(&text, 3).unwrap();
            let mut body = Vec::new();
            let lens = (text.len() as u32, packed.len() as u32, true);
            body.extend_from_slice(&retrieve_frame_header_v2(
                &h(&text),
                RetrieveStatus::Ok,
                lens,
            ));
            body.extend_from_slice(&packed);
            let raw = (3, 3, false);
            body.extend_from_slice(&retrieve_frame_header_v2(
                &h(b"raw"),
                RetrieveStatus::Ok,
                raw,
            ));
            body.extend_from_slice(b"raw");
            let none = (0, 0, false);
            let missing = RetrieveStatus::NotFound;
            body.extend_from_slice(&retrieve_frame_header_v2(&h(b"gone"), missing, none));
            (0..8u8)
                .map(|seed| [vec![seed], body.clone()].concat())
                .collect()
        }
        "journal_record" => {
            let records = [
                JournalRecord::Row(Row {
                    ns: 7,
                    jid: 42,
                    path: "docs/a.txt".into(),
                    version: FileVersion {
                        kind: EntryKind::File,
                        blocklist: vec![h(b"x"), h(b"y")],
                        size: 4 * 1024 * 1024 + 1,
                        mtime_ms: 1_700_000_000_000,
                    },
                    committed_ms: 1_800_000_000_000,
                    author: Author {
                        user: 3,
                        device: "phone".into(),
                    },
                    prev: Some(RowAt {
                        generation: 2,
                        offset: 4096,
                    }),
                    at: Some(RowAt {
                        generation: 3,
                        offset: 16,
                    }),
                }),
                JournalRecord::User {
                    id: 3,
                    name: "ana".into(),
                    root_ns: 9,
                    admin: false,
                },
                JournalRecord::Mount {
                    user: 3,
                    ns: 11,
                    path: "Shared".into(),
                },
                JournalRecord::Quota {
                    user: 3,
                    bytes: Some(1 << 30),
                },
            ];
            let mut inputs: Vec<Vec<u8>> = records
                .iter()
                .map(|r| {
                    let mut out = Vec::new();
                    journal_record::encode(r, &mut out);
                    out
                })
                .collect();
            let mut located = Vec::new();
            journal_record::encode_located(&records[0], &mut located);
            inputs.push(located);
            if let JournalRecord::Row(row) = &records[0] {
                let mut earlier = Vec::new();
                journal_record::encode(&JournalRecord::Earlier(row.clone()), &mut earlier);
                inputs.push(earlier);
            }
            inputs
        }
        "block_record" => {
            let payload = b"a block's bytes";
            let hash = h(payload);
            let stored = block_record::stored_len(payload.len(), false);
            let mut record = vec![0u8; block_record::record_len(stored)];
            block_record::encode_record(&mut record, &hash, &[payload], None).unwrap();
            let mut header = vec![0u8; SEGMENT_HEADER_BYTES as usize];
            block_record::encode_segment_header(&mut header, 1, 0);
            vec![record, header]
        }
        "segment_hint" => vec![segment_hint::encode(
            3,
            3 * 4096,
            &[
                HintEntry {
                    hash: h(b"p"),
                    offset: 4096,
                    record_len: 4096,
                },
                HintEntry {
                    hash: h(b"q"),
                    offset: 8192,
                    record_len: 4096,
                },
            ],
        )],
        "json_bodies" => {
            let hash = h(b"z").to_hex();
            [
                format!(r#"{{"ns":1,"path":"a/b","kind":"file","blocklist":["{hash}"],"size":3,"mtime_ms":5,"parent_jid":null}}"#),
                r#"{"commits":[{"ns":1,"path":"d","kind":"deleted","blocklist":[],"size":0,"mtime_ms":0,"parent_jid":4}]}"#.to_string(),
                r#"{"cursors":{"1":0},"limit":100}"#.to_string(),
                r#"{"cursors":{"1":3},"timeout_s":30,"prefetch_cursors":{"1":2}}"#.to_string(),
                format!(r#"{{"items":[{{"ns":1,"path":"a","jid":2,"prefetch":false,"hashes":["{hash}"]}}],"wait_ms":100}}"#),
                r#"{"name":"ana"}"#.to_string(),
                r#"{"mount_path":"Shared","adopt_existing":true}"#.to_string(),
                r#"{"user":"bo","mount_path":"From ana"}"#.to_string(),
            ]
            .into_iter()
            .map(String::into_bytes)
            .collect()
        }
        "path" => ["a", "a/b/c.txt", "ünï/çødé", "x y/.hidden"]
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect(),
        other => panic!("no valid inputs for {other}"),
    }
}

#[test]
fn every_target_has_valid_inputs_and_a_fuzz_target_file() {
    let fuzz_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fuzz_targets");
    for (name, _) in TARGETS {
        assert!(!valid_inputs(name).is_empty());
        assert!(
            fuzz_dir.join(format!("{name}.rs")).exists(),
            "fuzz/fuzz_targets/{name}.rs missing"
        );
    }
}

#[test]
fn corpora_hold() {
    let write = std::env::var_os("HOLDALL_WRITE_FUZZ_SEEDS").is_some();
    let mut files = 0;
    for (name, check) in TARGETS {
        let dir = corpus_dir(name);
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            for (i, input) in valid_inputs(name).iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i}")), input).unwrap();
            }
        }
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            let input = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&input));
            assert!(
                outcome.is_ok(),
                "{name}: {} broke a property",
                path.display()
            );
            files += 1;
        }
    }
    assert!(files >= TARGETS.len(), "empty corpora");
}

#[test]
fn bit_flips_and_truncations_of_valid_inputs_hold() {
    for (name, check) in TARGETS {
        for input in valid_inputs(name) {
            assert!(
                check(&input),
                "{name}: a valid input was refused: {input:?}"
            );
            for len in 0..input.len() {
                let _ = check(&input[..len]);
            }
            // Every bit of short inputs; a stride through long ones (block records are a
            // page).
            let stride = (input.len() / 512).max(1);
            for at in (0..input.len()).step_by(stride) {
                for bit in 0..8 {
                    let mut bad = input.clone();
                    bad[at] ^= 1 << bit;
                    let outcome = std::panic::catch_unwind(|| check(&bad));
                    assert!(
                        outcome.is_ok(),
                        "{name}: flip of bit {bit} at {at} broke a property"
                    );
                }
            }
        }
    }
}
