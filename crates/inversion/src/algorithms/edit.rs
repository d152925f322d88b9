//! Prompt editing by inversion: encode → invert with the prompt that describes the image → sample
//! from an intermediate step with the edited prompt → decode.

use burn::tensor::Tensor;

use super::branches::{Inversion, SourcePath, branch_conditioning, sample_branches};
use super::check_start;
use super::invert::{invert, start_latents};
use super::null_text::{NullEmbeddings, NullTextOptions, optimize_null_text};
use super::p2p::{P2p, P2pOptions};
use super::sample::sample;
use crate::error::{InversionError, Result};
use crate::pipeline::Pipeline;
use crate::progress::Progress;
use crate::trajectory::Trajectory;

/// Classifier-free guidance of sampling when none is given: the diffusion course notebook's 3.5.
pub const DEFAULT_GUIDANCE: f64 = 3.5;

/// Guidance of the inversion when none is given: 1, i.e. the conditional branch alone, as
/// diffusers' Pix2Pix-Zero `invert` and null-text inversion's pivot invert. Measured with the toy
/// model (`cargo xtask eval-toy`, N = 50, k = 15, sampling guidance 3.5), colour edits keep the
/// shape's mask with IoU 0.896 this way against 0.857 when inverting at 3.5 as the notebook does.
pub const DEFAULT_INVERSION_GUIDANCE: f64 = 1.0;

/// The start step of a plain prompt swap when none is given: 30 % of the N steps skipped (15 of
/// 50), the fraction the diffusion course notebook's `edit()` uses (start step 30 of 100).
/// Measured with the toy model (unguided inversion, guidance 3.5, README's "Editing, measured"),
/// a plain swap's colour edits keep the shape's mask with IoU 0.896 from step 15 of 50, against
/// 0.818 for img2img.
pub fn plain_start_step(steps: usize) -> usize {
    steps * 3 / 10
}

/// The start step when none is given: 0 (every step sampled, as Prompt-to-Prompt and direct
/// inversion are published) with attention control, whose source branch holds the layout, and
/// [`plain_start_step`] for a plain prompt swap, which only the skipped steps keep on the photo.
pub fn default_start_step(steps: usize, attention: bool) -> usize {
    if attention {
        0
    } else {
        plain_start_step(steps)
    }
}

/// The inversion when none is named: `direct` with attention control (the source branch then
/// retraces the photo exactly at no extra UNet pass), `ddim` for a plain prompt swap, which has
/// no source branch to correct.
pub fn default_inversion(attention: bool) -> Inversion {
    if attention {
        Inversion::Direct
    } else {
        Inversion::Ddim
    }
}

/// Settings of an edit.
#[derive(Debug, Clone)]
pub struct EditOptions {
    pub steps: usize,
    pub start_step: usize,
    pub guidance: f64,
    pub inversion_guidance: f64,
    pub negative_prompt: String,
    /// How the source branch is kept on the photo's path.
    pub inversion: Inversion,
    /// Prompt-to-Prompt attention control, or none (a plain prompt swap).
    pub attention: Option<P2pOptions>,
}

impl EditOptions {
    /// The defaults of `ddim-edit edit` for `steps` steps: direct inversion with Prompt-to-Prompt
    /// from step 0, the best-scoring method of README's "Editing, measured".
    pub fn new(steps: usize) -> Self {
        Self {
            start_step: default_start_step(steps, true),
            inversion: default_inversion(true),
            attention: Some(P2pOptions::default()),
            ..Self::plain(steps)
        }
    }

    /// The diffusion course notebook's edit for `steps` steps: DDIM inversion, then the edited
    /// prompt alone sampled from [`plain_start_step`] (`ddim-edit edit --attention none`).
    pub fn plain(steps: usize) -> Self {
        Self {
            steps,
            start_step: plain_start_step(steps),
            guidance: DEFAULT_GUIDANCE,
            inversion_guidance: DEFAULT_INVERSION_GUIDANCE,
            negative_prompt: String::new(),
            inversion: Inversion::Ddim,
            attention: None,
        }
    }
}

