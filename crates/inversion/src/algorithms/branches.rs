//! Sampling the source and the edited prompt's branches together, as one UNet batch per step:
//! what attention control needs (the edit branch reads the source's attention in the same pass),
//! and where the inversions that change the sampling act.
//!
//! The inversions (all invert unguided, as the pivot of null-text inversion):
//! - `ddim`: plain DDIM, the empty (negative) prompt as the unconditional branch;
//! - `negative-prompt` (Miyake et al., arXiv 2305.16807): the source prompt's states take the place
//!   of the unconditional ones, in both branches — no optimisation, no extra UNet calls;
//! - `null-text` (Mokady et al., arXiv 2211.09794): per-step unconditional states optimised so
//!   that guided sampling with the source prompt retraces the inversion ([`super::null_text`]),
//!   in both branches — an Adam loop of UNet forward + backward passes per step;
//! - `direct` (Ju et al., arXiv 2310.01506, "PnP Inversion"): after every step the source branch is
//!   set to the inversion's own latent at the next timestep, so it retraces the photo exactly and
//!   the edit branch reads the attention of the exact path; the same correction (exact latent minus
//!   the source's step) is added to the edit branch, as the paper code's `add_target` variant, so
//!   that an edit prompt equal to the source reconstructs the photo exactly (measured with the toy
//!   model over 12 held-out scenes at k = 15: 32.6 dB without it, 36.3 dB with it, the VAE's own
//!   round trip; colour and shape edits within 0.011 mask IoU of each other); no extra UNet calls.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Tensor;

use super::apply_step;
use super::p2p::P2p;
use crate::error::{InversionError, Result};
use crate::pipeline::{Conditioning, Pipeline, check_finite};
use crate::progress::{Phase, Progress};

/// How the photo is inverted and the source branch kept on its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Inversion {
    #[default]
    Ddim,
    NegativePrompt,
    NullText,
    Direct,
}

impl Inversion {
    pub const NAMES: [&str; 4] = ["ddim", "negative-prompt", "null-text", "direct"];

    pub fn name(self) -> &'static str {
        match self {
            Self::Ddim => "ddim",
            Self::NegativePrompt => "negative-prompt",
            Self::NullText => "null-text",
            Self::Direct => "direct",
        }
    }
}

impl fmt::Display for Inversion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Inversion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ddim" => Ok(Self::Ddim),
            "negative-prompt" => Ok(Self::NegativePrompt),
            "null-text" => Ok(Self::NullText),
            "direct" => Ok(Self::Direct),
            _ => Err(format!(
                "unknown inversion {s:?}; expected one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// Conditioning of the two branches `[source, edit]`: `[c_src, c_edit]` at guidance 1, else
/// `[u, u, c_src, c_edit]` with u the negative prompt's states, or the source prompt's for
/// negative-prompt inversion.
pub fn branch_conditioning(
    p: &Pipeline,
    source: &str,
    target: &str,
    negative: &str,
    inversion: Inversion,
    guidance: f64,
) -> Result<Conditioning> {
    if !guidance.is_finite() {
        return Err(InversionError::Guidance { value: guidance });
    }
    let (c_src, c_edit) = (p.text_states(source)?, p.text_states(target)?);
    let context = if guidance == 1.0 {
        Tensor::cat(vec![c_src, c_edit], 0)
    } else {
        let u = match inversion {
            Inversion::NegativePrompt => c_src.clone(),
            _ => p.text_states(negative)?,
        };
        Tensor::cat(vec![u.clone(), u, c_src, c_edit], 0)
    };
    Ok(Conditioning::new(context, guidance))
}

/// The exact source latents direct inversion resets the source branch to (and corrects the edit
/// branch by).
pub struct SourcePath<'a> {
    /// Inverse-trajectory entries: entry j at inverse timestep s_{j+1}.
    pub trajectory: &'a Tensor<4>,
    /// The photo's latent x₀, where the last step lands.
    pub origin: &'a Tensor<4>,
}

/// Samples both branches from `start` (the latent at τ_start_step, `[1, C, h, w]`) over steps
/// `start_step..steps`; returns `[2, C, h, w]` (source, edit).
#[allow(clippy::too_many_arguments)]
pub fn sample_branches(
    p: &Pipeline,
    start: Tensor<4>,
    cond: &Conditioning,
    steps: usize,
    start_step: usize,
    source_path: Option<SourcePath<'_>>,
    mut control: Option<&mut P2p>,
    progress: &dyn Progress,
) -> Result<Tensor<4>> {
    super::check_start(steps, start_step)?;
    let timesteps = p.schedule().timesteps(steps)?;
    progress.start(Phase::Sampling, steps - start_step);
    let mut x = Tensor::cat(vec![start.clone(), start], 0);
    let [_, c, h, w] = x.dims();
    for (i, &t) in timesteps[start_step..].iter().enumerate() {
        if let Some(ctl) = control.as_deref_mut() {
            ctl.set_step(i);
        }
        let hook = control
            .as_deref_mut()
            .map(|ctl| ctl as &mut dyn sd_models::unet::AttentionControl);
        let out = p.guided_output_with(&x, t, &*cond.at_step(start_step + i)?, hook)?;
        if let Some(ctl) = control.as_deref_mut() {
            ctl.observe(&out);
        }
        x = apply_step(&p.schedule().step(t, steps, 0.0)?, x, out);
        if let Some(path) = &source_path {
            // Global step k lands at τ_{k+1}: inverse entry steps−2−k, or x₀ after the last.
            let k = start_step + i;
            let exact = match (steps - 1).checked_sub(k + 1) {
                Some(_) => {
                    let j = steps - 2 - k;
                    path.trajectory.clone().slice([j..j + 1, 0..c, 0..h, 0..w])
                }
                None => path.origin.clone(),
            };
            // The source's correction, added to the edit branch too: with equal prompts the
            // two branches stay equal, so the edit reconstructs the photo exactly.
            let correction = exact.clone() - x.clone().slice([0..1, 0..c, 0..h, 0..w]);
            let edit = x.clone().slice([1..2, 0..c, 0..h, 0..w]) + correction;
            x = x.slice_assign([1..2, 0..c, 0..h, 0..w], edit);
            x = x.slice_assign([0..1, 0..c, 0..h, 0..w], exact);
        }
        if let Some(ctl) = control.as_deref() {
            x = ctl.blend(x);
        }
        super::stepped(progress, Phase::Sampling, &x)?;
    }
    progress.finish(Phase::Sampling);
    check_finite(&x, "sampling", p.dtype())?;
    Ok(x)
}
