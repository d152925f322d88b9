//! The one worker: it owns the use of the model, runs the queued jobs in order, and keeps the
//! inversions of recent (photo, source prompt, inversion settings) for the edits that follow, so
//! that trying edit after edit of one photo costs only the sampling.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use inversion::image::{image_to_tensor, tensor_to_image};
use inversion::{EditOptions, InversionKey, Pipeline, Trajectory};

use super::limits::MAX_INVERSIONS;
use super::preview::Projection;
use super::progress::JobProgress;
use super::state::{Shared, State};

struct Kept {
    key: InversionKey,
    trajectory: Trajectory,
    projection: Option<Projection>,
    /// UNet evaluations one inverse step takes (1, or 2 when guided).
    calls_per_step: u64,
}

pub struct Worker {
    pub pipeline: Arc<Pipeline>,
    pub shared: Arc<Shared>,
    pub size: (usize, usize),
    /// Least recently used first.
    kept: Vec<Kept>,
}

impl Worker {
    pub fn new(pipeline: Arc<Pipeline>, shared: Arc<Shared>, size: (usize, usize)) -> Self {
        Self {
            pipeline,
            shared,
            size,
            kept: Vec::new(),
        }
    }

    /// Runs jobs until the server stops.
    pub fn run(mut self) {
        while let Some(id) = self.shared.next_job() {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| self.execute(&id)));
            let (state, error) = match outcome {
                Ok(Ok(png)) => (State::Done, Ok(png)),
                Ok(Err(inversion::InversionError::Cancelled)) => (State::Cancelled, Err(None)),
                Ok(Err(e)) => (
                    State::Failed,
                    Err(Some(format!("{:#}", crate::commands::flagged(e)))),
                ),
                Err(_) => (
                    State::Failed,
                    Err(Some(
                        "internal error: the edit panicked; see the server log".into(),
                    )),
                ),
            };
            let mut s = self.shared.lock();
            if let Some(job) = s.jobs.get_mut(&id) {
                let message = match error {
                    Ok(png) => {
                        job.result = Some(Arc::new(png));
                        None
                    }
                    Err(m) => m,
                };
                job.status.send_modify(|st| {
                    st.state = state;
                    st.error = message;
                    if state == State::Done {
                        st.fraction = 1.0;
                        st.eta_s = Some(0.0);
                    }
                });
            }
            s.retire(&id);
        }
    }

    /// One job: the kept inversion (continued if the edit starts earlier) or a new one, then the
    /// edit's sampling and the decode; the PNG's bytes, as `ddim-edit edit` writes them.
    fn execute(&mut self, id: &str) -> inversion::Result<Vec<u8>> {
        let (photo, request, options, status, cancel) = {
            let s = self.shared.lock();
            let Some(job) = s.jobs.get(id) else {
                return Err(inversion::InversionError::Cancelled);
            };
            let (r, o) = (job.request.clone(), job.options.clone());
            (
                job.photo.clone(),
                r,
                o,
                job.status.clone(),
                job.cancel.clone(),
            )
        };
        let pipeline = self.pipeline.clone();
        let p = &*pipeline;
        let shared = self.shared.clone();
        let progress = JobProgress::new(id, &shared, status.clone(), cancel);
        let key = InversionKey::new(&photo.id, &request.prompt, &options, Some(self.size));
        let need = options.steps - options.start_step;
        let calls_before = p.unet_calls();
        let cond = p.conditioning(
            &request.prompt,
            &options.negative_prompt,
            options.inversion_guidance,
        )?;
        let (k, reused, saved) = match self.take(&key) {
            Some(mut k) => {
                let have = k.trajectory.len();
                progress.total.set(need.saturating_sub(have) + need + 1);
                *progress.projection.borrow_mut() = k.projection.clone();
                let saved = have.min(need) as u64 * k.calls_per_step;
                let extended =
                    inversion::extend_inversion(p, &mut k.trajectory, &cond, need, &progress);
                if let Err(e) = extended {
                    self.keep(k);
                    return Err(e);
                }
                (k, true, saved)
            }
            None => {
                progress.total.set(1 + need + need + 1);
                let x0 = p.encode(
                    image_to_tensor(&photo.image, self.size, p.device()),
                    &progress,
                )?;
                let projection = Projection::fit(&x0, &photo.image);
                *progress.projection.borrow_mut() = projection.clone();
                let trajectory = inversion::invert(p, x0, &cond, options.steps, need, &progress)?;
                let calls_per_step = (p.unet_calls() - calls_before) / need as u64;
                (
                    Kept {
                        key,
                        trajectory,
                        projection,
                        calls_per_step,
                    },
                    false,
                    0,
                )
            }
        };
        status.send_modify(|st| {
            st.inversion_reused = reused;
            st.unet_calls_saved = saved;
        });
        let (source, target) = (&request.prompt, &request.edit_prompt);
        let result = self.sample(&k.trajectory, source, target, &options, &progress);
        self.keep(k);
        status.send_modify(|st| st.unet_calls = p.unet_calls() - calls_before);
        result
    }

    fn sample(
        &self,
        trajectory: &Trajectory,
        source: &str,
        target: &str,
        options: &EditOptions,
        progress: &JobProgress<'_>,
    ) -> inversion::Result<Vec<u8>> {
        let p = &*self.pipeline;
        let latents = inversion::edit_from(p, trajectory, source, target, options, progress)?;
        let image = tensor_to_image(p.decode(latents, progress)?)?;
        crate::output::png_bytes(&image).map_err(|e| inversion::InversionError::Serialize {
            what: "the edited image",
            message: format!("{e:#}"),
        })
    }

    fn take(&mut self, key: &InversionKey) -> Option<Kept> {
        let i = self.kept.iter().position(|k| &k.key == key)?;
        Some(self.kept.remove(i))
    }

    fn keep(&mut self, k: Kept) {
        self.kept.push(k);
        if self.kept.len() > MAX_INVERSIONS {
            self.kept.remove(0);
        }
    }
}
