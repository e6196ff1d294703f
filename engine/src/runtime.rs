//! glommio executors for shards, tests and tools.

use std::future::Future;

use std::cell::Cell;
use std::time::Duration;

use glommio::{Latency, LocalExecutorBuilder, Placement, Shares, TaskQueueHandle};

/// io_uring registered-buffer arena per executor. Kept small: the engine pools its own
/// buffers, and the arena is locked memory (the limit here is 8 MiB for all executors).
pub const IO_MEMORY_BYTES: usize = 1 << 20;

/// How often the executor leaves running tasks to submit and reap I/O. glommio's default
/// (100 ms) let writes queued by the flusher sit unsubmitted while other tasks hashed and
/// encrypted, so disk and CPU took turns instead of overlapping.
pub const PREEMPT_TIMER: Duration = Duration::from_millis(1);

/// A builder for one shard's executor, pinned to `cpu` when given.
pub fn builder(name: &str, cpu: Option<usize>) -> LocalExecutorBuilder {
    let placement = match cpu {
        Some(cpu) => Placement::Fixed(cpu),
        None => Placement::Unbound,
    };
    LocalExecutorBuilder::new(placement)
        .name(name)
        .io_memory(IO_MEMORY_BYTES)
        .preempt_timer(PREEMPT_TIMER)
}

/// How often a parked executor wakes to reap I/O completions on its own.
pub const REACTOR_TICK: Duration = Duration::from_millis(20);

/// Wakes this executor every [`REACTOR_TICK`], for as long as it runs, and puts it under
/// the [`crate::watchdog`] while the returned heartbeat lives: the executor's main future
/// holds it.
///
/// With several executors in one process, an executor sometimes stayed parked in
/// `io_uring_enter` although the operation it waited for had finished: the completion's
/// wake-up was lost in glommio 0.9's linked-ring sleep (seen as one hang in about five runs of
/// the block log tests, which reopen stores thousands of times). A timer bounds most such
/// stalls to one tick: the woken reactor reaps every ring. When the timer's own completion
/// is lost too, the tick stops beating and the watchdog interrupts the thread. Every
/// executor of this project starts one.
pub fn start_reactor_tick() -> crate::watchdog::Heartbeat {
    let heartbeat = crate::watchdog::Heartbeat::register();
    let beat = heartbeat.beat();
    glommio::spawn_local(async move {
        loop {
            beat.now();
            glommio::timer::sleep(REACTOR_TICK).await;
        }
    })
    .detach();
    heartbeat
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
        .run(async move {
            let _watched = start_reactor_tick();
            fut.await
        })
}

/// Spawns `fut` on the current executor.
pub fn spawn<F>(fut: F) -> glommio::Task<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    glommio::spawn_local(fut)
}

/// Spawns `fut` in the executor's flusher task queue, which has a large share of the
/// executor: a flush then starts as soon as the running task yields, instead of after every
/// task queued before it, so hashing and encryption on the callers' tasks overlap with the
/// disk. One queue per executor serves every flusher on it.
pub fn spawn_urgent<F>(fut: F) -> glommio::Task<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    thread_local!(static FLUSHERS: Cell<Option<(usize, TaskQueueHandle)>> = const { Cell::new(None) });
    let executor = glommio::executor();
    let id = executor.id();
    let queue = match FLUSHERS.with(Cell::get) {
        Some((owner, queue)) if owner == id => queue,
        _ => {
            let queue = executor.create_task_queue(
                Shares::Static(10_000),
                Latency::Matters(Duration::from_millis(1)),
                "flushers",
            );
            FLUSHERS.with(|f| f.set(Some((id, queue))));
            queue
        }
    };
    glommio::spawn_local_into(fut, queue).expect("the flusher queue belongs to this executor")
}
