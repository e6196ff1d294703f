//! The channel mesh between shards: work on data another shard owns is sent to that shard as
//! a task, which runs there with that shard's state and answers through a oneshot channel
//! (the way Seastar's `submit_to` works). A shard never touches another shard's data
//! directly; buffers travel inside the task, never copied.

use std::future::Future;
use std::rc::Rc;

use futures::channel::{mpsc, oneshot};
use futures::SinkExt;

use crate::routes::ApiError;
use crate::shard::Shard;

/// A task for another shard. It is called in arrival order on the target's inbox loop, so
/// work done before its first await (replication, for one) keeps the senders' order.
pub type Task = Box<dyn FnOnce(&Rc<Shard>) + Send>;

/// Messages a shard's inbox holds before senders wait.
const INBOX_MESSAGES_MAX: usize = 1024;

/// One bounded inbox per shard, fed by every other shard. glommio's own channel mesh was not
/// used: its join handshake sometimes never completed here (all shards waiting in `join`),
/// and these channels need no handshake. A task woken from another thread is woken through
/// glommio's cross-thread wake path.
pub fn build(shards: usize) -> (Vec<Mesh>, Vec<mpsc::Receiver<Task>>) {
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
    peers: Vec<mpsc::Sender<Task>>,
}

impl Mesh {
    /// Runs `work` on shard `to` and returns its answer. `work` is called on arrival; the
    /// future it returns runs as a task of its own there.
    pub async fn submit<T, W, F>(&self, to: usize, work: W) -> Result<T, ApiError>
    where
        T: Send + 'static,
        W: FnOnce(&Rc<Shard>) -> F + Send + 'static,
        F: Future<Output = T> + 'static,
    {
        let mut sender = self
            .peers
            .get(to)
            .cloned()
            .ok_or_else(|| ApiError::internal(format!("no shard {to}")))?;
        let (reply, answer) = oneshot::channel();
        let task: Task = Box::new(move |shard: &Rc<Shard>| {
            let fut = work(shard);
            glommio::spawn_local(async move {
                let _ = reply.send(fut.await);
            })
            .detach();
        });
        sender
            .send(task)
            .await
            .map_err(|_| ApiError::unavailable(format!("shard {to} is not answering")))?;
        answer
            .await
            .map_err(|_| ApiError::unavailable(format!("shard {to} dropped the request")))
    }
}
