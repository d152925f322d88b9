//! 2-D convolution on the CPU backend as im2col matrices and matrix products.
//!
//! Why: flex's `conv2d` re-lays out the whole weight (`[cout, cin, k, k]` → `[cout, k, k, cin]`) and
//! the input (NCHW → NHWC) on every call, single-threaded. For the UNet's deep blocks (640–2560
//! input channels on 4²–32² pixels) that copy costs as much as the product itself: measured 1.5–3.4×
//! slower than `unfold4d` + `matmul`, which use the weight as stored and produce NCHW directly; the
//! VAE's wide, shallow layers (128–512 channels on 64²–512² pixels) gain as well, in bands that keep
//! the im2col memory bounded (`cargo xtask bench --component ops`).

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::module::unfold4d;
use burn::tensor::ops::{PadMode, UnfoldOptions};
use burn::tensor::{DType, Tensor, TensorData};

use super::implicit_conv::{bias_values, conv2d_bf16};
use super::linear::Values;
use super::view::Held;
use super::{bf16_autocast, on_flex, tap_conv};

/// The largest im2col matrix (bytes) [`conv2d_forward`] builds at once: larger outputs are computed
/// in bands of rows, each band's matrix at most this size.
const IM2COL_MAX_BYTES: usize = 32 << 20;

/// `conv.forward(x)`: on the CPU backend (`flex`) as im2col matrices and matrix products, one for
/// the whole output when its matrix is small (at most [`IM2COL_MAX_BYTES`]), else one per band of
/// output rows; on other backends, and for 1×1, grouped or dilated convolutions, Burn's
/// `conv.forward`. Under bf16 autocast (bf16 weight, see [`super::bf16_autocast`]) as an
/// implicit-GEMM bf16 product with f32 sums and an f32 output, 1×1 convolutions included
/// ([`super::implicit_conv`]).
///
/// # Shapes
/// - x: `[batch, cin, h, w]` → `[batch, cout, h', w']`
pub fn conv2d_forward(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    if autocast(conv, &x)
        && let Some(y) = conv2d_bf16(conv, &x)
    {
        return y;
    }
    match explicit_padding(conv, &x) {
        Some(padding) => match tap_products(conv, &x, padding) {
            Some(y) => y,
            None => im2col_conv(conv, x, padding),
        },
        None => {
            // Autocast weights beside f32 activations, in a convolution no kernel here covers.
            let (xdtype, wdtype) = (x.dtype(), conv.weight.val().dtype());
            if xdtype != wdtype {
                return conv.forward(x.cast(wdtype)).cast(xdtype);
            }
            conv.forward(x)
        }
    }
}

/// `conv2d_forward` without the tap products: im2col wherever it applies (the bench's A/B).
pub fn conv2d_im2col(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    match explicit_padding(conv, &x) {
        Some(padding) if !autocast(conv, &x) => im2col_conv(conv, x, padding),
        _ => conv2d_forward(conv, x),
    }
}

/// An f32 stride-1 convolution wide enough for [`tap_conv`]'s products; `None` for any other.
fn tap_products(
    conv: &Conv2d,
    x: &Tensor<4>,
    padding: (usize, usize, usize, usize),
) -> Option<Tensor<4>> {
    let xdims @ [b, _, h, w] = x.dims();
    let wdims @ [cout, _, kh, kw] = conv.weight.dims();
    let (top, left, bottom, right) = padding;
    let (ho, wo) = (h + top + bottom + 1 - kh, w + left + right + 1 - kw);
    if conv.stride != [1, 1] || !tap_conv::worth_it([kh, kw], wo) {
        return None;
    }
    let (weight, input) = (Held::of(conv.weight.val())?, Held::of(x.clone())?);
    let (Values::F32(weight), Values::F32(x_values)) = (weight.values()?, input.values()?) else {
        return None;
    };
    let bias = bias_values(conv);
    let operands = tap_conv::Operands {
        weight,
        wdims,
        x: x_values,
        xdims,
    };
    let y = tap_conv::conv(&operands, padding, bias.as_deref());
    let data = TensorData::new(y, [b, cout, ho, wo]);
    Some(Tensor::from_data(data, &x.device()))
}

/// Whether `conv` on `x` runs under bf16 autocast: a bf16 weight on the CPU backend.
pub(crate) fn autocast(conv: &Conv2d, x: &Tensor<4>) -> bool {
    on_flex(x) && bf16_autocast() && conv.weight.val().dtype() == DType::BF16
}

/// The padding `(top, left, bottom, right)` of a convolution the im2col kernel computes on `x`, or
/// `None` when Burn's op should run instead.
fn explicit_padding(conv: &Conv2d, x: &Tensor<4>) -> Option<(usize, usize, usize, usize)> {
    let [_, _, h, w] = x.dims();
    let [kh, kw] = conv.kernel_size;
    let PaddingConfig2d::Explicit(top, left, bottom, right) = conv.padding else {
        return None;
    };
    let (hp, wp) = (h + top + bottom, w + left + right);
    let applies = kh * kw != 1
        && hp >= kh
        && wp >= kw
        && conv.groups == 1
        && conv.dilation == [1, 1]
        && on_flex(x);
    applies.then_some((top, left, bottom, right))
}

