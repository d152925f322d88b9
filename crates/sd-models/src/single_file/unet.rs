//! LDM `UNetModel` (`ldm/modules/diffusionmodules/openaimodel.py`) → diffusers
//! `UNet2DConditionModel` keys. With `L` layers per block and `n` levels:
//!
//! | LDM (under `model.diffusion_model.`)           | diffusers                                   |
//! |------------------------------------------------|---------------------------------------------|
//! | `time_embed.{0,2}`                             | `time_embedding.linear_{1,2}`               |
//! | `input_blocks.0.0`                             | `conv_in`                                   |
//! | `input_blocks.{1+b(L+1)+l}.0` / `.1`, l < L    | `down_blocks.{b}.resnets.{l}` / `.attentions.{l}` |
//! | `input_blocks.{(b+1)(L+1)}.0.op`               | `down_blocks.{b}.downsamplers.0.conv`       |
//! | `middle_block.{0,1,2}`                         | `mid_block.{resnets.0, attentions.0, resnets.1}` |
//! | `output_blocks.{b(L+1)+l}.0` / `.1`            | `up_blocks.{b}.resnets.{l}` / `.attentions.{l}` |
//! | `output_blocks.{b(L+1)+L}.{1 or 2}.conv`       | `up_blocks.{b}.upsamplers.0.conv` (2 after an attention) |
//! | `out.{0,2}`                                    | `conv_norm_out`, `conv_out`                 |
//! | resnet `in_layers.{0,2}`, `emb_layers.1`, `out_layers.{0,3}`, `skip_connection` | `norm1`, `conv1`, `time_emb_proj`, `norm2`, `conv2`, `conv_shortcut` |
//!
//! Attention blocks (`SpatialTransformer`) already use diffusers' inner names. `L` and `n` come
//! from the block indices: `n − 1` input blocks hold a downsampler (`….0.op`).

use std::collections::BTreeSet;

use super::{EMA, Entry, Op, SingleFile, UNET};
use crate::error::Result;

/// The block structure of a checkpoint's UNet, read off its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnetLayout {
    pub levels: usize,
    pub layers_per_block: usize,
    /// Per level, whether its down / up block has attention.
    pub down_attention: Vec<bool>,
    pub up_attention: Vec<bool>,
}

/// The indices `i` of `{prefix}{i}.…` keys, checked to be 0..=max with none missing.
fn indices(sf: &SingleFile, prefix: &str) -> Result<usize> {
    let found: BTreeSet<usize> = sf
        .keys_under(prefix)
        .filter_map(|k| k.split('.').next()?.parse().ok())
        .collect();
    let Some(&max) = found.last() else {
        return Err(sf.error(format!("has no {prefix}* tensors")));
    };
    if let Some(gap) = (0..=max).find(|i| !found.contains(i)) {
        return Err(sf.error(format!(
            "{prefix}{gap} is missing: the file has {prefix}0 to {prefix}{max} but no tensor of block {gap}"
        )));
    }
    Ok(max + 1)
}

impl UnetLayout {
    pub fn read(sf: &SingleFile) -> Result<Self> {
        let inputs = indices(sf, &format!("{UNET}input_blocks."))?;
        let outputs = indices(sf, &format!("{UNET}output_blocks."))?;
        let down: Vec<usize> = (1..inputs)
            .filter(|i| {
                sf.shape(&format!("{UNET}input_blocks.{i}.0.op.weight"))
                    .is_some()
            })
            .collect();
        let levels = down.len() + 1;
        let per_level = inputs / levels;
        let fits = inputs % levels == 0
            && per_level >= 2
            && outputs == levels * per_level
            && down
                .iter()
                .enumerate()
                .all(|(b, &i)| i == (b + 1) * per_level);
        if !fits {
            return Err(sf.error(format!(
                "the UNet's blocks do not form a Stable Diffusion UNet: {inputs} input blocks \
                 (downsamplers at {down:?}) and {outputs} output blocks"
            )));
        }
        let layers = per_level - 1;
        let attention = |block: String| {
            sf.shape(&format!("{UNET}{block}.1.proj_in.weight"))
                .is_some()
        };
        Ok(Self {
            levels,
            layers_per_block: layers,
            down_attention: (0..levels)
                .map(|b| attention(format!("input_blocks.{}", 1 + b * per_level)))
                .collect(),
            up_attention: (0..levels)
                .map(|b| attention(format!("output_blocks.{}", b * per_level)))
                .collect(),
        })
    }

