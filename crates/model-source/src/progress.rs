//! What a fetch reports while it runs, to an observer the caller passes in: notes for the user
//! (components skipped, the final summary), the plan (how many files and bytes are to come) and
//! the bytes of each file as they arrive. [`Bars`] draws them with `indicatif` on stderr — one bar
//! for the file being downloaded and one for the whole fetch, in the style of the CLI's phase
//! bars — and is silent when quiet; [`NoProgress`] ignores them.

use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Observer of a fetch. Files are downloaded one after another, so the `advance`, `resume` and
/// `finish` calls refer to the file of the last `start`. Every method defaults to doing nothing.
pub trait Progress: Sync {
    /// A line for the user.
    fn note(&self, _text: &str) {}
    /// `files` files of `bytes` bytes in all are to be downloaded (the rest is cached).
    fn plan(&self, _files: usize, _bytes: u64) {}
    /// `file` starts downloading: `size` bytes in all, of which `done` are already on disk.
    fn start(&self, _file: &str, _size: u64, _done: u64) {}
    /// `bytes` more bytes of the current file arrived.
    fn advance(&self, _bytes: u64) {}
    /// The transfer was cut and continues from byte `at`.
    fn resume(&self, _file: &str, _at: u64) {}
    /// The current file is complete (`ok`) or given up.
    fn finish(&self, _ok: bool) {}
    /// A planned `file` of `size` bytes turned out to be in the cache already (another snapshot's
    /// blob).
    fn skip(&self, _file: &str, _size: u64) {}
    /// Every planned file is in place.
    fn done(&self) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}

/// A bar of bytes: prefix, bar, bytes, speed, time left, then the file name.
const BAR_TEMPLATE: &str = "{prefix:>10} [{bar:30}] {bytes:>10}/{total_bytes:<10} \
     {binary_bytes_per_sec:>12} eta {eta:>4} {wide_msg}";

/// Progress bars and notes on stderr; nothing at all when `quiet`.
pub struct Bars {
    quiet: bool,
    multi: MultiProgress,
    /// The file being downloaded.
    file: Mutex<Option<ProgressBar>>,
    /// The whole fetch (from [`Progress::plan`] on).
    total: Mutex<Option<ProgressBar>>,
}

impl Bars {
    pub fn new(quiet: bool) -> Self {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        Self {
            quiet,
            multi: MultiProgress::with_draw_target(target),
            file: Mutex::new(None),
            total: Mutex::new(None),
        }
    }

    fn bar(&self, prefix: &'static str, len: u64, message: String) -> ProgressBar {
        let style = ProgressStyle::with_template(BAR_TEMPLATE)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        self.multi.add(
            ProgressBar::new(len)
                .with_style(style)
                .with_prefix(prefix)
                .with_message(message),
        )
    }

    fn with(slot: &Mutex<Option<ProgressBar>>, f: impl FnOnce(&ProgressBar)) {
        if let Ok(bar) = slot.lock()
            && let Some(bar) = bar.as_ref()
        {
            f(bar);
        }
    }
}

impl Progress for Bars {
    fn note(&self, text: &str) {
        if !self.quiet {
            self.multi.suspend(|| eprintln!("{text}"));
        }
    }

    fn plan(&self, files: usize, bytes: u64) {
        if self.quiet || files == 0 {
            return;
        }
        let plural = if files == 1 { "" } else { "s" };
        let bar = self.bar("total", bytes, format!("{files} file{plural}"));
        if let Ok(mut slot) = self.total.lock() {
            *slot = Some(bar);
        }
    }

    fn start(&self, file: &str, size: u64, done: u64) {
        if self.quiet {
            return;
        }
        let bar = self
            .bar("fetch", size, file.to_string())
            .with_position(done);
        Self::with(&self.total, |t| t.inc(done));
        if let Ok(mut slot) = self.file.lock() {
            *slot = Some(bar);
        }
    }

    fn advance(&self, bytes: u64) {
        Self::with(&self.file, |b| b.inc(bytes));
        Self::with(&self.total, |t| t.inc(bytes));
    }

    fn resume(&self, file: &str, at: u64) {
        Self::with(&self.file, |b| {
            let lost = b.position().saturating_sub(at);
            b.set_position(at);
            b.set_message(format!("{file} (resuming at byte {at})"));
            Self::with(&self.total, |t| {
                t.set_position(t.position().saturating_sub(lost))
            });
        });
    }

    fn finish(&self, ok: bool) {
        if let Some(bar) = self.file.lock().ok().and_then(|mut b| b.take()) {
            if ok { bar.finish() } else { bar.abandon() }
        }
    }

    fn skip(&self, _file: &str, size: u64) {
        Self::with(&self.total, |t| t.inc(size));
    }

    fn done(&self) {
        if let Some(bar) = self.total.lock().ok().and_then(|mut b| b.take()) {
            bar.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_template_parses() {
        assert!(ProgressStyle::with_template(BAR_TEMPLATE).is_ok());
    }

    /// The total counts the bytes of every file, resumed ones once, and a quiet one draws nothing.
    #[test]
    fn the_total_bar_counts_every_planned_byte_once() {
        let bars = Bars::new(false);
        bars.plan(2, 300);
        bars.start("a", 100, 0);
        bars.advance(60);
        bars.resume("a", 40);
        bars.advance(60);
        bars.finish(true);
        bars.skip("b", 200);
        let total = bars.total.lock().unwrap().as_ref().unwrap().position();
        assert_eq!(total, 300);
        bars.done();
        assert!(bars.total.lock().unwrap().is_none());
        let quiet = Bars::new(true);
        quiet.plan(1, 10);
        quiet.start("a", 10, 0);
        assert!(quiet.total.lock().unwrap().is_none() && quiet.file.lock().unwrap().is_none());
    }
}
