//! Small constructors shared by every model: the layer shapes diffusers and transformers use,
//! built lazily (parameters are only materialised if nothing loads them).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d,
};
use burn::tensor::module::unfold4d;
use burn::tensor::ops::{PadMode, UnfoldOptions};
use burn::tensor::{Device, Tensor};

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

/// The largest im2col matrix (bytes) [`conv2d_forward`] builds at once: larger outputs are computed
/// in bands of rows, each band's matrix at most this size.
const IM2COL_MAX_BYTES: usize = 32 << 20;

/// `conv.forward(x)`, computed on the CPU backend (`flex`) as im2col matrices and matrix products:
/// one for the whole output when its matrix is small (at most [`IM2COL_MAX_BYTES`]), else one per
/// band of output rows.
///
/// Why: flex's `conv2d` re-lays out the whole weight (`[cout, cin, k, k]` → `[cout, k, k, cin]`) and
/// the input (NCHW → NHWC) on every call, single-threaded. For the UNet's deep blocks (640–2560
/// input channels on 4²–32² pixels) that copy costs as much as the product itself: measured 1.5–3.4×
/// slower than `unfold4d` + `matmul`, which use the weight as stored and produce NCHW directly; the
/// VAE's wide, shallow layers (128–512 channels on 64²–512² pixels) gain as well, in bands that keep
/// the im2col memory bounded (`cargo xtask bench --component ops`). Other backends always take
/// `conv.forward`.
///
/// # Shapes
/// - x: `[batch, cin, h, w]` → `[batch, cout, h', w']`
pub fn conv2d_forward(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let [b, _, h, w] = x.dims();
    let [kh, kw] = conv.kernel_size;
    let [sh, sw] = conv.stride;
    let PaddingConfig2d::Explicit(top, left, bottom, right) = conv.padding else {
        return conv.forward(x);
    };
    let (hp, wp) = (h + top + bottom, w + left + right);
    if kh * kw == 1
        || hp < kh
        || wp < kw
        || conv.groups != 1
        || conv.dilation != [1, 1]
        || x.device() != Device::flex()
    {
        return conv.forward(x);
    }
    let x = if top + left + bottom + right > 0 {
        x.pad((left, right, top, bottom), PadMode::Constant(0.0))
    } else {
        x
    };
    let (y, ho, wo) = im2col_product(conv.weight.val(), x, [sh, sw]);
    let cout = y.dims()[1];
    let y = match &conv.bias {
        Some(bias) => y + bias.val().reshape([1, cout, 1]),
        None => y,
    };
    y.reshape([b, cout, ho, wo])
}

/// The unpadded ("valid") convolution of `x` by `weight` at `stride`, as im2col matrices times the
/// weight: one for the whole output when its matrix is at most [`IM2COL_MAX_BYTES`], else one per
/// band of output rows. Returns `[batch, cout, ho·wo]`, `ho` and `wo`. The caller checks that `x` is
/// at least as large as the kernel.
///
/// # Shapes
/// - weight: `[cout, cin, kh, kw]`, x: `[batch, cin, h, w]`
pub fn im2col_product(
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
    let product = |x: Tensor<4>| weight.clone().matmul(unfold4d(x, [kh, kw], unfold.clone()));
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

/// `conv.forward(nearest_upsample_2x(x))` for a 3×3, stride-1, padding-1 convolution, computed on
/// the CPU backend without the upsampled image: each of the four output phases (even/odd row ×
/// even/odd column) is a 2×2 convolution of `x` whose taps are sums of the 3×3 kernel's (an output
/// row 2i reads source rows i−1 with kernel row 0 and i with rows 1 + 2; row 2i+1 reads i with
/// rows 0 + 1 and i+1 with row 2). That is 16 instead of 36 multiply-adds per output and input
/// channel. Returns `None` where it does not apply (other backends or convolutions).
///
/// # Shapes
/// - x: `[batch, cin, h, w]` → `[batch, cout, 2h, 2w]`
pub fn upsample2x_conv3x3(conv: &Conv2d, x: &Tensor<4>) -> Option<Tensor<4>> {
    let fits = conv.kernel_size == [3, 3]
        && conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && matches!(conv.padding, PaddingConfig2d::Explicit(1, 1, 1, 1))
        && x.device() == Device::flex();
    if !fits {
        return None;
    }
    let [b, cin, h, w] = x.dims();
    let weight = conv.weight.val();
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
            let (y, _, _) = im2col_product(k, xs, [1, 1]); // [b, cout, h·w]
            phases.push(y.reshape([b, cout, 1, h * w]));
        }
    }
    // [b, cout, (a, c), h·w] → y[b, cout, 2i + a, 2j + c]
    let y = Tensor::cat(phases, 2)
        .reshape([b, cout, 2, 2, h, w])
        .permute([0, 1, 4, 2, 5, 3])
        .reshape([b, cout, 2 * h, 2 * w]);
    Some(match &conv.bias {
        Some(bias) => y + bias.val().reshape([1, cout, 1, 1]),
        None => y,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use burn::tensor::module::interpolate;
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

    fn max_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b).abs().max().into_scalar()
    }

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
