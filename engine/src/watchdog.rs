//! The reactor watchdog: interrupts an executor thread that stopped making progress.
//!
//! glommio 0.9 sleeps in `io_uring_enter` on its main ring, linked to its other rings by a
//! poll request; now and then that link's wake-up is lost and the executor stays parked with
//! completions (its own timers included) waiting in a ring. A server shard was seen parked
//! for 14 minutes in its start-up, the main thread waiting for it to be ready; attaching a
//! debugger, which interrupts the system call, set it going again. The reactor tick of
//! [`crate::runtime`] does not help there: its timer's completion is lost the same way.
//!
//! So each executor's tick stamps a heartbeat, and one watchdog thread per process looks at
//! every heartbeat each [`CHECK_INTERVAL`]: a thread whose heartbeat is older than
//! [`STALL_MAX`] and that is waiting in `io_uring_enter` (its `/proc` `syscall` file says
//! so; a thread busy with long synchronous work is not stuck) gets a signal. The handler
//! does nothing; the signal makes the waiting `io_uring_enter` return `EINTR` (the kernel
//! does not restart it, `SA_RESTART` or not), which glommio takes as "go round again": it
//! reaps every ring and runs what is ready. `SA_RESTART` keeps any other system call the
//! thread might be in from failing. A healthy executor ticks every 20 ms and never sees
//! the signal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

/// How often the watchdog looks at the heartbeats.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// A heartbeat older than this means the executor is stuck: ten reactor ticks.
pub const STALL_MAX: Duration = Duration::from_millis(200);

/// The signal that interrupts a stuck executor: ignored by default, never sent by the
/// kernel to a process that has not asked for it (out-of-band TCP data with `F_SETOWN`).
const NUDGE_SIGNAL: libc::c_int = libc::SIGURG;

/// Executors interrupted since the process started.
static NUDGES: AtomicU64 = AtomicU64::new(0);

/// How many times the watchdog has interrupted a stuck executor in this process.
pub fn nudges_total() -> u64 {
    NUDGES.load(Ordering::Relaxed)
}

struct Watched {
    tid: libc::pid_t,
    name: String,
    /// Milliseconds since [`epoch`] at the last tick.
    beat_ms: Arc<AtomicU64>,
}

static WATCHED: Mutex<Vec<Watched>> = Mutex::new(Vec::new());

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// One executor thread under watch, for as long as this lives (the executor's main future
/// holds it: glommio does not drop detached tasks when an executor ends). Its [`Beat`]s
/// stamp it.
#[must_use = "the watch ends when the heartbeat is dropped"]
pub struct Heartbeat {
    tid: libc::pid_t,
    beat_ms: Arc<AtomicU64>,
}

impl Heartbeat {
    /// Puts the calling thread under watch (starting the watchdog on first use).
    pub fn register() -> Heartbeat {
        static START: Once = Once::new();
        START.call_once(|| {
            install_handler();
            let started = std::thread::Builder::new()
                .name("reactor-watchdog".into())
                .spawn(watch);
            if let Err(e) = started {
                tracing::warn!(error = %e, "could not start the reactor watchdog");
            }
        });
        let tid = current_tid();
        let beat_ms = Arc::new(AtomicU64::new(now_ms()));
        let name = std::thread::current()
            .name()
            .unwrap_or("executor")
            .to_string();
        lock().push(Watched {
            tid,
            name,
            beat_ms: beat_ms.clone(),
        });
        Heartbeat { tid, beat_ms }
    }

    /// What the executor's tick stamps.
    pub fn beat(&self) -> Beat {
        Beat(self.beat_ms.clone())
    }
}

/// Stamps a [`Heartbeat`]: the executor is making progress.
pub struct Beat(Arc<AtomicU64>);

