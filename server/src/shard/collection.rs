//! One garbage collection over every shard, run by shard 0, one at a time.
//!
//! A block is live if a retained version of any file references it, if a live prefetch
//! entry or an open upload session lists it, or if someone's proof of upload for it is within the prefetch TTL. The
//! sequence:
//! 1. every block log begins its mark (from now on puts and claims mark), and every commit
//!    gate moves to a new epoch;
//! 2. the writers that entered before (they may have claimed blocks before the mark began)
//!    are waited for, so their rows are in the journal before it is walked;
//! 3. each shard walks its namespaces (every path's retained versions, newest first, read
//!    back from the journal), its prefetch entries and its open upload sessions (the
//!    Dropbox API's), and sends the hashes to the blocks'
//!    owners in batches, which mark them;
//!    Once its walk is complete, each shard removes the journal files that no retained
//!    version (other than a latest row, which memory and every snapshot hold) lives in;
//! 4. each block owner marks its upload proofs and sweeps: drops what is unmarked and
//!    compacts the segments the plan allows.
//!
//! If any step fails before the sweep, every mark is abandoned and nothing is dropped.

use std::rc::Rc;
use std::time::{Duration, Instant};

use holdall_engine::block_log::{CollectPlan, CollectReport};
use holdall_proto::api::{GcResponse, NsId};
use holdall_proto::BlockHash;
use tracing::{info, warn};

use super::{shard_of_block, shard_of_namespace, Shard, ShardError};

/// Hashes sent to a block owner in one message.
const MARK_BATCH: usize = 4096;
/// Longest wait for the writers that entered before the collection.
const DRAIN_WAIT_MAX: Duration = Duration::from_secs(300);

/// Hashes on their way to their owners, a bounded batch per owner.
struct Marks<'s> {
    shard: &'s Rc<Shard>,
    by_owner: Vec<Vec<BlockHash>>,
}

impl Marks<'_> {
    async fn add(&mut self, hash: BlockHash) -> Result<(), ShardError> {
        let owner = shard_of_block(&hash, self.shard.shards());
        self.by_owner[owner].push(hash);
        if self.by_owner[owner].len() >= MARK_BATCH {
            self.send(owner).await?;
        }
        Ok(())
    }

    async fn send(&mut self, owner: usize) -> Result<(), ShardError> {
        let hashes = std::mem::take(&mut self.by_owner[owner]);
        if hashes.is_empty() {
            return Ok(());
        }
        self.shard
            .submit_to(owner, move |s| {
                for h in &hashes {
                    s.blocks().mark(h);
                }
                std::future::ready(())
            })
            .await
    }

    async fn finish(mut self) -> Result<(), ShardError> {
        for owner in 0..self.by_owner.len() {
            self.send(owner).await?;
        }
        Ok(())
    }
}

/// A sealed segment is compacted once this share of it is dead.
const DEAD_SHARE_MIN: f64 = 0.25;
/// A background collection seals and compacts the active segment once this share of it is
/// dead; one asked for does so from [`DEAD_SHARE_MIN`].
const ACTIVE_DEAD_SHARE_MIN: f64 = 0.5;

impl Shard {
    /// What a collection may compact: `asked` for one an admin asked for.
    pub fn collect_plan(&self, asked: bool) -> CollectPlan {
        CollectPlan {
            dead_share_min: DEAD_SHARE_MIN,
            active_dead_share_min: if asked {
                DEAD_SHARE_MIN
            } else {
                ACTIVE_DEAD_SHARE_MIN
            },
            rate_bytes_per_s: self.gc_rate_bytes_per_s,
        }
    }

    /// Runs a background collection every `interval` until the server stops (on shard 0).
    pub async fn collect_in_background(self: Rc<Self>, interval: Duration) {
        let tick = Duration::from_millis(500).min(interval);
        let mut next = Instant::now() + interval;
        while !self.stopping() {
            glommio::timer::sleep(tick).await;
            if Instant::now() < next {
                continue;
            }
            match self.collect_all(self.collect_plan(false)).await {
                Ok(done) => info!(?done, "background collection"),
                Err(e) => {
                    warn!(error = %e, "background collection failed; nothing was dropped past the failure")
                }
            }
            next = Instant::now() + interval;
        }
    }

    /// Runs one full collection over every shard (on shard 0, after any running one) and
    /// answers what it did.
    pub async fn collect_all(self: &Rc<Self>, plan: CollectPlan) -> Result<GcResponse, ShardError> {
        self.submit_to(0, move |s| {
            let s = s.clone();
            async move {
                let _one_at_a_time = s.collecting.lock().await;
                s.collect_now(plan).await
            }
        })
        .await?
    }