    /// The diffusers key of an LDM UNet key (without the prefix), or `None` if it is not one.
    pub fn map(&self, key: &str) -> Option<String> {
        for (ldm, diffusers) in [
            ("time_embed.0.", "time_embedding.linear_1."),
            ("time_embed.2.", "time_embedding.linear_2."),
            ("input_blocks.0.0.", "conv_in."),
            ("out.0.", "conv_norm_out."),
            ("out.2.", "conv_out."),
        ] {
            if let Some(rest) = key.strip_prefix(ldm) {
                return Some(format!("{diffusers}{rest}"));
            }
        }
        if key.starts_with("middle_block.") {
            return middle(key);
        }
        let mut parts = key.splitn(4, '.');
        let (kind, i, j, rest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let (i, j): (usize, usize) = (i.parse().ok()?, j.parse().ok()?);
        let per_level = self.layers_per_block + 1;
        match kind {
            "input_blocks" if i >= 1 => {
                let (b, l) = ((i - 1) / per_level, (i - 1) % per_level);
                if l == self.layers_per_block {
                    let rest = rest.strip_prefix("op.").filter(|_| j == 0)?;
                    return Some(format!("down_blocks.{b}.downsamplers.0.conv.{rest}"));
                }
                self.block("down_blocks", b, l, j, rest)
            }
            "output_blocks" => {
                let (b, l) = (i / per_level, i % per_level);
                let sampler_slot = if *self.up_attention.get(b)? { 2 } else { 1 };
                if l == self.layers_per_block && j == sampler_slot {
                    let rest = rest.strip_prefix("conv.")?;
                    return Some(format!("up_blocks.{b}.upsamplers.0.conv.{rest}"));
                }
                self.block("up_blocks", b, l, j, rest)
            }
            _ => None,
        }
    }

    /// `{blocks}.{b}.resnets.{l}` (j = 0) or `.attentions.{l}` (j = 1) of level `b`.
    fn block(&self, blocks: &str, b: usize, l: usize, j: usize, rest: &str) -> Option<String> {
        if b >= self.levels {
            return None;
        }
        match j {
            0 => Some(format!("{blocks}.{b}.resnets.{l}.{}", resnet(rest)?)),
            1 => Some(format!("{blocks}.{b}.attentions.{l}.{rest}")),
            _ => None,
        }
    }
}

/// `middle_block.{0,1,2}.…`.
fn middle(key: &str) -> Option<String> {
    let rest = key.strip_prefix("middle_block.")?;
    let (index, rest) = rest.split_once('.')?;
    match index {
        "0" => Some(format!("mid_block.resnets.0.{}", resnet(rest)?)),
        "1" => Some(format!("mid_block.attentions.0.{rest}")),
        "2" => Some(format!("mid_block.resnets.1.{}", resnet(rest)?)),
        _ => None,
    }
}

/// LDM `ResBlock` names → diffusers `ResnetBlock2D` names.
fn resnet(rest: &str) -> Option<String> {
    for (ldm, diffusers) in [
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("emb_layers.1.", "time_emb_proj."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("skip_connection.", "conv_shortcut."),
    ] {
        if let Some(tail) = rest.strip_prefix(ldm) {
            return Some(format!("{diffusers}{tail}"));
        }
    }
    None
}

/// The EMA name of a UNet key: `model_ema.` + the key without `model.` and without dots.
fn ema_key(key: &str) -> String {
    format!("{EMA}{}", key["model.".len()..].replace('.', ""))
}

/// The UNet's entries; `ema`: read each weight's EMA copy.
pub(super) fn entries(sf: &SingleFile, ema: bool) -> Result<Vec<Entry>> {
    let layout = UnetLayout::read(sf)?;
    let mut out = Vec::new();
    for key in sf.keys_under(UNET) {
        let full = format!("{UNET}{key}");
        let mapped = layout.map(key).ok_or_else(|| {
            sf.error(format!(
                "unexpected UNet tensor {full:?}: not part of a Stable Diffusion UNet with {} levels of {} layers",
                layout.levels, layout.layers_per_block
            ))
        })?;
        let source = if ema {
            let source = ema_key(&full);
            if sf.shape(&source).is_none() {
                return Err(sf.error(format!(
                    "the EMA weights are incomplete: {full:?} has no EMA copy {source:?} (pass --no-ema to read the trained weights)"
                )));
            }
            source
        } else {
            full
        };
        out.push(Entry {
            source,
            key: mapped,
            op: Op::Copy,
        });
    }
    Ok(out)
}
