//! bf16 matrix products with f32 accumulation on AVX512-BF16 (`VDPBF16PS`): the products of
//! `--dtype bf16` on the CPU backend ([`super::bf16_autocast`]).
//!
//! Why: Burn's `flex` backend converts bf16 operands to f32 on every matrix product, so bf16 ran
//! slower than f32; `VDPBF16PS` does 32 bf16 multiply-adds per instruction, twice the f32 FMA's
//! 16 (measured on 2 Zen 4 cores: 410 against 208 GFLOP/s of dependency-free instructions).
//!
//! The product is a small BLIS-style loop nest: the operands are packed into bf16 panels (f32
//! operands rounded to nearest even on the way, so activations are converted once per product),
//! pairs of k interleaved as the instruction reads them; an 6 × 64 register tile of f32 sums per
//! micro-kernel call; blocks of [`KC_PAIRS`] k-pairs, rows and columns split into units of
//! [`MC`] × [`NC`] that run in parallel, each summing into its own buffer. Packing buffers are
//! reused per thread: fresh pages cost more than the packing itself in a VM.
//!
//! Two things a convolution needs come without copies: a row-major bf16 left operand with an even
//! k (a layer's weight as stored) is read in place, its rows already pairs of k; and the right
//! operand is anything that hands out k-pairs of rows ([`Right`]), so a convolution's im2col
//! matrix is packed straight from the image ([`ConvColumns`], implicit GEMM). The output can be
//! scattered per image ([`Out`]), so that a batch of images is one product over one read of the
//! weight.
//!
//! Each output is Σ over k-pairs, in order, of `a[2p+1]·b[2p+1]` then `a[2p]·b[2p]`, added to the
//! f32 sum one product at a time (bf16 products are exact in f32); [`reference`] computes exactly
//! that and the tests require equality bit for bit.

use std::cell::RefCell;

use half::bf16;
use rayon::prelude::*;

mod conv;
mod pack;
mod tile;
use super::Shared;
pub use conv::ConvColumns;
pub use pack::{Dense, Right};
use pack::{pack_a, pack_b};
use tile::{Panel, tile};

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

/// An operand element: f32 (rounded to bf16 when packed) or bf16.
pub trait Operand: Copy + Send + Sync {
    /// The bf16 bits of the value.
    fn bf16_bits(self) -> u16;

    /// `a` (rows `lda` apart, `k` wide) as u32 k-pairs the kernel reads in place: only bf16 rows
    /// that start on pair boundaries (even `lda` and `k`, 4-byte aligned).
    fn in_place(a: &[Self], lda: usize, k: usize) -> Option<&[u32]> {
        let _ = (a, lda, k);
        None
    }
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

