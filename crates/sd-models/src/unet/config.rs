//! `UNetConfig`: `unet/config.json` of diffusers' `UNet2DConditionModel`.
//!
//! Fields that may be a number or a per-block list (`attention_head_dim`, `layers_per_block`,
//! `transformer_layers_per_block`, `cross_attention_dim`, `num_attention_heads`) are resolved to
//! per-down-block lists by [`UNetConfig::resolved`]. Options this port does not implement are
//! rejected by name rather than ignored.

use std::path::Path;

use serde::Deserialize;

use crate::error::{ModelError, Result};

/// A number, or one number per down block.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PerBlock {
    One(usize),
    Many(Vec<usize>),
}

impl PerBlock {
    fn expand(&self, n: usize, field: &str, path: &Path) -> Result<Vec<usize>> {
        match self {
            Self::One(v) => Ok(vec![*v; n]),
            Self::Many(v) if v.len() == n => Ok(v.clone()),
            Self::Many(v) => Err(ModelError::config(
                path,
                format!("{field} has {} entries for {n} blocks", v.len()),
            )),
        }
    }
}

/// The down blocks of the UNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownBlockType {
    CrossAttn,
    Plain,
}

/// The up blocks of the UNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpBlockType {
    CrossAttn,
    Plain,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UNetConfig {
    #[serde(default)]
    pub sample_size: Option<usize>,
    #[serde(default = "four")]
    pub in_channels: usize,
    #[serde(default = "four")]
    pub out_channels: usize,
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: usize,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    #[serde(default = "d_mid")]
    pub mid_block_type: Option<String>,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "two")]
    pub layers_per_block: PerBlock,
    #[serde(default = "one")]
    pub downsample_padding: usize,
    #[serde(default = "one_f")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "d_act")]
    pub act_fn: String,
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    #[serde(default = "d_cross")]
    pub cross_attention_dim: PerBlock,
    #[serde(default = "one_pb")]
    pub transformer_layers_per_block: PerBlock,
    #[serde(default = "d_head")]
    pub attention_head_dim: PerBlock,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock>,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub upcast_attention: bool,
    // Options rejected when set to anything but their SD value.
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default)]
    pub only_cross_attention: serde_json::Value,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    #[serde(default)]
    pub encoder_hid_dim: Option<usize>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    #[serde(default = "d_time_type")]
    pub time_embedding_type: String,
    #[serde(default = "d_shift")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "three")]
    pub conv_in_kernel: usize,
    #[serde(default = "three")]
    pub conv_out_kernel: usize,
    #[serde(default = "d_attn_type")]
    pub attention_type: String,
}

fn one() -> usize {
    1
}
fn three() -> usize {
    3
}
fn four() -> usize {
    4
}
fn yes() -> bool {
    true
}
fn one_f() -> f64 {
    1.0
}
fn two() -> PerBlock {
    PerBlock::One(2)
}
fn one_pb() -> PerBlock {
    PerBlock::One(1)
}
fn d_cross() -> PerBlock {
    PerBlock::One(1280)
}
fn d_head() -> PerBlock {
    PerBlock::One(8)
}
fn d_mid() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn d_act() -> String {
    "silu".into()
}
fn d_groups() -> usize {
    32
}
fn d_eps() -> f64 {
    1e-5
}
fn d_time_type() -> String {
    "positional".into()
}
fn d_shift() -> String {
    "default".into()
}
fn d_attn_type() -> String {
    "default".into()
}

/// Per-down-block values after number-or-list resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedUNet {
    pub down: Vec<DownBlockType>,
    pub up: Vec<UpBlockType>,
    pub layers_per_block: Vec<usize>,
    pub transformer_layers: Vec<usize>,
    pub heads: Vec<usize>,
    pub cross_attention_dim: Vec<usize>,
}

