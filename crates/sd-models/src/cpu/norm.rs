//! Group norm + SiLU in one pass (every ResNet block, the models' output norms).
//!
//! Why: Burn's `flex` backend runs activations one scalar element at a time on one thread, and
//! `silu` is two passes (`x · sigmoid(x)`); measured at the VAE's 128 × 256² feature maps, group
//! norm then SiLU took 158 ms against PyTorch's 39 ms (`cargo xtask bench --component ops`). Here
//! each group is one pass, in parallel, with a branch-free `exp` the compiler vectorises; the result
//! matches the unfused ops to f32 rounding.

use burn::module::Param;
use burn::nn::GroupNorm;
use burn::tensor::activation::silu;
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use super::math::silu1;
use super::{Simd, f32_on_flex};

/// `silu(norm.forward(x))`: the fused kernel for f32 on the CPU backend, Burn's two ops elsewhere.
///
/// # Shapes
/// - x: `[batch, channels, h, w]` → the same
pub fn group_norm_silu(norm: &GroupNorm, x: Tensor<4>) -> Tensor<4> {
    group_norm_silu_with(Simd::get(), norm, x)
}

/// [`group_norm_silu`] with the kernel compiled for `simd` (a level the CPU has).
fn group_norm_silu_with(simd: Simd, norm: &GroupNorm, x: Tensor<4>) -> Tensor<4> {
    if !f32_on_flex(&x) {
        return silu(norm.forward(x));
    }
    let device = x.device();
    let [b, c, h, w] = x.dims();
    let groups = norm.num_groups;
    let affine = |p: &Option<Param<Tensor<1>>>, fill: f32| -> Vec<f32> {
        match p {
            Some(p) => p
                .val()
                .cast(DType::F32)
                .into_data()
                .try_to_vec()
                .unwrap_or_default(),
            None => vec![fill; c],
        }
    };
    let (gamma, beta) = (affine(&norm.gamma, 1.0), affine(&norm.beta, 0.0));
    if groups == 0 || !c.is_multiple_of(groups) || gamma.len() != c || beta.len() != c {
        return silu(norm.forward(x));
    }
    // Moved out without a copy unless the tensor is shared.
    let mut values = x.into_data();
    let Ok(v) = values.as_mut_slice::<f32>() else {
        return silu(norm.forward(Tensor::from_data(values, &device)));
    };
    let (per_group, hw) = (c / groups, h * w);
    let eps = norm.epsilon;
    v.par_chunks_mut(per_group * hw)
        .enumerate()
        .for_each(|(i, chunk)| {
            let first = (i % groups) * per_group;
            let ch = first..first + per_group;
            simd!(
                simd,
                norm_silu_group(chunk, hw, &gamma[ch.clone()], &beta[ch], eps)
            );
        });
    debug_assert_eq!(v.len(), b * c * hw);
    Tensor::from_data(values, &device)
}

/// Σ xs in f32 lanes of 8 (vectorisable), accumulated per 4096 values in f64.
#[inline(always)]
fn sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut total = 0.0f64;
    for block in xs.chunks(4096) {
        let mut lanes = [0.0f32; 8];
        let mut it = block.chunks_exact(8);
        for c in &mut it {
            for (l, &x) in lanes.iter_mut().zip(c) {
                *l += f(x);
            }
        }
        total += lanes.iter().map(|&l| l as f64).sum::<f64>();
        total += it.remainder().iter().map(|&x| f(x) as f64).sum::<f64>();
    }
    total
}

/// One group of one sample: normalise with the group's mean and (biased) variance, apply the
/// channels' affine, then SiLU; in place. `chunk` is `gamma.len()` planes of `hw` values.
#[inline(always)]
fn norm_silu_group(chunk: &mut [f32], hw: usize, gamma: &[f32], beta: &[f32], eps: f64) {
    let n = chunk.len() as f64;
    let mean = sum(chunk, |x| x) / n;
    let m = mean as f32;
    let var = sum(chunk, |x| (x - m) * (x - m)) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((plane, &g), &b) in chunk.chunks_mut(hw).zip(gamma).zip(beta) {
        let scale = (inv * g as f64) as f32;
        let shift = (b as f64 - mean * inv * g as f64) as f32;
        for x in plane.iter_mut() {
            *x = silu1(*x * scale + shift);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::GroupNormConfig;
    use burn::tensor::{Device, Distribution};

    #[test]
    fn group_norm_silu_matches_burns() {
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 8, 5, 3], Distribution::Normal(0.5, 2.0), &device);
        let mut norm = GroupNormConfig::new(4, 8).with_epsilon(1e-6).init(&device);
        norm.gamma = Some(Param::from_tensor(Tensor::random(
            [8],
            Distribution::Normal(1.0, 0.5),
            &device,
        )));
        norm.beta = Some(Param::from_tensor(Tensor::random(
            [8],
            Distribution::Normal(0.0, 0.5),
            &device,
        )));
        let want = silu(norm.forward(x.clone()));
        for simd in Simd::ALL.into_iter().filter(|s| s.available()) {
            let got = group_norm_silu_with(simd, &norm, x.clone());
            let diff: f32 = (got - want.clone()).abs().max().into_scalar();
            assert!(diff < 1e-5, "group_norm_silu ({simd:?}) differs by {diff}");
        }
    }
}
