//! What the model configs share: reading a `config.json`, options that name one of a few supported
//! values (block types, activations), and the limits on the numbers that size allocations.
//!
//! A config is checked when it is read, before any layer is built: an option this crate does not
//! implement is [`ModelError::Unsupported`] (naming the field, the value and what is supported), and
//! a number above its limit is [`ModelError::OutOfRange`], so that a corrupt or hostile file cannot
//! ask for terabytes.

use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ModelError, Result};

/// Channels of any layer (widest in Stable Diffusion: 1280 in the UNet, 3072/4096 in CLIP's MLP).
pub const MAX_CHANNELS: usize = 16384;
/// Layers per block, transformer layers per block, encoder layers.
pub const MAX_LAYERS: usize = 64;
/// Down (and up) blocks of a UNet or VAE: each halves the resolution.
pub const MAX_BLOCKS: usize = 16;
/// Attention heads of a layer.
pub const MAX_HEADS: usize = 1024;
/// Tokens of a text-encoder vocabulary.
pub const MAX_VOCAB: usize = 1 << 20;
/// Positions of a text encoder, and a tokenizer's `model_max_length`.
pub const MAX_POSITIONS: usize = 4096;
/// A UNet's `sample_size` (latent pixels).
pub const MAX_SAMPLE_SIZE: usize = 1024;
/// A VAE's `sample_size` (image pixels).
pub const MAX_IMAGE_SIZE: usize = 8192;

/// An option whose value is one of a few names (`"CrossAttnDownBlock2D"`, `"silu"`, …),
/// deserialised by serde into an enum of the supported ones.
pub trait Choice: DeserializeOwned {
    /// The JSON key of the option.
    const FIELD: &'static str;
    /// The supported names, for messages.
    const SUPPORTED: &'static str;
}

/// The activation between layers (diffusers' `act_fn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ActFn {
    /// x·σ(x).
    #[default]
    #[serde(rename = "silu")]
    Silu,
}

impl Choice for ActFn {
    const FIELD: &'static str = "act_fn";
    const SUPPORTED: &'static str = "silu";
}

/// The largest config or tokenizer file read (CLIP's `vocab.json` is 1.6 MB).
pub const MAX_TEXT_FILE: u64 = 64 << 20;

/// Reads a config or tokenizer file: a regular file of at most [`MAX_TEXT_FILE`] bytes (a device
/// or FIFO would be read until memory runs out). `what` names it when it is absent.
pub(crate) fn read_text(path: &Path, what: &str) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ModelError::MissingFile {
            path: path.to_path_buf(),
            what: what.to_string(),
        },
        _ => ModelError::io(path, source),
    })?;
    if !meta.is_file() {
        return Err(ModelError::config(
            path,
            format!("the {what} is not a regular file"),
        ));
    }
    if meta.len() > MAX_TEXT_FILE {
        return Err(ModelError::config(
            path,
            format!(
                "{} bytes, more than the {MAX_TEXT_FILE} a {what} can be",
                meta.len()
            ),
        ));
    }
    std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))
}

/// The JSON of a config's text; `path` names it in errors.
pub(crate) fn parse_json(text: &str, path: &Path) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| ModelError::config(path, e.to_string()))
}

/// Deserialises `json` into a config, naming the file in errors. Callers first run
/// [`check_choice`] on its named options, so that an unsupported name is
/// [`ModelError::Unsupported`] rather than serde's "unknown variant".
pub(crate) fn parse<T: DeserializeOwned>(json: Value, path: &Path) -> Result<T> {
    serde_json::from_value(json).map_err(|e| ModelError::config(path, e.to_string()))
}

/// Checks the value of `T::FIELD` in `json` (one name, a list of names, or `null`): each must be one
/// of `T`'s. An absent field takes the config's default.
pub(crate) fn check_choice<T: Choice>(json: &Value, path: &Path) -> Result<()> {
    let values: Vec<&Value> = match json.get(T::FIELD) {
        None => return Ok(()),
        Some(Value::Array(list)) => list.iter().collect(),
        Some(value) => vec![value],
    };
    match values
        .into_iter()
        .find(|v| serde_json::from_value::<T>((*v).clone()).is_err())
    {
        None => Ok(()),
        Some(bad) => Err(ModelError::Unsupported {
            path: path.to_path_buf(),
            what: T::FIELD,
            name: bad.as_str().map_or_else(|| bad.to_string(), str::to_string),
            supported: T::SUPPORTED,
        }),
    }
}

/// `value` must be at most `max`: [`ModelError::OutOfRange`] naming `field` otherwise.
pub(crate) fn at_most(path: &Path, field: &str, value: usize, max: usize) -> Result<()> {
    if value <= max {
        return Ok(());
    }
    Err(ModelError::OutOfRange {
        path: path.to_path_buf(),
        field: field.to_string(),
        value,
        max,
    })
}

/// [`at_most`] for each entry of a per-block list, named `field[i]`.
pub(crate) fn each_at_most(path: &Path, field: &str, values: &[usize], max: usize) -> Result<()> {
    for (i, &v) in values.iter().enumerate() {
        at_most(path, &format!("{field}[{i}]"), v, max)?;
    }
    Ok(())
}

/// The block lists of a UNet or VAE config: at most [`MAX_BLOCKS`] blocks, as many down and up
/// block types as `block_out_channels`, each at most [`MAX_CHANNELS`].
pub(crate) fn check_blocks(
    path: &Path,
    block_out_channels: &[usize],
    down_types: usize,
    up_types: usize,
) -> Result<()> {
    let n = block_out_channels.len();
    at_most(path, "block_out_channels (number of blocks)", n, MAX_BLOCKS)?;
    if n == 0 {
        return Err(ModelError::config(path, "block_out_channels is empty"));
    }
    if down_types != n || up_types != n {
        return Err(ModelError::config(
            path,
            format!("{down_types} down and {up_types} up block types for {n} block_out_channels"),
        ));
    }
    each_at_most(path, "block_out_channels", block_out_channels, MAX_CHANNELS)
}

/// A config file with `json` in a fresh folder, for the config parsers' tests.
#[cfg(test)]
pub(crate) fn config_file(json: serde_json::Value) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, json.to_string()).unwrap();
    (dir, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device or FIFO named as a config is refused, not read until memory runs out.
    #[test]
    #[cfg(target_os = "linux")]
    fn only_regular_files_are_read() {
        let e = read_text(Path::new("/dev/zero"), "tokenizer vocabulary").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = read_text(Path::new("/no/such/vocab.json"), "tokenizer vocabulary").unwrap_err();
        assert!(matches!(e, ModelError::MissingFile { .. }), "{e}");
    }

    #[test]
    fn an_unsupported_name_is_named_with_the_supported_ones() {
        let path = Path::new("unet/config.json");
        assert!(check_choice::<ActFn>(&serde_json::json!({"act_fn": "silu"}), path).is_ok());
        assert!(check_choice::<ActFn>(&serde_json::json!({}), path).is_ok());
        for (json, name) in [
            (serde_json::json!({"act_fn": "gelu"}), "gelu"),
            (serde_json::json!({"act_fn": ["silu", "mish"]}), "mish"),
            (serde_json::json!({"act_fn": null}), "null"),
        ] {
            let e = check_choice::<ActFn>(&json, path).unwrap_err();
            let message = e.to_string();
            assert!(
                matches!(&e, ModelError::Unsupported { what: "act_fn", name: n, .. } if n == name),
                "{message}"
            );
            assert!(
                message.contains("unet/config.json") && message.contains("silu"),
                "{message}"
            );
        }
    }
}
