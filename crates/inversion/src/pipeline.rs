//! `Pipeline`: the loaded models of one Stable Diffusion folder, and the primitives every
//! algorithm is made of — embed prompts, one guided UNet evaluation, encode and decode.
//! The algorithms themselves are free functions over `&Pipeline` in [`crate::algorithms`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use ddim::{DdimSchedule, SchedulerConfig};
use sd_models::clip::{ClipTextModel, ClipTokenizer};
use sd_models::unet::{AttentionControl, UNet2DConditionModel, UNetConfig};
use sd_models::vae::{AutoencoderKL, VaeConfig};

pub use crate::conditioning::Conditioning;
use crate::error::{InversionError, Result};
use crate::progress::{Phase, Progress};

/// How to load a model folder.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    /// Compute dtype of the text encoder and UNet (the VAE always runs in f32).
    pub dtype: DType,
    /// Weight file variant (`fp16`): `model.fp16.safetensors` etc.
    pub variant: Option<String>,
}

impl LoadOptions {
    pub fn new(device: Device) -> Self {
        Self {
            device,
            dtype: DType::F32,
            variant: None,
        }
    }
}

/// The components a pipeline is built from: what [`Pipeline::load`] reads from a folder, or
/// models built in code (random-weight presets for benchmarks).
pub struct Parts {
    /// The folder the components came from (names them in errors).
    pub dir: PathBuf,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel,
    pub unet: UNet2DConditionModel,
    pub unet_config: UNetConfig,
    pub vae: AutoencoderKL,
    pub vae_config: VaeConfig,
    pub schedule: DdimSchedule,
    pub device: Device,
    /// Compute dtype of the text encoder and UNet.
    pub dtype: DType,
}

/// The models and schedule of a Stable Diffusion folder, checked to fit together.
pub struct Pipeline {
    parts: Parts,
    /// UNet forward passes so far (of any batch size): the work `ddim-edit batch` reports per job.
    unet_calls: AtomicU64,
}

/// How many times its native size on a side an image may be (2048 px for a 512 px model).
pub const MAX_SIZE_FACTOR: usize = 4;

impl Pipeline {
    /// Loads a diffusers-layout folder (`model_index.json`, `scheduler/`, `tokenizer/`,
    /// `text_encoder/`, `unet/`, `vae/`) and checks that its components fit together.
    pub fn load(dir: &Path, options: &LoadOptions) -> Result<Self> {
        crate::checks::index(dir)?;
        let variant = options.variant.as_deref();
        let device = &options.device;
        let scheduler_config =
            SchedulerConfig::from_file(dir.join("scheduler/scheduler_config.json"))?;
        let tokenizer = ClipTokenizer::from_dir(&dir.join("tokenizer"))?;
        let text_encoder =
            ClipTextModel::load(&dir.join("text_encoder"), variant, options.dtype, device)?;
        let (unet, unet_config) =
            UNet2DConditionModel::load(&dir.join("unet"), variant, options.dtype, device)?;
        let (vae, vae_config) = AutoencoderKL::load(&dir.join("vae"), variant, DType::F32, device)?;
        Self::from_parts(Parts {
            dir: dir.to_path_buf(),
            tokenizer,
            text_encoder,
            unet,
            unet_config,
            vae,
            vae_config,
            schedule: DdimSchedule::new(scheduler_config)?,
            device: device.clone(),
            dtype: options.dtype,
        })
    }

    /// A pipeline of components built elsewhere, after the same cross-checks as `load`.
    pub fn from_parts(parts: Parts) -> Result<Self> {
        crate::checks::components(&parts)?;
        Ok(Self {
            parts,
            unet_calls: AtomicU64::new(0),
        })
    }

