//! bf16 matrix products with f32 accumulation on AVX512-BF16 (`VDPBF16PS`): the products of
//! `--dtype bf16` on the CPU backend ([`super::bf16_autocast`]).
//!
//! Why: Burn's `flex` backend converts bf16 operands to f32 on every matrix product, so bf16 ran
//! slower than f32; `VDPBF16PS` does 32 bf16 multiply-adds per instruction, twice the f32 FMA's
//! 16 (measured on 2 Zen 4 cores: 410 against 208 GFLOP/s of dependency-free instructions).
//!
//! The product is a small BLIS-style loop nest: both operands are packed into bf16 panels (f32
//! operands rounded to nearest even on the way, so activations are converted once per product),
//! pairs of k interleaved as the instruction reads them; an 6 × 64 register tile of f32 sums per
//! micro-kernel call; blocks of [`KC_PAIRS`] k-pairs, rows and columns split into units of
//! [`MC`] × [`NC`] that run in parallel, each summing into its own buffer. Packing buffers are
//! reused per thread: fresh pages cost more than the packing itself in a VM.
//!
//! Each output is Σ over k-pairs, in order, of `a[2p+1]·b[2p+1]` then `a[2p]·b[2p]`, added to the
//! f32 sum one product at a time (bf16 products are exact in f32); [`reference`] computes exactly
//! that and the tests require equality bit for bit.

use std::cell::RefCell;

use half::bf16;
use rayon::prelude::*;

mod pack;
use pack::{pack_a, pack_b};

/// Rows of the register tile.
const MR: usize = 6;
/// 16-lane vectors per row of the register tile.
const NV: usize = 4;
/// Columns of the register tile.
const NR: usize = 16 * NV;
/// k-pairs per block: a block of the B panel (256 · 64 · 4 B = 64 KiB) streams from L2.
const KC_PAIRS: usize = 256;
/// Rows of a parallel unit.
const MC: usize = 96;
/// Columns of a parallel unit.
const NC: usize = 128;
/// Packed k-pairs prefetched ahead in the micro-kernel.
#[cfg(target_arch = "x86_64")]
const PREFETCH: usize = 8;

/// An operand element: f32 (rounded to bf16 when packed) or bf16.
pub trait Operand: Copy + Send + Sync {
    /// The bf16 bits of the value.
    fn bf16_bits(self) -> u16;
}

impl Operand for f32 {
    /// Round to nearest even, NaN kept a quiet NaN; branch-free so that packing loops vectorise.
    #[inline(always)]
    fn bf16_bits(self) -> u16 {
        let b = self.to_bits();
        let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
        let nan = ((b >> 16) as u16) | 0x40;
        if self.is_nan() { nan } else { rounded }
    }
}

impl Operand for bf16 {
    #[inline(always)]
    fn bf16_bits(self) -> u16 {
        self.to_bits()
    }
}

/// Whether this CPU has `VDPBF16PS` (AVX512-BF16 with AVX512-F).
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

thread_local! {
    /// Packed A and B of the products this thread starts.
    static PACKS: RefCell<(Vec<u32>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// The output buffer of the units this thread computes.
    static UNIT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `c[m×n] = a[m×k] · b[k×n]` for row-major operands with leading dimensions `lda`, `ldb`, `ldc`;
/// with `VDPBF16PS` where the CPU has it, else [`reference`]'s loop (same results, slowly).
///
/// # Panics
/// When a slice is shorter than its shape and leading dimension say (a caller's bug: the shapes
/// come from tensors).
#[allow(clippy::too_many_arguments)]
pub fn matmul<A: Operand, B: Operand>(
    (m, n, k): (usize, usize, usize),
    a: &[A],
    lda: usize,
    b: &[B],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    let fits = |len: usize, rows: usize, cols: usize, ld: usize| {
        rows == 0 || cols == 0 || (ld >= cols && len >= (rows - 1) * ld + cols)
    };
    assert!(
        fits(a.len(), m, k, lda) && fits(b.len(), k, n, ldb) && fits(c.len(), m, n, ldc),
        "gemm_bf16: operands shorter than {m}×{k} · {k}×{n}"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || !supported() {
        let r = reference((m, n, k), a, lda, b, ldb);
        for (row, out) in r.chunks(n.max(1)).zip(c.chunks_mut(ldc)) {
            out[..n].copy_from_slice(row);
        }
        return;
    }
    let product = Product {
        mnk: (m, n, k),
        a,
        lda,
        b,
        ldb,
    };
    PACKS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut packs) => {
            let (pa, pb) = &mut *packs;
            product.run(c, ldc, pa, pb)
        }
        // Re-entered on this thread (work stealing): fresh buffers.
        Err(_) => product.run(c, ldc, &mut Vec::new(), &mut Vec::new()),
    });
}

