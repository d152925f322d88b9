//! `Transformer2DModel` and `BasicTransformerBlock` of diffusers: the spatial transformer that
//! lets every latent pixel attend to the others and to the prompt.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, LayerNorm, Linear};
use burn::tensor::{Device, Tensor};

use super::control::{AttentionKind, Hooks};
use crate::attention::Attention;
use crate::cpu::{conv2d_forward, geglu, linear_forward};
use crate::layers::{conv2d, group_norm, layer_norm, linear};

/// GEGLU (Shazeer, arXiv 2002.05202): one projection to twice the width, half gating the other
/// through exact GELU.
#[derive(Module, Debug)]
pub struct GeGlu {
    pub proj: Linear,
}

/// `FeedForward` with GEGLU: `net.0` is [`GeGlu`], `net.2` the output projection.
#[derive(Module, Debug)]
pub struct FeedForward {
    pub geglu: GeGlu,
    pub out: Linear,
}

impl FeedForward {
    fn new(dim: usize, device: &Device) -> Self {
        let inner = dim * 4;
        Self {
            geglu: GeGlu {
                proj: linear(dim, inner * 2, true, device),
            },
            out: linear(inner, dim, true, device),
        }
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = linear_forward(&self.geglu.proj, x);
        linear_forward(&self.out, geglu(h))
    }
}

/// Self-attention, cross-attention to the text states, feed-forward; each pre-normed and residual.
#[derive(Module, Debug)]
pub struct BasicTransformerBlock {
    pub norm1: LayerNorm,
    pub attn1: Attention,
    pub norm2: LayerNorm,
    pub attn2: Attention,
    pub norm3: LayerNorm,
    pub ff: FeedForward,
}

impl BasicTransformerBlock {
    fn new(dim: usize, context_dim: usize, heads: usize, upcast: bool, device: &Device) -> Self {
        Self {
            norm1: layer_norm(dim, 1e-5, device),
            attn1: Attention::transformer(dim, dim, heads, upcast, device),
            norm2: layer_norm(dim, 1e-5, device),
            attn2: Attention::transformer(dim, context_dim, heads, upcast, device),
            norm3: layer_norm(dim, 1e-5, device),
            ff: FeedForward::new(dim, device),
        }
    }

    /// # Shapes
    /// - x: `[batch, h·w, dim]`, context: `[batch, text_tokens, context_dim]`
    fn forward(
        &self,
        x: Tensor<3>,
        context: &Tensor<3>,
        hooks: &mut Hooks,
        [h, w]: [usize; 2],
    ) -> Tensor<3> {
        let n = self.norm1.forward(x.clone());
        let a = match hooks.next(AttentionKind::SelfAttention, h, w) {
            Some((site, control)) => self.attn1.forward_controlled(n, None, &site, control),
            None => self.attn1.forward(n, None),
        };
        let x = a + x;
        let n = self.norm2.forward(x.clone());
        let context = Some(context.clone());
        let a = match hooks.next(AttentionKind::CrossAttention, h, w) {
            Some((site, control)) => self.attn2.forward_controlled(n, context, &site, control),
            None => self.attn2.forward(n, context),
        };
        let x = a + x;
        self.ff.forward(self.norm3.forward(x.clone())) + x
    }
}

/// `proj_in`/`proj_out`: 1×1 convolutions (SD 1.x) or linear layers (`use_linear_projection`, SD 2.x).
#[derive(Module, Debug)]
pub enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

impl Projection {
    fn new(cin: usize, cout: usize, use_linear: bool, device: &Device) -> Self {
        if use_linear {
            Self::Linear(linear(cin, cout, true, device))
        } else {
            Self::Conv(conv2d(cin, cout, 1, 1, 0, device))
        }
    }
}

/// `Transformer2DModel` (continuous input).
#[derive(Module, Debug)]
pub struct Transformer2DModel {
    pub norm: GroupNorm,
    pub proj_in: Projection,
    pub transformer_blocks: Vec<BasicTransformerBlock>,
    pub proj_out: Projection,
}

/// What a spatial transformer needs to know about its place in the UNet.
#[derive(Debug, Clone, Copy)]
pub struct TransformerSpec {
    pub channels: usize,
    pub heads: usize,
    pub layers: usize,
    pub context_dim: usize,
    pub groups: usize,
    pub use_linear_projection: bool,
    pub upcast_attention: bool,
}

impl Transformer2DModel {
    pub fn new(s: TransformerSpec, device: &Device) -> Self {
        let c = s.channels;
        Self {
            norm: group_norm(s.groups, c, 1e-6, device),
            proj_in: Projection::new(c, c, s.use_linear_projection, device),
            transformer_blocks: (0..s.layers)
                .map(|_| {
                    BasicTransformerBlock::new(
                        c,
                        s.context_dim,
                        s.heads,
                        s.upcast_attention,
                        device,
                    )
                })
                .collect(),
            proj_out: Projection::new(c, c, s.use_linear_projection, device),
        }
    }

    /// # Shapes
    /// - x, output: `[batch, channels, h, w]`; context: `[batch, text_tokens, context_dim]`
    /// - hooks: the attention control of this pass, if any
    pub fn forward(&self, x: Tensor<4>, context: &Tensor<3>, hooks: &mut Hooks) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let residual = x.clone();
        let x = self.norm.forward(x);
        let to_tokens = |x: Tensor<4>| x.reshape([b, c, h * w]).swap_dims(1, 2); // [b, hw, c]
        let mut t = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(conv2d_forward(conv, x)),
            Projection::Linear(lin) => linear_forward(lin, to_tokens(x)),
        };
        for block in &self.transformer_blocks {
            t = block.forward(t, context, hooks, [h, w]);
        }
        let to_image = |t: Tensor<3>| t.swap_dims(1, 2).reshape([b, c, h, w]);
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv2d_forward(conv, to_image(t)),
            Projection::Linear(lin) => to_image(linear_forward(lin, t)),
        };
        out + residual
    }
}
