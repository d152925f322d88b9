//! `AutoencoderTiny` of diffusers: TAESD (Ollin Boer Bohan, github.com/madebyollin/taesd), a
//! distilled autoencoder of Stable Diffusion's latent space, some 2.4 M parameters in place of the
//! VAE's 84 M. Its decoder turns latents into a preview image many times faster than the VAE's.
//!
//! It works on latents as the UNet sees them (already multiplied by the VAE's `scaling_factor`),
//! and its images are in [-1, 1] like the VAE's: the encoder maps them to [0, 1] first, the
//! decoder back. The decoder soft-clamps its input to ±3 (`3·tanh(x/3)`).
//!
//! Layout and keys follow diffusers' `EncoderTiny` / `DecoderTiny`, which are `nn.Sequential`s:
//! `encoder.layers.{i}` and `decoder.layers.{i}` index convolutions, blocks, activations and
//! upsamplings alike, so the layers here are one `Vec` of an enum in the same order, parameterless
//! entries included, and a block's `conv.{0,2,4}` likewise.

use std::path::Path;

use burn::module::Module;
use burn::nn::Relu;
use burn::nn::conv::Conv2d;
use burn::nn::interpolate::{Interpolate2d, Interpolate2dConfig, InterpolateMode};
use burn::tensor::activation::relu;
use burn::tensor::{DType, Device, Tensor};

use super::tiny_config::AutoencoderTinyConfig;
use crate::cpu::{conv2d_forward, upsample_nearest_conv};
use crate::error::{ModelError, Result};
use crate::layers::conv2d;
use crate::weights;

/// One entry of a block's `conv` sequence: 3×3 convolutions with activations between them.
// A few dozen layers in all: the size of the parameterless variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum BlockLayer {
    Conv(Conv2d),
    Relu(Relu),
}

/// `AutoencoderTinyBlock`: relu(conv(x) + skip(x)), conv being conv-relu-conv-relu-conv.
#[derive(Module, Debug)]
pub struct TinyBlock {
    pub conv: Vec<BlockLayer>,
    /// A 1×1 convolution without bias where the channel count changes; the identity otherwise.
    pub skip: Option<Conv2d>,
}

impl TinyBlock {
    fn new(cin: usize, cout: usize, device: &Device) -> Self {
        Self {
            conv: vec![
                BlockLayer::Conv(conv2d(cin, cout, 3, 1, 1, device)),
                BlockLayer::Relu(Relu::new()),
                BlockLayer::Conv(conv2d(cout, cout, 3, 1, 1, device)),
                BlockLayer::Relu(Relu::new()),
                BlockLayer::Conv(conv2d(cout, cout, 3, 1, 1, device)),
            ],
            skip: (cin != cout).then(|| no_bias(conv2d(cin, cout, 1, 1, 0, device))),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let skip = match &self.skip {
            Some(s) => s.forward(x.clone()),
            None => x.clone(),
        };
        let mut h = x;
        for layer in &self.conv {
            h = match layer {
                BlockLayer::Conv(c) => conv2d_forward(c, h),
                BlockLayer::Relu(_) => relu(h),
            };
        }
        relu(h + skip)
    }
}

/// One entry of `encoder.layers` / `decoder.layers`.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum TinyLayer {
    Conv(Conv2d),
    Block(TinyBlock),
    Relu(Relu),
    /// diffusers' `nn.Upsample` entry: no parameters, and no work here, since the convolution
    /// after it ([`TinyLayer::UpConv`]) upsamples its input itself.
    Upsample(Interpolate2d),
    /// Nearest-neighbour 2× upsampling then this convolution, fused.
    UpConv(Conv2d),
}

/// The encoder or the decoder: its layers in diffusers' order.
#[derive(Module, Debug)]
pub struct TinyCoder {
    pub layers: Vec<TinyLayer>,
}

impl TinyCoder {
    fn forward(&self, mut x: Tensor<4>) -> Tensor<4> {
        for layer in &self.layers {
            x = match layer {
                TinyLayer::Conv(c) => conv2d_forward(c, x),
                TinyLayer::Block(b) => b.forward(x),
                TinyLayer::Relu(_) => relu(x),
                TinyLayer::Upsample(_) => x,
                TinyLayer::UpConv(c) => {
                    let [_, _, h, w] = x.dims();
                    upsample_nearest_conv(c, x, [2 * h, 2 * w])
                }
            };
        }
        x
    }
}

/// diffusers' `AutoencoderTiny`.
#[derive(Module, Debug)]
pub struct AutoencoderTiny {
    pub encoder: TinyCoder,
    pub decoder: TinyCoder,
}

