//! `ClipTextConfig`: `text_encoder/config.json` as transformers writes it.

use std::path::Path;

use serde::Deserialize;

use crate::config::{
    self as shared, Choice, MAX_CHANNELS, MAX_HEADS, MAX_LAYERS, MAX_POSITIONS, MAX_VOCAB, at_most,
};
use crate::error::{ModelError, Result};

/// The MLP activation of the encoder layers (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum HiddenAct {
    /// x·σ(1.702x): OpenAI CLIP (SD 1.x).
    #[default]
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// Exact (erf) GELU: OpenCLIP (SD 2.x).
    #[serde(rename = "gelu")]
    Gelu,
    /// tanh approximation of GELU.
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh")]
    GeluNew,
}

impl Choice for HiddenAct {
    const FIELD: &'static str = "hidden_act";
    const SUPPORTED: &'static str = "quick_gelu, gelu, gelu_new, gelu_pytorch_tanh";
}

/// The fields of a `CLIPTextConfig` that define the model; absent fields take transformers'
/// defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: HiddenAct,
    pub layer_norm_eps: f64,
}

/// transformers' `CLIPTextConfig.__init__` defaults.
impl Default for ClipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: HiddenAct::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}

impl ClipTextConfig {
    /// Reads `text_encoder/config.json`; a full `CLIPConfig` (with a `text_config` section) works too.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json_str(&shared::read_text(path, "text encoder config")?, path)
    }

    /// [`from_file`](Self::from_file) of a config's text; `path` names it in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let mut json = shared::parse_json(text, path)?;
        if let Some(inner) = json.get("text_config").cloned() {
            json = inner;
        }
        shared::check_choice::<HiddenAct>(&json, path)?;
        let config: Self = shared::parse(json, path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// OpenAI CLIP ViT-L/14's text tower (SD 1.x).
    pub fn sd15() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_attention_heads: 12,
            ..Self::default()
        }
    }

    /// OpenCLIP ViT-H/14's text tower without its last layer (SD 2.x).
    pub fn sd21() -> Self {
        Self {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 23,
            num_attention_heads: 16,
            hidden_act: HiddenAct::Gelu,
            ..Self::sd15()
        }
    }

    pub fn activation(&self) -> HiddenAct {
        self.hidden_act
    }

    pub(crate) fn validate(&self, path: &Path) -> Result<()> {
        for (field, value, max) in [
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("hidden_size", self.hidden_size, MAX_CHANNELS),
            (
                "intermediate_size",
                self.intermediate_size,
                4 * MAX_CHANNELS,
            ),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            ("num_attention_heads", self.num_attention_heads, MAX_HEADS),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_POSITIONS,
            ),
        ] {
            at_most(path, field, value, max)?;
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(ModelError::config(
                path,
                format!(
                    "hidden_size {} is not divisible by num_attention_heads {}",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<ClipTextConfig> {
        let (_dir, path) = crate::config::config_file(json);
        ClipTextConfig::from_file(&path)
    }

    #[test]
    fn hidden_act_names_and_aliases() {
        for (name, act) in [
            ("quick_gelu", HiddenAct::QuickGelu),
            ("gelu", HiddenAct::Gelu),
            ("gelu_new", HiddenAct::GeluNew),
            ("gelu_pytorch_tanh", HiddenAct::GeluNew),
        ] {
            let config = parse(serde_json::json!({"hidden_act": name})).unwrap();
            assert_eq!(config.activation(), act, "{name}");
        }
        let e = parse(serde_json::json!({"text_config": {"hidden_act": "relu"}})).unwrap_err();
        assert!(
            matches!(&e, ModelError::Unsupported { what: "hidden_act", name, .. } if name == "relu"),
            "{e}"
        );
        assert!(e.to_string().contains("quick_gelu, gelu"), "{e}");
    }

    #[test]
    fn absurd_sizes_name_the_field() {
        for field in [
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "max_position_embeddings",
        ] {
            let e = parse(serde_json::json!({ field: 1_000_000_000 })).unwrap_err();
            assert!(
                matches!(&e, ModelError::OutOfRange { field: f, value: 1_000_000_000, .. }
                    if f == field),
                "{field}: {e}"
            );
            assert!(e.to_string().contains("config.json"), "{e}");
        }
    }
}
