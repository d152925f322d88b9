//! Small constructors shared by every model: the layer shapes diffusers and transformers use,
//! built lazily (parameters are only materialised if nothing loads them). Their forward passes on
//! the CPU backend go through [`crate::cpu`] where a kernel is faster than Burn's op.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d,
};
use burn::tensor::Device;

/// `nn.Conv2d(cin, cout, k, stride, padding)`.
pub fn conv2d(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: usize,
    device: &Device,
) -> Conv2d {
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(
            padding, padding, padding, padding,
        ))
        .init(device)
}

/// `nn.Linear(din, dout, bias)`.
pub fn linear(din: usize, dout: usize, bias: bool, device: &Device) -> Linear {
    LinearConfig::new(din, dout).with_bias(bias).init(device)
}

/// `nn.GroupNorm(groups, channels, eps)`; callers check divisibility when validating configs.
pub fn group_norm(groups: usize, channels: usize, eps: f64, device: &Device) -> GroupNorm {
    GroupNormConfig::new(groups, channels)
        .with_epsilon(eps)
        .init(device)
}

/// `nn.LayerNorm(dim, eps)`.
pub fn layer_norm(dim: usize, eps: f64, device: &Device) -> LayerNorm {
    LayerNormConfig::new(dim).with_epsilon(eps).init(device)
}
