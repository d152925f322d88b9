//! `UNetConfig`: `unet/config.json` of diffusers' `UNet2DConditionModel`.
//!
//! Block types and the activation deserialise into enums of what this port implements; fields that
//! may be a number or a per-block list (`attention_head_dim`, `layers_per_block`,
//! `transformer_layers_per_block`, `cross_attention_dim`, `num_attention_heads`) are resolved to one
//! [`BlockConfig`] per block by [`UNetConfig::resolved`]. Options this port does not implement are
//! rejected by name rather than ignored ([`UNetConfig::check_supported`]), and numbers that size
//! the model are bounded (`crate::config`'s limits).

mod per_block;
mod supported;

use std::path::Path;

use serde::Deserialize;

pub use per_block::{
    BlockConfig, DownBlockConfig, MidBlockConfig, PerBlock, ResolvedUNet, UpBlockConfig,
};

pub use crate::config::ActFn;
use crate::config::{self as shared, Choice};
use crate::error::Result;

/// The down blocks of the UNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DownBlockType {
    /// Resnets, each followed by a spatial transformer.
    #[serde(rename = "CrossAttnDownBlock2D")]
    CrossAttn,
    #[serde(rename = "DownBlock2D")]
    Plain,
}

impl Choice for DownBlockType {
    const FIELD: &'static str = "down_block_types";
    const SUPPORTED: &'static str = "CrossAttnDownBlock2D, DownBlock2D";
}

/// The up blocks of the UNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum UpBlockType {
    /// Resnets, each followed by a spatial transformer.
    #[serde(rename = "CrossAttnUpBlock2D")]
    CrossAttn,
    #[serde(rename = "UpBlock2D")]
    Plain,
}

impl Choice for UpBlockType {
    const FIELD: &'static str = "up_block_types";
    const SUPPORTED: &'static str = "CrossAttnUpBlock2D, UpBlock2D";
}

/// The mid block of the UNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum MidBlockType {
    /// Resnet, then (spatial transformer, resnet).
    #[default]
    #[serde(rename = "UNetMidBlock2DCrossAttn")]
    CrossAttn,
}

impl Choice for MidBlockType {
    const FIELD: &'static str = "mid_block_type";
    const SUPPORTED: &'static str = "UNetMidBlock2DCrossAttn";
}

impl DownBlockType {
    /// Whether the block has spatial transformers.
    pub fn has_cross_attention(self) -> bool {
        self == Self::CrossAttn
    }
}

impl UpBlockType {
    /// Whether the block has spatial transformers.
    pub fn has_cross_attention(self) -> bool {
        self == Self::CrossAttn
    }
}

/// The fields of a `UNet2DConditionModel` config; absent fields take diffusers' defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct UNetConfig {
    pub sample_size: Option<usize>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub flip_sin_to_cos: bool,
    pub freq_shift: usize,
    pub down_block_types: Vec<DownBlockType>,
    pub up_block_types: Vec<UpBlockType>,
    pub mid_block_type: MidBlockType,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: PerBlock,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
    pub act_fn: ActFn,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub cross_attention_dim: PerBlock,
    pub transformer_layers_per_block: PerBlock,
    pub attention_head_dim: PerBlock,
    pub num_attention_heads: Option<PerBlock>,
    pub use_linear_projection: bool,
    pub upcast_attention: bool,
    // Options rejected when set to anything but their SD value.
    pub center_input_sample: bool,
    pub only_cross_attention: serde_json::Value,
    pub dual_cross_attention: bool,
    pub class_embed_type: Option<String>,
    pub addition_embed_type: Option<String>,
    pub num_class_embeds: Option<usize>,
    pub encoder_hid_dim: Option<usize>,
    pub time_cond_proj_dim: Option<usize>,
    pub time_embedding_type: String,
    pub resnet_time_scale_shift: String,
    pub conv_in_kernel: usize,
    pub conv_out_kernel: usize,
    pub attention_type: String,
}

/// diffusers' `UNet2DConditionModel.__init__` defaults (Stable Diffusion 1.x's layout).
impl Default for UNetConfig {
    fn default() -> Self {
        use DownBlockType as D;
        use UpBlockType as U;
        Self {
            sample_size: None,
            in_channels: 4,
            out_channels: 4,
            flip_sin_to_cos: true,
            freq_shift: 0,
            down_block_types: vec![D::CrossAttn, D::CrossAttn, D::CrossAttn, D::Plain],
            up_block_types: vec![U::Plain, U::CrossAttn, U::CrossAttn, U::CrossAttn],
            mid_block_type: MidBlockType::CrossAttn,
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: PerBlock::One(2),
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: ActFn::Silu,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            cross_attention_dim: PerBlock::One(1280),
            transformer_layers_per_block: PerBlock::One(1),
            attention_head_dim: PerBlock::One(8),
            num_attention_heads: None,
            use_linear_projection: false,
            upcast_attention: false,
            center_input_sample: false,
            only_cross_attention: serde_json::Value::Null,
            dual_cross_attention: false,
            class_embed_type: None,
            addition_embed_type: None,
            num_class_embeds: None,
            encoder_hid_dim: None,
            time_cond_proj_dim: None,
            time_embedding_type: "positional".into(),
            resnet_time_scale_shift: "default".into(),
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            attention_type: "default".into(),
        }
    }
}

