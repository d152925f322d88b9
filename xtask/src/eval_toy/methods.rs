//! The ways of editing that eval-toy compares, at equal settings (N, k, guidance), and the
//! reconstruction (invert, then sample back with the same caption).

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::Instant;

use burn::tensor::{Tensor, TensorData};
use image::RgbImage;
use inversion::image::{image_to_tensor, tensor_to_image};
use inversion::noise::gaussian;
use inversion::{
    EditOptions, Inversion, NoProgress, NullTextOptions, P2pOptions, Pipeline, Trajectory,
};

/// The ways of editing compared.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Method {
    /// `edit`'s defaults: Prompt-to-Prompt over direct inversion, no blend (run it with
    /// `--start-step 0`, the default start step).
    #[value(name = "default")]
    Default,
    /// `edit`'s defaults with the local blend from the branches' difference: `--blend-auto`.
    #[value(name = "blend")]
    Blend,
    /// `edit`'s defaults with the layout held: `--feature-replace 0.8 --blend-auto`.
    #[value(name = "structure")]
    Structure,
    /// The plain prompt swap (`edit --attention none`).
    #[value(name = "inversion")]
    Inversion,
    /// The clean latent noised to τ_k with fresh noise.
    #[value(name = "img2img")]
    Img2Img,
    /// The diffusion course notebook's indexing.
    #[value(name = "tutorial")]
    Tutorial,
    /// Prompt-to-Prompt over DDIM inversion, blending on the words the prompts differ in.
    #[value(name = "p2p")]
    P2p,
    /// Negative-prompt inversion, plain prompt swap.
    #[value(name = "negative-prompt")]
    NegativePrompt,
    /// Negative-prompt inversion with Prompt-to-Prompt.
    #[value(name = "negative-prompt+p2p")]
    NegativePromptP2p,
    /// Direct inversion with Prompt-to-Prompt.
    #[value(name = "direct+p2p")]
    DirectP2p,
    /// Null-text inversion, plain prompt swap.
    #[value(name = "null-text")]
    NullText,
    /// Null-text inversion with Prompt-to-Prompt (the paper's combination).
    #[value(name = "null-text+p2p")]
    NullTextP2p,
    /// No edit: the photo encoded and decoded by the VAE. Every method's output passes through
    /// the decoder, so its IoU and PSNRs bound what any of them can keep.
    #[value(name = "vae")]
    Vae,
}

impl Method {
    /// The name in reports and tables.
    pub fn name(self) -> &'static str {
        match self {
            Method::Default => "default (direct+p2p, no blend)",
            Method::Blend => "default + auto blend",
            Method::Structure => "default + features 0.8, auto blend",
            Method::Inversion => "inversion",
            Method::Img2Img => "img2img",
            Method::Tutorial => "tutorial (off by one)",
            Method::P2p => "p2p",
            Method::NegativePrompt => "negative-prompt",
            Method::NegativePromptP2p => "negative-prompt+p2p",
            Method::DirectP2p => "direct+p2p",
            Method::NullText => "null-text",
            Method::NullTextP2p => "null-text+p2p",
            Method::Vae => "vae round trip (the ceiling)",
        }
    }

    /// Whether the method is one of `inversion::edit`'s (it samples from the scene's inversion).
    fn inverts(self) -> bool {
        !matches!(self, Method::Img2Img | Method::Tutorial | Method::Vae)
    }

    /// The inversion and attention control of the methods that are `inversion::edit` options.
    fn edit_options(self, source: &str, target: &str, o: &EditOptions) -> EditOptions {
        let p2p = || {
            let words = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
            let (a, b) = (words(source), words(target));
            let differ = a
                .iter()
                .chain(&b)
                .filter(|w| !(a.contains(w) && b.contains(w)));
            Some(P2pOptions {
                blend_words: differ.cloned().collect(),
                ..o.attention.clone().unwrap_or_default()
            })
        };
        let (inversion, attention) = match self {
            Method::Inversion => (Inversion::Ddim, None),
            Method::P2p => (Inversion::Ddim, p2p()),
            Method::NegativePrompt => (Inversion::NegativePrompt, None),
            Method::NegativePromptP2p => (Inversion::NegativePrompt, p2p()),
            Method::DirectP2p => (Inversion::Direct, p2p()),
            Method::Default => (Inversion::Direct, o.attention.clone()),
            Method::Blend => (
                Inversion::Direct,
                Some(P2pOptions {
                    blend_auto: true,
                    ..o.attention.clone().unwrap_or_default()
                }),
            ),
            Method::Structure => (
                Inversion::Direct,
                Some(P2pOptions {
                    feature_replace: inversion::algorithms::p2p::PNP_FEATURE_REPLACE,
                    blend_auto: true,
                    ..o.attention.clone().unwrap_or_default()
                }),
            ),
            Method::NullText => (Inversion::NullText, None),
            Method::NullTextP2p => (Inversion::NullText, p2p()),
            Method::Img2Img | Method::Tutorial | Method::Vae => (Inversion::Ddim, None),
        };
        EditOptions {
            inversion,
            attention,
            ..o.clone()
        }
    }
}

/// What an edit cost: wall time and UNet passes (null-text's forward and backward count one each).
#[derive(Clone, Copy, Default)]
pub struct Cost {
    pub seconds: f64,
    pub unet_calls: f64,
}

