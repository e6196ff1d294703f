//! The channel mesh between shards: work on data another shard owns is sent to that shard as
//! a task, which runs there with that shard's state and answers through a oneshot channel
//! (the way Seastar's `submit_to` works). A shard never touches another shard's data
//! directly; buffers travel inside the task, never copied. Generic over the shard state it
//! carries tasks for, so it knows nothing of what a shard holds.

use std::future::Future;
use std::rc::Rc;

use futures::channel::{mpsc, oneshot};
use futures::SinkExt;

/// Why a task did not reach its shard or came back without an answer.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// There is no shard of that number.
    #[error("no shard {0}")]
    NoShard(usize),
    /// Its inbox is closed: the shard has stopped.
    #[error("shard {0} is not answering")]
    NotAnswering(usize),
    /// The shard dropped the task before answering.
    #[error("shard {0} dropped the request")]
    Dropped(usize),
}

/// A task for another shard. It is called in arrival order on the target's inbox loop, so
/// work done before its first await (replication, for one) keeps the senders' order.
pub type Task<S> = Box<dyn FnOnce(&Rc<S>) + Send>;

/// Messages a shard's inbox holds before senders wait.
const INBOX_MESSAGES_MAX: usize = 1024;

/// One bounded inbox per shard, fed by every other shard. glommio's own channel mesh was not
/// used: its join handshake sometimes never completed here (all shards waiting in `join`),
/// and these channels need no handshake. A task woken from another thread is woken through
/// glommio's cross-thread wake path.
pub fn build<S>(shards: usize) -> (Vec<Mesh<S>>, Vec<mpsc::Receiver<Task<S>>>) {
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
pub struct Mesh<S> {
    peers: Vec<mpsc::Sender<Task<S>>>,
}

impl<S: 'static> Mesh<S> {
    /// Runs `work` on shard `to` and returns its answer. `work` is called on arrival; the
    /// future it returns runs as a task of its own there.
    pub async fn submit<T, W, F>(&self, to: usize, work: W) -> Result<T, MeshError>
    where
        T: Send + 'static,
        W: FnOnce(&Rc<S>) -> F + Send + 'static,
        F: Future<Output = T> + 'static,
    {
        let mut sender = self.peers.get(to).cloned().ok_or(MeshError::NoShard(to))?;
        let (reply, answer) = oneshot::channel();
        let task: Task<S> = Box::new(move |shard: &Rc<S>| {
            let fut = work(shard);
            glommio::spawn_local(async move {
                let _ = reply.send(fut.await);
            })
            .detach();
        });
        sender
            .send(task)
            .await
            .map_err(|_| MeshError::NotAnswering(to))?;
        answer.await.map_err(|_| MeshError::Dropped(to))
    }
}