fn no_bias(mut conv: Conv2d) -> Conv2d {
    conv.bias = None;
    conv
}

impl AutoencoderTiny {
    /// The layers of `config`, with lazily initialised parameters.
    pub fn new(config: &AutoencoderTinyConfig, device: &Device) -> Self {
        let c = config;
        let enc_ch = &c.encoder_block_out_channels;
        let mut enc = Vec::new();
        for (i, &blocks) in c.num_encoder_blocks.iter().enumerate() {
            let ch = enc_ch[i];
            enc.push(TinyLayer::Conv(if i == 0 {
                conv2d(c.in_channels, ch, 3, 1, 1, device)
            } else {
                no_bias(conv2d(ch, ch, 3, 2, 1, device))
            }));
            enc.extend((0..blocks).map(|_| TinyLayer::Block(TinyBlock::new(ch, ch, device))));
        }
        let last = *enc_ch.last().unwrap_or(&c.latent_channels);
        enc.push(TinyLayer::Conv(conv2d(
            last,
            c.latent_channels,
            3,
            1,
            1,
            device,
        )));

        let dec_ch = &c.decoder_block_out_channels;
        let first = dec_ch.first().copied().unwrap_or(c.latent_channels);
        let mut dec = vec![
            TinyLayer::Conv(conv2d(c.latent_channels, first, 3, 1, 1, device)),
            TinyLayer::Relu(Relu::new()),
        ];
        let n = c.num_decoder_blocks.len();
        for (i, &blocks) in c.num_decoder_blocks.iter().enumerate() {
            let ch = dec_ch[i];
            dec.extend((0..blocks).map(|_| TinyLayer::Block(TinyBlock::new(ch, ch, device))));
            if i + 1 < n {
                let up = Interpolate2dConfig::new()
                    .with_scale_factor(Some([2.0, 2.0]))
                    .with_mode(InterpolateMode::Nearest)
                    .init();
                dec.push(TinyLayer::Upsample(up));
                dec.push(TinyLayer::UpConv(no_bias(conv2d(ch, ch, 3, 1, 1, device))));
            } else {
                dec.push(TinyLayer::Conv(conv2d(ch, c.out_channels, 3, 1, 1, device)));
            }
        }
        Self {
            encoder: TinyCoder { layers: enc },
            decoder: TinyCoder { layers: dec },
        }
    }

    /// Loads a TAESD folder (config.json + diffusion_pytorch_model[.variant].safetensors), in f32.
    pub fn load(
        dir: &Path,
        variant: Option<&str>,
        device: &Device,
    ) -> Result<(Self, AutoencoderTinyConfig)> {
        let config = AutoencoderTinyConfig::from_file(&dir.join("config.json"))?;
        let file = weights::weights_file(dir, "diffusion_pytorch_model", variant)?;
        let model = weights::load(Self::new(&config, device), &file, DType::F32)?;
        Ok((model, config))
    }

    fn channels(coder: &TinyCoder, what: &'static str, x: &Tensor<4>) -> Result<()> {
        let Some(TinyLayer::Conv(first)) = coder.layers.first() else {
            return Ok(());
        };
        let cin = first.weight.lazy_shape()[1];
        let dims = x.dims();
        if dims[1] == cin {
            return Ok(());
        }
        Err(ModelError::InputShape {
            what,
            expected: format!("[batch, {cin}, height, width]"),
            found: dims.to_vec(),
        })
    }

    /// Latents of images (as the UNet sees them: no further scaling).
    ///
    /// # Shapes
    /// - image: `[batch, in_channels, h, w]` in [-1, 1] → `[batch, latent_channels, h/8, w/8]`
    pub fn encode(&self, image: Tensor<4>) -> Result<Tensor<4>> {
        Self::channels(&self.encoder, "AutoencoderTiny encoder input", &image)?;
        Ok(self.encoder.forward((image + 1.0) / 2.0))
    }

    /// Images of latents (as the UNet produces them: not divided by the VAE's scaling factor).
    ///
    /// # Shapes
    /// - latents: `[batch, latent_channels, h, w]` → `[batch, out_channels, 8h, 8w]`, about [-1, 1]
    pub fn decode(&self, latents: Tensor<4>) -> Result<Tensor<4>> {
        Self::channels(&self.decoder, "AutoencoderTiny decoder input", &latents)?;
        let x = (latents / 3.0).tanh() * 3.0;
        Ok(self.decoder.forward(x) * 2.0 - 1.0)
    }
}
