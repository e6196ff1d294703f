//! Progress bars for long work on a terminal: a round that moves many bytes or files shows
//! the bytes sent and received against what it planned, with the rate. Off a terminal
//! nothing is drawn (the round's log line says what moved).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A round shows a bar from this many planned bytes …
const BAR_BYTES_MIN: u64 = 8 << 20;
/// … or this many files.
const BAR_FILES_MIN: usize = 200;

/// The bar shared by a round's workers (cheap to clone); `None` draws nothing.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<Bar>>);

struct Bar {
    bar: ProgressBar,
    /// Whether this round is long enough to show it.
    shown: AtomicBool,
}

impl Progress {
    /// A bar on stderr if it is a terminal.
    pub fn on_stderr() -> Progress {
        match std::io::stderr().is_terminal() {
            true => Progress::to(ProgressDrawTarget::stderr()),
            false => Progress::default(),
        }
    }

    fn to(target: ProgressDrawTarget) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(0), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Progress(Some(Arc::new(Bar {
            bar,
            shown: AtomicBool::new(false),
        })))
    }

    /// A round is about to move about `bytes` bytes of `files` files.
    pub fn begin(&self, bytes: u64, files: usize) {
        let Some(b) = &self.0 else { return };
        let shown = bytes >= BAR_BYTES_MIN || files >= BAR_FILES_MIN;
        b.shown.store(shown, Ordering::Relaxed);
        if shown {
            b.bar.reset();
            b.bar.set_length(bytes);
            b.bar.set_message(format!("syncing {files} files"));
        }
    }

    /// Bytes sent or received.
    pub fn moved(&self, bytes: u64) {
        if let Some(b) = self.0.as_ref().filter(|b| b.shown.load(Ordering::Relaxed)) {
            b.bar.inc(bytes);
        }
    }

    /// The round is over: the bar goes away.
    pub fn end(&self) {
        if let Some(b) = &self.0 {
            if b.shown.swap(false, Ordering::Relaxed) {
                b.bar.finish_and_clear();
            }
        }
    }

    #[cfg(test)]
    fn position(&self) -> Option<u64> {
        self.0.as_ref().map(|b| b.bar.position())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_rounds_long_enough_for_a_bar() {
        let p = Progress::to(ProgressDrawTarget::hidden());
        p.begin(1 << 20, 3);
        p.moved(1000);
        assert_eq!(p.position(), Some(0), "a short round draws no bar");
        p.begin(64 << 20, 3);
        p.moved(1000);
        p.moved(24);
        assert_eq!(p.position(), Some(1024));
        p.end();
        p.begin(0, 500);
        p.moved(5);
        assert_eq!(p.position(), Some(5), "many small files get a bar");
        assert_eq!(Progress::default().position(), None);
    }
}