impl Cost {
    /// Runs `f`, measuring it.
    fn of<T>(p: &Pipeline, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(T, Cost)> {
        let (calls, started) = (p.unet_calls(), Instant::now());
        let out = f()?;
        let cost = Cost {
            seconds: started.elapsed().as_secs_f64(),
            unet_calls: (p.unet_calls() - calls) as f64,
        };
        Ok((out, cost))
    }

    fn plus(self, other: Cost) -> Cost {
        Cost {
            seconds: self.seconds + other.seconds,
            unet_calls: self.unet_calls + other.unet_calls,
        }
    }
}

/// One scene's inversion, shared by its edits (invert once, edit many, as `invert` then `sample
/// --latents`): the unguided DDIM trajectory and, once a null-text method asked, its null
/// embeddings, each with what it cost, so that every edit still reports the cost of doing it alone.
struct Inverted {
    trajectory: Trajectory,
    cost: Cost,
    null_cost: Option<Cost>,
}

/// The inversions of a run, by scene index (every edit of a run has the same N, k and guidance).
#[derive(Default)]
pub struct Inversions(RefCell<HashMap<usize, Inverted>>);

impl Inversions {
    /// Encodes and inverts scene `scene` (`image`, described by `source`) unless done, adds the
    /// null embeddings when `o` asks for null-text, and samples and decodes the edit from it.
    fn edit(
        &self,
        p: &Pipeline,
        scene: usize,
        image: Tensor<4>,
        source: &str,
        target: &str,
        o: &EditOptions,
    ) -> anyhow::Result<(Tensor<4>, Cost)> {
        inversion::check_method(p, source, target, o)?;
        let mut map = self.0.borrow_mut();
        let inv = match map.entry(scene) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let (trajectory, cost) = Cost::of(p, || {
                    let x0 = p.encode(image, &NoProgress)?;
                    let cond = p.conditioning(source, &o.negative_prompt, o.inversion_guidance)?;
                    let depth = o.steps - o.start_step;
                    Ok(inversion::invert(
                        p,
                        x0,
                        &cond,
                        o.steps,
                        depth,
                        &NoProgress,
                    )?)
                })?;
                e.insert(Inverted {
                    trajectory,
                    cost,
                    null_cost: None,
                })
            }
        };
        let mut cost = inv.cost;
        if o.inversion == Inversion::NullText {
            if inv.null_cost.is_none() {
                let (nulls, c) = Cost::of(p, || {
                    Ok(inversion::optimize_null_text(
                        p,
                        &inv.trajectory,
                        source,
                        &o.negative_prompt,
                        o.guidance,
                        o.start_step,
                        NullTextOptions::default(),
                        &NoProgress,
                    )?)
                })?;
                inv.trajectory.nulls = Some(nulls);
                inv.null_cost = Some(c);
            }
            cost = cost.plus(inv.null_cost.unwrap_or_default());
        }
        let (image, sampling) = Cost::of(p, || {
            let latents = inversion::edit_from(p, &inv.trajectory, source, target, o, &NoProgress)?;
            Ok(p.decode(latents, &NoProgress)?)
        })?;
        Ok((image, cost.plus(sampling)))
    }
}

/// Edits `image` (scene `scene`) from `source` to `target` prompt with `method` at N, k, g; the
/// result and what it cost.
#[allow(clippy::too_many_arguments)]
pub fn edit(
    p: &Pipeline,
    inversions: &Inversions,
    method: Method,
    scene: usize,
    image: &RgbImage,
    source: &str,
    target: &str,
    o: &EditOptions,
    seed: u64,
) -> anyhow::Result<(RgbImage, Cost)> {
    let size = (image.width() as usize, image.height() as usize);
    let x = image_to_tensor(image, size, p.device());
    let (n, k) = (o.steps, o.start_step);
    if method.inverts() {
        let options = method.edit_options(source, target, o);
        let (out, cost) = inversions.edit(p, scene, x, source, target, &options)?;
        return Ok((tensor_to_image(out)?, cost));
    }
    let (out, cost) = Cost::of(p, || {
        let x0 = p.encode(x, &NoProgress)?;
        let start = match method {
            Method::Img2Img => {
                let t = p.schedule().timesteps(n)?[k] as usize;
                let a = p.schedule().alphas_cumprod()[t];
                let dims = x0.dims();
                let noise = gaussian(seed, dims.iter().product());
                let noise = Tensor::<4>::from_data(TensorData::new(noise, dims), p.device());
                x0 * a.sqrt() + noise * (1.0 - a).sqrt()
            }
            Method::Tutorial => {
                let cond = p.conditioning(source, "", o.inversion_guidance)?;
                let trajectory = inversion::invert(p, x0, &cond, n, n, &NoProgress)?;
                trajectory.entry(n - 2 - k)
            }
            // The VAE round trip.
            _ => return Ok(p.decode(x0, &NoProgress)?),
        };
        let cond = p.conditioning(target, "", o.guidance)?;
        let latents = inversion::sample(p, start, &cond, n, k, &NoProgress)?;
        Ok(p.decode(latents, &NoProgress)?)
    })?;
    Ok((tensor_to_image(out)?, cost))
}

/// Invert with the caption and sample back from step 0 with it.
pub fn reconstruct(
    p: &Pipeline,
    image: &RgbImage,
    caption: &str,
    steps: usize,
    guidance: f64,
) -> anyhow::Result<RgbImage> {
    let size = (image.width() as usize, image.height() as usize);
    let x0 = p.encode(image_to_tensor(image, size, p.device()), &NoProgress)?;
    let cond = p.conditioning(caption, "", guidance)?;
    let trajectory = inversion::invert(p, x0, &cond, steps, steps, &NoProgress)?;
    let latents = inversion::sample(p, trajectory.entry(steps - 1), &cond, steps, 0, &NoProgress)?;
    Ok(tensor_to_image(p.decode(latents, &NoProgress)?)?)
}
