//! `holdalld demo`: exercises the storage engine on the data folder without the network. It
//! stores a file's blocks, commits it, reopens everything, and rebuilds the file.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use holdall_engine::block_log::{BlockLog, BlockLogConfig};
use holdall_engine::journal::record::{JournalRecord, NamespaceKind};
use holdall_engine::journal::state::{Commit, CommitOutcome};
use holdall_engine::journal::{Journal, JournalConfig};
use holdall_engine::store_key::StoreKey;
use holdall_proto::api::EntryKind;
use holdall_proto::limits::BLOCK_BYTES_MAX;
use holdall_proto::FileVersion;
use holdall_proto::{blocklist_of, content_hash::content_hash_of_blocklist};

/// Runs the demo with a file of `mib` MiB in `data/demo/`.
pub async fn demo(data: PathBuf, mib: usize) -> Result<()> {
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let key = Rc::new(StoreKey::load_or_create(&data.join("store.key"))?);
    let blocks_dir = data.join("demo/blocks");
    let journal_dir = data.join("demo/journal");

    let content: Vec<u8> = (0..mib * 1024 * 1024)
        .map(|i| (i as u64).wrapping_mul(2654435761).rotate_left(13) as u8)
        .collect();
    let blocklist = blocklist_of(&content);

    let log = BlockLog::open(BlockLogConfig::new(&blocks_dir, Some(key.clone()))).await?;
    let journal = Journal::open(JournalConfig::new(&journal_dir)).await?;
    if journal.state().namespace(1).is_none() {
        journal
            .append(vec![JournalRecord::Namespace {
                id: 1,
                owner: 1,
                kind: NamespaceKind::Root,
            }])
            .await?;
    }

    let t = Instant::now();
    let puts = content
        .chunks(BLOCK_BYTES_MAX)
        .zip(&blocklist)
        .map(|(chunk, hash)| log.put(*hash, chunk, true));
    for outcome in futures::future::join_all(puts).await {
        outcome?;
    }
    let put_s = t.elapsed().as_secs_f64();

    let parent = journal.state().latest(1, "demo.bin").map(|r| r.jid);
    let outcome = journal
        .commit(vec![Commit {
            ns: 1,
            path: "demo.bin".into(),
            version: FileVersion {
                kind: EntryKind::File,
                blocklist: blocklist.clone(),
                size: content.len() as u64,
                mtime_ms: 0,
            },
            parent_jid: parent,
            author: Default::default(),
        }])
        .await?;
    let CommitOutcome::Ok { jid } = outcome[0] else {
        anyhow::bail!("commit refused: {:?}", outcome[0]);
    };
    let stats = log.stats();
    log.close().await;
    journal.close().await;

    let log = BlockLog::open(BlockLogConfig::new(&blocks_dir, Some(key))).await?;
    let journal = Journal::open(JournalConfig::new(&journal_dir)).await?;
    let row = journal
        .state()
        .latest(1, "demo.bin")
        .cloned()
        .context("row lost across reopen")?;
    ensure!(row.jid == jid, "row lost across reopen");
    let mut rebuilt = Vec::with_capacity(content.len());
    let mut block = Vec::new();
    for hash in &row.version.blocklist {
        ensure!(log.get(hash, &mut block).await?, "block {hash} lost");
        rebuilt.extend_from_slice(&block);
    }
    ensure!(rebuilt == content, "file differs after reopen");
    println!(
        "stored {} MiB in {} blocks ({} new) in {:.0} ms ({:.2} GB/s, SHA-256 verified, encrypted)",
        mib,
        blocklist.len(),
        stats.puts_stored,
        put_s * 1e3,
        content.len() as f64 / put_s / 1e9
    );
    println!(
        "committed demo.bin as JID {jid}; content hash {}",
        content_hash_of_blocklist(&row.version.blocklist)
    );
    println!(
        "reopened {}: {} blocks, {} journal rows; file rebuilt byte for byte",
        data.display(),
        log.stats().blocks,
        journal.state().namespace(1).map_or(0, |n| n.last_jid())
    );
    log.close().await;
    journal.close().await;
    Ok(())
}
