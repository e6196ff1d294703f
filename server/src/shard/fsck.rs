//! An online integrity check, read-only: every shard reads every record of its block log
//! and checks it whole, at most `--gc-rate` bytes a second (it shares the disk with the
//! users); then every shard walks the retained versions of its namespaces and asks the
//! blocks' owners whether they hold each block. Nothing is dropped or repaired: a damaged
//! record is reported and stays, as it is found by a read or a collection.

use std::rc::Rc;
use std::time::Instant;

use holdall_proto::api::{FsckResponse, Jid, MissingBlock, NsId};
use holdall_proto::BlockHash;

use super::{shard_of_block, shard_of_namespace, Shard, ShardError};

/// Retained versions' missing blocks listed in the answer (all are counted).
const MISSING_LISTED_MAX: usize = 1000;
/// Hashes asked of one owner at a time.
const PRESENCE_BATCH: usize = 4096;

/// A block a retained version lists, and where.
type Listed = (NsId, String, Jid, BlockHash);

/// What one shard's walk found missing: the first ones, and the count.
#[derive(Default)]
struct Missing {
    listed: Vec<MissingBlock>,
    total: u64,
}

impl Shard {
    /// Checks every shard (on any shard) and answers what it found; with `repair`, each
    /// shard then drops its damaged records from its index for good.
    pub async fn fsck_all(self: &Rc<Self>, repair: bool) -> Result<FsckResponse, ShardError> {
        let started = Instant::now();
        let rate = self.gc_rate_bytes_per_s;
        let verified = self
            .on_every_shard(move |s| {
                let s = s.clone();
                async move {
                    let v = s.blocks().verify(rate).await?;
                    let mut part = s.opened();
                    let journals = std::iter::once(s.journal()).chain(s.directory_journal.as_ref());
                    for journal in journals {
                        let (records, damaged) = journal.verify().await?;
                        part.journal_records_checked += records;
                        part.journal_damaged_records += damaged;
                    }
                    if repair {
                        part.damaged_dropped = s.blocks().forget_damaged(&v.damaged).await?;
                    }
                    Ok((v, part))
                }
            })
            .await?;
        let walks = self
            .on_every_shard(|s| {
                let s = s.clone();
                async move { s.missing_here().await.map(|m| (m.listed, m.total)) }
            })
            .await?;
        let mut answer = FsckResponse {
            clean: true,
            blocks_checked: 0,
            bytes_checked: 0,
            damaged_blocks: Vec::new(),
            missing: Vec::new(),
            missing_total: 0,
            ms: 0,
            shards: Vec::new(),
        };
        for (shard, (v, mut part)) in verified.into_iter().enumerate() {
            answer.blocks_checked += v.records;
            answer.bytes_checked += v.bytes;
            answer
                .damaged_blocks
                .extend(v.damaged.iter().map(BlockHash::to_hex));
            part.shard = shard;
            part.blocks_checked = v.records;
            part.bytes_checked = v.bytes;
            part.damaged_blocks = v.damaged.len() as u64;
            answer.shards.push(part);
        }
        for (shard, (listed, total)) in walks.into_iter().enumerate() {
            answer.shards[shard].missing_blocks = total;
            answer.missing_total += total;
            let room = MISSING_LISTED_MAX - answer.missing.len().min(MISSING_LISTED_MAX);
            answer.missing.extend(listed.into_iter().take(room));
        }
        // A torn tail is what a crash leaves (writes never acknowledged): reported, not
        // damage.
        let damaged_at_open = answer.shards.iter().any(|p| {
            p.journal_corrupt_records + p.journal_damaged_records + p.block_log_corrupt_at_open > 0
        });
        answer.clean =
            answer.damaged_blocks.is_empty() && answer.missing_total == 0 && !damaged_at_open;
        answer.ms = started.elapsed().as_millis() as u64;
        Ok(answer)
    }

    /// Walks every retained version of the namespaces this shard owns; the blocks they list
    /// that their owners do not hold.
    async fn missing_here(self: &Rc<Self>) -> Result<Missing, ShardError> {
        let cutoff_ms = self.history_cutoff_ms();
        let owned: Vec<NsId> = self
            .journal()
            .state()
            .namespace_ids()
            .filter(|&ns| shard_of_namespace(ns, self.shards) == self.id)
            .collect();
        let mut pending: Vec<Vec<Listed>> = vec![Vec::new(); self.shards];
        let mut missing = Missing::default();
        for ns in owned {
            let mut versions = self.journal().retained_versions(ns, cutoff_ms);
            while let Some((row, _)) = versions.next().await? {
                for h in row.version.blocklist {
                    let owner = shard_of_block(&h, self.shards);
                    pending[owner].push((ns, row.path.clone(), row.jid, h));
                    if pending[owner].len() >= PRESENCE_BATCH {
                        let batch = std::mem::take(&mut pending[owner]);
                        self.ask_presence(owner, batch, &mut missing).await?;
                    }
                }
            }
        }
        for (owner, batch) in pending.into_iter().enumerate() {
            self.ask_presence(owner, batch, &mut missing).await?;
        }
        Ok(missing)
    }

    /// Asks `owner` which of `batch`'s blocks it holds; counts the others as missing.
    async fn ask_presence(
        self: &Rc<Self>,
        owner: usize,
        batch: Vec<Listed>,
        missing: &mut Missing,
    ) -> Result<(), ShardError> {
        if batch.is_empty() {
            return Ok(());
        }
        let hashes: Vec<BlockHash> = batch.iter().map(|l| l.3).collect();
        let held = self
            .submit_to(owner, move |s| {
                std::future::ready(
                    hashes
                        .iter()
                        .map(|h| s.blocks().contains(h))
                        .collect::<Vec<_>>(),
                )
            })
            .await?;
        for ((ns, path, jid, hash), held) in batch.into_iter().zip(held) {
            if held {
                continue;
            }
            missing.total += 1;
            if missing.listed.len() < MISSING_LISTED_MAX {
                missing.listed.push(MissingBlock {
                    ns,
                    path,
                    jid,
                    hash: hash.to_hex(),
                });
            }
        }
        Ok(())
    }
}
