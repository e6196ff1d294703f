//! glommio executors for shards, tests and tools.

use std::future::Future;

use glommio::{LocalExecutorBuilder, Placement};

/// io_uring registered-buffer arena per executor. Kept small: the engine pools its own
/// buffers, and the arena is locked memory (the limit here is 8 MiB for all executors).
pub const IO_MEMORY_BYTES: usize = 1 << 20;

/// A builder for one shard's executor, pinned to `cpu` when given.
pub fn builder(name: &str, cpu: Option<usize>) -> LocalExecutorBuilder {
    let placement = match cpu {
        Some(cpu) => Placement::Fixed(cpu),
        None => Placement::Unbound,
    };
    LocalExecutorBuilder::new(placement)
        .name(name)
        .io_memory(IO_MEMORY_BYTES)
}

/// Runs `fut` to completion on a fresh unpinned executor on this thread.
pub fn run<F>(fut: F) -> F::Output
where
    F: Future + 'static,
    F::Output: 'static,
{
    builder("holdall", None)
        .make()
        .expect("glommio executor (needs io_uring and 512 KiB of locked memory)")
        .run(fut)
}

/// Spawns `fut` on the current executor.
pub fn spawn<F>(fut: F) -> glommio::Task<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    glommio::spawn_local(fut)
}