/// The output pointer shared by the units, each writing its own rectangle.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: units write disjoint rectangles of the output.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The address of output element `i` (a method, so that closures capture `Out` whole).
    fn at(&self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// The operands of one product, checked by [`matmul`].
struct Product<'a, A, B> {
    mnk: (usize, usize, usize),
    a: &'a [A],
    lda: usize,
    b: &'a [B],
    ldb: usize,
}

impl<A: Operand, B: Operand> Product<'_, A, B> {
    /// Packs both operands into `pa`, `pb` and computes `c` (rows `ldc` apart) in parallel units.
    fn run(&self, c: &mut [f32], ldc: usize, pa: &mut Vec<u32>, pb: &mut Vec<u32>) {
        let (m, n, k) = self.mnk;
        let kp = k.div_ceil(2);
        pack_a(self.a, self.lda, m, k, pa);
        pack_b(self.b, self.ldb, k, n, pb);
        let (pa, pb) = (&*pa, &*pb);
        let (mp, np) = (m.div_ceil(MR), n.div_ceil(NR));
        let (mg, ng) = (MC / MR, NC / NR);
        let units: Vec<(usize, usize)> = (0..mp.div_ceil(mg))
            .flat_map(|i| (0..np.div_ceil(ng)).map(move |j| (i, j)))
            .collect();
        let out = Out(c.as_mut_ptr());
        units.par_iter().for_each(|&(ui, uj)| {
            let (i0, i1) = (ui * mg, ((ui + 1) * mg).min(mp));
            let (j0, j1) = (uj * ng, ((uj + 1) * ng).min(np));
            let width = (j1 - j0) * NR;
            let run = |buf: &mut Vec<f32>| {
                buf.clear();
                buf.resize((i1 - i0) * MR * width, 0.0);
                for p0 in (0..kp).step_by(KC_PAIRS) {
                    let kc = KC_PAIRS.min(kp - p0);
                    for jp in j0..j1 {
                        let bp = &pb[(jp * kp + p0) * NR..(jp * kp + p0 + kc) * NR];
                        for ip in i0..i1 {
                            let ap = &pa[(ip * kp + p0) * MR..(ip * kp + p0 + kc) * MR];
                            let at = (ip - i0) * MR * width + (jp - j0) * NR;
                            // SAFETY: supported() was checked by `matmul`; the tile at `at` spans MR
                            // rows of `width` ≥ NR floats inside `buf`.
                            unsafe { tile(ap, bp, &mut buf[at..], width, p0 > 0) };
                        }
                    }
                }
                let (r0, c0) = (i0 * MR, j0 * NR);
                let (h, w) = ((i1 * MR).min(m) - r0, (j1 * NR).min(n) - c0);
                for r in 0..h {
                    // SAFETY: rows r0..r0+h, columns c0..c0+w of the output are this unit's alone,
                    // and inside `c` (checked by `matmul`).
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            buf.as_ptr().add(r * width),
                            out.at((r0 + r) * ldc + c0),
                            w,
                        )
                    };
                }
            };
            UNIT.with(|cell| match cell.try_borrow_mut() {
                Ok(mut buf) => run(&mut buf),
                Err(_) => run(&mut Vec::new()),
            });
        });
    }
}