    async fn collect_now(self: &Rc<Self>, plan: CollectPlan) -> Result<GcResponse, ShardError> {
        let started = Instant::now();
        let marked = self.mark_all().await;
        let journal_files_removed = match marked {
            Ok(removed) => removed,
            Err(e) => {
                self.on_every_shard(|s| {
                    s.blocks().mark_abort();
                    std::future::ready(Ok(()))
                })
                .await?;
                return Err(e);
            }
        };
        let reports = self
            .on_every_shard(move |s| {
                let s = s.clone();
                async move { s.sweep(&plan).await }
            })
            .await?;
        let mut answer = GcResponse {
            journal_files_removed,
            ..GcResponse::default()
        };
        for r in reports {
            answer.blocks_dropped += r.blocks_dropped;
            answer.bytes_reclaimed += r.bytes_reclaimed;
            answer.segments_compacted += r.segments_compacted;
        }
        answer.ms = started.elapsed().as_millis() as u64;
        info!(?answer, "collection done");
        Ok(answer)
    }

    /// Steps 1 to 3: begin, drain the gate, walk; the journal files the walks let go.
    async fn mark_all(self: &Rc<Self>) -> Result<u64, ShardError> {
        let epochs = self
            .on_every_shard(|s| {
                let began = s.blocks().mark_begin();
                let epoch = s.gate.advance();
                std::future::ready(match began {
                    true => Ok(epoch),
                    false => Err(ShardError::Internal("a mark is already running".into())),
                })
            })
            .await?;
        let shards = self.shards;
        for (to, epoch) in epochs.into_iter().enumerate().take(shards) {
            self.submit_to(to, move |s| {
                let s = s.clone();
                async move {
                    s.gate
                        .drained(epoch, DRAIN_WAIT_MAX)
                        .await
                        .map_err(|e| ShardError::Internal(e.to_string()))
                }
            })
            .await??;
        }
        let removed = self
            .on_every_shard(|s| {
                let s = s.clone();
                async move { s.mark_here().await }
            })
            .await?;
        Ok(removed.into_iter().sum())
    }

    /// Runs `work` on every shard at once; their answers in shard order.
    pub(super) async fn on_every_shard<T, W, F>(
        self: &Rc<Self>,
        work: W,
    ) -> Result<Vec<T>, ShardError>
    where
        T: Send + 'static,
        W: Fn(&Rc<Shard>) -> F + Send + Clone + 'static,
        F: std::future::Future<Output = Result<T, ShardError>> + 'static,
    {
        let all = (0..self.shards).map(|to| self.submit_to(to, work.clone()));
        futures::future::join_all(all)
            .await
            .into_iter()
            .map(|r| r?)
            .collect()
    }

    /// Step 3 on this shard: marks what its namespaces' retained versions and its prefetch
    /// entries reference; then removes the journal files no retained version is in. How
    /// many it removed.
    async fn mark_here(self: &Rc<Self>) -> Result<u64, ShardError> {
        let cutoff_ms = self.history_cutoff_ms();
        let mut needed_from = u64::MAX;
        let mut marks = Marks {
            shard: self,
            by_owner: vec![Vec::new(); self.shards],
        };
        let owned: Vec<NsId> = self
            .journal()
            .state()
            .namespace_ids()
            .filter(|&ns| shard_of_namespace(ns, self.shards) == self.id)
            .collect();
        for ns in owned {
            let oldest = self.mark_namespace(ns, cutoff_ms, &mut marks).await?;
            needed_from = needed_from.min(oldest);
            let listed: Vec<BlockHash> = self
                .prefetch_mut()
                .entries_of(ns, Instant::now())
                .flat_map(|(_, e)| e.blocklist.iter().copied())
                .collect();
            for h in listed {
                marks.add(h).await?;
            }
        }
        // Blocks of upload sessions still open here, which no row lists yet.
        let in_sessions: Vec<BlockHash> = self.upload_sessions_mut().hashes().collect();
        for h in in_sessions {
            marks.add(h).await?;
        }
        marks.finish().await?;
        Ok(self.journal().remove_files_before(needed_from).await?)
    }

    /// Marks the blocks of every retained version of every path of `ns`; the oldest journal
    /// generation a retained version other than a latest row lives in.
    async fn mark_namespace(
        &self,
        ns: NsId,
        cutoff_ms: u64,
        marks: &mut Marks<'_>,
    ) -> Result<u64, ShardError> {
        let mut oldest = u64::MAX;
        let mut versions = self.journal().retained_versions(ns, cutoff_ms);
        while let Some((row, latest)) = versions.next().await? {
            if let (false, Some(at)) = (latest, row.at) {
                oldest = oldest.min(at.generation);
            }
            for h in row.version.blocklist {
                marks.add(h).await?;
            }
        }
        Ok(oldest)
    }

    /// Step 4 on this shard: marks its upload proofs, then drops and compacts.
    async fn sweep(&self, plan: &CollectPlan) -> Result<CollectReport, ShardError> {
        let proven: Vec<BlockHash> = self.uploads().hashes(Instant::now()).collect();
        for h in &proven {
            self.blocks().mark(h);
        }
        Ok(self.blocks().collect(plan).await?)
    }
}
