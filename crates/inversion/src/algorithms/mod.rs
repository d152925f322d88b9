//! The algorithms, as free functions over a loaded [`Pipeline`](crate::Pipeline), one module
//! each: DDIM inversion, sampling from an intermediate step, and prompt editing (both in turn).
//!
//! DDIM (Song et al., arXiv 2010.02502) is deterministic, so running its update backwards maps an
//! image's latent x₀ to noisy latents that the sampler maps back to (nearly) x₀; sampling from an
//! intermediate step with another prompt changes what the prompt changes and keeps the layout.
//! Indexing follows diffusers' `DDIMInverseScheduler` + `DDIMScheduler` exactly: with N steps the
//! inverse timesteps are s_1 < … < s_N, the sampler's are τ_i = s_{N−i}, and trajectory entry j
//! (0-based) is the latent at s_{j+1}. Sampling from start step k starts at entry N−1−k, the latent at
//! τ_k, so an edit needs only the first N−k inverse steps.

pub mod blend;
pub mod branches;
pub mod edit;
pub mod invert;
pub mod null_text;
pub mod p2p;
pub mod sample;

use burn::tensor::Tensor;
use ddim::StepCoefficients;

use crate::error::{InversionError, Result};
use crate::progress::{Phase, Progress};

/// Reports a finished step of `phase` with its latents, then stops the run if the observer asks.
pub(crate) fn stepped(progress: &dyn Progress, phase: Phase, x: &Tensor<4>) -> Result<()> {
    progress.step(phase);
    progress.latents(phase, x);
    if progress.cancelled() {
        return Err(InversionError::Cancelled);
    }
    Ok(())
}

/// One DDIM update applied to tensors: x is the current latent, m the guided model output.
pub fn apply_step(c: &StepCoefficients, x: Tensor<4>, m: Tensor<4>) -> Tensor<4> {
    match c.clip {
        None => {
            let (a, b) = c.linear();
            x * a + m * b
        }
        Some(r) => {
            let x0 = (x.clone() * c.x0_from_sample + m.clone() * c.x0_from_output).clamp(-r, r);
            let eps = x * c.eps_from_sample + m * c.eps_from_output;
            x0 * c.x0_weight + eps * c.eps_weight
        }
    }
}

/// Checks `steps` and `start_step` together.
pub fn check_start(steps: usize, start_step: usize) -> Result<()> {
    if steps == 0 {
        return Err(InversionError::NoSteps);
    }
    if start_step >= steps {
        return Err(InversionError::StartStep {
            start: start_step,
            steps,
        });
    }
    Ok(())
}