/// One MR × NR tile over the k-pairs of `a` (MR per pair) and `b` (NR per pair): `c` (rows `ldc`
/// apart) is set, or added to when `add`.
///
/// # Safety
/// The CPU has AVX512-F and AVX512-BF16; `c` holds MR − 1 rows of `ldc` floats plus NR.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile(a: &[u32], b: &[u32], c: &mut [f32], ldc: usize, add: bool) {
    use std::arch::x86_64::*;
    let kc = a.len() / MR;
    debug_assert!(b.len() == kc * NR && c.len() >= (MR - 1) * ldc + NR);
    let (a, b, c) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
    // SAFETY: every pointer below stays inside the slices (lengths above); prefetches may point
    // past them, which is allowed.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        if add {
            for (r, row) in acc.iter_mut().enumerate() {
                for (v, x) in row.iter_mut().enumerate() {
                    *x = _mm512_loadu_ps(c.add(r * ldc + 16 * v));
                }
            }
        }
        for p in 0..kc {
            let mut bv = [_mm512_setzero_si512(); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                let at = b.wrapping_add((p + PREFETCH) * NR + 16 * v);
                _mm_prefetch::<_MM_HINT_T0>(at as *const i8);
                *x = _mm512_loadu_si512(b.add(p * NR + 16 * v) as *const _);
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let pair = _mm512_set1_epi32(*a.add(p * MR + r) as i32);
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
unsafe fn tile(_: &[u32], _: &[u32], _: &mut [f32], _: usize, _: bool) {
    unreachable!("supported() is false off x86-64")
}

/// The product as the kernel computes it, one scalar at a time: operands rounded to bf16, and per
/// output the k-pairs in order, odd product before even, each added to an f32 sum.
pub fn reference<A: Operand, B: Operand>(
    (m, n, k): (usize, usize, usize),
    a: &[A],
    lda: usize,
    b: &[B],
    ldb: usize,
) -> Vec<f32> {
    let f = |x: u16| f32::from_bits((x as u32) << 16);
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f32;
            for p in 0..k.div_ceil(2) {
                if 2 * p + 1 < k {
                    let (x, y) = (a[i * lda + 2 * p + 1], b[(2 * p + 1) * ldb + j]);
                    acc += f(x.bf16_bits()) * f(y.bf16_bits());
                }
                acc += f(a[i * lda + 2 * p].bf16_bits()) * f(b[2 * p * ldb + j].bf16_bits());
            }
            c[i * n + j] = acc;
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform values in [−2, 2) from a fixed LCG.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    #[test]
    fn rounding_matches_half() {
        let mut xs = values(100_000, 7);
        xs.extend([
            0.0,
            -0.0,
            1.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            1e-40,
            -3e-39,
        ]);
        // Ties, both ways: 1 + 2⁻⁸ (even below), 1 + 3·2⁻⁸ (odd below).
        xs.extend([1.003_906_3, 1.011_718_8, f32::from_bits(0x3f80_8000)]);
        for x in xs {
            assert_eq!(x.bf16_bits(), bf16::from_f32(x).to_bits(), "{x:e}");
        }
        assert!(f32::from_bits((f32::NAN.bf16_bits() as u32) << 16).is_nan());
    }

    #[test]
    fn products_equal_the_scalar_reference_bit_for_bit() {
        if !supported() {
            eprintln!("no AVX512-BF16 on this CPU: only the reference path runs");
        }
        // Edges in every dimension (odd k, partial tiles and units, several k blocks), strided.
        for (m, n, k) in [
            (1, 1, 1),
            (7, 70, 13),
            (13, 130, 600),
            (97, 129, 2),
            (200, 64, 515),
        ] {
            let (lda, ldb, ldc) = (k + 3, n + 5, n + 1);
            let a = values(m * lda, 1);
            let b: Vec<bf16> = values(k * ldb, 2).into_iter().map(bf16::from_f32).collect();
            let mut c = vec![f32::NAN; m * ldc];
            matmul((m, n, k), &a, lda, &b, ldb, &mut c, ldc);
            let want = reference((m, n, k), &a, lda, &b, ldb);
            for i in 0..m {
                for j in 0..n {
                    let (got, want) = (c[i * ldc + j], want[i * n + j]);
                    assert_eq!(got.to_bits(), want.to_bits(), "{m}×{n}×{k} at ({i}, {j})");
                }
            }
        }
    }

    #[test]
    fn the_reference_is_the_f64_product_of_the_rounded_operands() {
        // Independent of the kernel's order: within k · 2⁻²⁴ of Σ|a·b| (f32 summation error).
        let (m, n, k) = (5, 6, 300);
        let (a, b) = (values(m * k, 3), values(k * n, 4));
        let r = reference((m, n, k), &a, k, &b, n);
        let round = |x: f32| bf16::from_f32(x).to_f64();
        for i in 0..m {
            for j in 0..n {
                let terms = (0..k).map(|p| round(a[i * k + p]) * round(b[p * n + j]));
                let (sum, abs): (f64, f64) =
                    terms.fold((0.0, 0.0), |(s, t), x| (s + x, t + x.abs()));
                let bound = abs * k as f64 * f32::EPSILON as f64 / 2.0;
                assert!((r[i * n + j] as f64 - sum).abs() <= bound, "({i}, {j})");
            }
        }
    }
}
