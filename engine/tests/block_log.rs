//! Block log behaviour: round trips, dedup, group commit, reopen, segments, and crash
//! consistency (cuts and bit flips in the files, then reopen).

use std::path::{Path, PathBuf};
use std::rc::Rc;

use holdall_engine::block_log::{
    BlockLog, BlockLogConfig, BlockLogError, CollectPlan, Form, PutOutcome,
};
use holdall_engine::runtime;
use holdall_engine::store_key::StoreKey;
use holdall_proto::limits::BLOCK_BYTES_MAX;
use holdall_proto::BlockHash;
use holdall_testkit::pseudo_random_bytes as block;

fn key() -> Option<Rc<StoreKey>> {
    Some(Rc::new(StoreKey::from_bytes(&[42; 32])))
}

async fn open(dir: &Path, key: Option<Rc<StoreKey>>) -> BlockLog {
    BlockLog::open(BlockLogConfig::new(dir, key)).await.unwrap()
}

async fn read(log: &BlockLog, hash: &BlockHash) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match log.get(hash, &mut out).await {
        Ok(true) => Some(out),
        Ok(false) => None,
        Err(e) => panic!("get failed: {e}"),
    }
}

#[test]
fn round_trip_dedup_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        for (sub, key) in [("enc", key()), ("plain", None)] {
            let log = open(&path.join(sub), key).await;
            for len in [0, 1, 4095, 4096, 100_000, BLOCK_BYTES_MAX] {
                let data = block(len as u64, len);
                let h = BlockHash::of(&data);
                assert_eq!(log.put(h, &data, true).await, Ok(PutOutcome::Stored));
                assert_eq!(log.put(h, &data, true).await, Ok(PutOutcome::Present));
                assert!(log.contains(&h));
                assert_eq!(read(&log, &h).await.as_deref(), Some(&data[..]));
            }
            let data = block(1, 10);
            let wrong = BlockHash::of(b"not it");
            assert!(matches!(
                log.put(wrong, &data, true).await,
                Err(BlockLogError::HashMismatch { .. })
            ));
            assert!(!log.contains(&wrong));
            assert_eq!(
                log.put(wrong, &vec![0; BLOCK_BYTES_MAX + 1], false).await,
                Err(BlockLogError::TooLarge(BLOCK_BYTES_MAX + 1))
            );
            assert_eq!(read(&log, &wrong).await, None);
            let stats = log.stats();
            assert_eq!(stats.puts_stored, 6);
            assert_eq!(stats.puts_present, 6);
            assert_eq!(stats.blocks, 6);
            log.close().await;
        }
    });
}

#[test]
fn concurrent_puts_share_flushes_and_dedup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        let log = Rc::new(open(&path, key()).await);
        let blocks: Vec<Vec<u8>> = (0..64).map(|i| block(i, 64 * 1024)).collect();
        let mut tasks = Vec::new();
        for i in 0..128 {
            let log = log.clone();
            let data = blocks[i % 64].clone();
            tasks.push(runtime::spawn(async move {
                log.put(BlockHash::of(&data), &data, true).await
            }));
        }
        let mut stored = 0;
        for t in tasks {
            if t.await.unwrap() == PutOutcome::Stored {
                stored += 1;
            }
        }
        assert_eq!(stored, 64, "each block is written exactly once");
        let stats = log.stats();
        assert_eq!(stats.flushed_records, 64);
        assert!(
            stats.flushes < 64,
            "group commit: {} flushes for 64 records",
            stats.flushes
        );
        for b in &blocks {
            assert_eq!(read(&log, &BlockHash::of(b)).await.as_deref(), Some(&b[..]));
        }
    });
}

#[test]
fn reopen_across_segments_with_and_without_hints() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        let config = || {
            let mut c = BlockLogConfig::new(&path, key());
            c.segment_bytes_max = 64 * 1024;
            c
        };
        let log = BlockLog::open(config()).await.unwrap();
        let blocks: Vec<Vec<u8>> = (0..40).map(|i| block(i, 10_000 + i as usize)).collect();
        for b in &blocks {
            log.put(BlockHash::of(b), b, false).await.unwrap();
        }
        assert!(log.stats().segments > 5);
        log.close().await;

        let check = |log: BlockLog, expected: u64| {
            let blocks = blocks.clone();
            async move {
                for b in &blocks {
                    assert_eq!(read(&log, &BlockHash::of(b)).await.as_deref(), Some(&b[..]));
                }
                let s = log.stats();
                assert_eq!(s.blocks, expected);
                assert_eq!(s.corrupt_records + s.torn_tail_cuts, 0);
                log
            }
        };
        let log = check(BlockLog::open(config()).await.unwrap(), 40).await;
        let more = block(99, 30_000);
        log.put(BlockHash::of(&more), &more, false).await.unwrap();
        log.close().await;

        for entry in std::fs::read_dir(&path).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "hint") {
                std::fs::remove_file(p).unwrap();
            }
        }
        let log = check(BlockLog::open(config()).await.unwrap(), 41).await;
        assert_eq!(read(&log, &BlockHash::of(&more)).await, Some(more));
        let hints = std::fs::read_dir(&path)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "hint")
            })
            .count();
        assert!(hints > 5, "hints are rewritten after a scan");
        log.close().await;
    });
}

