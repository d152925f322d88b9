//! DDIM sampling (eta 0) from an intermediate step: the forward half of an edit, and
//! text-to-image from noise when it starts at step 0.

use burn::tensor::Tensor;

use super::{apply_step, check_start, stepped};
use crate::error::Result;
use crate::pipeline::{Conditioning, Pipeline, check_finite};
use crate::progress::{Phase, Progress};

/// Runs sampler steps `start_step..steps` from `latents` (the latent at τ_start_step), eta 0.
pub fn sample(
    p: &Pipeline,
    latents: Tensor<4>,
    cond: &Conditioning,
    steps: usize,
    start_step: usize,
    progress: &dyn Progress,
) -> Result<Tensor<4>> {
    check_start(steps, start_step)?;
    let timesteps = p.schedule().timesteps(steps)?;
    progress.start(Phase::Sampling, steps - start_step);
    let mut x = latents;
    for (i, &t) in timesteps.iter().enumerate().skip(start_step) {
        let out = p.guided_output(&x, t, &*cond.at_step(i)?)?;
        x = apply_step(&p.schedule().step(t, steps, 0.0)?, x, out);
        stepped(progress, Phase::Sampling, &x)?;
    }
    progress.finish(Phase::Sampling);
    check_finite(&x, "sampling", p.dtype())?;
    Ok(x)
}
