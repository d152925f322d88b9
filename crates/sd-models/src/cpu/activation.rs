//! GEGLU (every transformer feed-forward) and the CLIP MLP's exact GELU / quick GELU.
//!
//! Why: Burn's `flex` backend runs activations one scalar element at a time on one thread; the
//! UNet's exact GELU took 12.7× PyTorch's time (`cargo xtask bench --component ops`). Here each is
//! one pass per row, in parallel, with a branch-free `exp`/`erf` the compiler vectorises. The
//! results match Burn's ops to f32 rounding (`exp` within 3 ulp, `erf` within 5e-7 absolute); other
//! backends and dtypes use Burn's ops.

use burn::tensor::activation;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use super::math::{exp, gelu1};
use super::{Simd, f32_on_flex};

/// GEGLU's gating: the first half of the last dimension times GELU of the second half
/// (`hidden, gate = h.chunk(2, -1); hidden * gelu(gate)`).
///
/// # Shapes
/// - h: `[batch, tokens, 2·inner]` → `[batch, tokens, inner]`
pub fn geglu(h: Tensor<3>) -> Tensor<3> {
    geglu_with(Simd::get(), h)
}

/// [`geglu`] with the kernel compiled for `simd` (a level the CPU has).
fn geglu_with(simd: Simd, h: Tensor<3>) -> Tensor<3> {
    let fallback = |h: Tensor<3>| {
        let [a, gate]: [Tensor<3>; 2] = h.chunk(2, 2).try_into().expect("two halves");
        a * activation::gelu(gate)
    };
    let [b, n, two] = h.dims();
    if !f32_on_flex(&h) || !two.is_multiple_of(2) {
        return fallback(h);
    }
    let device = h.device();
    let values = h.into_data();
    let Ok(v) = values.as_slice::<f32>() else {
        return fallback(Tensor::from_data(values, &device));
    };
    let inner = two / 2;
    let mut out = vec![0.0f32; b * n * inner];
    out.par_chunks_mut(inner)
        .zip(v.par_chunks(two))
        .for_each(|(o, row)| simd!(simd, geglu_row(o, row)));
    Tensor::from_data(TensorData::new(out, [b, n, inner]), &device)
}

/// Exact (erf) GELU, as `torch.nn.functional.gelu`; the CLIP MLP of SD 2.x.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    gelu_with(Simd::get(), x)
}

fn gelu_with<const D: usize>(simd: Simd, x: Tensor<D>) -> Tensor<D> {
    map(x, |c| simd!(simd, gelu_slice(c)), activation::gelu)
}

/// `x · sigmoid(1.702 x)`, the CLIP MLP of SD 1.x.
pub fn quick_gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    quick_gelu_with(Simd::get(), x)
}

fn quick_gelu_with<const D: usize>(simd: Simd, x: Tensor<D>) -> Tensor<D> {
    map(
        x,
        |c| simd!(simd, quick_gelu_slice(c)),
        |h| h.clone() * activation::sigmoid(h * 1.702),
    )
}

/// One token of GEGLU: `o = row[..inner] · gelu(row[inner..])`.
#[inline(always)]
fn geglu_row(o: &mut [f32], row: &[f32]) {
    let (a, gate) = row.split_at(o.len());
    for ((o, &a), &g) in o.iter_mut().zip(a).zip(gate) {
        *o = a * gelu1(g);
    }
}

#[inline(always)]
fn gelu_slice(c: &mut [f32]) {
    for x in c.iter_mut() {
        *x = gelu1(*x);
    }
}

#[inline(always)]
fn quick_gelu_slice(c: &mut [f32]) {
    for x in c.iter_mut() {
        *x = *x / (1.0 + exp(-1.702 * *x));
    }
}

/// `kernel` applied in parallel to the values of an f32 CPU tensor, in place when the tensor is not
/// shared; `fallback` (Burn's ops) on other devices and dtypes.
fn map<const D: usize>(
    x: Tensor<D>,
    kernel: impl Fn(&mut [f32]) + Sync,
    fallback: impl FnOnce(Tensor<D>) -> Tensor<D>,
) -> Tensor<D> {
    if !f32_on_flex(&x) {
        return fallback(x);
    }
    let device = x.device();
    let mut values = x.into_data();
    let Ok(v) = values.as_mut_slice::<f32>() else {
        return fallback(Tensor::from_data(values, &device));
    };
    v.par_chunks_mut(1 << 14).for_each(&kernel);
    Tensor::from_data(values, &device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    #[test]
    fn activations_match_burns() {
        let device = Device::flex();
        let h = Tensor::<3>::random([2, 7, 40], Distribution::Normal(0.0, 2.0), &device);
        let [a, gate]: [Tensor<3>; 2] = h.clone().chunk(2, 2).try_into().unwrap();
        let want_geglu = a * activation::gelu(gate);
        let want_gelu = activation::gelu(h.clone());
        let want_quick = h.clone() * activation::sigmoid(h.clone() * 1.702);
        let max =
            |a: Tensor<3>, b: &Tensor<3>| -> f32 { (a - b.clone()).abs().max().into_scalar() };
        // Every path this CPU can run: scalar, AVX2, AVX-512.
        for simd in Simd::ALL.into_iter().filter(|s| s.available()) {
            let diff = max(geglu_with(simd, h.clone()), &want_geglu);
            assert!(diff < 1e-5, "geglu ({simd:?}) differs by {diff}");
            let diff = max(gelu_with(simd, h.clone()), &want_gelu);
            assert!(diff < 1e-5, "gelu ({simd:?}) differs by {diff}");
            let diff = max(quick_gelu_with(simd, h.clone()), &want_quick);
            assert!(diff < 1e-5, "quick_gelu ({simd:?}) differs by {diff}");
        }
    }
}