impl Beat {
    /// Now.
    pub fn now(&self) {
        self.0.store(now_ms(), Ordering::Relaxed);
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        lock().retain(|w| w.tid != self.tid);
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<Watched>> {
    WATCHED.lock().unwrap_or_else(|e| e.into_inner())
}

extern "C" fn nudged(_: libc::c_int) {}

fn install_handler() {
    // SAFETY: the action is fully initialized; the handler is async-signal-safe (empty).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = nudged as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(NUDGE_SIGNAL, &action, std::ptr::null_mut()) != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "could not install the reactor watchdog's signal handler"
            );
        }
    }
}

fn watch() {
    loop {
        std::thread::sleep(CHECK_INTERVAL);
        let now = now_ms();
        let stall_max_ms = STALL_MAX.as_millis() as u64;
        let mut watched = lock();
        watched.retain(|w| {
            let age_ms = now.saturating_sub(w.beat_ms.load(Ordering::Relaxed));
            if age_ms <= stall_max_ms {
                return true;
            }
            match thread_state(w.tid) {
                ThreadState::WaitingInIoUring => {}
                ThreadState::Other => return true,
                ThreadState::Gone => return false,
            }
            if !nudge(w.tid) {
                return false;
            }
            tracing::warn!(
                thread = %w.name,
                stalled_ms = age_ms,
                "executor parked past its timers (a lost io_uring wake-up): interrupted it"
            );
            // Once per stall: the next nudge waits for another full STALL_MAX.
            w.beat_ms.store(now, Ordering::Relaxed);
            true
        });
    }
}

/// The calling thread's id, for [`nudge`].
pub fn current_tid() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Interrupts thread `tid` of this process once, as the watchdog does a stuck executor
/// (whatever its heartbeat says). Whether the signal was sent.
pub fn nudge(tid: libc::pid_t) -> bool {
    // SAFETY: getpid has no preconditions; tgkill only sends a signal (ESRCH if the thread
    // has ended).
    let sent = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, NUDGE_SIGNAL) };
    if sent == 0 {
        NUDGES.fetch_add(1, Ordering::Relaxed);
    }
    sent == 0
}

/// Interrupts every thread of this process whose name starts with `prefix` and that waits
/// in `io_uring_enter`: for an executor stuck before its main future ran (and so before it
/// could say its thread id). How many were interrupted.
pub fn nudge_waiting_named(prefix: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let mut nudged = 0;
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let named = std::fs::read_to_string(task.path().join("comm"))
            .is_ok_and(|name| name.starts_with(prefix));
        if named && thread_state(tid) == ThreadState::WaitingInIoUring && nudge(tid) {
            nudged += 1;
        }
    }
    nudged
}

/// What thread `tid` of this process is doing, as far as the watchdog cares.
#[derive(Debug, PartialEq, Eq)]
enum ThreadState {
    WaitingInIoUring,
    Other,
    Gone,
}

