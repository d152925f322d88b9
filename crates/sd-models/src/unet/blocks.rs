//! The UNet's down, mid and up blocks (diffusers `unet_2d_blocks`): `CrossAttnDownBlock2D`,
//! `DownBlock2D`, `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D`, `UpBlock2D`.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::config::{DownBlockConfig, UpBlockConfig};
use super::control::{Hooks, Place};
use super::transformer::{Transformer2DModel, TransformerSpec};
use crate::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};

/// Shared shape parameters of a block.
#[derive(Debug, Clone, Copy)]
pub struct BlockSpec {
    pub temb: usize,
    pub groups: usize,
    pub eps: f64,
}

/// `CrossAttnDownBlock2D` or `DownBlock2D` (the same without `attentions`): resnets, each followed
/// by a spatial transformer in the cross-attention variant, then an optional stride-2 downsampler.
/// Every intermediate output is kept as a skip connection.
#[derive(Module, Debug)]
pub struct DownBlock {
    pub resnets: Vec<ResnetBlock2D>,
    /// One per resnet in `CrossAttnDownBlock2D`, empty in `DownBlock2D`.
    pub attentions: Vec<Transformer2DModel>,
    pub downsamplers: Vec<Downsample2D>,
}

impl DownBlock {
    /// `cin` input channels to `block.out_channels`; `transformer` for the cross-attention variant.
    pub fn new(
        cin: usize,
        block: &DownBlockConfig,
        transformer: Option<TransformerSpec>,
        downsample: bool,
        padding: usize,
        s: BlockSpec,
        device: &Device,
    ) -> Self {
        let cout = block.out_channels;
        Self {
            resnets: (0..block.layers)
                .map(|i| {
                    let c = if i == 0 { cin } else { cout };
                    ResnetBlock2D::new(c, cout, Some(s.temb), s.groups, s.eps, device)
                })
                .collect(),
            attentions: transformers(transformer, block.layers, device),
            downsamplers: if downsample {
                vec![Downsample2D::new(cout, padding, device)]
            } else {
                vec![]
            },
        }
    }

    /// Runs the block, pushing each intermediate output onto `skips`.
    pub fn forward(
        &self,
        mut x: Tensor<4>,
        temb: &Tensor<2>,
        context: &Tensor<3>,
        skips: &mut Vec<Tensor<4>>,
        hooks: &mut Hooks,
    ) -> Tensor<4> {
        hooks.enter(Place::Down);
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(x, Some(temb));
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(x, context, hooks);
            }
            skips.push(x.clone());
        }
        for down in &self.downsamplers {
            x = down.forward(x);
            skips.push(x.clone());
        }
        x
    }
}

/// `CrossAttnUpBlock2D` or `UpBlock2D` (the same without `attentions`): each resnet takes the
/// running features concatenated with one skip connection.
#[derive(Module, Debug)]
pub struct UpBlock {
    pub resnets: Vec<ResnetBlock2D>,
    /// One per resnet in `CrossAttnUpBlock2D`, empty in `UpBlock2D`.
    pub attentions: Vec<Transformer2DModel>,
    pub upsamplers: Vec<Upsample2D>,
}

impl UpBlock {
    /// `prev`: channels coming from below; `skip_in`: channels of the last skip this block takes;
    /// each resnet `i` gets `[running ‖ skip]` channels as diffusers wires them.
    pub fn new(
        prev: usize,
        skip_in: usize,
        block: &UpBlockConfig,
        transformer: Option<TransformerSpec>,
        upsample: bool,
        s: BlockSpec,
        device: &Device,
    ) -> Self {
        let (cout, layers) = (block.out_channels, block.layers);
        Self {
            resnets: (0..layers)
                .map(|i| {
                    let skip = if i == layers - 1 { skip_in } else { cout };
                    let running = if i == 0 { prev } else { cout };
                    ResnetBlock2D::new(running + skip, cout, Some(s.temb), s.groups, s.eps, device)
                })
                .collect(),
            attentions: transformers(transformer, layers, device),
            upsamplers: if upsample {
                vec![Upsample2D::new(cout, device)]
            } else {
                vec![]
            },
        }
    }

    pub fn num_resnets(&self) -> usize {
        self.resnets.len()
    }

    /// Consumes skips from the end of `skips`; upsamples to `upsample_size` (the next skip's size).
    pub fn forward(
        &self,
        mut x: Tensor<4>,
        temb: &Tensor<2>,
        context: &Tensor<3>,
        skips: &mut Vec<Tensor<4>>,
        upsample_size: Option<[usize; 2]>,
        hooks: &mut Hooks,
    ) -> Tensor<4> {
        hooks.enter(Place::Up);
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips
                .pop()
                .expect("the UNet pushes one skip per up-block resnet");
            x = hooks.up_resnet(resnet.forward(Tensor::cat(vec![x, skip], 1), Some(temb)));
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(x, context, hooks);
            }
        }
        for up in &self.upsamplers {
            x = up.forward(x, upsample_size);
        }
        x
    }
}

/// `layers` spatial transformers for a cross-attention block, none for a plain one.
fn transformers(
    spec: Option<TransformerSpec>,
    layers: usize,
    device: &Device,
) -> Vec<Transformer2DModel> {
    spec.map(|t| {
        (0..layers)
            .map(|_| Transformer2DModel::new(t, device))
            .collect()
    })
    .unwrap_or_default()
}

/// `UNetMidBlock2DCrossAttn`: resnet, then (transformer, resnet) pairs.
#[derive(Module, Debug)]
pub struct MidBlock2DCrossAttn {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2DModel>,
}

impl MidBlock2DCrossAttn {
    pub fn new(
        channels: usize,
        transformer: TransformerSpec,
        s: BlockSpec,
        device: &Device,
    ) -> Self {
        Self {
            resnets: (0..2)
                .map(|_| {
                    ResnetBlock2D::new(channels, channels, Some(s.temb), s.groups, s.eps, device)
                })
                .collect(),
            attentions: vec![Transformer2DModel::new(transformer, device)],
        }
    }

    pub fn forward(
        &self,
        x: Tensor<4>,
        temb: &Tensor<2>,
        context: &Tensor<3>,
        hooks: &mut Hooks,
    ) -> Tensor<4> {
        hooks.enter(Place::Mid);
        let mut x = self.resnets[0].forward(x, Some(temb));
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = resnet.forward(attn.forward(x, context, hooks), Some(temb));
        }
        x
    }
}
