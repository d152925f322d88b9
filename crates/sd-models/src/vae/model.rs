//! Encoder, decoder and the autoencoder around them.

use std::path::Path;

use burn::module::Module;
use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Device, Tensor};

use super::config::VaeConfig;
use crate::attention::Attention;
use crate::cpu::{conv2d_forward, group_norm_silu};
use crate::error::{ModelError, Result};
use crate::layers::{conv2d, group_norm};
use crate::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};
use crate::weights;

const EPS: f64 = 1e-6;

/// `DownEncoderBlock2D`.
#[derive(Module, Debug)]
pub struct DownEncoderBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub downsamplers: Vec<Downsample2D>,
}

/// `UpDecoderBlock2D`.
#[derive(Module, Debug)]
pub struct UpDecoderBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub upsamplers: Vec<Upsample2D>,
}

/// `UNetMidBlock2D` without time embedding: resnet, attention, resnet.
#[derive(Module, Debug)]
pub struct MidBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Attention>,
}

#[derive(Module, Debug)]
pub struct Encoder {
    pub conv_in: Conv2d,
    pub down_blocks: Vec<DownEncoderBlock2D>,
    pub mid_block: MidBlock2D,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

#[derive(Module, Debug)]
pub struct Decoder {
    pub conv_in: Conv2d,
    pub mid_block: MidBlock2D,
    pub up_blocks: Vec<UpDecoderBlock2D>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

/// `AutoencoderKL`.
#[derive(Module, Debug)]
pub struct AutoencoderKL {
    pub encoder: Encoder,
    pub quant_conv: Option<Conv2d>,
    pub post_quant_conv: Option<Conv2d>,
    pub decoder: Decoder,
}

/// The encoder's diagonal Gaussian over latents.
#[derive(Debug, Clone)]
pub struct Posterior {
    /// `[batch, latent_channels, h/f, w/f]`
    pub mean: Tensor<4>,
    /// Clamped to [-30, 20] as diffusers does.
    pub logvar: Tensor<4>,
}

impl Posterior {
    /// A sample mean + σ·z for caller-supplied standard normal `z` of the same shape.
    pub fn sample(&self, z: Tensor<4>) -> Tensor<4> {
        self.mean.clone() + (self.logvar.clone() * 0.5).exp() * z
    }
}

impl MidBlock2D {
    fn new(channels: usize, groups: usize, attention: bool, device: &Device) -> Self {
        Self {
            resnets: (0..2)
                .map(|_| ResnetBlock2D::new(channels, channels, None, groups, EPS, device))
                .collect(),
            attentions: if attention {
                vec![Attention::spatial(channels, groups, device)]
            } else {
                vec![]
            },
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.resnets[0].forward(x, None);
        if let Some(attn) = self.attentions.first() {
            x = attn.forward_spatial(x);
        }
        self.resnets[1].forward(x, None)
    }
}

impl AutoencoderKL {
    /// Builds the model with lazily initialised random weights (config assumed validated).
    pub fn new(config: &VaeConfig, device: &Device) -> Self {
        let ch = &config.block_out_channels;
        let g = config.norm_num_groups;
        let n = ch.len();
        let latent = config.latent_channels;
        let down_blocks = (0..n)
            .map(|i| {
                let cin = if i == 0 { ch[0] } else { ch[i - 1] };
                DownEncoderBlock2D {
                    resnets: (0..config.layers_per_block)
                        .map(|j| {
                            let c = if j == 0 { cin } else { ch[i] };
                            ResnetBlock2D::new(c, ch[i], None, g, EPS, device)
                        })
                        .collect(),
                    downsamplers: if i + 1 < n {
                        vec![Downsample2D::new(ch[i], 0, device)]
                    } else {
                        vec![]
                    },
                }
            })
            .collect();
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let up_blocks = (0..n)
            .map(|i| {
                let prev = if i == 0 { rev[0] } else { rev[i - 1] };
                UpDecoderBlock2D {
                    resnets: (0..config.layers_per_block + 1)
                        .map(|j| {
                            let c = if j == 0 { prev } else { rev[i] };
                            ResnetBlock2D::new(c, rev[i], None, g, EPS, device)
                        })
                        .collect(),
                    upsamplers: if i + 1 < n {
                        vec![Upsample2D::new(rev[i], device)]
                    } else {
                        vec![]
                    },
                }
            })
            .collect();
        let attn = config.mid_block_add_attention;
        Self {
            encoder: Encoder {
                conv_in: conv2d(config.in_channels, ch[0], 3, 1, 1, device),
                down_blocks,
                mid_block: MidBlock2D::new(ch[n - 1], g, attn, device),
                conv_norm_out: group_norm(g, ch[n - 1], EPS, device),
                conv_out: conv2d(ch[n - 1], 2 * latent, 3, 1, 1, device),
            },
            quant_conv: config
                .use_quant_conv
                .then(|| conv2d(2 * latent, 2 * latent, 1, 1, 0, device)),
            post_quant_conv: config
                .use_post_quant_conv
                .then(|| conv2d(latent, latent, 1, 1, 0, device)),
            decoder: Decoder {
                conv_in: conv2d(latent, ch[n - 1], 3, 1, 1, device),
                mid_block: MidBlock2D::new(ch[n - 1], g, attn, device),
                up_blocks,
                conv_norm_out: group_norm(g, ch[0], EPS, device),
                conv_out: conv2d(ch[0], config.out_channels, 3, 1, 1, device),
            },
        }
    }