#[test]
fn compressed_blocks_read_expanded_or_as_stored_across_reopens_and_scans() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        for (sub, key) in [("enc", key()), ("plain", None)] {
            let config = || {
                let mut c = BlockLogConfig::new(path.join(sub), key.clone());
                c.segment_bytes_max = 256 * 1024;
                c
            };
            let log = BlockLog::open(config()).await.unwrap();
            let texts: Vec<Vec<u8>> = (0..12)
                .map(|i| {
                    format!("line {i} of a log that compresses\n")
                        .repeat(4000 + i * 100)
                        .into_bytes()
                })
                .collect();
            let raw = block(5, 70_000);
            for t in &texts {
                let packed = zstd::bulk::compress(t, 3).unwrap();
                let form = Form::Zstd {
                    block_len: t.len() as u32,
                };
                let put = log
                    .put_form(BlockHash::of(t), &[&packed], form, false)
                    .await;
                assert_eq!(put, Ok(PutOutcome::Stored));
            }
            log.put(BlockHash::of(&raw), &raw, true).await.unwrap();
            let check = |log: BlockLog| {
                let (texts, raw) = (texts.clone(), raw.clone());
                async move {
                    let mut out = Vec::new();
                    for t in &texts {
                        let h = BlockHash::of(t);
                        assert_eq!(read(&log, &h).await.as_deref(), Some(&t[..]));
                        let form = log.get_stored(&h, &mut out).await.unwrap();
                        let block_len = t.len() as u32;
                        assert_eq!(form, Some(Form::Zstd { block_len }));
                        assert!(zstd::bulk::decompress(&out, t.len()).unwrap() == *t);
                    }
                    let form = log
                        .get_stored(&BlockHash::of(&raw), &mut out)
                        .await
                        .unwrap();
                    assert_eq!((form, &out[..]), (Some(Form::Raw), &raw[..]));
                    assert_eq!(log.stats().corrupt_records, 0);
                    log
                }
            };
            let log = check(log).await;
            log.close().await;
            let log = check(BlockLog::open(config()).await.unwrap()).await;
            // Without hints, every record is found again by scanning (and, in the clear,
            // checked against its name, which means expanding it).
            log.close().await;
            for entry in std::fs::read_dir(path.join(sub)).unwrap() {
                let p = entry.unwrap().path();
                if p.extension().is_some_and(|e| e == "hint") {
                    std::fs::remove_file(p).unwrap();
                }
            }
            let log = check(BlockLog::open(config()).await.unwrap()).await;
            assert_eq!(log.stats().blocks, 13);
            log.close().await;
        }
    });
}

#[test]
fn wrong_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        let log = open(&path, key()).await;
        log.put(BlockHash::of(b"x"), b"x", false).await.unwrap();
        log.close().await;
        let other = Some(Rc::new(StoreKey::from_bytes(&[1; 32])));
        assert!(matches!(
            BlockLog::open(BlockLogConfig::new(&path, other)).await,
            Err(BlockLogError::WrongKey(1))
        ));
        assert!(matches!(
            BlockLog::open(BlockLogConfig::new(&path, None)).await,
            Err(BlockLogError::WrongKey(1))
        ));
    });
}

/// Writes `blocks` into a fresh log in `dir` and returns the active segment's path and bytes
/// plus each record's (offset, length).
async fn build(dir: &Path, blocks: &[Vec<u8>]) -> (PathBuf, Vec<u8>, Vec<(usize, usize)>) {
    let log = open(dir, key()).await;
    for b in blocks {
        log.put(BlockHash::of(b), b, false).await.unwrap();
    }
    log.close().await;
    let seg = dir.join("seg-0000000001.hblk");
    let bytes = std::fs::read(&seg).unwrap();
    let mut records = Vec::new();
    let mut offset = 4096;
    while offset < bytes.len() {
        let h = holdall_engine::block_log::record::decode_header(&bytes[offset..]).unwrap();
        records.push((offset, h.record_len()));
        offset += h.record_len();
    }
    assert_eq!(records.len(), blocks.len());
    (seg, bytes, records)
}

