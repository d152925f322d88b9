//! Linear layers, and the glue from tensors to the bf16 products of [`super::gemm_bf16`].
//!
//! Under bf16 autocast ([`super::bf16_autocast`]) a layer's weight is bf16 and its input f32 (or
//! bf16 where a model casts its input to the weights' dtype); the product runs through the bf16
//! kernel and the output is f32, as in `torch.autocast`. Everywhere else this is `layer.forward`.

use burn::nn::Linear;
use burn::tensor::{DType, Tensor, TensorData, bf16};

use super::gemm_bf16;
use super::view::Held;
use super::{bf16_autocast, on_flex};

/// `layer.forward(x)`: through the bf16 kernel when the weight is bf16 on the CPU backend under
/// bf16 autocast (output f32); with `x` cast to the weight's dtype and back where the two differ
/// otherwise; else Burn's op.
///
/// # Shapes
/// - x: `[…, d_input]` → `[…, d_output]`
pub fn linear_forward<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let weight = layer.weight.val();
    let wdtype = weight.dtype();
    if wdtype == DType::BF16 && on_flex(&x) && bf16_autocast() {
        return autocast(layer, weight, x);
    }
    let xdtype = x.dtype();
    if xdtype != wdtype {
        return layer.forward(x.cast(wdtype)).cast(xdtype);
    }
    layer.forward(x)
}

fn autocast<const D: usize>(layer: &Linear, weight: Tensor<2>, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    let dims = x.dims();
    let [d_in, d_out] = weight.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let mut out = vec![0f32; rows * d_out];
    // The weight is read in place; the input's data is its own storage unless shared.
    let held = Held::of(weight.clone());
    let xd = x.into_data();
    let mut sx = None;
    let xs = Values::of(&xd, &mut sx);
    let (wd, mut sw);
    let ws = match held.as_ref().and_then(Held::values) {
        Some(w) => w,
        None => {
            wd = weight.into_data();
            sw = None;
            Values::of(&wd, &mut sw)
        }
    };
    matmul_values((rows, d_out, d_in), xs, d_in, ws, d_out, &mut out, d_out);
    if let Some(bias) = &layer.bias {
        let bias = bias.val().cast(DType::F32).into_data();
        if let Ok(bias) = bias.as_slice::<f32>() {
            for row in out.chunks_exact_mut(d_out) {
                for (y, b) in row.iter_mut().zip(bias) {
                    *y += b;
                }
            }
        }
    }
    let mut shape = dims;
    shape[D - 1] = d_out;
    Tensor::from_data(TensorData::new(out, shape), &device)
}

/// A tensor's values as a kernel operand.
#[derive(Clone, Copy)]
pub(crate) enum Values<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
}

impl<'a> Values<'a> {
    /// The values of f32 or bf16 data; other dtypes are converted to f32 first (into `spare`).
    pub(crate) fn of(data: &'a TensorData, spare: &'a mut Option<TensorData>) -> Values<'a> {
        if let Ok(v) = data.as_slice::<f32>() {
            return Values::F32(v);
        }
        if let Ok(v) = data.as_slice::<bf16>() {
            return Values::Bf16(v);
        }
        let converted = spare.insert(data.clone().convert::<f32>());
        Values::F32(converted.as_slice::<f32>().unwrap_or_default())
    }
}

/// [`gemm_bf16::matmul`] of row-major operands of either dtype.
pub(crate) fn matmul_values(
    mnk: (usize, usize, usize),
    a: Values,
    lda: usize,
    b: Values,
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    match (a, b) {
        (Values::F32(a), Values::F32(b)) => gemm_bf16::matmul(mnk, a, lda, b, ldb, c, ldc),
        (Values::F32(a), Values::Bf16(b)) => gemm_bf16::matmul(mnk, a, lda, b, ldb, c, ldc),
        (Values::Bf16(a), Values::F32(b)) => gemm_bf16::matmul(mnk, a, lda, b, ldb, c, ldc),
        (Values::Bf16(a), Values::Bf16(b)) => gemm_bf16::matmul(mnk, a, lda, b, ldb, c, ldc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::linear;
    use burn::module::Param;
    use burn::tensor::{Device, Distribution};

    #[test]
    fn autocast_linear_is_the_bf16_product_plus_the_f32_bias() {
        let device = Device::flex();
        let mut layer = linear(70, 33, true, &device);
        layer.weight = Param::from_tensor(layer.weight.val().cast(DType::BF16));
        let x = Tensor::<3>::random([2, 5, 70], Distribution::Normal(0.0, 1.0), &device);
        let got = autocast(&layer, layer.weight.val(), x.clone());
        assert_eq!((got.dims(), got.dtype()), ([2, 5, 33], DType::F32));
        // Reference: operands rounded to bf16, product and bias in f32.
        let xr = x.cast(DType::BF16).cast(DType::F32);
        let want = Tensor::<3>::from_data(
            xr.matmul(layer.weight.val().cast(DType::F32).unsqueeze())
                .into_data(),
            &device,
        ) + layer.bias.as_ref().unwrap().val().unsqueeze();
        let diff: f32 = (got - want).abs().max().into_scalar();
        assert!(diff < 1e-5, "{diff}");
    }
}
