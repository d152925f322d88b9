//! DDIM inversion: the inverse steps from an image's latent x₀ towards noise, and the entry of
//! such a trajectory that sampling from a given start step begins at.

use burn::tensor::Tensor;

use super::{apply_step, check_start, stepped};
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
    let entries = inverse_steps(p, x0.clone(), cond, steps, 0..count, progress)?;
    Ok(Trajectory {
        latents: Tensor::cat(entries, 0),
        timesteps: timesteps[..count].to_vec(),
        steps,
        metadata: Default::default(),
        origin: Some(x0),
        nulls: None,
    })
}

/// Continues an inversion made with `cond` until it holds `count` entries (at most its `steps`),
/// from its last entry: the same latents, bit for bit, as inverting `count` steps at once. Does
/// nothing when it is long enough already (invert once, edit from any start step).
pub fn extend_inversion(
    p: &Pipeline,
    trajectory: &mut Trajectory,
    cond: &Conditioning,
    count: usize,
    progress: &dyn Progress,
) -> Result<()> {
    let (steps, have) = (trajectory.steps, trajectory.len());
    let count = count.min(steps);
    if count <= have {
        return Ok(());
    }
    let timesteps = p.schedule().inverse_timesteps(steps)?;
    if trajectory.timesteps[..] != timesteps[..have] {
        return Err(InversionError::TrajectoryMismatch {
            message: "was not made with this model's schedule, so it cannot be continued".into(),
        });
    }
    let (last, mut entries) = match (have, &trajectory.origin) {
        (0, Some(x0)) => (x0.clone(), vec![]),
        (0, None) => {
            return Err(InversionError::TrajectoryMismatch {
                message: "holds neither entries nor the photo's latent x0 to continue from".into(),
            });
        }
        _ => (trajectory.entry(have - 1), vec![trajectory.latents.clone()]),
    };
    entries.extend(inverse_steps(p, last, cond, steps, have..count, progress)?);
    trajectory.latents = Tensor::cat(entries, 0);
    trajectory.timesteps = timesteps[..count].to_vec();
    Ok(())
}

/// Inverse steps `range` of `steps` from `x`, the latent before the first of them; returns the
/// latent after each.
fn inverse_steps(
    p: &Pipeline,
    mut x: Tensor<4>,
    cond: &Conditioning,
    steps: usize,
    range: std::ops::Range<usize>,
    progress: &dyn Progress,
) -> Result<Vec<Tensor<4>>> {
    let timesteps = p.schedule().inverse_timesteps(steps)?;
    progress.start(Phase::Inversion, range.len());
    let mut entries = Vec::with_capacity(range.len());
    for &t in &timesteps[range] {
        let out = p.guided_output(&x, t, cond)?;
        x = apply_step(&p.schedule().inverse_step(t, steps)?, x, out);
        entries.push(x.clone());
        stepped(progress, Phase::Inversion, &x)?;
    }
    progress.finish(Phase::Inversion);
    if let Some(last) = entries.last() {
        check_finite(last, "inversion", p.dtype())?;
    }
    Ok(entries)
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
