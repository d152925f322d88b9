//! Nearest-neighbour upsampling followed by a 3×3 convolution (diffusers' `Upsample2D`), computed
//! on the CPU backend without materialising the upsampled image.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions, PadMode};
use burn::tensor::{DType, Tensor, TensorData, bf16};
use rayon::prelude::*;

use super::conv::{autocast, conv2d_forward, im2col_product};
use super::implicit_conv::{Padded, bias_values, implicit_product};
use super::linear::Values;
use super::on_flex;
use super::view::Held;

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
    let [b, _, h, w] = x.dims();
    let [cout, cin, _, _] = conv.weight.dims();
    let held = Held::of(conv.weight.val())?;
    let weight = held.values()?;
    let bf16 = autocast(conv, x);
    let mut phase = phases(x, bf16)?;
    let bias = bias_values(conv).unwrap_or_else(|| vec![0.0; cout]);
    let mut y = vec![0f32; b * cout * 4 * h * w];
    for a in 0..2 {
        for c in 0..2 {
            let k = match weight {
                Values::F32(v) => fold(v, |t| t, cout * cin, (a, c)),
                Values::Bf16(v) => fold(v, |t| t.to_f32(), cout * cin, (a, c)),
            };
            let p = phase(k, [cout, cin], (a, c))?; // [b, cout, h·w]
            // y[image, co, 2i + a, 2j + c] = p[image, co, i, j] + bias[co]
            let planes = y.par_chunks_mut(4 * h * w).zip(p.par_chunks(h * w));
            planes.enumerate().for_each(|(i, (dst, src))| {
                let bias = bias[i % cout];
                for (r, row) in src.chunks_exact(w).enumerate() {
                    let out = &mut dst[(2 * r + a) * 2 * w..][..2 * w];
                    for (o, v) in out.iter_mut().skip(c).step_by(2).zip(row) {
                        *o = v + bias;
                    }
                }
            });
        }
    }
    let data = TensorData::new(y, [b, cout, 2 * h, 2 * w]);
    // Autocast gives f32; otherwise the output has the input's dtype, as Burn's op.
    let y = Tensor::<4>::from_data(data, &x.device());
    Some(if bf16 { y } else { y.cast(x.dtype()) })
}

/// The 3×3 kernel folded to the 2×2 kernel of output phase (`a`, `c`), in f32 (`[cout, cin, 2,
/// 2]` from `[cout, cin, 3, 3]`, `planes` = cout·cin): along each axis phase 0 reads taps
/// (0, 1 + 2) and phase 1 (0 + 1, 2); rows are summed first, then columns.
fn fold<T: Copy + Sync>(
    weight: &[T],
    f32_of: impl Fn(T) -> f32 + Sync,
    planes: usize,
    (a, c): (usize, usize),
) -> Vec<f32> {
    let taps = |phase: usize| {
        if phase == 0 {
            [0..1, 1..3]
        } else {
            [0..2, 2..3]
        }
    };
    let (rows, cols) = (taps(a), taps(c));
    let mut out = vec![0f32; planes * 4];
    out.par_chunks_mut(4)
        .zip(weight.par_chunks(9))
        .for_each(|(dst, k)| {
            for (ry, r) in rows.iter().enumerate() {
                for (rx, cs) in cols.iter().enumerate() {
                    let column = |dx: usize| {
                        let mut s = f32_of(k[r.start * 3 + dx]);
                        for dy in r.start + 1..r.end {
                            s += f32_of(k[dy * 3 + dx]);
                        }
                        s
                    };
                    let mut s = column(cs.start);
                    for dx in cs.start + 1..cs.end {
                        s += column(dx);
                    }
                    dst[ry * 2 + rx] = s;
                }
            }
        });
    out
}

/// A 2×2 convolution of `x` padded by one, over the window from (`a`, `c`): the phase's output
/// `[batch, cout, h·w]` for an f32 `[cout, cin, 2, 2]` kernel. The padding is done once for the
/// four phases: in bf16 under autocast (the kernel rounded once, products implicit GEMM), else by
/// Burn (f32, im2col).
type Phase<'a> = Box<dyn FnMut(Vec<f32>, [usize; 2], (usize, usize)) -> Option<Vec<f32>> + 'a>;

fn phases<'a>(x: &'a Tensor<4>, bf16: bool) -> Option<Phase<'a>> {
    let [b, cin, h, w] = x.dims();
    let device = x.device();
    if !bf16 {
        let xp = x.clone().pad((1, 1, 1, 1), PadMode::Constant(0.0));
        return Some(Box::new(move |k, [cout, cin], (a, c)| {
            let k = Tensor::<4>::from_data(TensorData::new(k, [cout, cin, 2, 2]), &device);
            let xs = xp.clone().slice([0..b, 0..cin, a..a + h + 1, c..c + w + 1]);
            let y = im2col_product(k.cast(xs.dtype()), xs, [1, 1]).0;
            y.cast(DType::F32).into_data().try_into_vec().ok()
        }));
    }
    let input = Held::of(x.clone())?;
    let padded = Padded::new(input.values()?, [b, cin, h, w], (1, 1, 1, 1));
    Some(Box::new(move |k, [cout, _], at| {
        let k: Vec<bf16> = k.into_iter().map(bf16::from_f32).collect();
        let columns = padded.columns(at, [2, 2], [1, 1], [h, w]);
        Some(implicit_product(Values::Bf16(&k), cout, &columns, b))
    }))
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

    #[test]
    fn autocast_upsample_conv_stays_within_bf16_rounding_of_f32() {
        if !crate::cpu::bf16_autocast() {
            eprintln!("no AVX512-BF16 on this CPU: autocast does not apply");
            return;
        }
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 16, 5, 7], Distribution::Normal(0.0, 1.0), &device);
        let conv = conv2d(16, 9, 3, 1, 1, &device);
        let want = upsample2x_conv3x3(&conv, &x).expect("f32 applies");
        let mut bf16 = conv;
        let w = bf16.weight.val().cast(burn::tensor::DType::BF16);
        bf16.weight = burn::module::Param::from_tensor(w);
        let got = upsample2x_conv3x3(&bf16, &x).expect("autocast applies");
        // The f32 result of bf16-rounded weights against one of bf16-rounded folded weights and
        // input: each of the 64 terms carries at most 2 roundings of 2⁻⁹ relative.
        let scale: f32 = want.clone().abs().max().into_scalar();
        let diff = max_diff(got, want);
        assert!(diff < 2e-2 * scale, "{diff} of {scale}");
    }
}
