//! Convolutions under bf16 autocast as implicit-GEMM products: the weight, bf16 as stored, is
//! the kernel's left operand read in place; the im2col matrix is never written, its k-pairs are
//! packed straight from the image ([`gemm_bf16::ConvColumns`]); the whole batch is one product,
//! so the weight is read once per call. The input is padded and rounded to bf16 in one pass
//! (unpadded convolutions read it as it is), and the bias is added to the f32 output in place.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::{Tensor, TensorData, bf16};
use rayon::prelude::*;

use super::gemm_bf16::{self, ConvColumns, Operand, Out};
use super::linear::Values;
use super::view::Held;

/// A batch of images zero-padded and rounded to bf16: `[batch, cin, hp, wp]`, row-major.
pub(crate) struct Padded {
    pub values: Vec<bf16>,
    pub dims: [usize; 4],
}

impl Padded {
    /// `x` (`[batch, cin, h, w]`) with `top`, `left`, `bottom`, `right` zeros around every plane.
    pub(crate) fn new(
        x: Values,
        [b, cin, h, w]: [usize; 4],
        (top, left, bottom, right): (usize, usize, usize, usize),
    ) -> Padded {
        let (hp, wp) = (h + top + bottom, w + left + right);
        let mut values = vec![bf16::ZERO; b * cin * hp * wp];
        values
            .par_chunks_mut(hp * wp)
            .enumerate()
            .for_each(|(plane, dst)| {
                for y in 0..h {
                    let row = &mut dst[(top + y) * wp + left..][..w];
                    let at = (plane * h + y) * w;
                    match x {
                        Values::F32(v) => round(&v[at..at + w], row),
                        Values::Bf16(v) => row.copy_from_slice(&v[at..at + w]),
                    }
                }
            });
        Padded {
            values,
            dims: [b, cin, hp, wp],
        }
    }

    /// The window of every plane from (`y`, `x`) as a convolution's columns.
    pub(crate) fn columns(
        &self,
        (y, x): (usize, usize),
        kernel: [usize; 2],
        stride: [usize; 2],
        out: [usize; 2],
    ) -> ConvColumns<'_, bf16> {
        let [_, cin, hp, wp] = self.dims;
        ConvColumns {
            x: &self.values,
            origin: y * wp + x,
            strides: [cin * hp * wp, hp * wp, wp],
            kernel,
            stride,
            out,
            cin,
        }
    }
}

/// f32 → bf16, rounded to nearest even (vectorises).
fn round(src: &[f32], dst: &mut [bf16]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = bf16::from_bits(s.bf16_bits());
    }
}

/// `weight ⋆ columns` over `batch` images: `[batch, cout, ho·wo]` in f32.
pub(crate) fn implicit_product<T: Operand>(
    weight: Values,
    cout: usize,
    columns: &ConvColumns<T>,
    batch: usize,
) -> Vec<f32> {
    let (k, [ho, wo]) = (columns.k(), columns.out);
    let l = ho * wo;
    let mut y = vec![0f32; batch * cout * l];
    let out = Out {
        c: &mut y,
        ld: l,
        cols: l,
        image: cout * l,
    };
    let mnk = (cout, batch * l, k);
    match weight {
        Values::F32(w) => gemm_bf16::product(mnk, w, k, columns, out),
        Values::Bf16(w) => gemm_bf16::product(mnk, w, k, columns, out),
    }
    y
}

/// `y[b, c, …] += bias[c]` for `[batch, cout, l]` values.
pub(crate) fn add_bias(y: &mut [f32], bias: &[f32], l: usize) {
    let cout = bias.len();
    y.par_chunks_mut(l).enumerate().for_each(|(i, row)| {
        let b = bias[i % cout];
        row.iter_mut().for_each(|v| *v += b);
    });
}

/// A layer's bias in f32, if it has one.
pub(crate) fn bias_values(conv: &Conv2d) -> Option<Vec<f32>> {
    let bias = conv.bias.as_ref()?.val().cast(burn::tensor::DType::F32);
    bias.into_data().try_into_vec::<f32>().ok()
}

/// `conv.forward(x)` under bf16 autocast (bf16 weight, f32 or bf16 `x`, f32 output) for
/// ungrouped, undilated convolutions with explicit or no padding; `None` for any other, or off
/// the CPU backend.
///
/// # Shapes
/// - x: `[batch, cin, h, w]` → `[batch, cout, h', w']`
pub(crate) fn conv2d_bf16(conv: &Conv2d, x: &Tensor<4>) -> Option<Tensor<4>> {
    let (top, left, bottom, right) = match conv.padding {
        PaddingConfig2d::Explicit(t, l, b, r) => (t, l, b, r),
        PaddingConfig2d::Valid => (0, 0, 0, 0),
        _ => return None,
    };
    let dims @ [b, cin, h, w] = x.dims();
    let [kh, kw] = conv.kernel_size;
    let [sh, sw] = conv.stride;
    let (hp, wp) = (h + top + bottom, w + left + right);
    if conv.groups != 1 || conv.dilation != [1, 1] || hp < kh || wp < kw {
        return None;
    }
    let weight = Held::of(conv.weight.val())?;
    let input = Held::of(x.clone())?;
    let weight = weight.values()?;
    // A strided view of the input is copied once into row-major order.
    let (data, mut spare);
    let xv = match input.values() {
        Some(v) => v,
        None => {
            data = x.clone().into_data();
            spare = None;
            Values::of(&data, &mut spare)
        }
    };
    let cout = conv.weight.dims()[0];
    let out = [(hp - kh) / sh + 1, (wp - kw) / sw + 1];
    let (kernel, stride) = ([kh, kw], [sh, sw]);
    let mut y = if top + left + bottom + right == 0 {
        let strides = [cin * h * w, h * w, w];
        match xv {
            Values::F32(x) => {
                let columns = unpadded(x, strides, kernel, stride, out, cin);
                implicit_product(weight, cout, &columns, b)
            }
            Values::Bf16(x) => {
                let columns = unpadded(x, strides, kernel, stride, out, cin);
                implicit_product(weight, cout, &columns, b)
            }
        }
    } else {
        let padded = Padded::new(xv, dims, (top, left, bottom, right));
        implicit_product(
            weight,
            cout,
            &padded.columns((0, 0), kernel, stride, out),
            b,
        )
    };
    if let Some(bias) = bias_values(conv) {
        add_bias(&mut y, &bias, out[0] * out[1]);
    }
    let data = TensorData::new(y, [b, cout, out[0], out[1]]);
    Some(Tensor::from_data(data, &x.device()))
}

/// The columns of an unpadded convolution read from the input as it is.
fn unpadded<T>(
    x: &[T],
    strides: [usize; 3],
    kernel: [usize; 2],
    stride: [usize; 2],
    out: [usize; 2],
    cin: usize,
) -> ConvColumns<'_, T> {
    ConvColumns {
        x,
        origin: 0,
        strides,
        kernel,
        stride,
        out,
        cin,
    }
}
