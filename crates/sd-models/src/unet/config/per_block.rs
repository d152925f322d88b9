//! The UNet's blocks as the config describes them: number-or-list options resolved to one
//! [`BlockConfig`] per down, mid and up block.

use std::path::Path;

use serde::Deserialize;

use super::{DownBlockType, MidBlockType, UNetConfig, UpBlockType};
use crate::config::{MAX_CHANNELS, MAX_HEADS, MAX_LAYERS, at_most, each_at_most};
use crate::error::{ModelError, Result};

/// A number, or one number per down block.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PerBlock {
    One(usize),
    Many(Vec<usize>),
}

impl PerBlock {
    /// One value per block, each at most `max`; `field` names the option in errors.
    fn expand(&self, n: usize, field: &str, max: usize, path: &Path) -> Result<Vec<usize>> {
        match self {
            Self::One(v) => at_most(path, field, *v, max).map(|()| vec![*v; n]),
            Self::Many(v) if v.len() == n => each_at_most(path, field, v, max).map(|()| v.clone()),
            Self::Many(v) => Err(ModelError::config(
                path,
                format!("{field} has {} entries for {n} blocks", v.len()),
            )),
        }
    }
}

/// One block of the UNet with its per-block options resolved. Up block `i` mirrors down block
/// `n − 1 − i` and takes its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockConfig<T> {
    /// Which block (with or without spatial transformers).
    pub kind: T,
    /// Output channels (`block_out_channels` of the block).
    pub out_channels: usize,
    /// ResNet layers: `layers_per_block` for a down block, one more for an up block (which also
    /// takes the downsampler's skip connection), 1 for the mid block (2 resnets around 1
    /// transformer, as diffusers counts).
    pub layers: usize,
    /// `transformer_layers_per_block`: `BasicTransformerBlock`s per spatial transformer.
    pub transformer_layers: usize,
    /// Attention heads of the spatial transformers.
    pub heads: usize,
    /// Width of the text states the transformers attend to.
    pub cross_attention_dim: usize,
}

pub type DownBlockConfig = BlockConfig<DownBlockType>;
pub type MidBlockConfig = BlockConfig<MidBlockType>;
pub type UpBlockConfig = BlockConfig<UpBlockType>;

/// The blocks of a UNet, from the input down and back up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUNet {
    pub down: Vec<DownBlockConfig>,
    pub mid: MidBlockConfig,
    pub up: Vec<UpBlockConfig>,
}

impl UNetConfig {
    /// Resolves every per-block option (checking lengths and limits) into the blocks. The block
    /// counts were checked by `check_sizes`.
    pub(super) fn blocks(&self, path: &Path) -> Result<ResolvedUNet> {
        let n = self.block_out_channels.len();
        let layers = self
            .layers_per_block
            .expand(n, "layers_per_block", MAX_LAYERS, path)?;
        let transformer_layers = self.transformer_layers_per_block.expand(
            n,
            "transformer_layers_per_block",
            MAX_LAYERS,
            path,
        )?;
        // diffusers' `num_attention_heads`, which older configs call `attention_head_dim`.
        let heads = self
            .num_attention_heads
            .as_ref()
            .unwrap_or(&self.attention_head_dim)
            .expand(n, "attention_head_dim", MAX_HEADS, path)?;
        let cross =
            self.cross_attention_dim
                .expand(n, "cross_attention_dim", MAX_CHANNELS, path)?;
        let block = |i: usize| BlockConfig {
            kind: (),
            out_channels: self.block_out_channels[i],
            layers: layers[i],
            transformer_layers: transformer_layers[i],
            heads: heads[i],
            cross_attention_dim: cross[i],
        };
        for (i, (&c, &h)) in self.block_out_channels.iter().zip(&heads).enumerate() {
            if h == 0 || !c.is_multiple_of(h) {
                return Err(ModelError::config(
                    path,
                    format!(
                        "block_out_channels[{i}] = {c} is not divisible by its {h} attention heads"
                    ),
                ));
            }
        }
        let down = (0..n)
            .map(|i| block(i).with_kind(self.down_block_types[i]))
            .collect();
        let mid = BlockConfig {
            layers: 1,
            ..block(n - 1).with_kind(self.mid_block_type)
        };
        let up = (0..n)
            .map(|i| {
                let mirrored = block(n - 1 - i);
                BlockConfig {
                    layers: mirrored.layers + 1,
                    ..mirrored.with_kind(self.up_block_types[i])
                }
            })
            .collect();
        Ok(ResolvedUNet { down, mid, up })
    }
}

impl BlockConfig<()> {
    fn with_kind<T>(self, kind: T) -> BlockConfig<T> {
        BlockConfig {
            kind,
            out_channels: self.out_channels,
            layers: self.layers,
            transformer_layers: self.transformer_layers,
            heads: self.heads,
            cross_attention_dim: self.cross_attention_dim,
        }
    }
}