    /// Loads `vae/` (config.json + diffusion_pytorch_model[.variant].safetensors).
    pub fn load(
        dir: &Path,
        variant: Option<&str>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, VaeConfig)> {
        let config = VaeConfig::from_file(&dir.join("config.json"))?;
        let file = weights::weights_file(dir, "diffusion_pytorch_model", variant)?;
        let model = weights::load(Self::new(&config, device), &file, dtype)?;
        Ok((model, config))
    }

    /// # Shapes
    /// - image: `[batch, in_channels, h, w]`, values in [-1, 1]
    /// - posterior mean/logvar: `[batch, latent_channels, h/f, w/f]`
    pub fn encode(&self, image: Tensor<4>) -> Result<Posterior> {
        let dims = image.dims();
        let cin = self.encoder.conv_in.weight.lazy_shape()[1];
        if dims[1] != cin {
            return Err(ModelError::InputShape {
                what: "VAE encoder input",
                expected: format!("[batch, {cin}, height, width]"),
                found: dims.to_vec(),
            });
        }
        let e = &self.encoder;
        let mut x = conv2d_forward(&e.conv_in, image);
        for block in &e.down_blocks {
            for r in &block.resnets {
                x = r.forward(x, None);
            }
            for d in &block.downsamplers {
                x = d.forward(x);
            }
        }
        x = e.mid_block.forward(x);
        x = conv2d_forward(&e.conv_out, group_norm_silu(&e.conv_norm_out, x));
        if let Some(q) = &self.quant_conv {
            x = q.forward(x);
        }
        let [mean, logvar] = x.chunk(2, 1).try_into().expect("two halves");
        Ok(Posterior {
            mean,
            logvar: logvar.clamp(-30.0, 20.0),
        })
    }

    /// # Shapes
    /// - latents: `[batch, latent_channels, h, w]` (unscaled: divide by `scaling_factor` first)
    /// - output: `[batch, out_channels, h·f, w·f]`, roughly in [-1, 1]
    pub fn decode(&self, latents: Tensor<4>) -> Result<Tensor<4>> {
        let dims = latents.dims();
        let latent = self.decoder.conv_in.weight.lazy_shape()[1];
        if dims[1] != latent {
            return Err(ModelError::InputShape {
                what: "VAE decoder input",
                expected: format!("[batch, {latent}, height, width]"),
                found: dims.to_vec(),
            });
        }
        let mut x = match &self.post_quant_conv {
            Some(p) => p.forward(latents),
            None => latents,
        };
        let d = &self.decoder;
        x = conv2d_forward(&d.conv_in, x);
        x = d.mid_block.forward(x);
        for block in &d.up_blocks {
            for r in &block.resnets {
                x = r.forward(x, None);
            }
            for u in &block.upsamplers {
                x = u.forward(x, None);
            }
        }
        Ok(conv2d_forward(
            &d.conv_out,
            group_norm_silu(&d.conv_norm_out, x),
        ))
    }
}
