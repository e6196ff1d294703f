//! Criterion benches of the engine's hot operations. Block puts and gets use a pre-generated
//! 4 MiB payload under synthetic names (no hashing), on a fresh store per sample.

use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use holdall_benches::payload;
use holdall_engine::block_log::index::{BlockIndex, Location};
use holdall_engine::block_log::{BlockLog, BlockLogConfig};
use holdall_engine::journal::record::{JournalRecord, NamespaceKind};
use holdall_engine::journal::state::Commit;
use holdall_engine::journal::{Journal, JournalConfig};
use holdall_engine::prefetch::{PrefetchConfig, PrefetchTable, Uploader};
use holdall_engine::runtime;
use holdall_engine::store_key::StoreKey;
use holdall_proto::api::EntryKind;
use holdall_proto::limits::BLOCK_BYTES_MAX;
use holdall_proto::BlockHash;
use holdall_proto::FileVersion;

fn block_log(c: &mut Criterion) {
    let mut g = c.benchmark_group("block_log");
    g.throughput(Throughput::Bytes(BLOCK_BYTES_MAX as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    for encrypt in [false, true] {
        let name = if encrypt {
            "put_4mib_encrypted"
        } else {
            "put_4mib_plain"
        };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                runtime::run(async move {
                    let dir = tempfile::tempdir().unwrap();
                    let key = encrypt.then(|| Rc::new(StoreKey::from_bytes(&[1; 32])));
                    let log = BlockLog::open(BlockLogConfig::new(dir.path(), key))
                        .await
                        .unwrap();
                    let data = payload(1, BLOCK_BYTES_MAX);
                    let t = Instant::now();
                    for i in 0..iters {
                        let h = BlockHash::of(&i.to_le_bytes());
                        log.put(h, &data, false).await.unwrap();
                    }
                    let e = t.elapsed();
                    log.close().await;
                    e
                })
            })
        });
    }
    g.bench_function("get_4mib_encrypted", |b| {
        b.iter_custom(|iters| {
            runtime::run(async move {
                let dir = tempfile::tempdir().unwrap();
                let key = Some(Rc::new(StoreKey::from_bytes(&[1; 32])));
                let log = BlockLog::open(BlockLogConfig::new(dir.path(), key))
                    .await
                    .unwrap();
                let data = payload(1, BLOCK_BYTES_MAX);
                let n = iters.min(32);
                for i in 0..n {
                    log.put(BlockHash::of(&i.to_le_bytes()), &data, false)
                        .await
                        .unwrap();
                }
                let mut out = Vec::with_capacity(BLOCK_BYTES_MAX);
                let t = Instant::now();
                for i in 0..iters {
                    let h = BlockHash::of(&(i % n).to_le_bytes());
                    assert!(log.get(&h, &mut out).await.unwrap());
                }
                let e = t.elapsed();
                log.close().await;
                e
            })
        })
    });
    g.finish();
}

fn journal(c: &mut Criterion) {
    let mut g = c.benchmark_group("journal");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(1000));
    g.bench_function("commit_batch_1000_rows", |b| {
        b.iter_custom(|iters| {
            runtime::run(async move {
                let dir = tempfile::tempdir().unwrap();
                let j = Journal::open(JournalConfig::new(dir.path())).await.unwrap();
                j.append(vec![JournalRecord::Namespace {
                    id: 1,
                    owner: 1,
                    kind: NamespaceKind::Root,
                }])
                .await
                .unwrap();
                let t = Instant::now();
                for it in 0..iters {
                    let batch = (0..1000)
                        .map(|i| Commit {
                            ns: 1,
                            path: format!("d{it}/f{i}"),
                            version: FileVersion {
                                kind: EntryKind::File,
                                blocklist: vec![BlockHash::of(&[i as u8])],
                                size: 10,
                                mtime_ms: 0,
                            },
                            parent_jid: None,
                            author: Default::default(),
                        })
                        .collect();
                    j.commit(batch).await.unwrap();
                }
                let e = t.elapsed();
                j.close().await;
                e
            })
        })
    });
    g.finish();
}

fn memory_structures(c: &mut Criterion) {
    let mut g = c.benchmark_group("memory");
    g.bench_function("index_insert_lookup", |b| {
        let mut idx = BlockIndex::new();
        let mut i = 0u64;
        b.iter(|| {
            let h = BlockHash::of(&i.to_le_bytes());
            idx.insert(
                h,
                Location {
                    segment: 1,
                    offset_pages: i as u32,
                    len_pages: 1,
                },
            );
            assert!(idx.contains(&h));
            i += 1;
        })
    });
    g.bench_function("prefetch_upsert_get", |b| {
        let mut t = PrefetchTable::new(PrefetchConfig::default());
        let list: Vec<BlockHash> = (0..16u8).map(|i| BlockHash::of(&[i])).collect();
        let now = Instant::now();
        let mut i = 0u64;
        b.iter(|| {
            let path = format!("f{}", i % 50_000);
            t.upsert(
                i % 64,
                &path,
                list.clone(),
                1 << 26,
                Uploader { user: 1, device: 0 },
                now,
            );
            assert!(t.get(i % 64, &path, now).is_some());
            i += 1;
        })
    });
    g.finish();
}

criterion_group!(benches, block_log, journal, memory_structures);
criterion_main!(benches);