impl UNetConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                path: path.to_path_buf(),
                what: "UNet config".into(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let config: Self =
            serde_json::from_str(&text).map_err(|e| ModelError::config(path, e.to_string()))?;
        config.resolved(path)?;
        Ok(config)
    }

    fn sd(heads: PerBlock, cross: usize, linear: bool, upcast: bool, sample: usize) -> Self {
        serde_json::from_value(serde_json::json!({
            "sample_size": sample,
            "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
            "block_out_channels": [320, 640, 1280, 1280],
            "cross_attention_dim": cross,
            "attention_head_dim": match heads { PerBlock::One(h) => serde_json::json!(h), PerBlock::Many(v) => serde_json::json!(v) },
            "use_linear_projection": linear,
            "upcast_attention": upcast,
        }))
        .expect("preset is valid")
    }

    /// Stable Diffusion 1.5's UNet.
    pub fn sd15() -> Self {
        Self::sd(PerBlock::One(8), 768, false, false, 64)
    }

    /// Stable Diffusion 2.1-base's UNet (512 px, ε-prediction).
    pub fn sd21_base() -> Self {
        Self::sd(PerBlock::Many(vec![5, 10, 20, 20]), 1024, true, false, 64)
    }

    /// Stable Diffusion 2.1's UNet (768 px, v-prediction, attention upcast).
    pub fn sd21() -> Self {
        Self::sd(PerBlock::Many(vec![5, 10, 20, 20]), 1024, true, true, 96)
    }

    /// Checks every option and resolves per-block values. `path` names the config in errors.
    pub fn resolved(&self, path: &Path) -> Result<ResolvedUNet> {
        let n = self.block_out_channels.len();
        let unsupported = |what: &'static str, name: String, supported: &'static str| {
            Err(ModelError::Unsupported {
                path: path.to_path_buf(),
                what,
                name,
                supported,
            })
        };
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(ModelError::config(
                path,
                format!(
                    "{} down and {} up block types for {n} block_out_channels",
                    self.down_block_types.len(),
                    self.up_block_types.len()
                ),
            ));
        }
        let mut down = Vec::new();
        for t in &self.down_block_types {
            down.push(match t.as_str() {
                "CrossAttnDownBlock2D" => DownBlockType::CrossAttn,
                "DownBlock2D" => DownBlockType::Plain,
                _ => {
                    return unsupported(
                        "down block type",
                        t.clone(),
                        "CrossAttnDownBlock2D, DownBlock2D",
                    );
                }
            });
        }
        let mut up = Vec::new();
        for t in &self.up_block_types {
            up.push(match t.as_str() {
                "CrossAttnUpBlock2D" => UpBlockType::CrossAttn,
                "UpBlock2D" => UpBlockType::Plain,
                _ => {
                    return unsupported(
                        "up block type",
                        t.clone(),
                        "CrossAttnUpBlock2D, UpBlock2D",
                    );
                }
            });
        }
        match self.mid_block_type.as_deref() {
            Some("UNetMidBlock2DCrossAttn") => {}
            other => {
                return unsupported(
                    "mid_block_type",
                    format!("{other:?}"),
                    "UNetMidBlock2DCrossAttn",
                );
            }
        }
        let checks: [(&'static str, bool, String, &'static str); 12] = [
            ("act_fn", self.act_fn == "silu", self.act_fn.clone(), "silu"),
            (
                "center_input_sample",
                !self.center_input_sample,
                "true".into(),
                "false",
            ),
            (
                "only_cross_attention",
                matches!(
                    &self.only_cross_attention,
                    serde_json::Value::Null | serde_json::Value::Bool(false)
                ),
                self.only_cross_attention.to_string(),
                "false",
            ),
            (
                "dual_cross_attention",
                !self.dual_cross_attention,
                "true".into(),
                "false",
            ),
            (
                "class_embed_type",
                self.class_embed_type.is_none(),
                format!("{:?}", self.class_embed_type),
                "null",
            ),
            (
                "addition_embed_type",
                self.addition_embed_type.is_none(),
                format!("{:?}", self.addition_embed_type),
                "null",
            ),
            (
                "num_class_embeds",
                self.num_class_embeds.is_none(),
                format!("{:?}", self.num_class_embeds),
                "null",
            ),
            (
                "encoder_hid_dim",
                self.encoder_hid_dim.is_none(),
                format!("{:?}", self.encoder_hid_dim),
                "null",
            ),
            (
                "time_cond_proj_dim",
                self.time_cond_proj_dim.is_none(),
                format!("{:?}", self.time_cond_proj_dim),
                "null",
            ),
            (
                "time_embedding_type",
                self.time_embedding_type == "positional",
                self.time_embedding_type.clone(),
                "positional",
            ),
            (
                "resnet_time_scale_shift",
                self.resnet_time_scale_shift == "default",
                self.resnet_time_scale_shift.clone(),
                "default",
            ),
            (
                "attention_type",
                self.attention_type == "default",
                self.attention_type.clone(),
                "default",
            ),
        ];
        for (what, ok, name, supported) in checks {
            if !ok {
                return unsupported(what, name, supported);
            }
        }
        if self.conv_in_kernel != 3 || self.conv_out_kernel != 3 {
            return unsupported(
                "conv_in_kernel/conv_out_kernel",
                format!("{}/{}", self.conv_in_kernel, self.conv_out_kernel),
                "3",
            );
        }
        let heads = self
            .num_attention_heads
            .as_ref()
            .unwrap_or(&self.attention_head_dim)
            .expand(n, "attention_head_dim", path)?;
        let resolved = ResolvedUNet {
            down,
            up,
            layers_per_block: self.layers_per_block.expand(n, "layers_per_block", path)?,
            transformer_layers: self.transformer_layers_per_block.expand(
                n,
                "transformer_layers_per_block",
                path,
            )?,
            heads,
            cross_attention_dim: self
                .cross_attention_dim
                .expand(n, "cross_attention_dim", path)?,
        };
        let g = self.norm_num_groups;
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            if g == 0 || !c.is_multiple_of(g) {
                return Err(ModelError::config(
                    path,
                    format!(
                        "block_out_channels[{i}] = {c} is not divisible by norm_num_groups {g}"
                    ),
                ));
            }
            let h = resolved.heads[i];
            if h == 0 || !c.is_multiple_of(h) {
                return Err(ModelError::config(
                    path,
                    format!(
                        "block_out_channels[{i}] = {c} is not divisible by its {h} attention heads"
                    ),
                ));
            }
        }
        Ok(resolved)
    }
}
