//! `holdall sync DIR` without `--once`: rounds whenever the disk changes (inotify), the
//! server has news (longpoll), or the periodic rescan comes due; failures back off.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use holdall_proto::api::{Cursors, LongpollRequest};
use notify::{RecursiveMode, Watcher};
use tracing::{info, warn};

use crate::local::scan::{STATE_DIR, TEMP_PREFIX};
use crate::net::api::{Api, ApiError};
use crate::sync::round::{log_round, Report, Syncer};

/// A full rescan at least this often, in case an inotify event was missed.
const RESCAN_PERIOD: Duration = Duration::from_secs(600);
/// What woke the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// The disk changed: edits come in bursts, so wait a moment before scanning.
    Disk,
    /// The server has news, or an upload being streamed ended: act at once.
    Server,
}

/// Disk changes arriving this close together are taken in one round.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// A changed file is read once it has been left alone this long: a file being written (a
/// download, a copy, an export) is then hashed and committed once, not at every size it
/// passes through, and other devices never see its partial versions.
pub const QUIET: Duration = Duration::from_secs(1);
/// Longest a longpoll that reported news waits for a round to end before asking again.
const ROUND_WAIT_MAX: Duration = Duration::from_secs(5);
/// Longest wait after failures.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How long one longpoll waits on the server.
const LONGPOLL_S: u32 = 60;

fn ours(root: &Path, path: &Path) -> bool {
    let state = root.join(STATE_DIR);
    path.starts_with(&state)
        || path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(TEMP_PREFIX))
}

/// Syncs until the process is stopped.
pub fn run(mut syncer: Syncer) -> Result<()> {
    let root = syncer.root().to_path_buf();
    let (tx, rx) = mpsc::channel::<Wake>();
    let _watcher = watch_disk(&root, tx.clone())?;
    // Streaming sync: threads fetching blocks of uploads still in progress elsewhere.
    let nudge_tx = Mutex::new(tx.clone());
    let nudge = Arc::new(move || {
        let _ = nudge_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Wake::Server);
    });
    if let Some(prefetcher) = syncer.start_streaming(nudge)? {
        std::thread::spawn(move || prefetcher.run());
    }
    let cursors: Shared = Arc::new((
        Mutex::new((syncer.cursors(), syncer.prefetch_cursors(), 0)),
        Condvar::new(),
    ));
    {
        let (api, cursors, tx) = (syncer.api().clone(), cursors.clone(), tx.clone());
        std::thread::spawn(move || longpoll_loop(&api, &cursors, &tx));
    }
    info!(folder = %root.display(), "syncing; stop with Ctrl-C");
    let mut backoff = Duration::from_secs(1);
    loop {
        let woke = match run_round(&mut syncer, &cursors, backoff)? {
            Some(report) => {
                backoff = Duration::from_secs(1);
                // Files still changing (or changed too lately to read) are looked at again
                // once they may have settled, or at the next disk change.
                if report.planned == 0 && report.unsettled > 0 {
                    rx.recv_timeout(QUIET).ok()
                } else if !report.idle() {
                    continue;
                } else {
                    rx.recv_timeout(RESCAN_PERIOD).ok()
                }
            }
            None => {
                let woke = rx.recv_timeout(backoff).ok();
                backoff = (backoff * 2).min(BACKOFF_MAX);
                woke
            }
        };
        if woke == Some(Wake::Disk) {
            std::thread::sleep(DEBOUNCE);
        }
        while rx.try_recv().is_ok() {}
    }
}

/// Row cursors and prefetch cursors as the last round left them, and how many rounds have
/// ended (the longpoll waits for the next one after it reported news).
type Shared = Arc<(Mutex<(Cursors, Cursors, u64)>, Condvar)>;

/// Watches the folder: any change outside the state folder and temporary files wakes a
/// round. The watcher runs while the returned value lives.
fn watch_disk(root: &Path, tx: mpsc::Sender<Wake>) -> Result<notify::RecommendedWatcher> {
    let watch_root = root.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event {
            // Opening or reading a file is no change (and the scan itself opens folders: a
            // round would wake the next one forever).
            if matches!(e.kind, notify::EventKind::Access(_)) {
                return;
            }
            if e.paths.iter().any(|p| !ours(&watch_root, p)) {
                let _ = tx.send(Wake::Disk);
            }
        }
    })
    .context("starting the file watcher")?;
    watcher
        .watch(root, RecursiveMode::Recursive)
        .with_context(|| format!("watching {}", root.display()))?;
    Ok(watcher)
}

/// Asks the server for news past the last round's cursors, for ever; news wakes a round.
fn longpoll_loop(api: &Api, cursors: &Shared, tx: &mpsc::Sender<Wake>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let (rows, prefetch, rounds) = cursors.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let request = LongpollRequest {
            cursors: rows,
            timeout_s: Some(LONGPOLL_S),
            prefetch_cursors: prefetch,
        };
        match api.longpoll(&request) {
            Ok(answer) => {
                backoff = Duration::from_secs(1);
                if answer.changes && tx.send(Wake::Server).is_err() {
                    return;
                }
                if answer.changes {
                    // Asking again before a round has moved the cursors would only hear the
                    // same news. Wait for the round's end, not a fixed time: a fixed 500 ms
                    // could hide the next news (an upload's commit, say) for up to that long.
                    let seen = cursors.0.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = cursors
                        .1
                        .wait_timeout_while(seen, ROUND_WAIT_MAX, |s| s.2 == rounds);
                }
            }
            Err(e) => {
                warn!(error = %e, "longpoll failed; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// One round, logged and recorded, its cursors handed to the longpoll; `None` when the
/// round failed (recorded too; the next try comes after `backoff`). An error only if the
/// state cannot be written.
fn run_round(syncer: &mut Syncer, cursors: &Shared, backoff: Duration) -> Result<Option<Report>> {
    let started = Instant::now();
    match syncer.round() {
        Ok(report) => {
            log_round(&report, started.elapsed());
            syncer.record(Some(&report), None)?;
            {
                let mut seen = cursors.0.lock().unwrap_or_else(|e| e.into_inner());
                *seen = (syncer.cursors(), syncer.prefetch_cursors(), seen.2 + 1);
            }
            cursors.1.notify_all();
            Ok(Some(report))
        }
        Err(e) => {
            let message = format!("{e:#}");
            syncer.record(None, Some(&message))?;
            if token_refused(&e) {
                // No retry can help: the token was revoked or its account disabled.
                return Err(e.context("stopping: the server no longer takes this token"));
            }
            warn!(error = %message, retry_in_s = backoff.as_secs(), "sync round failed");
            Ok(None)
        }
    }
}

/// Whether `e` is the server refusing the token itself (401).
fn token_refused(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<ApiError>(),
            Some(ApiError::Unauthorized | ApiError::AccountDisabled)
        )
    })
}
