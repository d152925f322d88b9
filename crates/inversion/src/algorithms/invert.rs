//! DDIM inversion: the inverse steps from an image's latent x₀ towards noise, and the entry of
//! such a trajectory that sampling from a given start step begins at.

use burn::tensor::Tensor;

use super::{apply_step, check_start};
use crate::error::{InversionError, Result};
use crate::pipeline::{Conditioning, Pipeline, check_finite};
use crate::progress::{Phase, Progress};
use crate::trajectory::Trajectory;

/// Runs the first `count` of the `steps` inverse DDIM steps from x₀ (`count = steps` for the full
/// path). Returns the trajectory: entry j is the latent at inverse timestep s_{j+1}.
pub fn invert(
    p: &Pipeline,
    x0: Tensor<4>,
    cond: &Conditioning,
    steps: usize,
    count: usize,
    progress: &dyn Progress,
) -> Result<Trajectory> {
    let timesteps = p.schedule().inverse_timesteps(steps)?;
    let count = count.min(steps);
    progress.start(Phase::Inversion, count);
    let mut x = x0.clone();
    let mut entries = Vec::with_capacity(count);
    for &t in &timesteps[..count] {
        let out = p.guided_output(&x, t, cond)?;
        x = apply_step(&p.schedule().inverse_step(t, steps)?, x, out);
        entries.push(x.clone());
        progress.step(Phase::Inversion);
    }
    progress.finish(Phase::Inversion);
    if let Some(last) = entries.last() {
        check_finite(last, "inversion", p.dtype())?;
    }
    Ok(Trajectory {
        latents: Tensor::cat(entries, 0),
        timesteps: timesteps[..count].to_vec(),
        steps,
        metadata: Default::default(),
        origin: Some(x0),
    })
}

/// The latent at τ_start_step taken from a trajectory, after checking that the trajectory was made
/// with this schedule and reaches that far.
pub fn start_latents(
    p: &Pipeline,
    trajectory: &Trajectory,
    steps: usize,
    start_step: usize,
) -> Result<Tensor<4>> {
    check_start(steps, start_step)?;
    let mismatch = |message: String| Err(InversionError::TrajectoryMismatch { message });
    if trajectory.steps != steps {
        return Err(InversionError::TrajectorySteps {
            found: trajectory.steps,
            steps,
        });
    }
    let [_, c, h, w] = trajectory.latents.dims();
    let (channels, multiple) = (
        p.unet_config().in_channels,
        p.size_multiple() / p.vae_factor(),
    );
    if c != channels || !h.is_multiple_of(multiple) || !w.is_multiple_of(multiple) {
        return mismatch(format!(
            "holds latents of {c} channels at {h}x{w}, but this model needs {channels} channels at multiples of {multiple}"
        ));
    }
    let entry = steps - 1 - start_step;
    if entry >= trajectory.len() {
        return mismatch(format!(
            "has only {} entries, but start step {start_step} needs entry {entry}",
            trajectory.len()
        ));
    }
    let expected = p.schedule().timesteps(steps)?[start_step];
    if trajectory.timesteps[entry] != expected {
        return mismatch(format!(
            "entry {entry} is at timestep {}, but this model's schedule samples step {start_step} at {expected}",
            trajectory.timesteps[entry]
        ));
    }
    Ok(trajectory.entry(entry))
}