/// What decides the inversion an edit samples from: edits with equal keys can share one
/// trajectory (invert once, edit many), inverted as deep as the earliest start step needs.
#[derive(Debug, Clone, PartialEq)]
pub struct InversionKey {
    /// The photo, as its caller names it (a path, a digest).
    pub image: String,
    pub prompt: String,
    /// The negative prompt, which only a guided inversion reads.
    pub negative_prompt: Option<String>,
    pub steps: usize,
    pub guidance_bits: u64,
    pub size: Option<(usize, usize)>,
}

impl InversionKey {
    pub fn new(image: &str, prompt: &str, o: &EditOptions, size: Option<(usize, usize)>) -> Self {
        let guided = o.inversion_guidance != 1.0;
        Self {
            image: image.to_string(),
            prompt: prompt.to_string(),
            negative_prompt: guided.then(|| o.negative_prompt.clone()),
            steps: o.steps,
            guidance_bits: o.inversion_guidance.to_bits(),
            size,
        }
    }
}

/// What an edit produces.
pub struct EditOutput {
    /// The inverse steps computed: entries 0..steps−start_step.
    pub trajectory: Trajectory,
    /// The final latents before decoding, `[1, C, h, w]`.
    pub latents: Tensor<4>,
    /// The decoded image `[1, 3, H, W]` in about [-1, 1].
    pub image: Tensor<4>,
}

/// Encode → invert with `source` → sample from `o.start_step` with `target` → decode.
pub fn edit(
    p: &Pipeline,
    image: Tensor<4>,
    source: &str,
    target: &str,
    o: &EditOptions,
    progress: &dyn Progress,
) -> Result<EditOutput> {
    let (trajectory, latents) = edit_latents(p, image, source, target, o, progress)?;
    let image = p.decode(latents.clone(), progress)?;
    Ok(EditOutput {
        trajectory,
        latents,
        image,
    })
}

/// [`edit`] without the decode (for another decoder): the inverse trajectory and the edited
/// latents `[1, C, h, w]`.
pub fn edit_latents(
    p: &Pipeline,
    image: Tensor<4>,
    source: &str,
    target: &str,
    o: &EditOptions,
    progress: &dyn Progress,
) -> Result<(Trajectory, Tensor<4>)> {
    check_start(o.steps, o.start_step)?;
    check_method(p, source, target, o)?;
    let x0 = p.encode(image, progress)?;
    let inv_cond = p.conditioning(source, &o.negative_prompt, o.inversion_guidance)?;
    let mut trajectory = invert(p, x0, &inv_cond, o.steps, o.steps - o.start_step, progress)?;
    if o.inversion == Inversion::NullText {
        trajectory.nulls = Some(null_embeddings(p, &trajectory, source, o, progress)?);
    }
    let latents = edit_from(p, &trajectory, source, target, o, progress)?;
    Ok((trajectory, latents))
}

/// The sampling half of an edit, from a trajectory that inverted the photo with `source`
/// (invert once, edit many): the edited latents `[1, C, h, w]`.
pub fn edit_from(
    p: &Pipeline,
    trajectory: &Trajectory,
    source: &str,
    target: &str,
    o: &EditOptions,
    progress: &dyn Progress,
) -> Result<Tensor<4>> {
    let mut control = check_method(p, source, target, o)?;
    let start = start_latents(p, trajectory, o.steps, o.start_step)?;
    let nulls = match o.inversion {
        Inversion::NullText => Some(null_embeddings(p, trajectory, source, o, progress)?),
        _ => None,
    };
    let Some(control) = control.as_mut() else {
        let negative = match o.inversion {
            Inversion::NegativePrompt => source,
            _ => &o.negative_prompt,
        };
        let mut cond = p.conditioning(target, negative, o.guidance)?;
        cond.nulls = nulls;
        return sample(p, start, &cond, o.steps, o.start_step, progress);
    };
    let mut cond = branch_conditioning(
        p,
        source,
        target,
        &o.negative_prompt,
        o.inversion,
        o.guidance,
    )?;
    cond.nulls = nulls;
    let path = match (o.inversion, &trajectory.origin) {
        (Inversion::Direct, None) => {
            return Err(InversionError::EditOption {
                flag: "--inversion",
                message: "direct needs the photo's latent x0, which this trajectory file does not hold: invert the photo again".into(),
            });
        }
        (Inversion::Direct, Some(origin)) => Some(SourcePath {
            trajectory: &trajectory.latents,
            origin,
        }),
        _ => None,
    };
    let both = sample_branches(
        p,
        start,
        &cond,
        o.steps,
        o.start_step,
        path,
        Some(control),
        progress,
    )?;
    let [_, c, h, w] = both.dims();
    Ok(both.slice([1..2, 0..c, 0..h, 0..w]))
}