    /// The folder the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.parts.dir
    }

    pub fn device(&self) -> &Device {
        &self.parts.device
    }

    /// Compute dtype of the text encoder and UNet.
    pub fn dtype(&self) -> DType {
        self.parts.dtype
    }

    /// Counts a UNet pass run outside [`guided_output_with`](Self::guided_output_with) (null-text's
    /// forward + backward on the autodiff device).
    pub(crate) fn count_unet_call(&self) {
        self.unet_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// How many UNet forward passes this pipeline has run, whatever their batch size.
    pub fn unet_calls(&self) -> u64 {
        self.unet_calls.load(Ordering::Relaxed)
    }

    pub fn schedule(&self) -> &DdimSchedule {
        &self.parts.schedule
    }

    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.parts.tokenizer
    }

    pub fn unet(&self) -> &UNet2DConditionModel {
        &self.parts.unet
    }

    pub fn unet_config(&self) -> &UNetConfig {
        &self.parts.unet_config
    }

    pub fn vae_config(&self) -> &VaeConfig {
        &self.parts.vae_config
    }

    /// Image pixels per latent pixel.
    pub fn vae_factor(&self) -> usize {
        self.parts.vae_config.downsample_factor()
    }

    /// Width and height must be multiples of this (VAE factor × the UNet's down-sampling).
    pub fn size_multiple(&self) -> usize {
        self.vae_factor()
            << self
                .parts
                .unet_config
                .block_out_channels
                .len()
                .saturating_sub(1)
    }

    /// The model's native image size: UNet `sample_size` × VAE factor (512 for SD 2.1-base).
    pub fn native_size(&self) -> (usize, usize) {
        let s = self.parts.unet_config.sample_size.unwrap_or(64) * self.vae_factor();
        (s, s)
    }

    /// Checks that (width, height) fits the model, naming the nearest valid sizes otherwise.
    pub fn check_size(&self, width: usize, height: usize) -> Result<()> {
        let m = self.size_multiple();
        if width > 0 && height > 0 && width.is_multiple_of(m) && height.is_multiple_of(m) {
            return Ok(());
        }
        let near = |v: usize| match (v / m) * m {
            0 => vec![m],
            lo if lo == v => vec![v],
            lo => vec![lo, lo + m],
        };
        let suggestions: Vec<String> = near(width)
            .into_iter()
            .flat_map(|w| near(height).into_iter().map(move |h| format!("{w}x{h}")))
            .collect();
        Err(InversionError::Size {
            width,
            height,
            multiple: m,
            suggestions: suggestions.join(", "),
        })
    }

    /// Checks that (width, height) is at most [`MAX_SIZE_FACTOR`] times the native size on each
    /// side: beyond it a model gives repeated, broken compositions anyway, and the cost explodes.
    pub fn check_size_limit(&self, width: usize, height: usize) -> Result<()> {
        let native = self.native_size().0;
        let max = native * MAX_SIZE_FACTOR;
        if width <= max && height <= max {
            return Ok(());
        }
        Err(InversionError::TooLarge {
            width,
            height,
            native,
            factor: MAX_SIZE_FACTOR,
            max,
        })
    }

    /// The text encoder's `last_hidden_state` for one prompt, `[1, 77, dim]`.
    pub fn text_states(&self, prompt: &str) -> Result<Tensor<3>> {
        let tokens = self.parts.tokenizer.encode(prompt)?;
        let n = tokens.ids.len();
        let ids: Vec<i64> = tokens.ids.iter().map(|&i| i64::from(i)).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &self.parts.device);
        Ok(self.parts.text_encoder.forward(ids)?)
    }

    /// Conditioning for `prompt` with guidance `guidance` against `negative` (usually "").
    pub fn conditioning(
        &self,
        prompt: &str,
        negative: &str,
        guidance: f64,
    ) -> Result<Conditioning> {
        if !guidance.is_finite() {
            return Err(InversionError::Guidance { value: guidance });
        }
        let cond = self.text_states(prompt)?;
        let context = if guidance == 1.0 {
            cond
        } else {
            Tensor::cat(vec![self.text_states(negative)?, cond], 0)
        };
        Ok(Conditioning::new(context, guidance))
    }

    /// The guided model output at timestep `t`: ε_u + g·(ε_c − ε_u) from one batch-2 UNet call, or the
    /// conditional output alone when g = 1.
    ///
    /// # Shapes
    /// - latents, output: `[1, C, h, w]`
    pub fn guided_output(
        &self,
        latents: &Tensor<4>,
        t: i64,
        cond: &Conditioning,
    ) -> Result<Tensor<4>> {
        self.guided_output_with(latents, t, cond, None)
    }

    /// [`guided_output`](Self::guided_output) for `n` latents at once, with an optional attention
    /// control: `cond` holds `n` conditional states (g = 1) or `n` unconditional then `n`
    /// conditional ones, and the UNet runs on `[latents]` or `[latents, latents]`.
    ///
    /// # Shapes
    /// - latents, output: `[n, C, h, w]`; cond.context: `[n or 2n, tokens, dim]`
    pub fn guided_output_with(
        &self,
        latents: &Tensor<4>,
        t: i64,
        cond: &Conditioning,
        control: Option<&mut dyn AttentionControl>,
    ) -> Result<Tensor<4>> {
        let x = latents.clone().cast(self.parts.dtype);
        let [n, c, h, w] = x.dims();
        let unet = &self.parts.unet;
        self.unet_calls.fetch_add(1, Ordering::Relaxed);
        if cond.batch() == n {
            let out = unet.forward_with(x, &[t as f64], cond.context.clone(), control)?;
            return Ok(out.cast(DType::F32));
        }
        let input = Tensor::cat(vec![x.clone(), x], 0);
        let out = unet.forward_with(input, &[t as f64], cond.context.clone(), control)?;
        let out = out.cast(DType::F32);
        let uncond = out.clone().slice([0..n, 0..c, 0..h, 0..w]);
        let cond_out = out.slice([n..2 * n, 0..c, 0..h, 0..w]);
        Ok(uncond.clone() + (cond_out - uncond) * cond.guidance)
    }

    /// Latents of an image `[1, 3, H, W]` in [-1, 1]: the posterior mean (minus `shift_factor`)
    /// times `scaling_factor`, as one `Encode` phase.
    pub fn encode(&self, image: Tensor<4>, progress: &dyn Progress) -> Result<Tensor<4>> {
        progress.start(Phase::Encode, 1);
        let mut x = self.parts.vae.encode(image)?.mean;
        if let Some(shift) = self.parts.vae_config.shift_factor {
            x = x - shift;
        }
        let x = x * self.parts.vae_config.scaling_factor;
        progress.finish(Phase::Encode);
        check_finite(&x, "VAE encode", DType::F32)?;
        Ok(x)
    }

    /// Image `[1, 3, H, W]` (about [-1, 1]) of latents: divided by `scaling_factor` (plus
    /// `shift_factor`) and decoded, as one `Decode` phase.
    pub fn decode(&self, latents: Tensor<4>, progress: &dyn Progress) -> Result<Tensor<4>> {
        progress.start(Phase::Decode, 1);
        let mut x = latents / self.parts.vae_config.scaling_factor;
        if let Some(shift) = self.parts.vae_config.shift_factor {
            x = x + shift;
        }
        let image = self.parts.vae.decode(x)?;
        progress.finish(Phase::Decode);
        check_finite(&image, "VAE decode", DType::F32)?;
        Ok(image)
    }

    /// Gaussian starting latents for text-to-image at `size` = (width, height), from `seed`.
    pub fn noise_latents(&self, seed: u64, size: (usize, usize)) -> Tensor<4> {
        let f = self.vae_factor();
        let (h, w) = (size.1 / f, size.0 / f);
        let c = self.parts.unet_config.in_channels;
        let data = crate::noise::gaussian(seed, c * h * w);
        Tensor::from_data(TensorData::new(data, [1, c, h, w]), &self.parts.device)
    }
}

