//! Multi-head attention as diffusers' `Attention` (the UNet's self/cross attention and the VAE's
//! single-head spatial attention).
//!
//! The score matrix is never built here: Burn's `attention` op is fused on backends that have a
//! fused kernel and falls back to a plain softmax(QKᵀ/√d)V elsewhere. The scale is left unset so that
//! the backend's fused path (with its default 1/√d) is taken.

use burn::module::Module;
use burn::nn::{GroupNorm, Linear};
use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Device, Tensor};

use crate::cpu::{linear_forward, multi_head_bf16, multi_head_f32};
use crate::layers::{group_norm, linear};
use crate::unet::control::{AttentionControl, AttentionSite};

/// `diffusers.models.attention_processor.Attention`.
#[derive(Module, Debug)]
pub struct Attention {
    /// Present in the VAE's attention (a spatial block with its own norm and residual).
    pub group_norm: Option<GroupNorm>,
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    pub to_out: Linear,
    pub heads: usize,
    /// Compute the scores in f32 even when the model runs in f16/bf16 (`upcast_attention`).
    pub upcast: bool,
}

impl Attention {
    /// UNet attention: no q/k/v bias, `heads` heads over `query_dim` channels; keys and values come
    /// from `context_dim` channels (the text states) for cross-attention.
    pub fn transformer(
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        upcast: bool,
        device: &Device,
    ) -> Self {
        Self {
            group_norm: None,
            to_q: linear(query_dim, query_dim, false, device),
            to_k: linear(context_dim, query_dim, false, device),
            to_v: linear(context_dim, query_dim, false, device),
            to_out: linear(query_dim, query_dim, true, device),
            heads,
            upcast,
        }
    }

    /// VAE mid-block attention: one head over all channels, with biases and a group norm.
    pub fn spatial(channels: usize, groups: usize, device: &Device) -> Self {
        Self {
            group_norm: Some(group_norm(groups, channels, 1e-6, device)),
            to_q: linear(channels, channels, true, device),
            to_k: linear(channels, channels, true, device),
            to_v: linear(channels, channels, true, device),
            to_out: linear(channels, channels, true, device),
            heads: 1,
            upcast: true,
        }
    }

    /// Attention of `x` over itself (`context = None`) or over `context`.
    ///
    /// # Shapes
    /// - x: `[batch, tokens, query_dim]`
    /// - context: `[batch, context_tokens, context_dim]`
    /// - output: `[batch, tokens, query_dim]`
    pub fn forward(&self, x: Tensor<3>, context: Option<Tensor<3>>) -> Tensor<3> {
        let context = context.unwrap_or_else(|| x.clone());
        let q = linear_forward(&self.to_q, x);
        let k = linear_forward(&self.to_k, context.clone());
        let v = linear_forward(&self.to_v, context);
        // Under bf16 autocast (bf16 projection weights, f32 activations) on the CPU backend.
        let autocast = self.to_q.weight.val().dtype() == DType::BF16;
        let fused = match autocast {
            true => multi_head_bf16(&q, &k, &v, self.heads),
            false => multi_head_f32(&q, &k, &v, self.heads),
        };
        let out = fused.unwrap_or_else(|| multi_head(q, k, v, self.heads, self.upcast));
        linear_forward(&self.to_out, out)
    }

    /// [`forward`](Self::forward) with the probabilities computed explicitly and handed to
    /// `control` (see [`crate::unet::control`]), which returns those to apply.
    pub fn forward_controlled(
        &self,
        x: Tensor<3>,
        context: Option<Tensor<3>>,
        site: &AttentionSite,
        control: &mut dyn AttentionControl,
    ) -> Tensor<3> {
        let context = context.unwrap_or_else(|| x.clone());
        let q = linear_forward(&self.to_q, x);
        let k = linear_forward(&self.to_k, context.clone());
        let v = linear_forward(&self.to_v, context);
        let out = multi_head_explicit(q, k, v, self.heads, |p| control.control(site, p));
        linear_forward(&self.to_out, out)
    }

    /// The VAE's spatial self-attention with its norm and residual.
    ///
    /// # Shapes
    /// - x, output: `[batch, channels, height, width]`
    pub fn forward_spatial(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let residual = x.clone();
        let x = match &self.group_norm {
            Some(norm) => norm.forward(x),
            None => x,
        };
        let x = x.reshape([b, c, h * w]).swap_dims(1, 2); // [b, hw, c]
        let x = self.forward(x, None);
        x.swap_dims(1, 2).reshape([b, c, h, w]) + residual
    }
}

/// Scaled dot-product attention over `heads` heads.
///
/// # Shapes
/// - q: `[batch, q_tokens, heads·d]`, k/v: `[batch, kv_tokens, heads·d]`
/// - output: `[batch, q_tokens, heads·d]`
pub fn multi_head(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    upcast: bool,
) -> Tensor<3> {
    let dtype = q.dtype();
    let split = |t: Tensor<3>| {
        let [b, n, c] = t.dims();
        t.reshape([b, n, heads, c / heads]).swap_dims(1, 2) // [b, heads, n, d]
    };
    let (mut q, mut k, mut v) = (split(q), split(k), split(v));
    let upcast = upcast && dtype != DType::F32;
    if upcast {
        q = q.cast(DType::F32);
        k = k.cast(DType::F32);
        v = v.cast(DType::F32);
    }
    let out = attention(q, k, v, None, None, AttentionModuleOptions::default());
    let out = if upcast { out.cast(dtype) } else { out };
    let [b, h, n, d] = out.dims();
    out.swap_dims(1, 2).reshape([b, n, h * d])
}

/// [`multi_head`] as softmax(QKᵀ/√d)·V with the probabilities, in f32, passed through `edit`.
///
/// # Shapes
/// - q: `[batch, q_tokens, heads·d]`, k/v: `[batch, kv_tokens, heads·d]`
/// - the probabilities `edit` takes and returns: `[batch, heads, q_tokens, kv_tokens]`
/// - output: `[batch, q_tokens, heads·d]`
pub fn multi_head_explicit(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    edit: impl FnOnce(Tensor<4>) -> Tensor<4>,
) -> Tensor<3> {
    let dtype = q.dtype();
    let split = |t: Tensor<3>| {
        let [b, n, c] = t.dims();
        t.reshape([b, n, heads, c / heads])
            .swap_dims(1, 2)
            .cast(DType::F32) // [b, heads, n, d]
    };
    let (q, k, v) = (split(q), split(k), split(v));
    let d = q.dims()[3];
    let scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (d as f64).sqrt());
    let probs = edit(softmax(scores, 3));
    let out = probs.matmul(v).cast(dtype);
    let [b, h, n, d] = out.dims();
    out.swap_dims(1, 2).reshape([b, n, h * d])
}