    fn in_place(a: &[Self], lda: usize, k: usize) -> Option<&[u32]> {
        let aligned = (a.as_ptr() as usize).is_multiple_of(std::mem::align_of::<u32>());
        (lda.is_multiple_of(2) && k.is_multiple_of(2) && aligned).then(|| {
            // SAFETY: `a` starts 4-byte aligned and the pairs cover its first 2·⌊len/2⌋ values;
            // every bit pattern is a valid u32; bf16 is two bytes (half's repr(transparent) u16).
            unsafe { std::slice::from_raw_parts(a.as_ptr().cast::<u32>(), a.len() / 2) }
        })
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

/// Where an m × n product lands: c[i][j] at `i·ld + (j / cols)·image + j % cols`. A plain matrix
/// is one "image" as wide as the product ([`Out::matrix`]); a convolution over a batch puts the
/// columns of each image (`cols` = its pixels) into that image's `[cout, pixels]` block.
pub struct Out<'a> {
    pub c: &'a mut [f32],
    pub ld: usize,
    pub cols: usize,
    pub image: usize,
}

impl<'a> Out<'a> {
    /// A row-major matrix, rows `ld` apart.
    pub fn matrix(c: &'a mut [f32], ld: usize) -> Out<'a> {
        Out {
            c,
            ld,
            cols: usize::MAX,
            image: 0,
        }
    }

    fn index(&self, i: usize, j: usize) -> usize {
        i * self.ld + (j / self.cols) * self.image + j % self.cols
    }

    /// Whether every (i, j) of an m × n product has its own place inside `c`.
    fn holds(&self, m: usize, n: usize) -> bool {
        let (last_row, last) = (m - 1, self.index(m - 1, n - 1));
        let images_apart = n <= self.cols || self.image >= m * self.ld;
        self.cols > 0
            && self.ld >= self.cols.min(n)
            && images_apart
            && last < self.c.len()
            && (n <= self.cols || self.index(last_row, (n - 1) / self.cols * self.cols - 1) < last)
    }
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
        fits(b.len(), k, n, ldb),
        "gemm_bf16: right operand shorter than {k}×{n}"
    );
    product(
        (m, n, k),
        a,
        lda,
        &Dense { b, ld: ldb, k },
        Out::matrix(c, ldc),
    );
}

/// `out = a[m×k] · b[k×n]`, `a` row-major with rows `lda` apart, `b` any [`Right`] operand: with
/// `VDPBF16PS` where the CPU has it, else [`reference_with`]'s loop (same results, slowly).
///
/// # Panics
/// When `a` or `out` is shorter than the shapes say, or `out` maps two outputs to one place (a
/// caller's bug: the shapes come from tensors).
pub fn product<A: Operand, R: Right>(
    (m, n, k): (usize, usize, usize),
    a: &[A],
    lda: usize,
    b: &R,
    out: Out,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        lda >= k && a.len() >= (m - 1) * lda + k && out.holds(m, n),
        "gemm_bf16: operands do not hold {m}×{k} · {k}×{n}"
    );
    if k == 0 || !supported() {
        let r = reference_with((m, n, k), a, lda, b);
        for i in 0..m {
            for j in 0..n {
                let at = out.index(i, j);
                out.c[at] = r[i * n + j];
            }
        }
        return;
    }
    let product = Product {
        mnk: (m, n, k),
        a,
        lda,
        b,
    };
    PACKS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut packs) => {
            let (pa, pb) = &mut *packs;
            product.run(&out, pa, pb)
        }
        // Re-entered on this thread (work stealing): fresh buffers.
        Err(_) => product.run(&out, &mut Vec::new(), &mut Vec::new()),
    });
}

/// The operands of one product, checked by [`product`].
struct Product<'a, A, R> {
    mnk: (usize, usize, usize),
    a: &'a [A],
    lda: usize,
    b: &'a R,
}

