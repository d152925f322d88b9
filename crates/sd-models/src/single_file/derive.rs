//! A component's config from its tensors' shapes: what the shapes fix (channels, levels, layers,
//! block types, cross-attention width, projection kind, vocabulary) is read off them, the rest
//! (head counts, group norms, sample size, activation) is kept from the family's published config
//! it starts from. diffusers' `create_unet_diffusers_config_from_ldm` reads the same fields from
//! the LDM YAML instead.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Family, Part};

/// Shapes of a component's tensors by diffusers key.
pub type Shapes = BTreeMap<String, Vec<usize>>;

/// Dimension `dim` of `key`'s shape.
fn dim(shapes: &Shapes, key: &str, dim: usize) -> Option<usize> {
    shapes.get(key)?.get(dim).copied()
}

/// How many `{prefix}{i}.` indices there are (0, 1, … without a gap).
fn count(shapes: &Shapes, prefix: &str) -> usize {
    (0..)
        .take_while(|i| {
            let p = format!("{prefix}{i}.");
            shapes
                .range(p.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&p))
        })
        .count()
}

/// Overwrites the shape-given fields of `config` (a JSON object). A field whose tensor is absent
/// keeps its value: the strict load that follows names the missing tensor.
pub fn derive(part: Part, family: Family, shapes: &Shapes, config: &mut Value) {
    let Some(obj) = config.as_object_mut() else {
        return;
    };
    match part {
        Part::Unet => unet(family, shapes, obj),
        Part::Vae => vae(shapes, obj),
        Part::TextEncoder => text_encoder(shapes, obj),
    }
}

type Object = serde_json::Map<String, Value>;

/// Sets each `(field, key, d)`'s field to dimension d of tensor `key`'s shape.
fn set_dims(obj: &mut Object, shapes: &Shapes, fields: &[(&str, &str, usize)]) {
    for &(field, key, d) in fields {
        set(obj, field, dim(shapes, key, d).map(Value::from));
    }
}

fn set(obj: &mut Object, field: &str, value: Option<Value>) {
    if let Some(v) = value {
        obj.insert(field.to_string(), v);
    }
}

fn unet(family: Family, shapes: &Shapes, obj: &mut Object) {
    let levels = count(shapes, "down_blocks.");
    let channels: Option<Vec<usize>> = (0..levels)
        .map(|b| {
            dim(
                shapes,
                &format!("down_blocks.{b}.resnets.0.conv2.weight"),
                0,
            )
        })
        .collect();
    let attention = |blocks: &str, b: usize| {
        shapes.contains_key(&format!("{blocks}.{b}.attentions.0.proj_in.weight"))
    };
    let kinds = |blocks: &str, cross: &str, plain: &str| {
        let k: Vec<&str> = (0..levels)
            .map(|b| if attention(blocks, b) { cross } else { plain })
            .collect();
        json!(k)
    };
    set_dims(
        obj,
        shapes,
        &[
            ("in_channels", "conv_in.weight", 1),
            ("out_channels", "conv_out.weight", 0),
        ],
    );
    set(
        obj,
        "layers_per_block",
        Some(json!(count(shapes, "down_blocks.0.resnets."))),
    );
    set(
        obj,
        "down_block_types",
        Some(kinds("down_blocks", "CrossAttnDownBlock2D", "DownBlock2D")),
    );
    set(
        obj,
        "up_block_types",
        Some(kinds("up_blocks", "CrossAttnUpBlock2D", "UpBlock2D")),
    );
    let first_attention = shapes
        .iter()
        .find(|(k, _)| k.contains(".attentions.0."))
        .map(|(k, _)| k.split(".attentions.0.").next().unwrap_or("").to_string());
    if let Some(block) = first_attention {
        let block = format!("{block}.attentions.0");
        let to_k = format!("{block}.transformer_blocks.0.attn2.to_k.weight");
        set_dims(obj, shapes, &[("cross_attention_dim", &to_k, 1)]);
        // Absent means false (SD 1.x configs do not have the field).
        let linear = shapes
            .get(&format!("{block}.proj_in.weight"))
            .map(|s| s.len() == 2);
        let present = obj.contains_key("use_linear_projection");
        if linear == Some(true) || (linear.is_some() && present) {
            obj.insert(
                "use_linear_projection".into(),
                Value::from(linear == Some(true)),
            );
        }
    }
    set(
        obj,
        "attention_head_dim",
        heads(family, channels.as_deref()),
    );
    set(obj, "block_out_channels", channels.map(|c| json!(c)));
}

fn vae(shapes: &Shapes, obj: &mut Object) {
    let levels = count(shapes, "encoder.down_blocks.");
    let channels: Option<Vec<usize>> = (0..levels)
        .map(|i| {
            dim(
                shapes,
                &format!("encoder.down_blocks.{i}.resnets.0.conv2.weight"),
                0,
            )
        })
        .collect();
    set(obj, "block_out_channels", channels.map(|c| json!(c)));
    set(
        obj,
        "layers_per_block",
        Some(json!(count(shapes, "encoder.down_blocks.0.resnets."))),
    );
    set(
        obj,
        "down_block_types",
        Some(json!(vec!["DownEncoderBlock2D"; levels])),
    );
    set(
        obj,
        "up_block_types",
        Some(json!(vec!["UpDecoderBlock2D"; levels])),
    );
    set_dims(
        obj,
        shapes,
        &[
            ("in_channels", "encoder.conv_in.weight", 1),
            ("out_channels", "decoder.conv_out.weight", 0),
            ("latent_channels", "post_quant_conv.weight", 0),
        ],
    );
}

fn text_encoder(shapes: &Shapes, obj: &mut Object) {
    let token = "text_model.embeddings.token_embedding.weight";
    let hidden = dim(shapes, token, 1);
    set_dims(
        obj,
        shapes,
        &[
            ("vocab_size", token, 0),
            ("hidden_size", token, 1),
            (
                "max_position_embeddings",
                "text_model.embeddings.position_embedding.weight",
                0,
            ),
            (
                "intermediate_size",
                "text_model.encoder.layers.0.mlp.fc1.weight",
                0,
            ),
        ],
    );
    set(
        obj,
        "num_hidden_layers",
        Some(json!(count(shapes, "text_model.encoder.layers."))),
    );
    // Both families' text encoders have 64-channel heads (CLIP ViT-L: 12 of 768,
    // OpenCLIP ViT-H: 16 of 1024).
    if let Some(h) = hidden.filter(|h| h % 64 == 0) {
        obj.insert("num_attention_heads".into(), json!(h / 64));
    }
}

/// Heads, which shapes do not tell, by the families' LDM configs: SD 1.x has 8 heads at every
/// level (`num_heads: 8`, diffusers' `attention_head_dim: 8`), SD 2.x heads 64 channels wide
/// (`num_head_channels: 64`).
fn heads(family: Family, channels: Option<&[usize]>) -> Option<Value> {
    match (family, channels) {
        (Family::Sd1, _) => Some(json!(8)),
        (Family::Sd2, Some(c)) if c.iter().all(|c| c % 64 == 0) => {
            Some(json!(c.iter().map(|c| c / 64).collect::<Vec<_>>()))
        }
        _ => None,
    }
}
