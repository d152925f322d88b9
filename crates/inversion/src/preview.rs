//! A fast decoder for previews: TAESD (`AutoencoderTiny`, see `sd_models::vae::tiny`) in place
//! of the VAE's decoder. It takes the latents as sampling leaves them, like diffusers'
//! pipelines with `pipe.vae = AutoencoderTiny.from_pretrained("madebyollin/taesd")`; the picture
//! is a little softer than the VAE's, for a small fraction of the time.

use std::path::Path;

use burn::tensor::{DType, Tensor};
use sd_models::vae::{AutoencoderTiny, AutoencoderTinyConfig};

use crate::error::{InversionError, Result};
use crate::pipeline::{Pipeline, check_finite};
use crate::progress::{Phase, Progress};

/// A TAESD decoder checked to fit a pipeline's latent space.
pub struct PreviewDecoder {
    model: AutoencoderTiny,
}

impl PreviewDecoder {
    /// Loads a TAESD folder (`config.json`, `diffusion_pytorch_model.safetensors`) onto the
    /// pipeline's device, and checks that its latents are the pipeline's: the same channels and
    /// down-sampling factor.
    pub fn load(dir: &Path, p: &Pipeline) -> Result<Self> {
        let (model, config) = AutoencoderTiny::load(dir, None, p.device())?;
        check_fits(dir, &config, p)?;
        Ok(Self { model })
    }

    /// Image `[1, 3, H, W]` (about [-1, 1]) of latents, as one `Decode` phase.
    pub fn decode(&self, latents: Tensor<4>, progress: &dyn Progress) -> Result<Tensor<4>> {
        progress.start(Phase::Decode, 1);
        let image = self.model.decode(latents)?;
        progress.finish(Phase::Decode);
        check_finite(&image, "preview decode", DType::F32)?;
        Ok(image)
    }
}

fn check_fits(dir: &Path, c: &AutoencoderTinyConfig, p: &Pipeline) -> Result<()> {
    let (channels, factor) = (p.vae_config().latent_channels, p.vae_factor());
    if c.latent_channels == channels && c.downsample_factor() == factor {
        return Ok(());
    }
    Err(InversionError::Components {
        first: dir.join("config.json"),
        second: p.dir().join("vae/config.json"),
        message: format!(
            "the preview decoder takes {} latent channels at 1/{} of the image size, the model's VAE {channels} at 1/{factor}: use the TAESD of this model's family (madebyollin/taesd for SD 1.x and 2.x)",
            c.latent_channels,
            c.downsample_factor()
        ),
    })
}
