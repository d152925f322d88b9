//! f32 stride-1 convolutions as implicit GEMM through `gemm`'s strided operands: one zero-padded
//! copy of the input, laid out `[cin, batch, hp, wp]`, is the right operand of kh·kw accumulated
//! products, one per tap, each reading it shifted by the tap's offset.
//!
//! Why: the im2col matrix of a 3×3 convolution is nine times its input (94 MB for the UNet's
//! 320-channel, 64² layers at batch 2), written once and read again by the product's packing;
//! here the product packs straight from the padded image. Output column q stands for pixel
//! (image, y, x) at q = image·hp·wp + y·wp + x, so every tap's view of the padded copy is a plain
//! matrix (rows `batch·hp·wp` apart, columns adjacent) and the whole batch is one product per tap:
//! the kw − 1 columns past each row's end and the kh − 1 rows past each image's are computed and
//! dropped. That waste is small on the wide layers this serves (6 % at 64², 13 % at 32²) and large
//! on narrow ones, which keep im2col ([`worth_it`]).

use rayon::prelude::*;

use super::Shared;

/// The output columns a band's products cover at once: its sums (`cout` · this · 4 B) stay near
/// the size of an im2col band.
const BAND_BYTES: usize = 16 << 20;

/// Whether the tap products beat im2col for an output `wo` wide: the narrow layers' dropped
/// columns cost more than im2col saves (`cargo xtask bench --component ops`).
pub(crate) fn worth_it(kernel: [usize; 2], wo: usize) -> bool {
    kernel[1] > 1 && wo >= 24
}

/// A convolution's operands: the weight `[cout, cin, kh, kw]` and the input `[batch, cin, h, w]`,
/// both row-major f32.
pub(crate) struct Operands<'a> {
    pub weight: &'a [f32],
    pub wdims: [usize; 4],
    pub x: &'a [f32],
    pub xdims: [usize; 4],
}

/// The stride-1 convolution of `x` by `weight` with `(top, left, bottom, right)` zero padding,
/// plus `bias`: `[batch, cout, ho, wo]` row-major. The caller checks that the padded input is at
/// least as large as the kernel and that the channel counts agree.
pub(crate) fn conv(
    op: &Operands,
    padding: (usize, usize, usize, usize),
    bias: Option<&[f32]>,
) -> Vec<f32> {
    banded(op, padding, bias, BAND_BYTES)
}

/// [`conv`] in bands of output columns whose sums take at most `band_bytes` (at least one padded
/// row).
fn banded(
    op: &Operands,
    (top, left, bottom, right): (usize, usize, usize, usize),
    bias: Option<&[f32]>,
    band_bytes: usize,
) -> Vec<f32> {
    let [cout, cin, kh, kw] = op.wdims;
    let [b, _, h, w] = op.xdims;
    let (hp, wp) = (h + top + bottom, w + left + right);
    let (ho, wo) = (hp - kh + 1, wp - kw + 1);
    let padded = pad(op.x, op.xdims, (top, left, hp, wp));
    // The last column any output pixel needs, plus one.
    let n = (b - 1) * hp * wp + (ho - 1) * wp + wo;
    let band = (band_bytes / (4 * cout)).max(wp).min(n);
    let mut y = vec![0f32; b * cout * ho * wo];
    let dst = Shared(y.as_mut_ptr());
    let mut sums = vec![0f32; cout * band];
    for q0 in (0..n).step_by(band) {
        let cols = band.min(n - q0);
        for tap in 0..kh * kw {
            let (dy, dx) = (tap / kw, tap % kw);
            // SAFETY: lhs is column `tap` of each weight row (cout rows of cin·kh·kw values, cin
            // taps kh·kw apart); rhs starts at q0 + dy·wp + dx and its last value read is
            // (cin − 1)·b·hp·wp + dy·wp + dx + q0 + cols − 1 ≤ cin·b·hp·wp − 1 (as q0 + cols ≤ n);
            // `sums` holds cout × cols and aliases neither.
            unsafe {
                gemm::gemm(
                    cout,
                    cols,
                    cin,
                    sums.as_mut_ptr(),
                    1,
                    cols as isize,
                    tap > 0,
                    op.weight.as_ptr().add(tap),
                    (kh * kw) as isize,
                    (cin * kh * kw) as isize,
                    padded.as_ptr().add(q0 + dy * wp + dx),
                    1,
                    (b * hp * wp) as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(rayon::current_num_threads()),
                );
            }
        }
        scatter(&sums, cols, q0, [b, cout, ho, wo], [hp, wp], bias, dst);
    }
    y
}

