//! Nearest-neighbour upsampling followed by a 3×3 convolution (diffusers' `Upsample2D`), computed
//! on the CPU backend without materialising the upsampled image.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions, PadMode};

use super::conv::{autocast, conv2d_forward, im2col_product};
use super::on_flex;

/// `conv.forward(nearest_upsample(x, size))`: on the CPU backend, for an exact 2× upsampling and a
/// 3×3, stride-1, padding-1 convolution, in four phases ([`upsample2x_conv3x3`]); otherwise Burn's
/// nearest `interpolate`, then [`conv2d_forward`].
///
/// # Shapes
/// - x: `[batch, cin, h, w]` → `[batch, cout, size[0], size[1]]`
pub fn upsample_nearest_conv(conv: &Conv2d, x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    if size == [h * 2, w * 2]
        && let Some(y) = upsample2x_conv3x3(conv, &x)
    {
        return y;
    }
    let x = interpolate(
        x,
        InterpolateOptions::new(InterpolateMode::Nearest).with_output_size(size),
    );
    conv2d_forward(conv, x)
}

/// `conv.forward(nearest_upsample_2x(x))` for a 3×3, stride-1, padding-1 convolution, computed on
/// the CPU backend without the upsampled image: each of the four output phases (even/odd row ×
/// even/odd column) is a 2×2 convolution of `x` whose taps are sums of the 3×3 kernel's (an output
/// row 2i reads source rows i−1 with kernel row 0 and i with rows 1 + 2; row 2i+1 reads i with
/// rows 0 + 1 and i+1 with row 2). That is 16 instead of 36 multiply-adds per output and input
/// channel. Returns `None` where it does not apply (other backends or convolutions).
///
/// # Shapes
/// - x: `[batch, cin, h, w]` → `[batch, cout, 2h, 2w]`
fn upsample2x_conv3x3(conv: &Conv2d, x: &Tensor<4>) -> Option<Tensor<4>> {
    let fits = conv.kernel_size == [3, 3]
        && conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && matches!(conv.padding, PaddingConfig2d::Explicit(1, 1, 1, 1))
        && on_flex(x);
    if !fits {
        return None;
    }
    let [b, cin, h, w] = x.dims();
    // Under bf16 autocast the taps are summed in f32 and rounded to bf16 once, by the product.
    let bf16 = autocast(conv, x);
    let weight = match bf16 {
        true => conv.weight.val().cast(burn::tensor::DType::F32),
        false => conv.weight.val(),
    };
    let cout = weight.dims()[0];
    // The kernel folded to two taps along `dim` for output phase `phase`.
    let fold = |k: Tensor<4>, dim: usize, phase: usize| -> Tensor<4> {
        let tap = |i: usize| k.clone().narrow(dim, i, 1);
        let pair = if phase == 0 {
            [tap(0), tap(1) + tap(2)]
        } else {
            [tap(0) + tap(1), tap(2)]
        };
        Tensor::cat(pair.to_vec(), dim)
    };
    let xp = x.clone().pad((1, 1, 1, 1), PadMode::Constant(0.0));
    let mut phases = Vec::with_capacity(4);
    for a in 0..2 {
        let rows = fold(weight.clone(), 2, a); // [cout, cin, 2, 3]
        for c in 0..2 {
            let k = fold(rows.clone(), 3, c); // [cout, cin, 2, 2]
            let xs = xp.clone().slice([0..b, 0..cin, a..a + h + 1, c..c + w + 1]);
            let (y, _, _) = im2col_product(k, xs, [1, 1], bf16); // [b, cout, h·w]
            phases.push(y.reshape([b, cout, 1, h * w]));
        }
    }
    // [b, cout, (a, c), h·w] → y[b, cout, 2i + a, 2j + c]
    let y = Tensor::cat(phases, 2)
        .reshape([b, cout, 2, 2, h, w])
        .permute([0, 1, 4, 2, 5, 3])
        .reshape([b, cout, 2 * h, 2 * w]);
    Some(match &conv.bias {
        Some(bias) => {
            let dtype = y.dtype();
            y + bias.val().cast(dtype).reshape([1, cout, 1, 1])
        }
        None => y,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::max_diff;
    use crate::layers::conv2d;
    use burn::tensor::{Device, Distribution};

    #[test]
    fn upsample_then_conv_in_four_phases_matches_the_direct_way() {
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 3, 5, 7], Distribution::Normal(0.0, 1.0), &device);
        let conv = conv2d(3, 4, 3, 1, 1, &device);
        let up = interpolate(
            x.clone(),
            InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([10, 14]),
        );
        let want = conv.forward(up);
        let got = upsample2x_conv3x3(&conv, &x).expect("applies to a 3×3 padding-1 conv");
        let diff = max_diff(got, want);
        assert!(diff < 1e-5, "{diff}");
        let strided = conv2d(3, 4, 3, 2, 1, &device);
        assert!(upsample2x_conv3x3(&strided, &x).is_none());
    }
}
