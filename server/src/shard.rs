//! One shard: a pinned executor that alone owns its block log, its journal (the rows of the
//! namespaces whose id maps to it) and its metrics, and keeps a replica of the directory.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use anyhow::{Context, Result};
use holdall_engine::block_log::{BlockLog, BlockLogConfig};
use holdall_engine::journal::{Journal, JournalConfig};
use holdall_engine::journal_record::{JournalRecord, NamespaceKind};
use holdall_engine::sfj::State;
use holdall_engine::store_key::StoreKey;
use holdall_proto::api::NsId;

use crate::metrics::{EngineGauges, ShardMetrics};

/// A shard's state, shared by its request tasks.
pub struct Shard {
    /// Blocks whose hash maps to this shard.
    pub blocks: BlockLog,
    /// Rows of the namespaces that map to this shard.
    pub journal: Journal,
    /// Read-only replica of the directory.
    pub directory: RefCell<State>,
    /// This shard's counters.
    pub metrics: Arc<ShardMetrics>,
    /// Every shard's counters, for `/metrics`.
    pub all_metrics: Arc<Vec<Arc<ShardMetrics>>>,
}

/// The shard that owns namespace `ns`.
pub fn shard_of_namespace(ns: NsId, shards: usize) -> usize {
    (ns % shards as u64) as usize
}

impl Shard {
    /// Opens the shard's engine in `DATA/shard-N/`, builds its directory replica, and makes
    /// sure every namespace it owns exists in its journal.
    pub async fn open(
        id: usize,
        shards: usize,
        data: &Path,
        directory_records: Vec<JournalRecord>,
        all_metrics: Arc<Vec<Arc<ShardMetrics>>>,
    ) -> Result<Rc<Shard>> {
        let key = Rc::new(StoreKey::load_or_create(&data.join("store.key"))?);
        let root = data.join(format!("shard-{id}"));
        let blocks = BlockLog::open(BlockLogConfig::new(root.join("blocks"), Some(key)))
            .await
            .with_context(|| format!("opening shard {id}'s block log"))?;
        let journal = Journal::open(JournalConfig::new(root.join("journal")))
            .await
            .with_context(|| format!("opening shard {id}'s journal"))?;
        let mut directory = State::default();
        directory.apply_all(directory_records);
        let missing: Vec<JournalRecord> = directory
            .namespace_ids()
            .filter(|&ns| shard_of_namespace(ns, shards) == id)
            .filter(|&ns| journal.state().namespace(ns).is_none())
            .filter_map(|ns| {
                directory.namespace(ns).map(|n| JournalRecord::Namespace {
                    id: ns,
                    owner: n.owner,
                    kind: if n.shared {
                        NamespaceKind::Shared
                    } else {
                        NamespaceKind::Root
                    },
                })
            })
            .collect();
        if !missing.is_empty() {
            journal
                .append(missing)
                .await
                .with_context(|| format!("recording shard {id}'s namespaces"))?;
        }
        let metrics = all_metrics[id].clone();
        Ok(Rc::new(Shard {
            blocks,
            journal,
            directory: RefCell::new(directory),
            metrics,
            all_metrics,
        }))
    }

    /// Copies the engine's counters into this shard's metrics.
    pub fn publish_gauges(&self) {
        let b = self.blocks.stats();
        let j = self.journal.stats();
        self.metrics.publish(EngineGauges {
            blocks: b.blocks,
            block_bytes_appended: b.bytes_appended,
            block_flushes: b.flushes,
            block_flushed_records: b.flushed_records,
            block_fsync_nanos: b.fsync_nanos,
            corrupt_blocks: b.corrupt_records,
            journal_rows_written: j.records_written,
            journal_flushes: j.flushes,
            journal_fsync_nanos: j.fsync_nanos,
        });
    }
}
