//! `VaeConfig`: `vae/config.json` of diffusers' `AutoencoderKL`.

use std::path::Path;

use serde::Deserialize;

use crate::error::{ModelError, Result};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub out_channels: usize,
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    #[serde(default = "d_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "one")]
    pub layers_per_block: usize,
    #[serde(default = "d_act")]
    pub act_fn: String,
    #[serde(default = "four")]
    pub latent_channels: usize,
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "d_sample")]
    pub sample_size: usize,
    #[serde(default = "d_scaling")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
}

fn three() -> usize {
    3
}
fn four() -> usize {
    4
}
fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn d_down() -> Vec<String> {
    vec!["DownEncoderBlock2D".into()]
}
fn d_up() -> Vec<String> {
    vec!["UpDecoderBlock2D".into()]
}
fn d_channels() -> Vec<usize> {
    vec![64]
}
fn d_act() -> String {
    "silu".into()
}
fn d_groups() -> usize {
    32
}
fn d_sample() -> usize {
    32
}
fn d_scaling() -> f64 {
    0.18215
}

impl VaeConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                path: path.to_path_buf(),
                what: "VAE config".into(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let config: Self =
            serde_json::from_str(&text).map_err(|e| ModelError::config(path, e.to_string()))?;
        config.validate(path)?;
        Ok(config)
    }

    /// The KL-f8 autoencoder of SD 1.x/2.x at `sample_size` px.
    pub fn sd(sample_size: usize) -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into(); 4],
            up_block_types: vec!["UpDecoderBlock2D".into(); 4],
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size,
            scaling_factor: 0.18215,
            shift_factor: None,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }

    /// Image pixels per latent pixel along each axis: 2^(number of down blocks − 1).
    pub fn downsample_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    pub(crate) fn validate(&self, path: &Path) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(ModelError::config(path, "block_out_channels is empty"));
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(ModelError::config(
                path,
                format!(
                    "{} down and {} up block types for {n} block_out_channels",
                    self.down_block_types.len(),
                    self.up_block_types.len()
                ),
            ));
        }
        for t in &self.down_block_types {
            if t != "DownEncoderBlock2D" {
                return Err(unsupported(
                    path,
                    "down block type",
                    t,
                    "DownEncoderBlock2D",
                ));
            }
        }
        for t in &self.up_block_types {
            if t != "UpDecoderBlock2D" {
                return Err(unsupported(path, "up block type", t, "UpDecoderBlock2D"));
            }
        }
        if self.act_fn != "silu" {
            return Err(unsupported(path, "act_fn", &self.act_fn, "silu"));
        }
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

fn unsupported(path: &Path, what: &'static str, name: &str, supported: &'static str) -> ModelError {
    ModelError::Unsupported {
        path: path.to_path_buf(),
        what,
        name: name.to_string(),
        supported,
    }
}
