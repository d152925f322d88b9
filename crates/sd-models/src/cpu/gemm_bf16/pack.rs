//! Packing of the operands into the bf16 panels the micro-kernel reads (layouts in the parent's
//! header): f32 values are rounded to bf16 here, once per product.

use rayon::prelude::*;

use super::{MR, NR, Operand};

/// A as panels of MR rows: for each k-pair p, the MR rows' (a[2p], a[2p+1]) as one u32 each
/// (low half first); rows past m and the odd k's partner are zero.
pub(super) fn pack_a<A: Operand>(a: &[A], lda: usize, m: usize, k: usize, out: &mut Vec<u32>) {
    let kp = k.div_ceil(2);
    out.clear();
    out.resize(m.div_ceil(MR) * kp * MR, 0);
    out.par_chunks_mut(kp * MR)
        .enumerate()
        .for_each(|(i, panel)| {
            let mut pairs = vec![0u32; kp];
            for r in 0..MR.min(m - i * MR) {
                let row = &a[(i * MR + r) * lda..][..k];
                // Converted contiguously (vectorises), then spread MR apart.
                let (whole, rest) = row.split_at(k & !1);
                for (d, x) in pairs.iter_mut().zip(whole.chunks_exact(2)) {
                    *d = x[0].bf16_bits() as u32 | ((x[1].bf16_bits() as u32) << 16);
                }
                if let Some(x) = rest.first() {
                    pairs[kp - 1] = x.bf16_bits() as u32;
                }
                for (p, &v) in pairs.iter().enumerate() {
                    panel[p * MR + r] = v;
                }
            }
        });
}

/// B as panels of NR columns: for each k-pair p, the NR columns' (b[2p][j], b[2p+1][j]) as one
/// u32 each; columns past n and the odd k's partner are zero.
pub(super) fn pack_b<B: Operand>(b: &[B], ldb: usize, k: usize, n: usize, out: &mut Vec<u32>) {
    let kp = k.div_ceil(2);
    out.clear();
    out.resize(n.div_ceil(NR) * kp * NR, 0);
    out.par_chunks_mut(kp * NR)
        .enumerate()
        .for_each(|(j, panel)| {
            let c0 = j * NR;
            let w = NR.min(n - c0);
            for (p, dst) in panel.chunks_exact_mut(NR).enumerate() {
                let even = &b[2 * p * ldb + c0..][..w];
                if 2 * p + 1 < k {
                    let odd = &b[(2 * p + 1) * ldb + c0..][..w];
                    for ((d, e), o) in dst.iter_mut().zip(even).zip(odd) {
                        *d = e.bf16_bits() as u32 | ((o.bf16_bits() as u32) << 16);
                    }
                } else {
                    for (d, e) in dst.iter_mut().zip(even) {
                        *d = e.bf16_bits() as u32;
                    }
                }
            }
        });
}