/// Reopens after the segment was replaced by `bytes` and returns which blocks are served.
async fn served(dir: &Path, seg: &Path, bytes: &[u8], blocks: &[Vec<u8>]) -> (Vec<bool>, u64, u64) {
    std::fs::write(seg, bytes).unwrap();
    let log = open(dir, key()).await;
    let mut present = Vec::new();
    for b in blocks {
        let mut out = Vec::new();
        let ok = log.get(&BlockHash::of(b), &mut out).await.unwrap();
        assert!(!ok || out == *b, "served bytes must be the block's bytes");
        present.push(ok);
    }
    let s = log.stats();
    log.close().await;
    (present, s.torn_tail_cuts, s.corrupt_records)
}

#[test]
fn torn_tail_cut_at_every_offset_of_the_last_small_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        let blocks = vec![block(1, 100), block(2, 3000), block(3, 1000)];
        let (seg, bytes, records) = build(&path, &blocks).await;
        let (last_off, last_len) = records[2];
        for cut in last_off..last_off + last_len {
            let (present, cuts, _) = served(&path, &seg, &bytes[..cut], &blocks).await;
            assert_eq!(present, [true, true, false], "cut at {cut}");
            assert_eq!(cuts, u64::from(cut > last_off), "cut at {cut}");
        }
        let (present, cuts, corrupt) = served(&path, &seg, &bytes, &blocks).await;
        assert_eq!((present, cuts, corrupt), (vec![true; 3], 0, 0));
    });
}

#[test]
fn torn_tail_inside_a_full_block() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        let blocks = vec![block(1, 100), block(2, BLOCK_BYTES_MAX)];
        let (seg, bytes, records) = build(&path, &blocks).await;
        let (off, len) = records[1];
        let mut cuts = vec![off + 1, off + 71, off + 72, off + 4096, off + len - 1];
        cuts.extend((1..40).map(|i| off + i * 104_729));
        for cut in cuts {
            let (present, n, _) = served(&path, &seg, &bytes[..cut], &blocks).await;
            assert_eq!(present, [true, false], "cut at {cut}");
            assert_eq!(n, 1);
        }
    });
}

#[test]
fn bit_flips_lose_only_the_damaged_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        let blocks = vec![block(1, 100), block(2, 3000), block(3, 200)];
        let (seg, bytes, records) = build(&path, &blocks).await;
        // In the last record: it is cut as a torn tail.
        let (off, _) = records[2];
        for i in (off..off + 72 + 200 + 16).step_by(3) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x04;
            let (present, cuts, _) = served(&path, &seg, &bad, &blocks).await;
            assert_eq!(present, [true, true, false], "flip at {i}");
            assert_eq!(cuts, 1, "flip at {i}");
        }
        // In a middle record: skipped and reported; what follows is still served.
        let (off, _) = records[1];
        for i in (off..off + 72 + 3000 + 16).step_by(97) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x80;
            let (present, cuts, corrupt) = served(&path, &seg, &bad, &blocks).await;
            assert_eq!(present, [true, false, true], "flip at {i}");
            assert_eq!((cuts, corrupt), (0, 1), "flip at {i}");
        }
    });
}

/// A log of 16 KiB segments in `path`.
fn small_segments(path: &std::path::Path) -> BlockLogConfig {
    let mut c = BlockLogConfig::new(path, key());
    c.segment_bytes_max = 16 * 1024;
    c
}

/// Stores six 5000-byte blocks in small segments, runs `before_damage` on the open log,
/// closes it and flips one bit inside the first record of the first segment; the blocks.
async fn sealed_blocks_with_a_flipped_bit<F>(
    path: &std::path::Path,
    before_damage: impl FnOnce(std::rc::Rc<BlockLog>) -> F,
) -> Vec<Vec<u8>>
where
    F: std::future::Future<Output = ()>,
{
    let log = std::rc::Rc::new(BlockLog::open(small_segments(path)).await.unwrap());
    let blocks: Vec<Vec<u8>> = (0..6).map(|i| block(i, 5000)).collect();
    for b in &blocks {
        log.put(BlockHash::of(b), b, false).await.unwrap();
    }
    before_damage(log.clone()).await;
    let log = std::rc::Rc::try_unwrap(log).unwrap_or_else(|_| panic!("the log is still held"));
    log.close().await;
    let seg = path.join("seg-0000000001.hblk");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[4096 + 500] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    blocks
}

