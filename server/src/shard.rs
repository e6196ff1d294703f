//! One shard: a pinned executor that alone owns its block log, its journal (the rows of the
//! namespaces whose id maps to it) and its metrics, and keeps a replica of the directory.

use std::cell::{Cell, OnceCell, RefCell};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use anyhow::{Context, Result};
use futures::channel::oneshot;
use holdall_engine::block_log::{BlockLog, BlockLogConfig};
use holdall_engine::block_log::{BlockLogError, PutOutcome};
use holdall_engine::journal::{Journal, JournalConfig};
use holdall_engine::journal_record::JournalRecord;
use holdall_engine::sfj::State;
use holdall_engine::store_key::StoreKey;
use holdall_proto::api::NsId;
use holdall_proto::BlockHash;
use hyper::StatusCode;

use crate::directory::DirectoryOp;
use crate::mesh::{Blocks, Mesh, Message};
use crate::metrics::{EngineGauges, ShardMetrics};
use crate::routes::ApiError;

/// A shard's state, shared by its request tasks.
pub struct Shard {
    /// This shard's index.
    pub id: usize,
    /// Number of shards.
    pub shards: usize,
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
    /// The directory journal: shard 0 only.
    pub directory_journal: Option<Journal>,
    /// Next user and namespace ids: shard 0 only, taken before any await so that concurrent
    /// changes never share one.
    next_ids: Cell<(u64, u64)>,
    /// The way to the other shards, once joined.
    pub mesh: OnceCell<Mesh>,
}

