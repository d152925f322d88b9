//! The worker's progress observer for one job: counts its steps into the job's status (with an
//! ETA), makes a preview now and then, and stops the run when the job is cancelled.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::tensor::Tensor;
use inversion::{Phase, Progress};
use tokio::sync::watch;

use super::limits::PREVIEW_INTERVAL;
use super::preview::Projection;
use super::state::{Shared, Status};

pub struct JobProgress<'a> {
    pub id: &'a str,
    pub shared: &'a Shared,
    pub status: watch::Sender<Status>,
    pub cancel: Arc<AtomicBool>,
    /// Steps of the whole job: inverse steps still to run, sampling steps, encode and decode.
    pub total: Cell<usize>,
    done: Cell<usize>,
    started: Instant,
    last_preview: Cell<Option<Instant>>,
    pub projection: RefCell<Option<Projection>>,
}

impl<'a> JobProgress<'a> {
    pub fn new(
        id: &'a str,
        shared: &'a Shared,
        status: watch::Sender<Status>,
        cancel: Arc<AtomicBool>,
    ) -> Self {
        Self {
            id,
            shared,
            status,
            cancel,
            total: Cell::new(1),
            done: Cell::new(0),
            started: Instant::now(),
            last_preview: Cell::new(None),
            projection: RefCell::new(None),
        }
    }

    fn publish(&self, phase: Option<Phase>, step: Option<(usize, usize)>) {
        let (done, total) = (self.done.get(), self.total.get().max(1));
        let elapsed = self.started.elapsed().as_secs_f64();
        self.status.send_modify(|st| {
            if let Some(p) = phase {
                st.phase = Some(p.name());
            }
            if let Some((s, t)) = step {
                (st.step, st.total) = (s, t);
            }
            st.fraction = (done as f64 / total as f64).min(1.0);
            st.elapsed_s = elapsed;
            st.eta_s =
                (done > 0).then(|| elapsed / done as f64 * total.saturating_sub(done) as f64);
        });
    }

    /// Stores a preview of batch entry `index` of `x` and announces it.
    fn preview(&self, x: &Tensor<4>) {
        let due = self
            .last_preview
            .get()
            .is_none_or(|t| t.elapsed() >= PREVIEW_INTERVAL);
        let projection = self.projection.borrow();
        let (true, Some(projection)) = (due, projection.as_ref()) else {
            return;
        };
        self.last_preview.set(Some(Instant::now()));
        // The edit branch is the last of a two-branch batch.
        let Some(img) = projection.project(x, usize::MAX) else {
            return;
        };
        let Ok(png) = crate::output::png_bytes(&img) else {
            return;
        };
        let mut s = self.shared.lock();
        if let Some(job) = s.jobs.get_mut(self.id) {
            job.preview = Some(Arc::new(png));
            job.status.send_modify(|st| st.preview += 1);
        }
    }
}

impl Progress for JobProgress<'_> {
    fn start(&self, phase: Phase, total: usize) {
        self.publish(Some(phase), Some((0, total)));
    }

    fn step(&self, _phase: Phase) {
        self.done.set(self.done.get() + 1);
        let step = self.status.borrow().step + 1;
        let total = self.status.borrow().total;
        self.publish(None, Some((step, total)));
    }

    fn finish(&self, phase: Phase) {
        // Encode and decode report no steps: each counts as one.
        if matches!(phase, Phase::Encode | Phase::Decode) {
            self.done.set(self.done.get() + 1);
        }
        self.publish(None, None);
    }

    fn latents(&self, _phase: Phase, x: &Tensor<4>) {
        self.preview(x);
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}