fn thread_state(tid: libc::pid_t) -> ThreadState {
    // The file holds the system call's number and arguments, or "running".
    match std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) {
        Ok(s)
            if s.split_whitespace()
                .next()
                .and_then(|n| n.parse::<i64>().ok())
                == Some(libc::SYS_io_uring_enter) =>
        {
            ThreadState::WaitingInIoUring
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ThreadState::Gone,
        _ => ThreadState::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A thread waiting in `io_uring_enter` for a completion that never comes: what a lost
    /// wake-up looks like. Its result, once the wait ends.
    fn wait_on_an_empty_ring() -> mpsc::Receiver<(i64, Option<i32>, Duration, u64)> {
        wait_on_an_empty_ring_named("ring-waiter", true)
    }

    /// The same, on a thread called `name`, watched or not.
    fn wait_on_an_empty_ring_named(
        name: &str,
        watched: bool,
    ) -> mpsc::Receiver<(i64, Option<i32>, Duration, u64)> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new().name(name.into());
        thread
            .spawn(move || {
                // Registering installs the signal handler; an unwatched thread leaves at once.
                let heartbeat = Heartbeat::register();
                let heartbeat = watched.then_some(heartbeat);
                // struct io_uring_params: 120 bytes, all zero asks for the defaults.
                let mut params = [0u32; 30];
                // SAFETY: params is a zeroed io_uring_params of the kernel's size.
                let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4, params.as_mut_ptr()) };
                assert!(
                    fd >= 0,
                    "io_uring_setup: {}",
                    std::io::Error::last_os_error()
                );
                let before = nudges_total();
                let start = Instant::now();
                const GETEVENTS: u32 = 1;
                // SAFETY: waits for one completion on our own ring; no buffers are passed.
                let waited = unsafe {
                    libc::syscall(
                        libc::SYS_io_uring_enter,
                        fd,
                        0u32,
                        1u32,
                        GETEVENTS,
                        std::ptr::null::<libc::c_void>(),
                        0usize,
                    )
                };
                let errno = std::io::Error::last_os_error().raw_os_error();
                let took = start.elapsed();
                drop(heartbeat);
                // SAFETY: fd is the ring made above.
                unsafe { libc::close(fd as libc::c_int) };
                let _ = tx.send((waited, errno, took, nudges_total() - before));
            })
            .unwrap();
        rx
    }

    #[test]
    fn an_executor_parked_in_io_uring_past_its_timers_is_interrupted() {
        let (waited, errno, took, nudges) = wait_on_an_empty_ring()
            .recv_timeout(Duration::from_secs(20))
            .expect("io_uring_enter was never interrupted");
        assert_eq!((waited, errno), (-1, Some(libc::EINTR)));
        assert!(took >= STALL_MAX, "interrupted before a stall: {took:?}");
        assert!(nudges >= 1);
    }

    #[test]
    fn an_unwatched_executor_waiting_in_io_uring_is_found_by_name() {
        let rx = wait_on_an_empty_ring_named("starting-7-1", false);
        let start = Instant::now();
        let (waited, errno, took, _) = loop {
            nudge_waiting_named("starting-7-");
            if let Ok(answer) = rx.recv_timeout(Duration::from_millis(50)) {
                break answer;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "never found");
        };
        assert_eq!((waited, errno), (-1, Some(libc::EINTR)));
        assert!(took < STALL_MAX, "left to the watchdog: {took:?}");
        assert_eq!(nudge_waiting_named("starting-7-"), 0, "the thread ended");
    }

    #[test]
    fn nudge_interrupts_the_thread_it_names() {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _watched = Heartbeat::register();
            tx.send(current_tid()).unwrap();
            // SAFETY: no descriptors are passed.
            let slept = unsafe { libc::poll(std::ptr::null_mut(), 0, 20_000) };
            let errno = std::io::Error::last_os_error().raw_os_error();
            tx.send(if slept == -1 { errno.unwrap_or(0) } else { 0 })
                .unwrap();
        });
        let tid = rx.recv().unwrap();
        // Until the thread is in poll, a nudge would be lost: retry.
        let start = Instant::now();
        let errno = loop {
            assert!(nudge(tid));
            if let Ok(errno) = rx.recv_timeout(Duration::from_millis(50)) {
                break errno;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "never interrupted"
            );
        };
        assert_eq!(errno, libc::EINTR);
    }

    #[test]
    fn an_executor_that_ends_leaves_the_watch() {
        let tid = current_tid();
        crate::runtime::run(async move {
            assert!(lock().iter().any(|w| w.tid == tid));
        });
        assert!(!lock().iter().any(|w| w.tid == tid));
    }

    #[test]
    fn a_thread_that_beats_or_works_is_left_alone() {
        let heartbeat = Heartbeat::register();
        let start = Instant::now();
        // Busy in a system call that is not io_uring_enter, without beating: not stuck.
        // SAFETY: no descriptors are passed.
        let slept = unsafe { libc::poll(std::ptr::null_mut(), 0, 600) };
        assert_eq!(slept, 0, "poll was interrupted");
        assert!(start.elapsed() >= Duration::from_millis(600));
        let beat = heartbeat.beat();
        while start.elapsed() < Duration::from_millis(1200) {
            beat.now();
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