/// The trajectory's null embeddings when they were optimised for this start step and guidance,
/// else new ones along it (from the negative prompt's states).
fn null_embeddings(
    p: &Pipeline,
    trajectory: &Trajectory,
    source: &str,
    o: &EditOptions,
    progress: &dyn Progress,
) -> Result<NullEmbeddings> {
    if let Some(n) = &trajectory.nulls
        && n.start_step == o.start_step
        && n.guidance == o.guidance
    {
        return Ok(n.clone());
    }
    optimize_null_text(
        p,
        trajectory,
        source,
        &o.negative_prompt,
        o.guidance,
        o.start_step,
        NullTextOptions::default(),
        progress,
    )
}

/// Checks that the inversion and attention options fit together and the prompts, before any
/// compute; returns the attention control to sample with.
pub fn check_method(
    p: &Pipeline,
    source: &str,
    target: &str,
    o: &EditOptions,
) -> Result<Option<P2p>> {
    if o.inversion == Inversion::NullText {
        let message = if o.guidance == 1.0 {
            Some(
                "null-text optimises the unconditional branch of guided sampling: use a --guidance other than 1",
            )
        } else if o.inversion_guidance != 1.0 {
            Some(
                "null-text retraces an unguided inversion (its pivot): leave --inversion-guidance at 1",
            )
        } else {
            None
        };
        if let Some(message) = message {
            return Err(InversionError::EditOption {
                flag: "--inversion",
                message: message.into(),
            });
        }
    }
    match &o.attention {
        None if o.inversion == Inversion::Direct => Err(InversionError::EditOption {
            flag: "--inversion",
            message: "direct corrects the source branch, which only an attention-controlled edit reads: use it with --attention p2p (with --attention none it equals ddim)".into(),
        }),
        None => Ok(None),
        Some(a) => Ok(Some(P2p::new(p, source, target, a, o.steps - o.start_step)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_start_step_skips_thirty_percent_and_is_always_valid() {
        // The notebook's edit(): start step 30 of 100; the CLI's 50 steps: 15.
        assert_eq!(plain_start_step(100), 30);
        assert_eq!(plain_start_step(50), 15);
        assert_eq!(plain_start_step(10), 3);
        assert_eq!(plain_start_step(3), 0);
        for n in 1..=1000 {
            assert!(check_start(n, plain_start_step(n)).is_ok(), "steps {n}");
            assert_eq!(default_start_step(n, false), plain_start_step(n));
            assert_eq!(default_start_step(n, true), 0);
        }
    }

    /// `edit`'s defaults are a valid method: direct inversion needs the attention control.
    #[test]
    fn the_defaults_pair_direct_inversion_with_attention_control() {
        let o = EditOptions::new(50);
        assert_eq!((o.inversion, o.start_step), (Inversion::Direct, 0));
        assert_eq!(o.attention, Some(P2pOptions::default()));
        assert_eq!(default_inversion(false), Inversion::Ddim);
        let plain = EditOptions::plain(50);
        assert_eq!(
            (plain.inversion, plain.start_step, plain.attention),
            (Inversion::Ddim, 15, None)
        );
    }
}
