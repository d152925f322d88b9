//! `CLIPTextModel` in Burn.

use std::path::Path;

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, Linear};
use burn::tensor::activation::gelu_approximate;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use super::config::{ClipTextConfig, HiddenAct};
use crate::cpu;
use crate::error::{ModelError, Result};
use crate::layers::{layer_norm, linear};
use crate::weights;

/// Token and position embeddings.
#[derive(Module, Debug)]
pub struct ClipTextEmbeddings {
    pub token_embedding: Embedding,
    pub position_embedding: Embedding,
}

/// Causal multi-head self-attention (`CLIPAttention`).
#[derive(Module, Debug)]
pub struct ClipAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    pub heads: usize,
}

/// The feed-forward block (`CLIPMLP`).
#[derive(Module, Debug)]
pub struct ClipMlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

/// One pre-norm encoder layer (`CLIPEncoderLayer`).
#[derive(Module, Debug)]
pub struct ClipEncoderLayer {
    pub self_attn: ClipAttention,
    pub layer_norm1: LayerNorm,
    pub mlp: ClipMlp,
    pub layer_norm2: LayerNorm,
}

#[derive(Module, Debug)]
pub struct ClipEncoder {
    pub layers: Vec<ClipEncoderLayer>,
}

/// `CLIPTextModel`: parameter paths are transformers' keys without the `text_model.` prefix.
#[derive(Module, Debug)]
pub struct ClipTextModel {
    pub embeddings: ClipTextEmbeddings,
    pub encoder: ClipEncoder,
    pub final_layer_norm: LayerNorm,
    #[module(skip)]
    pub act: HiddenAct,
}

impl ClipTextModel {
    /// Builds the model with lazily initialised random weights.
    pub fn new(config: &ClipTextConfig, device: &Device) -> Self {
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        let layers = (0..config.num_hidden_layers)
            .map(|_| ClipEncoderLayer {
                self_attn: ClipAttention {
                    q_proj: linear(h, h, true, device),
                    k_proj: linear(h, h, true, device),
                    v_proj: linear(h, h, true, device),
                    out_proj: linear(h, h, true, device),
                    heads: config.num_attention_heads,
                },
                layer_norm1: layer_norm(h, eps, device),
                mlp: ClipMlp {
                    fc1: linear(h, config.intermediate_size, true, device),
                    fc2: linear(config.intermediate_size, h, true, device),
                },
                layer_norm2: layer_norm(h, eps, device),
            })
            .collect();
        Self {
            embeddings: ClipTextEmbeddings {
                token_embedding: EmbeddingConfig::new(config.vocab_size, h).init(device),
                position_embedding: EmbeddingConfig::new(config.max_position_embeddings, h)
                    .init(device),
            },
            encoder: ClipEncoder { layers },
            final_layer_norm: layer_norm(h, eps, device),
            act: config.activation(),
        }
    }

    /// Loads `text_encoder/` (config.json + model[.variant].safetensors), casting weights to `dtype`.
    pub fn load(dir: &Path, variant: Option<&str>, dtype: DType, device: &Device) -> Result<Self> {
        let config = ClipTextConfig::from_file(&dir.join("config.json"))?;
        let file = weights::weights_file(dir, "model", variant)?;
        weights::load(Self::new(&config, device), &file, dtype)
    }

    pub fn max_positions(&self) -> usize {
        self.embeddings.position_embedding.weight.lazy_shape()[0]
    }

    /// Hidden states of the last layer after the final layer norm (`last_hidden_state`).
    ///
    /// # Shapes
    /// - ids: `[batch, tokens]` with tokens ≤ max_position_embeddings
    /// - output: `[batch, tokens, hidden]`
    pub fn forward(&self, ids: Tensor<2, Int>) -> Result<Tensor<3>> {
        let [batch, tokens] = ids.dims();
        if tokens > self.max_positions() {
            return Err(ModelError::InputShape {
                what: "token ids",
                expected: format!("at most {} tokens", self.max_positions()),
                found: vec![batch, tokens],
            });
        }
        let device = ids.device();
        let positions = Tensor::<1, Int>::from_data(
            TensorData::new((0..tokens as i64).collect::<Vec<_>>(), [tokens]),
            &device,
        )
        .reshape([1, tokens]);
        let mut x = self.embeddings.token_embedding.forward(ids)
            + self.embeddings.position_embedding.forward(positions);
        for layer in &self.encoder.layers {
            x = layer.forward(x, self.act);
        }
        Ok(self.final_layer_norm.forward(x))
    }
}

impl ClipEncoderLayer {
    fn forward(&self, x: Tensor<3>, act: HiddenAct) -> Tensor<3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x));
        let h = cpu::linear_forward(&self.mlp.fc1, self.layer_norm2.forward(x.clone()));
        let h = match act {
            HiddenAct::QuickGelu => cpu::quick_gelu(h),
            HiddenAct::Gelu => cpu::gelu(h),
            HiddenAct::GeluNew => gelu_approximate(h),
        };
        x + cpu::linear_forward(&self.mlp.fc2, h)
    }
}

impl ClipAttention {
    /// # Shapes
    /// - x, output: `[batch, tokens, hidden]`
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, n, c] = x.dims();
        let heads = self.heads;
        let split = |t: Tensor<3>| t.reshape([b, n, heads, c / heads]).swap_dims(1, 2);
        let q = split(cpu::linear_forward(&self.q_proj, x.clone()));
        let k = split(cpu::linear_forward(&self.k_proj, x.clone()));
        let v = split(cpu::linear_forward(&self.v_proj, x));
        let options = AttentionModuleOptions {
            is_causal: true,
            ..Default::default()
        };
        let out = attention(q, k, v, None, None, options); // [b, heads, n, d]
        cpu::linear_forward(&self.out_proj, out.swap_dims(1, 2).reshape([b, n, c]))
    }
}
