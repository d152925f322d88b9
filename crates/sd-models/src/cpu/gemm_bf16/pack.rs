//! Packing of the operands into the bf16 panels the micro-kernel reads (layouts in the parent's
//! header): f32 values are rounded to bf16 here, once per product. Buffers are reused between
//! products and only the padding they need is zeroed.

use rayon::prelude::*;

use super::{MR, NR, Operand};

/// The right operand B (k × n) as the kernel reads it: by k-pairs of rows. A row-major matrix
/// ([`Dense`]) and a convolution's im2col matrix read from the image ([`super::ConvColumns`])
/// are the two kinds.
pub trait Right: Sync {
    /// Fills `dst` with columns `c0 .. c0 + dst.len()` of k-pair `p`: (b[2p][j], b[2p+1][j]) as
    /// one u32 each, low half first, with b[k][j] = 0 when k is odd.
    fn pairs(&self, p: usize, c0: usize, dst: &mut [u32]);
}

/// A row-major k × n matrix, rows `ld` apart.
pub struct Dense<'a, B> {
    pub b: &'a [B],
    pub ld: usize,
    pub k: usize,
}

impl<B: Operand> Right for Dense<'_, B> {
    fn pairs(&self, p: usize, c0: usize, dst: &mut [u32]) {
        let w = dst.len();
        let even = &self.b[2 * p * self.ld + c0..][..w];
        if 2 * p + 1 < self.k {
            let odd = &self.b[(2 * p + 1) * self.ld + c0..][..w];
            interleave(even, odd, dst);
        } else {
            for (d, e) in dst.iter_mut().zip(even) {
                *d = e.bf16_bits() as u32;
            }
        }
    }
}

/// `dst[t] = (even[t], odd[t])` as bf16 pairs, low half first (vectorises).
#[inline(always)]
pub(super) fn interleave<T: Operand>(even: &[T], odd: &[T], dst: &mut [u32]) {
    for ((d, e), o) in dst.iter_mut().zip(even).zip(odd) {
        *d = e.bf16_bits() as u32 | ((o.bf16_bits() as u32) << 16);
    }
}

/// Grows `out` to `len` values without clearing it: the packers write every value they use.
fn reserve(out: &mut Vec<u32>, len: usize) -> &mut [u32] {
    if out.len() < len {
        out.resize(len, 0);
    }
    &mut out[..len]
}

/// Row `row` of A (k values) as k-pairs: (a[2p], a[2p+1]) as one u32 each, low half first, the
/// odd k's partner zero; `dst` holds ⌈k/2⌉ or more pairs, the rest zero.
fn row_pairs<A: Operand>(row: &[A], dst: &mut [u32]) {
    let k = row.len();
    let kp = k.div_ceil(2);
    // Converted contiguously (vectorises).
    let (whole, rest) = row.split_at(k & !1);
    for (d, x) in dst.iter_mut().zip(whole.chunks_exact(2)) {
        *d = x[0].bf16_bits() as u32 | ((x[1].bf16_bits() as u32) << 16);
    }
    if let Some(x) = rest.first() {
        dst[kp - 1] = x.bf16_bits() as u32;
    }
    dst[kp..].fill(0);
}

/// A as panels of MR rows: for each k-pair p, the MR rows' (a[2p], a[2p+1]) as one u32 each
/// (low half first); rows past m and the odd k's partner are zero.
pub(super) fn pack_a<A: Operand>(a: &[A], lda: usize, m: usize, k: usize, out: &mut Vec<u32>) {
    let kp = k.div_ceil(2);
    reserve(out, m.div_ceil(MR) * kp * MR)
        .par_chunks_mut(kp * MR)
        .enumerate()
        .for_each(|(i, panel)| {
            let mut pairs = vec![0u32; kp];
            let rows = MR.min(m - i * MR);
            for r in 0..MR {
                if r < rows {
                    row_pairs(&a[(i * MR + r) * lda..][..k], &mut pairs);
                } else if r == rows {
                    pairs.fill(0);
                }
                // Spread MR apart.
                for (p, &v) in pairs.iter().enumerate() {
                    panel[p * MR + r] = v;
                }
            }
        });
}

/// A (m × k) as `rows` rows of `pairs` k-pairs each (see [`row_pairs`]), the AMX tiles' layout:
/// rows past m and pairs past ⌈k/2⌉ are zero.
pub(super) fn pack_rows<A: Operand>(
    a: &[A],
    lda: usize,
    (m, k): (usize, usize),
    (rows, pairs): (usize, usize),
    out: &mut Vec<u32>,
) {
    reserve(out, rows * pairs)
        .par_chunks_mut(pairs)
        .enumerate()
        .for_each(|(i, dst)| match i < m {
            true => row_pairs(&a[i * lda..][..k], dst),
            false => dst.fill(0),
        });
}

/// B as panels of NR columns, `rows` k-pairs each (at least ⌈k/2⌉): for each k-pair p, the NR
/// columns' pairs (see [`Right::pairs`]); columns past n and pairs past ⌈k/2⌉ are zero.
pub(super) fn pack_b<R: Right>(b: &R, k: usize, n: usize, rows: usize, out: &mut Vec<u32>) {
    let kp = k.div_ceil(2);
    reserve(out, n.div_ceil(NR) * rows * NR)
        .par_chunks_mut(rows * NR)
        .enumerate()
        .for_each(|(j, panel)| {
            let c0 = j * NR;
            let w = NR.min(n - c0);
            let (pairs, padding) = panel.split_at_mut(kp * NR);
            for (p, dst) in pairs.chunks_exact_mut(NR).enumerate() {
                b.pairs(p, c0, &mut dst[..w]);
                dst[w..].fill(0);
            }
            padding.fill(0);
        });
}
