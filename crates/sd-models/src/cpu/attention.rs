//! Multi-head attention on the CPU backend: softmax(QKᵀ/√d)·V as two matrix products per block of
//! queries with an exact softmax in between. Under bf16 autocast both products run on the bf16
//! kernel ([`super::gemm_bf16`], f32 sums) and the softmax in f32, as PyTorch's autocast runs SDPA
//! in bf16; in f32 they run on `gemm` (the kernel of Burn's matmul) reading the heads in place.
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
use super::{Shared, Simd, f32_on_flex};

/// The largest block of scores (bytes) computed at once.
const SCORES_MAX_BYTES: usize = 16 << 20;

/// f32: queries per task, so that a task's scores (`F32_BLOCK × kv_tokens`, 1 MiB at 4096 keys)
/// stay in a core's L2 between the two products.
const F32_BLOCK: usize = 64;

/// softmax(QKᵀ/√d)·V over `heads` heads for f32 `q`, `k`, `v` on the CPU backend (`None`
/// elsewhere: the caller runs Burn's op). Tasks are (image, head, block of queries), each with
/// single-threaded `gemm` products on strided views of the projections.
///
/// # Shapes
/// - q: `[batch, q_tokens, heads·d]`, k/v: `[batch, kv_tokens, heads·d]`
/// - output: `[batch, q_tokens, heads·d]`
pub fn multi_head_f32(
    q: &Tensor<3>,
    k: &Tensor<3>,
    v: &Tensor<3>,
    heads: usize,
) -> Option<Tensor<3>> {
    heads_in_place(q, k, v, heads, |qs, ks, vs, dims| {
        let Dims {
            b,
            nq,
            nk,
            c,
            d,
            scale,
        } = dims;
        let mut out = vec![0f32; b * nq * c];
        let dst = Shared(out.as_mut_ptr());
        let blocks = nq.div_ceil(F32_BLOCK);
        let simd = Simd::get();
        (0..b * heads * blocks).into_par_iter().for_each_init(
            || vec![0f32; F32_BLOCK * nk],
            |scores, task| {
                let (i, h, r0) = (
                    task / (heads * blocks),
                    task / blocks % heads,
                    task % blocks * F32_BLOCK,
                );
                let rows = F32_BLOCK.min(nq - r0);
                let (qo, kv) = (i * nq * c + r0 * c + h * d, i * nk * c + h * d);
                let s = &mut scores[..rows * nk];
                // SAFETY: every view lies inside its buffer (rows ≤ nq − r0, columns h·d..h·d + d of
                // c), and each task writes only its own rows × d block of `out`.
                unsafe {
                    // scores = scale · Q Kᵀ: [rows, d] × [d, nk], Kᵀ read through K's strides.
                    product(
                        (rows, nk, d),
                        s.as_mut_ptr(),
                        nk,
                        (qs[qo..].as_ptr(), c, 1),
                        (ks[kv..].as_ptr(), 1, c),
                        scale,
                    );
                }
                // Unnormalised: each output row is divided by its sum after the product.
                let mut inv = [0f32; F32_BLOCK];
                for (row, inv) in s.chunks_exact_mut(nk).zip(&mut inv) {
                    *inv = simd!(simd, exp_row(row, 1.0));
                }
                unsafe {
                    // out block = P V: [rows, nk] × [nk, d].
                    product(
                        (rows, d, nk),
                        dst.at(qo),
                        c,
                        (s.as_ptr(), nk, 1),
                        (vs[kv..].as_ptr(), c, 1),
                        1.0,
                    );
                    // Row by row: the other heads' tasks write the columns between them.
                    for (r, &inv) in inv[..rows].iter().enumerate() {
                        let o = std::slice::from_raw_parts_mut(dst.at(qo + r * c), d);
                        o.iter_mut().for_each(|x| *x *= inv);
                    }
                }
            },
        );
        out
    })
}

/// `dst[m, n] (row stride ld) = beta · lhs · rhs`, operands given as (pointer, row stride, column
/// stride), on one thread.
///
/// # Safety
/// The views must lie inside live buffers; `dst` must not alias the operands.
unsafe fn product(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    ld: usize,
    (a, a_rs, a_cs): (*const f32, usize, usize),
    (r, r_rs, r_cs): (*const f32, usize, usize),
    beta: f32,
) {
    let i = |x: usize| x as isize;
    // SAFETY: as the caller promises.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            i(ld),
            false,
            a,
            i(a_cs),
            i(a_rs),
            r,
            i(r_cs),
            i(r_rs),
            0.0,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

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
    if !super::bf16_autocast() {
        return None;
    }
    heads_in_place(q, k, v, heads, |qs, ks, vs, dims| {
        let Dims {
            b,
            nq,
            nk,
            c,
            d,
            scale,
        } = dims;
        let block = (SCORES_MAX_BYTES / (4 * nk)).clamp(1, nq.max(1));
        let mut out = vec![0f32; b * nq * c];
        let mut scores = vec![0f32; block * nk];
        let mut inv = vec![0f32; block];
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
                        .zip(&mut inv[..rows])
                        .for_each(|(row, inv)| *inv = simd!(simd, exp_row(row, scale)));
                    let o = &mut out[at(nq) + r0 * c..];
                    gemm_bf16::product((rows, d, nk), &*s, nk, &vh, Out::matrix(o, c));
                    scale_rows(o, c, d, &inv[..rows]);
                }
            }
        }
        out
    })
}