/// `x` (`[batch, cin, h, w]`) zero-padded into `[cin, batch, hp, wp]`, its planes `top` rows down
/// and `left` columns in.
fn pad(
    x: &[f32],
    [b, cin, h, w]: [usize; 4],
    (top, left, hp, wp): (usize, usize, usize, usize),
) -> Vec<f32> {
    let mut padded = vec![0f32; cin * b * hp * wp];
    padded
        .par_chunks_mut(hp * wp)
        .enumerate()
        .for_each(|(plane, dst)| {
            // Plane (c, image) of the copy is plane (image, c) of the input.
            let (c, image) = (plane / b, plane % b);
            let src = &x[(image * cin + c) * h * w..][..h * w];
            for (row, s) in src.chunks_exact(w).enumerate() {
                dst[(top + row) * wp + left..][..w].copy_from_slice(s);
            }
        });
    padded
}

/// Copies the output pixels among a band's `cols` columns (from column `q0`) into `y`
/// (`[batch, cout, ho, wo]`), adding the bias.
fn scatter(
    sums: &[f32],
    cols: usize,
    q0: usize,
    [b, cout, ho, wo]: [usize; 4],
    [hp, wp]: [usize; 2],
    bias: Option<&[f32]>,
    dst: Shared,
) {
    let (first, last) = (q0 / wp, (q0 + cols).div_ceil(wp));
    // One task per (channel, padded row): rows of the padded grid past an image's end are dropped.
    (0..cout * (last - first)).into_par_iter().for_each(|task| {
        let (c, r) = (task / (last - first), first + task % (last - first));
        let (image, y) = (r / hp, r % hp);
        if image >= b || y >= ho {
            return;
        }
        let row0 = r * wp;
        let (x0, x1) = (q0.saturating_sub(row0).min(wo), (q0 + cols - row0).min(wo));
        let add = bias.map_or(0.0, |bias| bias[c]);
        let at = ((image * cout + c) * ho + y) * wo;
        for x in x0..x1 {
            // SAFETY: pixel (image, c, y, x) is inside `y`, and no other task writes it (each
            // (channel, row) is one task, and bands cover disjoint columns).
            unsafe { *dst.at(at + x) = sums[c * cols + row0 + x - q0] + add };
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::max_diff;
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Device, Distribution, Tensor, TensorData};

    /// Against Burn's convolution: square and asymmetric padding, unpadded, non-square images, a
    /// batch of three, 1×3 and 3×3 kernels, images as narrow as the kernel, and bands smaller than
    /// the output.
    #[test]
    fn tap_products_match_burns_conv() {
        let device = Device::flex();
        let cases = [
            ([3, 5, 9, 7], [4, 5, 3, 3], (1, 1, 1, 1)),
            ([2, 3, 6, 11], [2, 3, 3, 3], (0, 0, 0, 0)),
            ([1, 4, 5, 8], [6, 4, 3, 3], (0, 1, 1, 0)),
            ([2, 2, 4, 6], [3, 2, 1, 3], (0, 1, 0, 1)),
            ([1, 2, 4, 3], [2, 2, 3, 3], (0, 0, 0, 0)),
            ([2, 3, 3, 2], [2, 3, 1, 3], (0, 1, 0, 0)),
        ];
        for (xdims, wdims, padding) in cases {
            let x = Tensor::<4>::random(xdims, Distribution::Normal(0.0, 1.0), &device);
            let (t, l, bt, r) = padding;
            let layer = Conv2dConfig::new([wdims[1], wdims[0]], [wdims[2], wdims[3]])
                .with_padding(PaddingConfig2d::Explicit(t, l, bt, r))
                .init(&device);
            let want = layer.forward(x.clone());
            let wv = layer
                .weight
                .val()
                .into_data()
                .try_into_vec::<f32>()
                .unwrap();
            let xv = x.clone().into_data().try_into_vec::<f32>().unwrap();
            let bias = layer
                .bias
                .as_ref()
                .map(|b| b.val().into_data().try_into_vec::<f32>().unwrap());
            let op = Operands {
                weight: &wv,
                wdims,
                x: &xv,
                xdims,
            };
            // Whole, then in bands of one padded row and of 2.5 rows.
            let wp = xdims[3] + l + r;
            for band_bytes in [BAND_BYTES, 4 * wdims[0] * wp, 10 * wdims[0] * wp] {
                let got = banded(&op, padding, bias.as_deref(), band_bytes);
                let got = Tensor::from_data(TensorData::new(got, want.dims()), &device);
                let diff = max_diff(got, want.clone());
                assert!(
                    diff < 1e-5,
                    "{xdims:?} ⋆ {wdims:?} pad {padding:?}, band {band_bytes}: {diff}"
                );
            }
        }
    }
}
