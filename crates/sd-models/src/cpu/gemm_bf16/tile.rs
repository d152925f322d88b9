//! The micro-kernel: one MR × NR tile of f32 sums over a block of k-pairs, on `VDPBF16PS`.

use super::{MR, NR, NV};

/// Packed k-pairs of B prefetched ahead in the micro-kernel.
#[cfg(target_arch = "x86_64")]
const PREFETCH: usize = 8;

/// The left operand's k-pairs for one tile: row `r`'s pair `p` is the u32 at `rows[r] + p·step`
/// (a packed panel: consecutive rows, `step` = MR; a bf16 matrix read in place: one pointer per
/// row, `step` = 1). Rows past the matrix's end point at its last row, whose sums are not stored.
#[derive(Clone, Copy)]
pub(super) struct Panel {
    pub rows: [*const u32; MR],
    pub step: usize,
}

/// One MR × NR tile over `kc` k-pairs of `a` and of `b` (NR per pair): `c` (rows `ldc` apart) is
/// set, or added to when `add`.
///
/// # Safety
/// The CPU has AVX512-F and AVX512-BF16; `a.rows[r] + p·a.step` is readable for every `p < kc`;
/// `b` holds `kc · NR` values; `c` holds MR − 1 rows of `ldc` floats plus NR.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn tile(a: Panel, kc: usize, b: &[u32], c: &mut [f32], ldc: usize, add: bool) {
    use std::arch::x86_64::*;
    debug_assert!(b.len() >= kc * NR && c.len() >= (MR - 1) * ldc + NR);
    let (b, c) = (b.as_ptr(), c.as_mut_ptr());
    // SAFETY: every pointer below stays inside the operands (the contract above); prefetches may
    // point past them, which is allowed.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        if add {
            for (r, row) in acc.iter_mut().enumerate() {
                for (v, x) in row.iter_mut().enumerate() {
                    *x = _mm512_loadu_ps(c.add(r * ldc + 16 * v));
                }
            }
        }
        let mut rows = a.rows;
        for p in 0..kc {
            let mut bv = [_mm512_setzero_si512(); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                let at = b.wrapping_add((p + PREFETCH) * NR + 16 * v);
                _mm_prefetch::<_MM_HINT_T0>(at as *const i8);
                *x = _mm512_loadu_si512(b.add(p * NR + 16 * v) as *const _);
            }
            for (row, ptr) in acc.iter_mut().zip(&mut rows) {
                let pair = _mm512_set1_epi32(**ptr as i32);
                *ptr = ptr.wrapping_add(a.step);
                for (x, bv) in row.iter_mut().zip(&bv) {
                    *x = _mm512_dpbf16_ps(*x, m512bh(pair), m512bh(*bv));
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (v, x) in row.iter().enumerate() {
                _mm512_storeu_ps(c.add(r * ldc + 16 * v), *x);
            }
        }
    }
}

/// The same 512 bits as 32 bf16.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn m512bh(x: std::arch::x86_64::__m512i) -> std::arch::x86_64::__m512bh {
    // SAFETY: both are 512-bit vectors of plain bits.
    unsafe { std::mem::transmute(x) }
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) unsafe fn tile(_: Panel, _: usize, _: &[u32], _: &mut [f32], _: usize, _: bool) {
    unreachable!("supported() is false off x86-64")
}
