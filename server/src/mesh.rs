//! The channel mesh between shards: every message to another shard goes here, with its reply
//! channel inside. A shard never touches another shard's data directly.

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::SinkExt;
use holdall_engine::block_log::PutOutcome;
use holdall_engine::journal_record::JournalRecord;
use holdall_proto::api::NsId;
use holdall_proto::BlockHash;

use crate::directory::DirectoryOp;
use crate::routes::ApiError;

/// Blocks in transit to their owner: slices of the request body, never copies.
pub type Blocks = Vec<(BlockHash, Bytes)>;

/// Messages between shards.
pub enum Message {
    /// To a block owner: check each block against its hash; answers the first that fails.
    VerifyBlocks {
        /// The blocks.
        blocks: Blocks,
        /// The first mismatch, if any.
        reply: oneshot::Sender<Option<BlockHash>>,
    },
    /// To a block owner: store the (verified) blocks durably.
    PutBlocks {
        /// The blocks.
        blocks: Blocks,
        /// What became of each, in order.
        reply: oneshot::Sender<Result<Vec<PutOutcome>, ApiError>>,
    },
    /// To shard 0: change the directory; the reply carries the ids it assigned.
    Directory {
        /// What to change.
        op: DirectoryOp,
        /// The outcome.
        reply: oneshot::Sender<Result<Vec<u64>, ApiError>>,
    },
    /// From shard 0 to every shard: directory records that are now durable, in order.
    Replicate {
        /// The records.
        records: Vec<JournalRecord>,
        /// Answered once the replica has them.
        done: oneshot::Sender<()>,
    },
    /// To a namespace's owner: make sure the namespace exists in its journal.
    EnsureNamespace {
        /// The namespace record.
        record: JournalRecord,
        /// The outcome.
        done: oneshot::Sender<Result<(), ApiError>>,
    },
    /// To a namespace's owner: whether a live row is at `path` or below it.
    PathInUse {
        /// Namespace.
        ns: NsId,
        /// Path.
        path: String,
        /// The answer.
        reply: oneshot::Sender<bool>,
    },
}

/// Messages a shard's inbox holds before senders wait.
const INBOX_MESSAGES_MAX: usize = 1024;

/// One bounded inbox per shard, fed by every other shard. glommio's own channel mesh was not
/// used: its join handshake sometimes never completed here (all shards waiting in `join`),
/// and these channels need no handshake. A task woken from another thread is woken through
/// glommio's cross-thread wake path.
pub fn build(shards: usize) -> (Vec<Mesh>, Vec<mpsc::Receiver<Message>>) {
    let (senders, inboxes): (Vec<_>, Vec<_>) = (0..shards)
        .map(|_| mpsc::channel(INBOX_MESSAGES_MAX))
        .unzip();
    let meshes = (0..shards)
        .map(|_| Mesh {
            peers: senders.clone(),
        })
        .collect();
    (meshes, inboxes)
}

/// A shard's way to every other shard's inbox.
pub struct Mesh {
    peers: Vec<mpsc::Sender<Message>>,
}

impl Mesh {
    /// Sends `msg` to shard `to` (never this shard: local work is done in place).
    pub async fn send(&self, to: usize, msg: Message) -> Result<(), ApiError> {
        let mut sender = self
            .peers
            .get(to)
            .cloned()
            .ok_or_else(|| ApiError::internal(format!("no shard {to}")))?;
        sender
            .send(msg)
            .await
            .map_err(|_| ApiError::unavailable(format!("shard {to} is not answering")))
    }
}
