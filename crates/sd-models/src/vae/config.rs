//! `VaeConfig`: `vae/config.json` of diffusers' `AutoencoderKL`.

use std::path::Path;

use serde::Deserialize;

pub use crate::config::ActFn;
use crate::config::{
    self as shared, Choice, MAX_CHANNELS, MAX_IMAGE_SIZE, MAX_LAYERS, at_most, check_blocks,
};
use crate::error::{ModelError, Result};

/// The encoder's down blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum EncoderBlockType {
    #[serde(rename = "DownEncoderBlock2D")]
    DownEncoder,
}

impl Choice for EncoderBlockType {
    const FIELD: &'static str = "down_block_types";
    const SUPPORTED: &'static str = "DownEncoderBlock2D";
}

/// The decoder's up blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DecoderBlockType {
    #[serde(rename = "UpDecoderBlock2D")]
    UpDecoder,
}

impl Choice for DecoderBlockType {
    const FIELD: &'static str = "up_block_types";
    const SUPPORTED: &'static str = "UpDecoderBlock2D";
}

/// The fields of an `AutoencoderKL` config; absent fields take diffusers' defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub down_block_types: Vec<EncoderBlockType>,
    pub up_block_types: Vec<DecoderBlockType>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub act_fn: ActFn,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    pub sample_size: usize,
    pub scaling_factor: f64,
    pub shift_factor: Option<f64>,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
}

/// diffusers' `AutoencoderKL.__init__` defaults.
impl Default for VaeConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec![EncoderBlockType::DownEncoder],
            up_block_types: vec![DecoderBlockType::UpDecoder],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: ActFn::Silu,
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: 32,
            scaling_factor: 0.18215,
            shift_factor: None,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }
}

impl VaeConfig {
    /// Reads and checks `vae/config.json`: every option supported, every size within its limit.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json_str(&shared::read_text(path, "VAE config")?, path)
    }

    /// [`from_file`](Self::from_file) of a config's text; `path` names it in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let json = shared::parse_json(text, path)?;
        shared::check_choice::<EncoderBlockType>(&json, path)?;
        shared::check_choice::<DecoderBlockType>(&json, path)?;
        shared::check_choice::<ActFn>(&json, path)?;
        let config: Self = shared::parse(json, path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// The KL-f8 autoencoder of SD 1.x/2.x at `sample_size` px.
    pub fn sd(sample_size: usize) -> Self {
        Self {
            down_block_types: vec![EncoderBlockType::DownEncoder; 4],
            up_block_types: vec![DecoderBlockType::UpDecoder; 4],
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            sample_size,
            ..Self::default()
        }
    }

    /// Image pixels per latent pixel along each axis: 2^(number of down blocks − 1).
    pub fn downsample_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    pub(crate) fn validate(&self, path: &Path) -> Result<()> {
        check_blocks(
            path,
            &self.block_out_channels,
            self.down_block_types.len(),
            self.up_block_types.len(),
        )?;
        for (field, value) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("latent_channels", self.latent_channels),
        ] {
            at_most(path, field, value, MAX_CHANNELS)?;
        }
        at_most(path, "layers_per_block", self.layers_per_block, MAX_LAYERS)?;
        at_most(path, "sample_size", self.sample_size, MAX_IMAGE_SIZE)?;
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|&&c| self.norm_num_groups == 0 || !c.is_multiple_of(self.norm_num_groups))
        {
            return Err(ModelError::config(
                path,
                format!(
                    "block_out_channels {c} is not divisible by norm_num_groups {}",
                    self.norm_num_groups
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<VaeConfig> {
        let (_dir, path) = crate::config::config_file(json);
        VaeConfig::from_file(&path)
    }

    #[test]
    fn unsupported_block_types_name_the_value_and_the_supported_ones() {
        let e = parse(serde_json::json!({"up_block_types": ["AttnUpDecoderBlock2D"]})).unwrap_err();
        assert!(
            matches!(&e, ModelError::Unsupported { what: "up_block_types", name, supported, .. }
                if name == "AttnUpDecoderBlock2D" && *supported == "UpDecoderBlock2D"),
            "{e}"
        );
        assert!(parse(serde_json::json!({})).is_ok());
    }

    #[test]
    fn absurd_sizes_name_the_field() {
        for (field, value) in [
            ("layers_per_block", serde_json::json!(1_000_000_000)),
            ("block_out_channels", serde_json::json!([1_000_000_000])),
            ("latent_channels", serde_json::json!(1_000_000_000)),
            ("sample_size", serde_json::json!(1_000_000_000)),
        ] {
            let e = parse(serde_json::json!({ field: value })).unwrap_err();
            assert!(
                matches!(&e, ModelError::OutOfRange { field: f, value: 1_000_000_000, .. }
                    if f.starts_with(field)),
                "{field}: {e}"
            );
            assert!(e.to_string().contains("config.json"), "{e}");
        }
    }
}