/// The sizes of one attention call.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    nq: usize,
    nk: usize,
    c: usize,
    d: usize,
    /// 1/√d.
    scale: f32,
}

/// `run(q, k, v, dims)` on the f32 values of the projections read in place, as a `[b, nq, c]`
/// tensor; `None` unless all three are f32 on the CPU backend, non-empty, with `c` a multiple of
/// `heads`.
fn heads_in_place(
    q: &Tensor<3>,
    k: &Tensor<3>,
    v: &Tensor<3>,
    heads: usize,
    run: impl FnOnce(&[f32], &[f32], &[f32], Dims) -> Vec<f32>,
) -> Option<Tensor<3>> {
    let [b, nq, c] = q.dims();
    let [_, nk, _] = k.dims();
    if ![q, k, v].iter().all(|t| f32_on_flex(t)) || c % heads != 0 || nq == 0 || nk == 0 {
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
    let dims = Dims {
        b,
        nq,
        nk,
        c,
        d,
        scale: (d as f32).powf(-0.5),
    };
    let out = run(qs, ks, vs, dims);
    Some(Tensor::from_data(
        TensorData::new(out, [b, nq, c]),
        &q.device(),
    ))
}

/// Lanes of the softmax's max and sum: float reductions only vectorise when written per lane.
const LANES: usize = 16;

/// Row `r` of the `[rows, d]` block of `out` (row stride `ld`) times `inv[r]`: the softmax's
/// division, applied to the output's d values instead of the nk probabilities.
fn scale_rows(out: &mut [f32], ld: usize, d: usize, inv: &[f32]) {
    for (r, &inv) in inv.iter().enumerate() {
        out[r * ld..r * ld + d].iter_mut().for_each(|x| *x *= inv);
    }
}

/// `row ← exp((row − max row) · scale)` in place, in f32; returns 1 / the sum of the new row.
#[inline(always)]
fn exp_row(row: &mut [f32], scale: f32) -> f32 {
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
    1.0 / sums.iter().fold(sum, |a, &b| a + b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::module::attention;
    use burn::tensor::{Device, Distribution};

    /// Burn's fused attention of `[b, n, heads·d]` projections, the reference of both kernels.
    fn burns(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize) -> Tensor<3> {
        let [b, nq, c] = q.dims();
        let split = |t: Tensor<3>| {
            let [_, n, _] = t.dims();
            t.reshape([b, n, heads, c / heads]).swap_dims(1, 2)
        };
        let want = attention(split(q), split(k), split(v), None, None, Default::default());
        want.swap_dims(1, 2).reshape([b, nq, c])
    }

    #[test]
    fn f32_attention_is_burns() {
        let device = Device::flex();
        // Query blocks of 64 with a remainder, cross-attention's 77 keys, one wide VAE head.
        for (b, heads, d, nq, nk) in [(2, 5, 16, 150, 150), (2, 3, 8, 37, 77), (1, 1, 96, 70, 70)] {
            let r =
                |n| Tensor::<3>::random([b, n, heads * d], Distribution::Normal(0.0, 1.0), &device);
            let (q, k, v) = (r(nq), r(nk), r(nk));
            let got = multi_head_f32(&q, &k, &v, heads).expect("applies");
            let want = burns(q, k, v, heads);
            // Both f32; they differ in summation order and Burn's online softmax (measured ≤ 5.1e-7).
            let diff: f32 = (got - want).abs().max().into_scalar();
            eprintln!("{b}×{heads}×{d}, {nq}×{nk}: max abs diff {diff:e}");
            assert!(diff < 1e-5, "{nq}×{nk}: {diff}");
        }
    }

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
            // The reference of the same input rounding: q, k, v rounded to bf16 as the kernel
            // reads them, then Burn's f32 attention.
            let round = |t: Tensor<3>| {
                t.cast(burn::tensor::DType::BF16)
                    .cast(burn::tensor::DType::F32)
            };
            let v = round(v);
            let vmax: f32 = v.clone().abs().max().into_scalar();
            let want = burns(round(q), round(k), v, heads);
            // What is left is the probabilities' rounding to bf16 before P·V, at most 2⁻⁸ of
            // each: |Σ δp·v| ≤ 2⁻⁸·max|v| (plus f32 summation noise). Measured 1.3e-3 – 4.7e-3
            // against bounds of about 1.5e-2.
            let bound = vmax / 256.0 + 1e-5;
            let diff: f32 = (got - want).abs().max().into_scalar();
            eprintln!("{nq}×{nk}: max abs diff {diff:e} (bound {bound:e})");
            assert!(diff <= bound, "{nq}×{nk}: {diff} > {bound}");
        }
    }
}