/// The likely causes of NaN/inf from a stage computed in `dtype`.
pub(crate) fn non_finite_causes(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 | DType::BF16 => {
            "f16/bf16 overflow is the usual cause (of black images too): compute in f32"
        }
        _ => {
            "in f32 the likely causes are corrupt or mismatched weights, a wrong scaling_factor in vae/config.json, or an extreme guidance scale"
        }
    }
}

/// Fails with [`InversionError::NonFinite`] when `x` holds NaN or ±inf; `dtype` is what the
/// stage computed in.
pub(crate) fn check_finite(x: &Tensor<4>, stage: &'static str, dtype: DType) -> Result<()> {
    // A NaN or inf anywhere makes the sum of magnitudes non-finite.
    let total: f32 = x.clone().abs().sum().into_scalar::<f32>();
    if total.is_finite() {
        Ok(())
    } else {
        Err(InversionError::NonFinite {
            stage,
            causes: non_finite_causes(dtype),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NaN/inf in f32 is not blamed on reduced precision, and in f16/bf16 it is.
    #[test]
    fn non_finite_errors_name_the_likely_causes_for_the_dtype() {
        let device = Device::flex();
        let x = Tensor::<4>::from_data(
            TensorData::new(vec![1.0f32, f32::NAN], [1, 1, 1, 2]),
            &device,
        );
        let f32_err = check_finite(&x, "sampling", DType::F32)
            .unwrap_err()
            .to_string();
        assert!(
            f32_err.contains("sampling") && f32_err.contains("scaling_factor"),
            "{f32_err}"
        );
        assert!(!f32_err.contains("f16"), "{f32_err}");
        let f16_err = check_finite(&x, "sampling", DType::F16)
            .unwrap_err()
            .to_string();
        assert!(f16_err.contains("compute in f32"), "{f16_err}");
        let ok = Tensor::<4>::from_data(TensorData::new(vec![1.0f32, 2.0], [1, 1, 1, 2]), &device);
        assert!(check_finite(&ok, "sampling", DType::F32).is_ok());
    }
}
