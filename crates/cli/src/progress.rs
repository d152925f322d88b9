//! Progress bars on stderr (one per phase), silent with `-q`.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use inversion::{Phase, Progress};

/// A bar of `len` steps named `prefix`, in the style of every bar of the CLI (a message, such as
/// a batch's current job, goes after the ETA).
pub fn bar(prefix: &'static str, len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    let style = ProgressStyle::with_template(
        "{prefix:>10} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(prefix);
    bar
}

/// indicatif bars for the pipeline's phases, and the time each phase took.
pub struct Bars {
    quiet: bool,
    bar: RefCell<Option<ProgressBar>>,
    started: RefCell<Option<Instant>>,
    pub timings: RefCell<Vec<(Phase, Duration)>>,
    /// Steps of the current phase so far (null-text's are UNet forward + backward passes).
    steps: RefCell<usize>,
    /// Null-text's passes, for the summary.
    passes: RefCell<Option<usize>>,
}

impl Bars {
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            bar: RefCell::new(None),
            started: RefCell::new(None),
            timings: RefCell::new(Vec::new()),
            steps: RefCell::new(0),
            passes: RefCell::new(None),
        }
    }

    /// "inversion 12.3 s, sampling 10.1 s, decode 2.0 s".
    pub fn summary(&self) -> String {
        self.timings
            .borrow()
            .iter()
            .map(|(p, d)| match (p, *self.passes.borrow()) {
                (Phase::NullText, Some(n)) => format!(
                    "{} {:.2} s, {n} UNet forward + backward passes",
                    p.name(),
                    d.as_secs_f64()
                ),
                _ => format!("{} {:.2} s", p.name(), d.as_secs_f64()),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Progress for Bars {
    fn start(&self, phase: Phase, total: usize) {
        *self.started.borrow_mut() = Some(Instant::now());
        *self.steps.borrow_mut() = 0;
        if self.quiet {
            return;
        }
        *self.bar.borrow_mut() = Some(bar(phase.name(), total));
    }

    fn step(&self, _phase: Phase) {
        *self.steps.borrow_mut() += 1;
        if let Some(bar) = self.bar.borrow().as_ref() {
            bar.inc(1);
        }
    }

    fn finish(&self, phase: Phase) {
        if phase == Phase::NullText {
            *self.passes.borrow_mut() = Some(*self.steps.borrow());
        }
        if let Some(start) = self.started.borrow_mut().take() {
            self.timings.borrow_mut().push((phase, start.elapsed()));
        }
        if let Some(bar) = self.bar.borrow_mut().take() {
            bar.finish();
        }
    }
}
