//! The ways of editing that eval-toy compares, at equal settings (N, k, guidance), and the
//! reconstruction (invert, then sample back with the same caption).

use burn::tensor::{Tensor, TensorData};
use image::RgbImage;
use inversion::image::{image_to_tensor, tensor_to_image};
use inversion::noise::gaussian;
use inversion::{EditOptions, Inversion, NoProgress, P2pOptions, Pipeline};

/// The ways of editing compared.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Method {
    /// This project's edit.
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
                ..P2pOptions::default()
            })
        };
        let (inversion, attention) = match self {
            Method::Inversion => (Inversion::Ddim, None),
            Method::P2p => (Inversion::Ddim, p2p()),
            Method::NegativePrompt => (Inversion::NegativePrompt, None),
            Method::NegativePromptP2p => (Inversion::NegativePrompt, p2p()),
            Method::DirectP2p => (Inversion::Direct, p2p()),
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

/// Edits `image` from `source` to `target` prompt with `method` at N, k, g.
pub fn edit(
    p: &Pipeline,
    method: Method,
    image: &RgbImage,
    source: &str,
    target: &str,
    o: &EditOptions,
    seed: u64,
) -> anyhow::Result<RgbImage> {
    let size = (image.width() as usize, image.height() as usize);
    let x = image_to_tensor(image, size, p.device());
    let (n, k) = (o.steps, o.start_step);
    let start = match method {
        Method::Inversion
        | Method::P2p
        | Method::NegativePrompt
        | Method::NegativePromptP2p
        | Method::DirectP2p
        | Method::NullText
        | Method::NullTextP2p => {
            let options = method.edit_options(source, target, o);
            let out = inversion::edit(p, x, source, target, &options, &NoProgress)?;
            return Ok(tensor_to_image(out.image)?);
        }
        Method::Img2Img => {
            let x0 = p.encode(x, &NoProgress)?;
            let t = p.schedule().timesteps(n)?[k] as usize;
            let a = p.schedule().alphas_cumprod()[t];
            let dims = x0.dims();
            let noise = gaussian(seed, dims.iter().product());
            let noise = Tensor::<4>::from_data(TensorData::new(noise, dims), p.device());
            x0 * a.sqrt() + noise * (1.0 - a).sqrt()
        }
        Method::Vae => {
            let x0 = p.encode(x, &NoProgress)?;
            return Ok(tensor_to_image(p.decode(x0, &NoProgress)?)?);
        }
        Method::Tutorial => {
            let x0 = p.encode(x, &NoProgress)?;
            let cond = p.conditioning(source, "", o.inversion_guidance)?;
            let trajectory = inversion::invert(p, x0, &cond, n, n, &NoProgress)?;
            trajectory.entry(n - 2 - k)
        }
    };
    let cond = p.conditioning(target, "", o.guidance)?;
    let latents = inversion::sample(p, start, &cond, n, k, &NoProgress)?;
    Ok(tensor_to_image(p.decode(latents, &NoProgress)?)?)
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