impl<A: Operand, R: Right> Product<'_, A, R> {
    /// Packs the operands (A only when it cannot be read in place) into `pa`, `pb` and computes
    /// `out` in parallel units.
    fn run(&self, out: &Out, pa: &mut Vec<u32>, pb: &mut Vec<u32>) {
        let (m, n, k) = self.mnk;
        let kp = k.div_ceil(2);
        let in_place = A::in_place(self.a, self.lda, k);
        if in_place.is_none() {
            pack_a(self.a, self.lda, m, k, pa);
        }
        pack_b(self.b, k, n, pb);
        let (pa, pb) = (&*pa, &*pb);
        // The tile's view of rows ip·MR … of A from k-pair p0.
        let panel = |ip: usize, p0: usize| match in_place {
            Some(a) => Panel {
                rows: std::array::from_fn(|r| {
                    a.as_ptr()
                        .wrapping_add((ip * MR + r).min(m - 1) * (self.lda / 2) + p0)
                }),
                step: 1,
            },
            None => Panel {
                rows: std::array::from_fn(|r| pa.as_ptr().wrapping_add((ip * kp + p0) * MR + r)),
                step: MR,
            },
        };
        let (mp, np) = (m.div_ceil(MR), n.div_ceil(NR));
        let (mg, ng) = (MC / MR, NC / NR);
        let units: Vec<(usize, usize)> = (0..mp.div_ceil(mg))
            .flat_map(|i| (0..np.div_ceil(ng)).map(move |j| (i, j)))
            .collect();
        let shared = Shared(out.c.as_ptr().cast_mut());
        units.par_iter().for_each(|&(ui, uj)| {
            let (i0, i1) = (ui * mg, ((ui + 1) * mg).min(mp));
            let (j0, j1) = (uj * ng, ((uj + 1) * ng).min(np));
            let width = (j1 - j0) * NR;
            let run = |buf: &mut Vec<f32>| {
                let need = (i1 - i0) * MR * width;
                if buf.len() < need {
                    buf.resize(need, 0.0);
                }
                for p0 in (0..kp).step_by(KC_PAIRS) {
                    let kc = KC_PAIRS.min(kp - p0);
                    for jp in j0..j1 {
                        let bp = &pb[(jp * kp + p0) * NR..(jp * kp + p0 + kc) * NR];
                        for ip in i0..i1 {
                            let at = (ip - i0) * MR * width + (jp - j0) * NR;
                            // SAFETY: supported() was checked by `product`; the panel's rows
                            // hold kc pairs from p0 (packed, or A's rows checked by `product`);
                            // the tile at `at` spans MR rows of `width` ≥ NR floats in `buf`.
                            unsafe { tile(panel(ip, p0), kc, bp, &mut buf[at..], width, p0 > 0) };
                        }
                    }
                }
                let (r0, c0) = (i0 * MR, j0 * NR);
                let (h, w) = ((i1 * MR).min(m) - r0, (j1 * NR).min(n) - c0);
                for r in 0..h {
                    let mut j = c0;
                    while j < c0 + w {
                        let len = (out.cols - j % out.cols).min(c0 + w - j);
                        // SAFETY: outputs (r0 + r, j …) are this unit's alone and inside `c`,
                        // a run never crosses an image (`Out::holds`, checked by `product`).
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                buf.as_ptr().add(r * width + j - c0),
                                shared.at(out.index(r0 + r, j)),
                                len,
                            )
                        };
                        j += len;
                    }
                }
            };
            UNIT.with(|cell| match cell.try_borrow_mut() {
                Ok(mut buf) => run(&mut buf),
                Err(_) => run(&mut Vec::new()),
            });
        });
    }
}

/// The product as the kernel computes it, one scalar at a time: operands rounded to bf16, and per
/// output the k-pairs in order, odd product before even, each added to an f32 sum.
pub fn reference<A: Operand, B: Operand>(
    mnk: (usize, usize, usize),
    a: &[A],
    lda: usize,
    b: &[B],
    ldb: usize,
) -> Vec<f32> {
    let k = mnk.2;
    reference_with(mnk, a, lda, &Dense { b, ld: ldb, k })
}

/// [`reference`] of any [`Right`] operand, read one k-pair at a time.
pub fn reference_with<A: Operand, R: Right>(
    (m, n, k): (usize, usize, usize),
    a: &[A],
    lda: usize,
    b: &R,
) -> Vec<f32> {
    let f = |x: u32| f32::from_bits(x << 16);
    let mut c = vec![0f32; m * n];
    let mut pairs = vec![0u32; n];
    for p in 0..k.div_ceil(2) {
        b.pairs(p, 0, &mut pairs);
        for i in 0..m {
            for (acc, &pair) in c[i * n..(i + 1) * n].iter_mut().zip(&pairs) {
                if 2 * p + 1 < k {
                    *acc += f(a[i * lda + 2 * p + 1].bf16_bits() as u32) * f(pair >> 16);
                }
                *acc += f(a[i * lda + 2 * p].bf16_bits() as u32) * f(pair & 0xffff);
            }
        }
    }
    c
}

#[cfg(test)]
mod tests;