/// The im2col kernel: pad, [`im2col_product`], add the bias.
fn im2col_conv(
    conv: &Conv2d,
    x: Tensor<4>,
    (top, left, bottom, right): (usize, usize, usize, usize),
) -> Tensor<4> {
    let b = x.dims()[0];
    let x = if top + left + bottom + right > 0 {
        x.pad((left, right, top, bottom), PadMode::Constant(0.0))
    } else {
        x
    };
    let (y, ho, wo) = im2col_product(conv.weight.val(), x, conv.stride);
    let cout = y.dims()[1];
    let y = match &conv.bias {
        Some(bias) => {
            let dtype = y.dtype();
            y + bias.val().cast(dtype).reshape([1, cout, 1])
        }
        None => y,
    };
    y.reshape([b, cout, ho, wo])
}

/// The unpadded ("valid") convolution of `x` by `weight` at `stride`, as im2col matrices times the
/// weight: one for the whole output when its matrix is at most [`IM2COL_MAX_BYTES`], else one per
/// band of output rows. Returns `[batch, cout, ho·wo]`, `ho` and `wo`. The caller checks that `x` is at least as large as the kernel.
///
/// # Shapes
/// - weight: `[cout, cin, kh, kw]`, x: `[batch, cin, h, w]`
pub(crate) fn im2col_product(
    weight: Tensor<4>,
    x: Tensor<4>,
    stride: [usize; 2],
) -> (Tensor<3>, usize, usize) {
    let [b, cin, h, w] = x.dims();
    let [cout, _, kh, kw] = weight.dims();
    let [sh, sw] = stride;
    let (ho, wo) = ((h - kh) / sh + 1, (w - kw) / sw + 1);
    let row_bytes = b * cin * kh * kw * wo * x.dtype().size();
    let band = (IM2COL_MAX_BYTES / row_bytes.max(1)).clamp(1, ho);
    let weight = weight.reshape([1, cout, cin * kh * kw]);
    let unfold = UnfoldOptions::new([sh, sw], [0, 0], [1, 1]);
    // im2col rows come in the weight's (cin, kh, kw) order.
    let product = |x: Tensor<4>| {
        let columns = unfold4d(x, [kh, kw], unfold.clone());
        weight.clone().matmul(columns)
    };
    let y = if band == ho {
        product(x)
    } else {
        let bands = (0..ho)
            .step_by(band)
            .map(|r0| {
                let r1 = (r0 + band).min(ho);
                product(
                    x.clone()
                        .slice([0..b, 0..cin, r0 * sh..(r1 - 1) * sh + kh, 0..w]),
                )
            })
            .collect();
        Tensor::cat(bands, 2)
    };
    (y, ho, wo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::max_diff;
    use crate::layers::conv2d;
    use burn::tensor::{Device, Distribution};

    #[test]
    fn banded_im2col_matches_burns_conv() {
        let device = Device::flex();
        // 64 · 9 · 128² f32 = 37.7 MB of im2col: two bands of rows.
        let x = Tensor::<4>::random([1, 64, 128, 128], Distribution::Normal(0.0, 1.0), &device);
        for (stride, padding) in [(1, 1), (2, 0)] {
            let conv = conv2d(64, 8, 3, stride, padding, &device);
            let diff = max_diff(conv2d_forward(&conv, x.clone()), conv.forward(x.clone()));
            assert!(diff < 1e-4, "stride {stride}: {diff}");
        }
    }

    #[test]
    fn autocast_convolutions_are_burns_on_bf16_rounded_operands() {
        if !crate::cpu::bf16_autocast() {
            eprintln!("no AVX512-BF16 on this CPU: autocast does not apply");
            return;
        }
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 6, 9, 7], Distribution::Normal(0.0, 1.0), &device);
        let round = |t: Tensor<4>| t.cast(DType::BF16).cast(DType::F32);
        for (k, stride, padding) in [(3, 1, 1), (3, 2, 0), (1, 1, 0)] {
            let conv = conv2d(6, 5, k, stride, padding, &device);
            let mut want = conv.clone();
            want.weight = burn::module::Param::from_tensor(round(conv.weight.val()));
            let want = want.forward(round(x.clone()));
            let mut bf16 = conv;
            bf16.weight = burn::module::Param::from_tensor(bf16.weight.val().cast(DType::BF16));
            let got = conv2d_forward(&bf16, x.clone());
            assert_eq!(got.dtype(), DType::F32);
            let diff = max_diff(got, want);
            assert!(diff < 1e-5, "{k}×{k} stride {stride}: {diff}");
        }
    }
}