impl UNetConfig {
    /// Reads and checks `unet/config.json`: every option supported, every size within its limit.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json_str(&shared::read_text(path, "UNet config")?, path)
    }

    /// [`from_file`](Self::from_file) of a config's text; `path` names it in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let json = shared::parse_json(text, path)?;
        shared::check_choice::<DownBlockType>(&json, path)?;
        shared::check_choice::<UpBlockType>(&json, path)?;
        shared::check_choice::<MidBlockType>(&json, path)?;
        shared::check_choice::<ActFn>(&json, path)?;
        let config: Self = shared::parse(json, path)?;
        config.resolved(path)?;
        Ok(config)
    }

    fn sd(heads: PerBlock, cross: usize, linear: bool, upcast: bool, sample: usize) -> Self {
        Self {
            sample_size: Some(sample),
            cross_attention_dim: PerBlock::One(cross),
            attention_head_dim: heads,
            use_linear_projection: linear,
            upcast_attention: upcast,
            ..Self::default()
        }
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

    /// The width of the text states each block attends to, per down block (one value when the
    /// config gives one for all): what the text encoder's `hidden_size` must equal.
    pub fn cross_attention_dims(&self) -> Vec<usize> {
        match &self.cross_attention_dim {
            PerBlock::One(d) => vec![*d; self.block_out_channels.len()],
            PerBlock::Many(v) => v.clone(),
        }
    }

    /// Checks every option ([`check_supported`](Self::check_supported)) and resolves the blocks.
    /// `path` names the config in errors.
    pub fn resolved(&self, path: &Path) -> Result<ResolvedUNet> {
        self.check_supported(path)?;
        self.check_sizes(path)?;
        self.blocks(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ModelError;

    fn parse(json: serde_json::Value) -> Result<UNetConfig> {
        let (_dir, path) = crate::config::config_file(json);
        UNetConfig::from_file(&path)
    }

    #[test]
    fn defaults_are_diffusers_and_the_sd15_preset() {
        let config = parse(serde_json::json!({"sample_size": 64, "cross_attention_dim": 768}));
        assert_eq!(config.unwrap(), UNetConfig::sd15());
        assert_eq!(UNetConfig::sd15().cross_attention_dims(), [768; 4]);
    }

    #[test]
    fn unsupported_block_types_name_the_value_and_the_supported_ones() {
        let e = parse(serde_json::json!({
            "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                 "SimpleCrossAttnDownBlock2D", "DownBlock2D"],
        }))
        .unwrap_err();
        assert!(
            matches!(&e, ModelError::Unsupported { what: "down_block_types", name, .. }
                if name == "SimpleCrossAttnDownBlock2D"),
            "{e}"
        );
        assert!(
            e.to_string().contains("CrossAttnDownBlock2D, DownBlock2D"),
            "{e}"
        );
        let e = parse(serde_json::json!({"mid_block_type": null})).unwrap_err();
        assert!(
            matches!(
                &e,
                ModelError::Unsupported {
                    what: "mid_block_type",
                    ..
                }
            ),
            "{e}"
        );
        let e = parse(serde_json::json!({"act_fn": "gelu"})).unwrap_err();
        assert!(
            matches!(&e, ModelError::Unsupported { what: "act_fn", .. }),
            "{e}"
        );
        let e = parse(serde_json::json!({"mid_block_scale_factor": 1.5})).unwrap_err();
        assert!(
            matches!(&e, ModelError::Unsupported { what: "mid_block_scale_factor", name, .. }
                if name == "1.5"),
            "{e}"
        );
    }

    #[test]
    fn absurd_sizes_name_the_field() {
        for (field, value) in [
            ("layers_per_block", serde_json::json!(1_000_000_000)),
            (
                "block_out_channels",
                serde_json::json!([320, 640, 1_000_000_000, 1280]),
            ),
            ("cross_attention_dim", serde_json::json!(1_000_000_000)),
            (
                "transformer_layers_per_block",
                serde_json::json!(1_000_000_000),
            ),
            ("attention_head_dim", serde_json::json!(1_000_000_000)),
            ("in_channels", serde_json::json!(1_000_000_000)),
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