/// The shard that owns block `hash`: its first 8 bytes, taken as a number, modulo the shard
/// count. SHA-256 output is uniform, so blocks (and their hashing) spread evenly.
pub fn shard_of_block(hash: &BlockHash, shards: usize) -> usize {
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    (u64::from_le_bytes(first) % shards as u64) as usize
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
        directory_journal: Option<Journal>,
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
                    kind: n.kind(),
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
        let (max_user, max_ns) = directory.max_ids();
        Ok(Rc::new(Shard {
            id,
            shards,
            directory_journal,
            next_ids: Cell::new((max_user + 1, max_ns + 1)),
            mesh: OnceCell::new(),
            blocks,
            journal,
            directory: RefCell::new(directory),
            metrics,
            all_metrics,
        }))
    }

    /// A fresh user id (shard 0).
    pub fn next_user_id(&self) -> u64 {
        let (user, ns) = self.next_ids.get();
        self.next_ids.set((user + 1, ns));
        user
    }

    /// A fresh namespace id (shard 0).
    pub fn next_ns_id(&self) -> u64 {
        let (user, ns) = self.next_ids.get();
        self.next_ids.set((user, ns + 1));
        ns
    }

    fn mesh(&self) -> Result<&Mesh, ApiError> {
        self.mesh
            .get()
            .ok_or_else(|| ApiError::unavailable("the shards are still starting"))
    }

    /// Asks shard 0 to change the directory.
    pub async fn directory_op(&self, op: DirectoryOp) -> Result<Vec<u64>, ApiError> {
        if self.id == 0 {
            return crate::admin::apply(self, op).await;
        }
        let (reply, rx) = oneshot::channel();
        self.mesh()?
            .send(0, Message::Directory { op, reply })
            .await?;
        rx.await
            .map_err(|_| ApiError::unavailable("shard 0 dropped the request"))?
    }

    /// Applies durable directory records to every shard's replica, this one included.
    pub async fn replicate_all(&self, records: Vec<JournalRecord>) -> Result<(), ApiError> {
        let mut waits = Vec::new();
        for to in (0..self.shards).filter(|&to| to != self.id) {
            let (done, rx) = oneshot::channel();
            self.mesh()?
                .send(
                    to,
                    Message::Replicate {
                        records: records.clone(),
                        done,
                    },
                )
                .await?;
            waits.push(rx);
        }
        self.directory.borrow_mut().apply_all(records);
        for rx in waits {
            rx.await
                .map_err(|_| ApiError::unavailable("a shard did not confirm the change"))?;
        }
        Ok(())
    }

    /// Makes sure a namespace exists in its owner's journal.
    pub async fn ensure_namespace_on(
        &self,
        owner: usize,
        record: JournalRecord,
    ) -> Result<(), ApiError> {
        if owner == self.id {
            return self.ensure_namespace(record).await;
        }
        let (done, rx) = oneshot::channel();
        self.mesh()?
            .send(owner, Message::EnsureNamespace { record, done })
            .await?;
        rx.await
            .map_err(|_| ApiError::unavailable(format!("shard {owner} dropped the request")))?
    }

    async fn ensure_namespace(&self, record: JournalRecord) -> Result<(), ApiError> {
        let JournalRecord::Namespace { id, .. } = &record else {
            return Err(ApiError::internal("not a namespace record"));
        };
        if self.journal.state().namespace(*id).is_some() {
            return Ok(());
        }
        self.journal
            .append(vec![record])
            .await
            .map_err(|e| ApiError::unavailable(format!("recording the namespace: {e}")))
    }

    /// Whether `ns` (owned by shard `owner`) has a live row at `path` or below it.
    pub async fn path_in_use_on(
        &self,
        owner: usize,
        ns: NsId,
        path: &str,
    ) -> Result<bool, ApiError> {
        if owner == self.id {
            return Ok(self.journal.state().path_in_use(ns, path));
        }
        let (reply, rx) = oneshot::channel();
        self.mesh()?
            .send(
                owner,
                Message::PathInUse {
                    ns,
                    path: path.to_owned(),
                    reply,
                },
            )
            .await?;
        rx.await
            .map_err(|_| ApiError::unavailable(format!("shard {owner} dropped the request")))
    }

    /// Checks blocks owned by shard `owner` against their hashes, there.
    pub async fn verify_blocks_on(
        &self,
        owner: usize,
        blocks: Blocks,
    ) -> Result<Option<BlockHash>, ApiError> {
        if owner == self.id {
            return Ok(verify(&blocks));
        }
        let (reply, rx) = oneshot::channel();
        self.mesh()?
            .send(owner, Message::VerifyBlocks { blocks, reply })
            .await?;
        rx.await
            .map_err(|_| ApiError::unavailable(format!("shard {owner} dropped the request")))
    }

    /// Stores verified blocks owned by shard `owner`, there; resolves once durable.
    pub async fn put_blocks_on(
        &self,
        owner: usize,
        blocks: Blocks,
    ) -> Result<Vec<PutOutcome>, ApiError> {
        if owner == self.id {
            return self.put_blocks(blocks).await;
        }
        let (reply, rx) = oneshot::channel();
        self.mesh()?
            .send(owner, Message::PutBlocks { blocks, reply })
            .await?;
        rx.await
            .map_err(|_| ApiError::unavailable(format!("shard {owner} dropped the request")))?
    }

    async fn put_blocks(&self, blocks: Blocks) -> Result<Vec<PutOutcome>, ApiError> {
        let puts = blocks
            .iter()
            .map(|(hash, data)| self.blocks.put(*hash, data, false));
        futures::future::join_all(puts)
            .await
            .into_iter()
            .map(|r| r.map_err(block_error))
            .collect()
    }

    /// Serves a message from another shard. Replication is applied in arrival order; work
    /// that waits for the disk runs on its own task.
    pub fn on_message(self: &Rc<Self>, msg: Message) {
        match msg {
            Message::VerifyBlocks { blocks, reply } => {
                let _ = reply.send(verify(&blocks));
            }
            Message::PutBlocks { blocks, reply } => {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(shard.put_blocks(blocks).await);
                })
                .detach();
            }
            Message::Replicate { records, done } => {
                self.directory.borrow_mut().apply_all(records);
                let _ = done.send(());
            }
            Message::PathInUse { ns, path, reply } => {
                let _ = reply.send(self.journal.state().path_in_use(ns, &path));
            }
            Message::EnsureNamespace { record, done } => {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let _ = done.send(shard.ensure_namespace(record).await);
                })
                .detach();
            }
            Message::Directory { op, reply } => {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(crate::admin::apply(&shard, op).await);
                })
                .detach();
            }
        }
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

/// The first block whose bytes do not hash to its name.
fn verify(blocks: &Blocks) -> Option<BlockHash> {
    blocks
        .iter()
        .find(|(hash, data)| BlockHash::of(data) != *hash)
        .map(|(hash, _)| *hash)
}

/// The HTTP view of a block log failure.
pub fn block_error(e: BlockLogError) -> ApiError {
    match e {
        BlockLogError::Io {
            kind: std::io::ErrorKind::StorageFull,
            message,
            ..
        } => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "disk_full", message),
        BlockLogError::TooLarge(n) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("a block of {n} bytes is over 4 MiB"),
        ),
        other => ApiError::unavailable(other.to_string()),
    }
}
