//! `ResnetBlock2D`, `Downsample2D` and `Upsample2D` of diffusers, shared by the UNet and the VAE.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, Linear};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor};

use crate::cpu::{conv2d_forward, group_norm_silu, linear_forward, upsample_nearest_conv};
use crate::layers::{conv2d, group_norm, linear};

/// Two 3×3 convolutions with group norm and SiLU, the time embedding added in between (UNet only),
/// and a 1×1 shortcut when the channel count changes.
#[derive(Module, Debug)]
pub struct ResnetBlock2D {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    pub time_emb_proj: Option<Linear>,
    pub norm2: GroupNorm,
    pub conv2: Conv2d,
    pub conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock2D {
    pub fn new(
        cin: usize,
        cout: usize,
        temb_channels: Option<usize>,
        groups: usize,
        eps: f64,
        device: &Device,
    ) -> Self {
        Self {
            norm1: group_norm(groups, cin, eps, device),
            conv1: conv2d(cin, cout, 3, 1, 1, device),
            time_emb_proj: temb_channels.map(|t| linear(t, cout, true, device)),
            norm2: group_norm(groups, cout, eps, device),
            conv2: conv2d(cout, cout, 3, 1, 1, device),
            conv_shortcut: (cin != cout).then(|| conv2d(cin, cout, 1, 1, 0, device)),
        }
    }

    /// # Shapes
    /// - x: `[batch, cin, h, w]`, temb: `[batch, temb_channels]`
    /// - output: `[batch, cout, h, w]`
    pub fn forward(&self, x: Tensor<4>, temb: Option<&Tensor<2>>) -> Tensor<4> {
        let h = conv2d_forward(&self.conv1, group_norm_silu(&self.norm1, x.clone()));
        let h = match (&self.time_emb_proj, temb) {
            (Some(proj), Some(temb)) => {
                let t = linear_forward(proj, silu(temb.clone())); // [batch, cout]
                let [b, c] = t.dims();
                h + t.reshape([b, c, 1, 1])
            }
            _ => h,
        };
        let h = conv2d_forward(&self.conv2, group_norm_silu(&self.norm2, h));
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv2d_forward(conv, x),
            None => x,
        };
        shortcut + h
    }
}

/// Stride-2 3×3 convolution. The VAE encoder uses `padding = 0` with an asymmetric (right/bottom)
/// zero pad of one pixel, as diffusers does.
#[derive(Module, Debug)]
pub struct Downsample2D {
    pub conv: Conv2d,
    pub asymmetric_pad: bool,
}

impl Downsample2D {
    pub fn new(channels: usize, padding: usize, device: &Device) -> Self {
        Self {
            conv: conv2d(channels, channels, 3, 2, padding, device),
            asymmetric_pad: padding == 0,
        }
    }

    /// # Shapes
    /// - x: `[batch, c, h, w]` → `[batch, c, ⌈h/2⌉, ⌈w/2⌉]` (UNet) or `[batch, c, ⌊h/2⌋, ⌊w/2⌋]` (VAE)
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = if self.asymmetric_pad {
            x.pad((0, 1, 0, 1), burn::tensor::ops::PadMode::Constant(0.0))
        } else {
            x
        };
        conv2d_forward(&self.conv, x)
    }
}

/// Nearest-neighbour upsampling followed by a 3×3 convolution.
#[derive(Module, Debug)]
pub struct Upsample2D {
    pub conv: Conv2d,
}

impl Upsample2D {
    pub fn new(channels: usize, device: &Device) -> Self {
        Self {
            conv: conv2d(channels, channels, 3, 1, 1, device),
        }
    }

    /// Upsamples to `size` (the skip connection's size in the UNet, so odd sizes work) or ×2.
    ///
    /// # Shapes
    /// - x: `[batch, c, h, w]` → `[batch, c, size]`
    pub fn forward(&self, x: Tensor<4>, size: Option<[usize; 2]>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let size = size.unwrap_or([h * 2, w * 2]);
        upsample_nearest_conv(&self.conv, x, size)
    }
}