#[test]
fn corruption_in_a_sealed_segment_is_detected_at_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        let blocks = sealed_blocks_with_a_flipped_bit(&path, |_| async {}).await;
        let log = BlockLog::open(small_segments(&path)).await.unwrap();
        let first = BlockHash::of(&blocks[0]);
        let mut out = Vec::new();
        assert!(matches!(
            log.get(&first, &mut out).await,
            Err(BlockLogError::Corrupt { .. })
        ));
        assert_eq!(log.get(&first, &mut out).await, Ok(false), "never served");
        assert_eq!(log.stats().corrupt_records, 1);
        for b in &blocks[1..] {
            assert_eq!(read(&log, &BlockHash::of(b)).await.as_deref(), Some(&b[..]));
        }
        // The block can be stored again.
        assert_eq!(
            log.put(first, &blocks[0], true).await,
            Ok(PutOutcome::Stored)
        );
        assert_eq!(read(&log, &first).await.as_deref(), Some(&blocks[0][..]));
        log.close().await;
    });
}

#[test]
fn verify_finds_a_damaged_record_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        let blocks = sealed_blocks_with_a_flipped_bit(&path, |log| async move {
            let clean = log.verify(0).await.unwrap();
            assert_eq!((clean.records, clean.damaged.len()), (6, 0));
        })
        .await;
        let seg = path.join("seg-0000000001.hblk");
        let bytes = std::fs::read(&seg).unwrap();
        let log = BlockLog::open(small_segments(&path)).await.unwrap();
        let found = log.verify(0).await.unwrap();
        assert_eq!(found.damaged, [BlockHash::of(&blocks[0])]);
        assert_eq!(found.records, 6);
        assert_eq!(
            log.verify(0).await.unwrap(),
            found,
            "verifying again finds the same"
        );
        assert_eq!(log.stats().corrupt_records, 0, "nothing was dropped");
        assert!(log.contains(&BlockHash::of(&blocks[0])));
        assert_eq!(std::fs::read(&seg).unwrap(), bytes);
        // A rate bound paces it: 6 records of 8 KiB at 96 KiB/s take about half a second.
        let started = std::time::Instant::now();
        log.verify(96 << 10).await.unwrap();
        assert!(started.elapsed() >= std::time::Duration::from_millis(400));
        log.close().await;
    });
}

#[test]
fn a_forged_record_inside_a_plain_payload_is_never_indexed() {
    use holdall_engine::block_log::record::{encode_record, record_len, stored_len, HEADER_BYTES};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        // Block A carries, at a page boundary of the segment, a well-formed record that
        // claims the name of another block.
        let victim = BlockHash::of(b"the victim's block");
        let mut forged = vec![0u8; record_len(stored_len(4, false))];
        encode_record(&mut forged, &victim, &[b"evil"], None).unwrap();
        let mut a = block(1, 12_288);
        let at = 4096 - HEADER_BYTES;
        a[at..at + forged.len()].copy_from_slice(&forged);
        let b = block(2, 100);
        let log = open(&path, None).await;
        log.put(BlockHash::of(&a), &a, true).await.unwrap();
        log.put(BlockHash::of(&b), &b, true).await.unwrap();
        log.close().await;

        // Damage A's header so that recovery has to resynchronise through A's payload.
        let seg = path.join("seg-0000000001.hblk");
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[4096 + 10] ^= 0xff;
        std::fs::write(&seg, &bytes).unwrap();

        let log = open(&path, None).await;
        assert_eq!(
            read(&log, &victim).await,
            None,
            "the forged record is not a block"
        );
        assert_eq!(read(&log, &BlockHash::of(&a)).await, None);
        assert_eq!(
            read(&log, &BlockHash::of(&b)).await.as_deref(),
            Some(&b[..])
        );
        assert_eq!(log.stats().corrupt_records, 1);
        log.close().await;
    });
}

