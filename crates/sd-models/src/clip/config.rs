//! `ClipTextConfig`: `text_encoder/config.json` as transformers writes it.

use std::path::Path;

use serde::Deserialize;

use crate::error::{ModelError, Result};

/// The MLP activation of the encoder layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenAct {
    /// x·σ(1.702x): OpenAI CLIP (SD 1.x).
    QuickGelu,
    /// Exact (erf) GELU: OpenCLIP (SD 2.x).
    Gelu,
    /// tanh approximation of GELU.
    GeluNew,
}

/// The fields of a `CLIPTextConfig` that define the model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClipTextConfig {
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
}

fn d_vocab() -> usize {
    49408
}
fn d_hidden() -> usize {
    512
}
fn d_inter() -> usize {
    2048
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    8
}
fn d_pos() -> usize {
    77
}
fn d_act() -> String {
    "quick_gelu".into()
}
fn d_eps() -> f64 {
    1e-5
}

impl ClipTextConfig {
    /// Reads `text_encoder/config.json`; a full `CLIPConfig` (with a `text_config` section) works too.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                path: path.to_path_buf(),
                what: "text encoder config".into(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let mut value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::config(path, e.to_string()))?;
        if let Some(inner) = value.get("text_config").cloned() {
            value = inner;
        }
        let config: Self =
            serde_json::from_value(value).map_err(|e| ModelError::config(path, e.to_string()))?;
        config.validate(path)?;
        Ok(config)
    }

    /// OpenAI CLIP ViT-L/14's text tower (SD 1.x).
    pub fn sd15() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }

    /// OpenCLIP ViT-H/14's text tower without its last layer (SD 2.x).
    pub fn sd21() -> Self {
        Self {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 23,
            num_attention_heads: 16,
            hidden_act: "gelu".into(),
            ..Self::sd15()
        }
    }

    pub fn activation(&self) -> HiddenAct {
        match self.hidden_act.as_str() {
            "quick_gelu" => HiddenAct::QuickGelu,
            "gelu_new" | "gelu_pytorch_tanh" => HiddenAct::GeluNew,
            _ => HiddenAct::Gelu,
        }
    }

    pub(crate) fn validate(&self, path: &Path) -> Result<()> {
        if !matches!(
            self.hidden_act.as_str(),
            "quick_gelu" | "gelu" | "gelu_new" | "gelu_pytorch_tanh"
        ) {
            return Err(ModelError::Unsupported {
                path: path.to_path_buf(),
                what: "hidden_act",
                name: self.hidden_act.clone(),
                supported: "quick_gelu, gelu, gelu_new",
            });
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
