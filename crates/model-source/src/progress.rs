//! What a fetch reports while it runs, to an observer the caller passes in: notes for the user
//! (components skipped, the final summary) and the bytes of each file as they arrive. [`Bars`]
//! draws them with `indicatif` on stderr, one bar per file; [`NoProgress`] ignores them.

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

/// Observer of a fetch. Files are downloaded one after another, so the `advance`, `resume` and
/// `finish` calls refer to the file of the last `start`. Every method defaults to doing nothing.
pub trait Progress: Sync {
    /// A line for the user.
    fn note(&self, _text: &str) {}
    /// `file` starts downloading: `size` bytes in all, of which `done` are already on disk.
    fn start(&self, _file: &str, _size: u64, _done: u64) {}
    /// `bytes` more bytes of the current file arrived.
    fn advance(&self, _bytes: u64) {}
    /// The transfer was cut and continues from byte `at`.
    fn resume(&self, _file: &str, _at: u64) {}
    /// The current file is complete (`ok`) or given up.
    fn finish(&self, _ok: bool) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}

/// One line per file: name, bar, bytes, speed, time left.
const BAR_TEMPLATE: &str =
    "{msg:48!} {bar:24} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {eta:>4}";

/// Progress bars and notes on stderr; nothing at all when `quiet`.
pub struct Bars {
    quiet: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bars {
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            bar: Mutex::new(None),
        }
    }

    fn with_bar(&self, f: impl FnOnce(&ProgressBar)) {
        if let Ok(bar) = self.bar.lock()
            && let Some(bar) = bar.as_ref()
        {
            f(bar);
        }
    }
}

impl Progress for Bars {
    fn note(&self, text: &str) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }

    fn start(&self, file: &str, size: u64, done: u64) {
        if self.quiet {
            return;
        }
        let style = ProgressStyle::with_template(BAR_TEMPLATE)
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        let bar = ProgressBar::new(size)
            .with_style(style.progress_chars("=> "))
            .with_message(file.to_string())
            .with_position(done);
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }

    fn advance(&self, bytes: u64) {
        self.with_bar(|b| b.inc(bytes));
    }

    fn resume(&self, file: &str, at: u64) {
        self.with_bar(|b| {
            b.set_position(at);
            b.set_message(format!("{file} (resuming at byte {at})"));
        });
    }

    fn finish(&self, ok: bool) {
        if let Some(bar) = self.bar.lock().ok().and_then(|mut b| b.take()) {
            if ok { bar.finish() } else { bar.abandon() }
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
}