#[test]
fn active_segment_checkpoints_bound_the_recheck_and_keep_tail_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        let config = || {
            let mut c = BlockLogConfig::new(&path, key());
            c.hint_interval_bytes = 8192;
            c
        };
        let blocks: Vec<Vec<u8>> = (0..10).map(|i| block(i, 1000)).collect();
        let log = BlockLog::open(config()).await.unwrap();
        for b in &blocks {
            log.put(BlockHash::of(b), b, false).await.unwrap();
        }
        log.close().await;
        let hint = path.join("seg-0000000001.hint");
        assert!(hint.exists(), "the active segment has a checkpoint hint");

        // Tear the last record: the checkpoint covers less than the file, the tail is cut.
        let seg = path.join("seg-0000000001.hblk");
        let len = std::fs::metadata(&seg).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 100).unwrap();
        drop(f);
        let log = BlockLog::open(config()).await.unwrap();
        for (i, b) in blocks.iter().enumerate() {
            let got = read(&log, &BlockHash::of(b)).await;
            assert_eq!(got.is_some(), i < 9, "block {i}");
        }
        assert_eq!(log.stats().torn_tail_cuts, 1);
        log.put(BlockHash::of(&blocks[9]), &blocks[9], true)
            .await
            .unwrap();
        log.close().await;
        let log = BlockLog::open(config()).await.unwrap();
        for b in &blocks {
            assert_eq!(read(&log, &BlockHash::of(b)).await.as_deref(), Some(&b[..]));
        }
        log.close().await;
    });
}

fn segment_files_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".hblk"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn a_collection_gives_dead_space_back_to_the_file_system_and_keeps_live_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        let mut config = BlockLogConfig::new(&path, key());
        config.segment_bytes_max = 1 << 20;
        let log = BlockLog::open(config).await.unwrap();
        let blocks: Vec<Vec<u8>> = (0..60).map(|i| block(i, 100_000 + i as usize)).collect();
        for b in &blocks {
            log.put(BlockHash::of(b), b, true).await.unwrap();
        }
        let peak = segment_files_bytes(&path);
        assert!(log.stats().segments >= 5, "{:?}", log.stats());
        assert!(log.mark_begin());
        assert!(!log.mark_begin(), "one mark at a time");
        let live: Vec<&Vec<u8>> = blocks.iter().step_by(6).collect();
        for b in &live {
            log.mark(&BlockHash::of(b));
        }
        let plan = CollectPlan {
            dead_share_min: 0.2,
            active_dead_share_min: 0.2,
            rate_bytes_per_s: 0,
        };
        let report = log.collect(&plan).await.unwrap();
        assert!(!log.marking());
        assert_eq!(report.blocks_dropped, 50);
        assert_eq!(report.dead_bytes, 0, "{report:?}");
        let after = segment_files_bytes(&path);
        assert!(after * 4 < peak, "{after} of {peak} bytes left");
        // What was given back, less the header page of the segment the seal started.
        assert_eq!(peak - after + 4096, report.bytes_reclaimed, "{report:?}");
        for b in &blocks {
            let kept = read(&log, &BlockHash::of(b)).await;
            let expected = live.contains(&b);
            assert_eq!(kept.is_some(), expected);
            if let Some(k) = kept {
                assert_eq!(&k, b);
            }
        }
        log.close().await;
        let log = open(&path, key()).await;
        assert_eq!(log.stats().blocks, live.len() as u64);
        for b in &live {
            assert_eq!(read(&log, &BlockHash::of(b)).await.as_deref(), Some(&b[..]));
        }
        // A dead block stored again is a new block, whole.
        let again = &blocks[1];
        assert_eq!(
            log.put(BlockHash::of(again), again, true).await,
            Ok(PutOutcome::Stored)
        );
        log.close().await;
    });
}

#[test]
fn forgetting_damaged_records_keeps_them_out_of_the_index_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    runtime::run(async move {
        let blocks = sealed_blocks_with_a_flipped_bit(&path, |_| async {}).await;
        let first = BlockHash::of(&blocks[0]);
        let log = BlockLog::open(small_segments(&path)).await.unwrap();
        let found = log.verify(0).await.unwrap();
        assert_eq!(found.damaged, [first]);
        assert_eq!(log.forget_damaged(&found.damaged).await.unwrap(), 1);
        assert!(!log.contains(&first));
        log.close().await;

        let log = BlockLog::open(small_segments(&path)).await.unwrap();
        assert!(!log.contains(&first), "the hint no longer lists it");
        let again = log.verify(0).await.unwrap();
        assert_eq!((again.records, again.damaged.len()), (5, 0));
        for b in &blocks[1..] {
            assert_eq!(read(&log, &BlockHash::of(b)).await.as_deref(), Some(&b[..]));
        }
        assert_eq!(
            log.put(first, &blocks[0], true).await,
            Ok(PutOutcome::Stored)
        );
        assert_eq!(read(&log, &first).await.as_deref(), Some(&blocks[0][..]));
        log.close().await;
    });
}
