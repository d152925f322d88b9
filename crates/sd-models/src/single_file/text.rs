//! The text encoders of single-file checkpoints.
//!
//! SD 1.x stores transformers' `CLIPTextModel` under `cond_stage_model.transformer.` with
//! transformers' own names: the prefix is dropped (and `text_model.` added where a very old file
//! lacks it). SD 2.x stores OpenCLIP's text tower under `cond_stage_model.model.`:
//!
//! | OpenCLIP                                  | transformers `CLIPTextModel`                        |
//! |-------------------------------------------|-----------------------------------------------------|
//! | `token_embedding.weight`                  | `text_model.embeddings.token_embedding.weight`      |
//! | `positional_embedding`                    | `text_model.embeddings.position_embedding.weight`   |
//! | `ln_final`                                | `text_model.final_layer_norm`                       |
//! | `transformer.resblocks.{i}.ln_{1,2}`      | `text_model.encoder.layers.{i}.layer_norm{1,2}`     |
//! | `….attn.in_proj_{weight,bias}` (q;k;v)    | `….self_attn.{q,k,v}_proj.{weight,bias}` (split in three along dim 0) |
//! | `….attn.out_proj`                         | `….self_attn.out_proj`                              |
//! | `….mlp.c_fc` / `….mlp.c_proj`             | `….mlp.fc1` / `….mlp.fc2`                           |
//!
//! Not used: `text_projection`, `logit_scale`, and `resblocks.23` (the last block of ViT-H/14:
//! SD 2.x conditions on the penultimate layer).

use super::{CLIP, Entry, OPEN_CLIP, Op, SingleFile};
use crate::error::Result;

/// OpenCLIP tensors Stable Diffusion 2.x does not use.
pub(super) fn unused_open_clip(key: &str) -> bool {
    key.strip_prefix(OPEN_CLIP).is_some_and(|k| {
        k == "text_projection" || k == "logit_scale" || k.starts_with("transformer.resblocks.23.")
    })
}

pub(super) fn clip_entries(sf: &SingleFile) -> Vec<Entry> {
    sf.keys_under(CLIP)
        .map(|key| Entry {
            source: format!("{CLIP}{key}"),
            key: match key.starts_with("text_model.") {
                true => key.to_string(),
                false => format!("text_model.{key}"),
            },
            op: Op::Copy,
        })
        .collect()
}

pub(super) fn open_clip_entries(sf: &SingleFile) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for key in sf.keys_under(OPEN_CLIP) {
        let source = format!("{OPEN_CLIP}{key}");
        if unused_open_clip(&source) {
            continue;
        }
        let unexpected = || {
            sf.error(format!(
                "unexpected text encoder tensor {source:?}: not part of OpenCLIP's text tower"
            ))
        };
        let copy = |key: String| Entry {
            source: source.clone(),
            key,
            op: Op::Copy,
        };
        match key {
            "token_embedding.weight" => {
                out.push(copy("text_model.embeddings.token_embedding.weight".into()))
            }
            "positional_embedding" => out.push(copy(
                "text_model.embeddings.position_embedding.weight".into(),
            )),
            _ => {
                if let Some(tail) = key.strip_prefix("ln_final.") {
                    out.push(copy(format!("text_model.final_layer_norm.{tail}")));
                    continue;
                }
                let (i, inner) = key
                    .strip_prefix("transformer.resblocks.")
                    .and_then(|k| k.split_once('.'))
                    .filter(|(i, _)| i.parse::<usize>().is_ok())
                    .ok_or_else(unexpected)?;
                let layer = format!("text_model.encoder.layers.{i}");
                if let Some(param) = inner.strip_prefix("attn.in_proj_") {
                    for (index, name) in ["q", "k", "v"].into_iter().enumerate() {
                        out.push(Entry {
                            source: source.clone(),
                            key: format!("{layer}.self_attn.{name}_proj.{param}"),
                            op: Op::Chunk { index, of: 3 },
                        });
                    }
                    continue;
                }
                let renamed = [
                    ("ln_1.", "layer_norm1."),
                    ("ln_2.", "layer_norm2."),
                    ("attn.out_proj.", "self_attn.out_proj."),
                    ("mlp.c_fc.", "mlp.fc1."),
                    ("mlp.c_proj.", "mlp.fc2."),
                ]
                .into_iter()
                .find_map(|(from, to)| inner.strip_prefix(from).map(|t| format!("{to}{t}")))
                .ok_or_else(unexpected)?;
                out.push(copy(format!("{layer}.{renamed}")));
            }
        }
    }
    Ok(out)
}
