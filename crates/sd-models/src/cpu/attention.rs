//! Multi-head attention under bf16 autocast: softmax(QKᵀ/√d)·V with both products on the bf16
//! kernel ([`super::gemm_bf16`], f32 sums) and the softmax in f32, as PyTorch's autocast runs
//! SDPA in bf16.
//!
//! Why: Burn's `flex` attention runs at about half of PyTorch's SDPA rate on the UNet's 4096-token
//! self-attention (64×64 latents), where five such layers are a third of a bf16 UNet step. Heads
//! are read in place from the `[batch, tokens, heads·d]` projections; per head the keys are
//! transposed and rounded once, then queries go in blocks whose score rows (at most
//! [`SCORES_MAX_BYTES`]) stay in cache between the two products.

use burn::tensor::{Tensor, TensorData, bf16};
use rayon::prelude::*;

use super::gemm_bf16::{self, Dense, Operand, Out};
use super::linear::Values;
use super::math::exp;
use super::view::Held;
use super::{Simd, f32_on_flex};

/// The largest block of scores (bytes) computed at once.
const SCORES_MAX_BYTES: usize = 16 << 20;

/// softmax(QKᵀ/√d)·V over `heads` heads with the bf16 kernel, for f32 `q`, `k`, `v` on the CPU
/// backend with AVX512-BF16 (`None` elsewhere: the caller runs Burn's op).
///
/// # Shapes
/// - q: `[batch, q_tokens, heads·d]`, k/v: `[batch, kv_tokens, heads·d]`
/// - output: `[batch, q_tokens, heads·d]`
pub fn multi_head_bf16(
    q: &Tensor<3>,
    k: &Tensor<3>,
    v: &Tensor<3>,
    heads: usize,
) -> Option<Tensor<3>> {
    let [b, nq, c] = q.dims();
    let [_, nk, _] = k.dims();
    if !(super::bf16_autocast() && [q, k, v].iter().all(|t| f32_on_flex(*t))) || c % heads != 0 {
        return None;
    }
    let (hq, hk, hv) = (
        Held::of(q.clone())?,
        Held::of(k.clone())?,
        Held::of(v.clone())?,
    );
    let (Values::F32(qs), Values::F32(ks), Values::F32(vs)) =
        (hq.values()?, hk.values()?, hv.values()?)
    else {
        return None;
    };
    let d = c / heads;
    let scale = (d as f32).powf(-0.5);
    let block = (SCORES_MAX_BYTES / (4 * nk)).clamp(1, nq.max(1));
    let mut out = vec![0f32; b * nq * c];
    let mut scores = vec![0f32; block * nk];
    let mut keys = vec![bf16::ZERO; d * nk];
    let simd = Simd::get();
    for i in 0..b {
        for h in 0..heads {
            let at = |n: usize| i * n * c + h * d;
            // Kᵀ of this head, rounded: [d, nk].
            keys.par_chunks_mut(nk).enumerate().for_each(|(dd, row)| {
                for (j, x) in row.iter_mut().enumerate() {
                    *x = bf16::from_bits(ks[at(nk) + j * c + dd].bf16_bits());
                }
            });
            let kt = Dense {
                b: keys.as_slice(),
                ld: nk,
                k: d,
            };
            let vh = Dense {
                b: &vs[at(nk)..],
                ld: c,
                k: nk,
            };
            for r0 in (0..nq).step_by(block) {
                let rows = block.min(nq - r0);
                let s = &mut scores[..rows * nk];
                let qa = &qs[at(nq) + r0 * c..];
                gemm_bf16::product((rows, nk, d), qa, c, &kt, Out::matrix(s, nk));
                s.par_chunks_mut(nk)
                    .for_each(|row| simd!(simd, softmax_row(row, scale)));
                let o = Out::matrix(&mut out[at(nq) + r0 * c..], c);
                gemm_bf16::product((rows, d, nk), &*s, nk, &vh, o);
            }
        }
    }
    let data = TensorData::new(out, [b, nq, c]);
    Some(Tensor::from_data(data, &q.device()))
}

/// Lanes of the softmax's max and sum: float reductions only vectorise when written per lane.
const LANES: usize = 16;

/// `row ← softmax(row · scale)` in place, in f32.
#[inline(always)]
fn softmax_row(row: &mut [f32], scale: f32) {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &x) in lanes.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let max = lanes.iter().fold(tail, |m, &x| m.max(x));
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (s, x) in sums.iter_mut().zip(c) {
            *x = exp((*x - max) * scale);
            *s += *x;
        }
    }
    let mut sum = 0f32;
    for x in chunks.into_remainder() {
        *x = exp((*x - max) * scale);
        sum += *x;
    }
    let inv = 1.0 / sums.iter().fold(sum, |a, &b| a + b);
    row.iter_mut().for_each(|x| *x *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;
    use burn::tensor::{Device, Distribution};

    #[test]
    fn bf16_attention_is_burns_within_bf16_rounding() {
        if !crate::cpu::bf16_autocast() {
            eprintln!("no AVX512-BF16 on this CPU: autocast does not apply");
            return;
        }
        let device = Device::flex();
        let (b, heads, d) = (2, 3, 16);
        for (nq, nk) in [(37, 37), (50, 77)] {
            let r =
                |n| Tensor::<3>::random([b, n, heads * d], Distribution::Normal(0.0, 1.0), &device);
            let (q, k, v) = (r(nq), r(nk), r(nk));
            let got = multi_head_bf16(&q, &k, &v, heads).expect("applies");
            let split = |t: Tensor<3>, n| t.reshape([b, n, heads, d]).swap_dims(1, 2);
            let want = attention(
                split(q, nq),
                split(k, nk),
                split(v, nk),
                None,
                None,
                AttentionModuleOptions::default(),
            );
            let want = want.swap_dims(1, 2).reshape([b, nq, heads * d]);
            // q, k, v and the probabilities rounded once each (2⁻⁹ relative): outputs are
            // probability-weighted means of values of magnitude ~1 (measured 7.4e-3, 4.7e-3).
            let diff: f32 = (got - want).abs().max().into_scalar();
            eprintln!("{nq}×{nk}: max abs diff {diff:e}");
            assert!(diff < 1.5e-2, "{nq}×{nk}: {diff}");
        }
    }
}
