//! `UNet2DConditionModel` of diffusers: the noise predictor of Stable Diffusion
//! (Rombach et al., arXiv 2112.10752), built from its `config.json`.

pub mod blocks;
pub mod config;
pub mod control;
pub mod embeddings;
pub mod transformer;

use std::path::Path;

use burn::module::Module;
use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Device, Tensor};

pub use config::{PerBlock, UNetConfig};
pub use control::{AttentionControl, AttentionKind, AttentionSite, Hooks, Place, ResnetSite};

use crate::cpu::{conv2d_forward, group_norm_silu};
use crate::error::{ModelError, Result};
use crate::layers::{conv2d, group_norm};
use crate::weights;
use blocks::{BlockSpec, DownBlock, MidBlock2DCrossAttn, UpBlock};
use config::BlockConfig;
use embeddings::{TimestepEmbedding, timestep_features};
use transformer::TransformerSpec;

/// `UNet2DConditionModel`.
#[derive(Module, Debug)]
pub struct UNet2DConditionModel {
    pub time_embedding: TimestepEmbedding,
    pub conv_in: Conv2d,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: MidBlock2DCrossAttn,
    pub up_blocks: Vec<UpBlock>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
    pub flip_sin_to_cos: bool,
    pub freq_shift: usize,
}

impl UNet2DConditionModel {
    /// Builds the UNet with lazily initialised random weights. `path` names the config in errors.
    pub fn new(config: &UNetConfig, path: &Path, device: &Device) -> Result<Self> {
        let r = config.resolved(path)?;
        let ch = &config.block_out_channels;
        let n = ch.len();
        let temb = ch[0] * 4;
        let s = BlockSpec {
            temb,
            groups: config.norm_num_groups,
            eps: config.norm_eps,
        };
        let down_blocks = r
            .down
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let cin = if i == 0 { ch[0] } else { ch[i - 1] };
                let t = b
                    .kind
                    .has_cross_attention()
                    .then(|| transformer_spec(b, config));
                let downsample = i + 1 < n;
                DownBlock::new(cin, b, t, downsample, config.downsample_padding, s, device)
            })
            .collect();
        let mid_block =
            MidBlock2DCrossAttn::new(ch[n - 1], transformer_spec(&r.mid, config), s, device);
        // Up block i mirrors down block n−1−i.
        let up_blocks =
            r.up.iter()
                .enumerate()
                .map(|(i, b)| {
                    let j = n - 1 - i;
                    let prev = if i == 0 { ch[n - 1] } else { ch[j + 1] };
                    let skip_in = ch[j.saturating_sub(1)];
                    let t = b
                        .kind
                        .has_cross_attention()
                        .then(|| transformer_spec(b, config));
                    UpBlock::new(prev, skip_in, b, t, i + 1 < n, s, device)
                })
                .collect();
        Ok(Self {
            time_embedding: TimestepEmbedding::new(ch[0], temb, device),
            conv_in: conv2d(config.in_channels, ch[0], 3, 1, 1, device),
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: group_norm(config.norm_num_groups, ch[0], config.norm_eps, device),
            conv_out: conv2d(ch[0], config.out_channels, 3, 1, 1, device),
            flip_sin_to_cos: config.flip_sin_to_cos,
            freq_shift: config.freq_shift,
        })
    }

    /// Loads `unet/` (config.json + diffusion_pytorch_model[.variant].safetensors).
    pub fn load(
        dir: &Path,
        variant: Option<&str>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, UNetConfig)> {
        let path = dir.join("config.json");
        let config = UNetConfig::from_file(&path)?;
        let file = weights::weights_file(dir, "diffusion_pytorch_model", variant)?;
        let model = weights::load(Self::new(&config, &path, device)?, &file, dtype)?;
        Ok((model, config))
    }

    /// The time embedding for `timesteps` (one per batch item): reusable across calls with the same
    /// timesteps, e.g. both halves of a classifier-free-guidance batch.
    ///
    /// # Shapes
    /// - output: `[timesteps.len(), 4·block_out_channels[0]]`
    pub fn time_embedding(&self, timesteps: &[f64], device: &Device) -> Tensor<2> {
        let dim = self.conv_in.weight.lazy_shape()[0];
        let features = timestep_features(
            timesteps,
            dim,
            self.flip_sin_to_cos,
            self.freq_shift as f64,
            device,
        );
        let dtype = self.conv_in.weight.val().dtype();
        self.time_embedding.forward(features.cast(dtype))
    }

    /// Predicts the model output (ε, v or x₀ per the scheduler) for noisy latents at `timesteps`.
    ///
    /// # Shapes
    /// - sample: `[batch, in_channels, h, w]` (any h, w ≥ 1)
    /// - timesteps: `batch` values, or one value shared by the batch
    /// - context: `[batch, text_tokens, cross_attention_dim]`
    /// - output: `[batch, out_channels, h, w]`
    pub fn forward(
        &self,
        sample: Tensor<4>,
        timesteps: &[f64],
        context: Tensor<3>,
    ) -> Result<Tensor<4>> {
        self.forward_with(sample, timesteps, context, None)
    }

    /// [`forward`](Self::forward) with an optional attention control (see [`control`]).
    pub fn forward_with(
        &self,
        sample: Tensor<4>,
        timesteps: &[f64],
        context: Tensor<3>,
        control: Option<&mut dyn AttentionControl>,
    ) -> Result<Tensor<4>> {
        let [b, c, _, _] = sample.dims();
        let cin = self.conv_in.weight.lazy_shape()[1];
        if c != cin {
            return Err(ModelError::InputShape {
                what: "UNet sample",
                expected: format!("[batch, {cin}, height, width]"),
                found: sample.dims().to_vec(),
            });
        }
        if context.dims()[0] != b {
            return Err(ModelError::InputShape {
                what: "UNet encoder_hidden_states",
                expected: format!("batch {b}"),
                found: context.dims().to_vec(),
            });
        }
        let ts: Vec<f64> = match timesteps.len() {
            1 => vec![timesteps[0]; b],
            n if n == b => timesteps.to_vec(),
            n => {
                return Err(ModelError::InputShape {
                    what: "UNet timesteps",
                    expected: format!("1 or {b} values"),
                    found: vec![n],
                });
            }
        };
        let temb = self.time_embedding(&ts, &sample.device());
        let mut hooks = match control {
            Some(control) => Hooks::new(control),
            None => Hooks::none(),
        };
        Ok(self.forward_hooked(sample, &temb, &context, &mut hooks))
    }

    /// [`forward`](Self::forward) with a precomputed time embedding (no input checks).
    pub fn forward_with_embedding(
        &self,
        sample: Tensor<4>,
        temb: &Tensor<2>,
        context: &Tensor<3>,
    ) -> Tensor<4> {
        self.forward_hooked(sample, temb, context, &mut Hooks::none())
    }

    /// [`forward_with_embedding`](Self::forward_with_embedding) with `control` observing and
    /// replacing the attention probabilities of the layers it asks for (see [`control`]).
    pub fn forward_controlled(
        &self,
        sample: Tensor<4>,
        temb: &Tensor<2>,
        context: &Tensor<3>,
        control: &mut dyn AttentionControl,
    ) -> Tensor<4> {
        self.forward_hooked(sample, temb, context, &mut Hooks::new(control))
    }

    fn forward_hooked(
        &self,
        sample: Tensor<4>,
        temb: &Tensor<2>,
        context: &Tensor<3>,
        hooks: &mut Hooks,
    ) -> Tensor<4> {
        let mut x = conv2d_forward(&self.conv_in, sample);
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            x = block.forward(x, temb, context, &mut skips, hooks);
        }
        x = self.mid_block.forward(x, temb, context, hooks);
        for block in &self.up_blocks {
            let remaining = skips.len() - block.num_resnets();
            // Upsample to the size of the skip the next block will take first.
            let size = remaining.checked_sub(1).map(|k| {
                let [_, _, h, w] = skips[k].dims();
                [h, w]
            });
            x = block.forward(x, temb, context, &mut skips, size, hooks);
        }
        conv2d_forward(&self.conv_out, group_norm_silu(&self.conv_norm_out, x))
    }
}

/// The spatial transformer of a cross-attention block.
fn transformer_spec<T>(b: &BlockConfig<T>, config: &UNetConfig) -> TransformerSpec {
    TransformerSpec {
        channels: b.out_channels,
        heads: b.heads,
        layers: b.transformer_layers,
        context_dim: b.cross_attention_dim,
        groups: config.norm_num_groups,
        use_linear_projection: config.use_linear_projection,
        upcast_attention: config.upcast_attention,
    }
}
