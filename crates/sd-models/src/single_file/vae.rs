//! LDM `AutoencoderKL` (`ldm/modules/diffusionmodules/model.py`) → diffusers `AutoencoderKL` keys,
//! under `first_stage_model.`:
//!
//! | LDM                                       | diffusers                                        |
//! |-------------------------------------------|--------------------------------------------------|
//! | `encoder.down.{i}.block.{j}`              | `encoder.down_blocks.{i}.resnets.{j}`            |
//! | `encoder.down.{i}.downsample.conv`        | `encoder.down_blocks.{i}.downsamplers.0.conv`    |
//! | `decoder.up.{i}.block.{j}` / `.upsample.conv` | `decoder.up_blocks.{n−1−i}.resnets.{j}` / `.upsamplers.0.conv` (LDM counts up blocks from the bottom) |
//! | `{side}.mid.block_{1,2}`                  | `{side}.mid_block.resnets.{0,1}`                 |
//! | `{side}.mid.attn_1.{norm,q,k,v,proj_out}` | `{side}.mid_block.attentions.0.{group_norm,to_q,to_k,to_v,to_out.0}`; 1×1-conv weights `[c, c, 1, 1]` become Linear `[c, c]` |
//! | `{side}.norm_out`                         | `{side}.conv_norm_out`                           |
//! | `nin_shortcut`                            | `conv_shortcut`                                  |
//!
//! `{side}.conv_in`, `{side}.conv_out`, `quant_conv` and `post_quant_conv` keep their names.

use std::collections::BTreeSet;

use super::{Entry, Op, SingleFile, VAE};
use crate::error::Result;

/// The number of encoder levels (`encoder.down.{i}`), which the decoder must match.
pub fn levels(sf: &SingleFile) -> Result<usize> {
    let count = |prefix: &str| -> BTreeSet<usize> {
        sf.keys_under(prefix)
            .filter_map(|k| k.split('.').next()?.parse().ok())
            .collect()
    };
    let (down, up) = (
        count(&format!("{VAE}encoder.down.")),
        count(&format!("{VAE}decoder.up.")),
    );
    let n = down.len();
    if n == 0 || down != up || down.last() != Some(&(n - 1)) {
        return Err(sf.error(format!(
            "the VAE's levels do not match: encoder.down {down:?}, decoder.up {up:?} (expected 0..n on both)"
        )));
    }
    Ok(n)
}

fn map(key: &str, levels: usize) -> Option<(String, Op)> {
    if key.starts_with("quant_conv.") || key.starts_with("post_quant_conv.") {
        return Some((key.to_string(), Op::Copy));
    }
    let (side, rest) = key.split_once('.')?;
    if side != "encoder" && side != "decoder" {
        return None;
    }
    let copy = |k: String| Some((k, Op::Copy));
    if rest.starts_with("conv_in.") || rest.starts_with("conv_out.") {
        return copy(key.to_string());
    }
    if let Some(tail) = rest.strip_prefix("norm_out.") {
        return copy(format!("{side}.conv_norm_out.{tail}"));
    }
    if let Some(mid) = rest.strip_prefix("mid.") {
        let (block, tail) = mid.split_once('.')?;
        return match block {
            "block_1" => copy(format!("{side}.mid_block.resnets.0.{}", resnet(tail))),
            "block_2" => copy(format!("{side}.mid_block.resnets.1.{}", resnet(tail))),
            "attn_1" => attention(side, tail),
            _ => None,
        };
    }
    let (name, blocks, sampler) = match side {
        "encoder" => ("down.", "down_blocks", "downsample"),
        _ => ("up.", "up_blocks", "upsample"),
    };
    let (i, tail) = rest.strip_prefix(name)?.split_once('.')?;
    let i: usize = i.parse().ok().filter(|&i| i < levels)?;
    let level = if side == "encoder" { i } else { levels - 1 - i };
    if let Some(conv) = tail
        .strip_prefix(sampler)
        .and_then(|t| t.strip_prefix(".conv."))
    {
        return copy(format!("{side}.{blocks}.{level}.{sampler}rs.0.conv.{conv}"));
    }
    let (j, inner) = tail.strip_prefix("block.")?.split_once('.')?;
    let j: usize = j.parse().ok()?;
    copy(format!(
        "{side}.{blocks}.{level}.resnets.{j}.{}",
        resnet(inner)
    ))
}

fn resnet(inner: &str) -> String {
    match inner.strip_prefix("nin_shortcut.") {
        Some(tail) => format!("conv_shortcut.{tail}"),
        None => inner.to_string(),
    }
}

fn attention(side: &str, tail: &str) -> Option<(String, Op)> {
    let (name, param) = tail.split_once('.')?;
    let diffusers = match name {
        "norm" => "group_norm",
        "q" => "to_q",
        "k" => "to_k",
        "v" => "to_v",
        "proj_out" => "to_out.0",
        _ => return None,
    };
    let op = if name != "norm" && param == "weight" {
        Op::Squeeze
    } else {
        Op::Copy
    };
    Some((
        format!("{side}.mid_block.attentions.0.{diffusers}.{param}"),
        op,
    ))
}

pub(super) fn entries(sf: &SingleFile) -> Result<Vec<Entry>> {
    let levels = levels(sf)?;
    sf.keys_under(VAE)
        .map(|key| {
            let (mapped, op) = map(key, levels).ok_or_else(|| {
                sf.error(format!(
                    "unexpected VAE tensor \"{VAE}{key}\": not part of a {levels}-level AutoencoderKL"
                ))
            })?;
            Ok(Entry {
                source: format!("{VAE}{key}"),
                key: mapped,
                op,
            })
        })
        .collect()
}
