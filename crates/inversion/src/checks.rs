//! Cross-checks between the components of one pipeline, run at load: each component is valid on
//! its own (its loader checked that), but a tokenizer from one model and a text encoder from
//! another, say, would fail deep inside a tensor op. Each error names both files. Before them,
//! [`index`] checks that the folder is a diffusers pipeline with every component the pipeline reads.

use std::path::Path;

use crate::error::{InversionError, Result};
use crate::pipeline::Parts;

/// Checks that the tokenizer, text encoder, UNet and VAE of `parts` fit together.
pub(crate) fn components(parts: &Parts) -> Result<()> {
    let dir = &parts.dir;
    let mismatch = |first: &str, second: &str, message: String| InversionError::Components {
        first: dir.join(first),
        second: dir.join(second),
        message,
    };
    let [vocab, hidden] = parts.text_encoder.embeddings.token_embedding.weight.dims();
    let max_id = parts.tokenizer.max_token_id() as usize;
    if max_id >= vocab {
        return Err(mismatch(
            "tokenizer/vocab.json",
            "text_encoder/config.json",
            format!(
                "the tokenizer emits token ids up to {max_id}, but the text encoder's vocab_size is {vocab}"
            ),
        ));
    }
    let positions = parts.text_encoder.max_positions();
    if parts.tokenizer.max_length() > positions {
        return Err(mismatch(
            "tokenizer/tokenizer_config.json",
            "text_encoder/config.json",
            format!(
                "model_max_length {} exceeds the text encoder's max_position_embeddings {positions}",
                parts.tokenizer.max_length()
            ),
        ));
    }
    for (i, &dim) in parts.unet_config.cross_attention_dims().iter().enumerate() {
        if dim != hidden {
            return Err(mismatch(
                "text_encoder/config.json",
                "unet/config.json",
                format!(
                    "the text encoder's hidden_size is {hidden}, but block {i} of the UNet has cross_attention_dim {dim}"
                ),
            ));
        }
    }
    let (unet_in, latent) = (
        parts.unet_config.in_channels,
        parts.vae_config.latent_channels,
    );
    if unet_in != latent {
        return Err(mismatch(
            "unet/config.json",
            "vae/config.json",
            format!(
                "the UNet's in_channels is {unet_in}, but the VAE's latent_channels is {latent}"
            ),
        ));
    }
    check_out_channels(dir, parts)
}

/// The UNet predicts noise (or v) in latent space: as many channels out as in.
fn check_out_channels(dir: &Path, parts: &Parts) -> Result<()> {
    let c = &parts.unet_config;
    if c.out_channels != c.in_channels {
        return Err(InversionError::Components {
            first: dir.join("unet/config.json"),
            second: dir.join("vae/config.json"),
            message: format!(
                "the UNet's out_channels {} differs from its in_channels {} (the latent channels)",
                c.out_channels, c.in_channels
            ),
        });
    }
    Ok(())
}

const COMPONENTS: [&str; 5] = ["scheduler", "tokenizer", "text_encoder", "unet", "vae"];

/// Checks `model_index.json` and that every component folder the pipeline reads is there.
pub(crate) fn index(dir: &Path) -> Result<()> {
    let dir_err = |message: String| InversionError::ModelDir {
        dir: dir.to_path_buf(),
        message,
    };
    let index = dir.join("model_index.json");
    if !index.is_file() {
        return Err(dir_err(
            "no model_index.json: not a diffusers pipeline folder".into(),
        ));
    }
    let text =
        std::fs::read_to_string(&index).map_err(|e| dir_err(format!("model_index.json: {e}")))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| dir_err(format!("model_index.json is not valid JSON: {e}")))?;
    for c in COMPONENTS {
        if json.get(c).is_none_or(|v| v.is_null()) || !dir.join(c).is_dir() {
            return Err(dir_err(format!(
                "the `{c}` component is missing (expected folder {:?})",
                dir.join(c)
            )));
        }
    }
    Ok(())
}
