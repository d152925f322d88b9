//! `AutoencoderTinyConfig`: `config.json` of diffusers' `AutoencoderTiny` (TAESD).

use std::path::Path;

use serde::Deserialize;

use crate::config::{
    self as shared, Choice, MAX_BLOCKS, MAX_CHANNELS, MAX_LAYERS, at_most, each_at_most,
};
use crate::error::{ModelError, Result};

/// The activation of TAESD's blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum TinyActFn {
    #[default]
    #[serde(rename = "relu")]
    Relu,
}

impl Choice for TinyActFn {
    const FIELD: &'static str = "act_fn";
    const SUPPORTED: &'static str = "relu";
}

/// How the decoder upsamples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum UpsampleFn {
    #[default]
    #[serde(rename = "nearest")]
    Nearest,
}

impl Choice for UpsampleFn {
    const FIELD: &'static str = "upsample_fn";
    const SUPPORTED: &'static str = "nearest";
}

/// The fields of an `AutoencoderTiny` config; absent fields take diffusers' defaults (TAESD's).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct AutoencoderTinyConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub encoder_block_out_channels: Vec<usize>,
    pub decoder_block_out_channels: Vec<usize>,
    pub act_fn: TinyActFn,
    pub upsample_fn: UpsampleFn,
    pub latent_channels: usize,
    pub upsampling_scaling_factor: usize,
    pub num_encoder_blocks: Vec<usize>,
    pub num_decoder_blocks: Vec<usize>,
    pub scaling_factor: f64,
    pub shift_factor: f64,
}

/// diffusers' `AutoencoderTiny.__init__` defaults.
impl Default for AutoencoderTinyConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            encoder_block_out_channels: vec![64; 4],
            decoder_block_out_channels: vec![64; 4],
            act_fn: TinyActFn::Relu,
            upsample_fn: UpsampleFn::Nearest,
            latent_channels: 4,
            upsampling_scaling_factor: 2,
            num_encoder_blocks: vec![1, 3, 3, 3],
            num_decoder_blocks: vec![3, 3, 3, 1],
            scaling_factor: 1.0,
            shift_factor: 0.0,
        }
    }
}

impl AutoencoderTinyConfig {
    /// Reads and checks a TAESD `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json_str(&shared::read_text(path, "AutoencoderTiny config")?, path)
    }

    /// [`from_file`](Self::from_file) of a config's text; `path` names it in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let json = shared::parse_json(text, path)?;
        if let Some(class) = json.get("_class_name").and_then(|c| c.as_str())
            && class != "AutoencoderTiny"
        {
            return Err(ModelError::config(
                path,
                format!("this is a {class}, not an AutoencoderTiny (TAESD)"),
            ));
        }
        shared::check_choice::<TinyActFn>(&json, path)?;
        shared::check_choice::<UpsampleFn>(&json, path)?;
        let config: Self = shared::parse(json, path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Image pixels per latent pixel along each axis: the encoder's stride-2 convolutions.
    pub fn downsample_factor(&self) -> usize {
        1 << self.num_encoder_blocks.len().saturating_sub(1)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        for (side, channels, blocks) in [
            (
                "encoder",
                &self.encoder_block_out_channels,
                &self.num_encoder_blocks,
            ),
            (
                "decoder",
                &self.decoder_block_out_channels,
                &self.num_decoder_blocks,
            ),
        ] {
            at_most(
                path,
                &format!("num_{side}_blocks (length)"),
                blocks.len(),
                MAX_BLOCKS,
            )?;
            if blocks.is_empty() || channels.len() != blocks.len() {
                return Err(ModelError::config(
                    path,
                    format!(
                        "{side}_block_out_channels has {} entries and num_{side}_blocks {}: they must be equal and not empty",
                        channels.len(),
                        blocks.len()
                    ),
                ));
            }
            each_at_most(
                path,
                &format!("{side}_block_out_channels"),
                channels,
                MAX_CHANNELS,
            )?;
            each_at_most(path, &format!("num_{side}_blocks"), blocks, MAX_LAYERS)?;
        }
        // The encoder's stride-2 convolutions keep the channel count of their stage.
        if self
            .encoder_block_out_channels
            .windows(2)
            .any(|w| w[0] != w[1])
        {
            return Err(ModelError::config(
                path,
                "encoder_block_out_channels must all be equal (each stage's downsampling convolution keeps its channels)",
            ));
        }
        for (field, value) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("latent_channels", self.latent_channels),
        ] {
            at_most(path, field, value, MAX_CHANNELS)?;
        }
        if self.upsampling_scaling_factor != 2 {
            return Err(ModelError::config(
                path,
                format!(
                    "upsampling_scaling_factor {} is not supported (TAESD's is 2)",
                    self.upsampling_scaling_factor
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<AutoencoderTinyConfig> {
        let (_dir, path) = crate::config::config_file(json);
        AutoencoderTinyConfig::from_file(&path)
    }

    #[test]
    fn taesd_configs_parse_and_others_are_named_errors() {
        let c = parse(serde_json::json!({"_class_name": "AutoencoderTiny"})).unwrap();
        assert_eq!((c.downsample_factor(), c.latent_channels), (8, 4));
        let e = parse(serde_json::json!({"_class_name": "AutoencoderKL"})).unwrap_err();
        assert!(e.to_string().contains("not an AutoencoderTiny"), "{e}");
        let e = parse(serde_json::json!({"act_fn": "silu"})).unwrap_err();
        assert!(
            matches!(&e, ModelError::Unsupported { what: "act_fn", .. }),
            "{e}"
        );
        let e = parse(serde_json::json!({"num_decoder_blocks": [1, 1]})).unwrap_err();
        assert!(e.to_string().contains("must be equal"), "{e}");
        let e =
            parse(serde_json::json!({"num_encoder_blocks": [1, 1_000_000_000, 1, 1]})).unwrap_err();
        assert!(
            matches!(
                &e,
                ModelError::OutOfRange {
                    value: 1_000_000_000,
                    ..
                }
            ),
            "{e}"
        );
    }
}
