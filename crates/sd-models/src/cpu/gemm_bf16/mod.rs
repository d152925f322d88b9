//! bf16 matrix products with f32 accumulation on AMX tiles (`TDPBF16PS`) or AVX512-BF16
//! (`VDPBF16PS`), chosen at run time ([`Kernel::get`]): the products of `--dtype bf16` on the CPU
//! backend ([`super::bf16_autocast`]).
//!
//! Why: Burn's `flex` backend converts bf16 operands to f32 on every matrix product, so bf16 ran
//! slower than f32; `VDPBF16PS` does 32 bf16 multiply-adds per instruction, twice the f32 FMA's
//! 16 (measured on 2 Zen 4 cores: 410 against 208 GFLOP/s of dependency-free instructions), and
//! one `TDPBF16PS` does 8192.
//!
//! The product is a small BLIS-style loop nest: the operands are packed into bf16 panels (f32
//! operands rounded to nearest even on the way, so activations are converted once per product),
//! pairs of k interleaved as the instructions read them; per micro-kernel call a 6 × 64 register
//! tile of f32 sums (`VDPBF16PS`) or a 32 × 32 block of four AMX tiles ([`amx`]); blocks of
//! [`KC_PAIRS`] k-pairs, rows and columns split into units of [`MC`] × [`NC`] that run in
//! parallel, each summing into its own buffer. Packing buffers are reused per thread: fresh pages
//! cost more than the packing itself in a VM. A B panel's rows (64 columns of one k-pair) are
//! both what `VDPBF16PS` reads per step and two rows of 16-column AMX B tiles, so both kernels
//! share B's packing; AMX reads A as rows of pairs (padded to whole tiles) instead of panels.
//!
//! Two things a convolution needs come without copies: a row-major bf16 left operand with an even
//! k (a layer's weight as stored) is read in place by `VDPBF16PS`, its rows already pairs of k;
//! and the right operand is anything that hands out k-pairs of rows ([`Right`]), so a
//! convolution's im2col matrix is packed straight from the image ([`ConvColumns`], implicit
//! GEMM). The output can be scattered per image ([`Out`]), so that a batch of images is one
//! product over one read of the weight.
//!
//! Each output is Σ over k-pairs, in order, of the pair's two products added to the f32 sum one
//! at a time (bf16 products are exact in f32): the odd one first on `VDPBF16PS`, the even one
//! first on AMX ([`Order`]). [`reference_with`] computes exactly that; the tests require
//! equality bit for bit, and run the AMX tile program on emulated tiles on every CPU.

use std::cell::RefCell;

use half::bf16;

mod amx;
mod conv;
mod out;
mod pack;
mod reference;
mod tile;
pub use conv::ConvColumns;
pub use out::Out;
use out::units;
pub use pack::{Dense, Right};
use pack::{pack_a, pack_b, pack_rows};
pub use reference::{Order, reference, reference_with};
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

/// A kernel that computes the products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// `VDPBF16PS` (AVX512-BF16) on 6 × 64 register tiles.
    Avx512Bf16,
    /// `TDPBF16PS` (AMX-BF16) on 32 × 32 blocks of tiles.
    Amx,
    /// The AMX tile program on tiles in memory, on every CPU (tests).
    #[cfg(test)]
    AmxEmulated,
}

impl Kernel {
    /// The kernel of this process: AMX where the CPU has it, Linux grants the tile state and the
    /// `DDIM_EDIT_SIMD` cap allows it ([`Simd::Amx`](super::Simd::Amx)); else `VDPBF16PS` where
    /// the CPU has it; else none.
    pub fn get() -> Option<Kernel> {
        if super::Simd::get() >= super::Simd::Amx {
            Some(Kernel::Amx)
        } else {
            supported().then_some(Kernel::Avx512Bf16)
        }
    }

    /// The order in which the kernel adds a pair's products.
    pub fn order(self) -> Order {
        match self {
            Kernel::Avx512Bf16 => Order::OddFirst,
            _ => Order::EvenFirst,
        }
    }
}

/// Whether this process may use the AMX tiles ([`Simd::Amx`](super::Simd::Amx)).
pub(crate) fn amx_granted() -> bool {
    amx::granted()
}

thread_local! {
    /// Packed A and B of the products this thread starts.
    static PACKS: RefCell<(Vec<u32>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
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

/// `out = a[m×k] · b[k×n]`, `a` row-major with rows `lda` apart, `b` any [`Right`] operand: on
/// [`Kernel::get`]'s kernel, or [`reference_with`]'s loop where the CPU has none (same results as
/// `VDPBF16PS`, slowly).
///
/// # Panics
/// When `a` or `out` is shorter than the shapes say, or `out` maps two outputs to one place (a
/// caller's bug: the shapes come from tensors).
pub fn product<A: Operand, R: Right>(
    mnk: (usize, usize, usize),
    a: &[A],
    lda: usize,
    b: &R,
    out: Out,
) {
    product_with(Kernel::get(), mnk, a, lda, b, out)
}

/// [`product`] on `kernel` (`None`: the reference loop).
fn product_with<A: Operand, R: Right>(
    kernel: Option<Kernel>,
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
    let kernel = match kernel {
        Some(kernel) if k > 0 => kernel,
        _ => {
            let r = reference_with(Order::OddFirst, (m, n, k), a, lda, b);
            for i in 0..m {
                for j in 0..n {
                    let at = out.index(i, j);
                    out.c[at] = r[i * n + j];
                }
            }
            return;
        }
    };
    let product = Product {
        mnk: (m, n, k),
        a,
        lda,
        b,
    };
    PACKS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut packs) => {
            let (pa, pb) = &mut *packs;
            product.run(kernel, &out, pa, pb)
        }
        // Re-entered on this thread (work stealing): fresh buffers.
        Err(_) => product.run(kernel, &out, &mut Vec::new(), &mut Vec::new()),
    });
}

/// The operands of one product, checked by [`product_with`].
struct Product<'a, A, R> {
    mnk: (usize, usize, usize),
    a: &'a [A],
    lda: usize,
    b: &'a R,
}

impl<A: Operand, R: Right> Product<'_, A, R> {
    /// Packs the operands into `pa`, `pb` and computes `out` on `kernel`.
    fn run(&self, kernel: Kernel, out: &Out, pa: &mut Vec<u32>, pb: &mut Vec<u32>) {
        match kernel {
            Kernel::Avx512Bf16 => self.run_vdp(out, pa, pb),
            Kernel::Amx => self.run_amx(out, pa, pb, || amx::Hardware),
            #[cfg(test)]
            Kernel::AmxEmulated => self.run_amx(out, pa, pb, amx::Emulated::default),
        }
    }

    /// On `VDPBF16PS`: A packed in panels of [`MR`] rows unless it can be read in place.
    fn run_vdp(&self, out: &Out, pa: &mut Vec<u32>, pb: &mut Vec<u32>) {
        let (m, n, k) = self.mnk;
        let kp = k.div_ceil(2);
        let in_place = A::in_place(self.a, self.lda, k);
        if in_place.is_none() {
            pack_a(self.a, self.lda, m, k, pa);
        }
        pack_b(self.b, k, n, kp, pb);
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
        units(self.mnk, MR, out, |(i0, i1), (j0, j1), buf, width| {
            for p0 in (0..kp).step_by(KC_PAIRS) {
                let kc = KC_PAIRS.min(kp - p0);
                for jp in j0..j1 {
                    let bp = &pb[(jp * kp + p0) * NR..(jp * kp + p0 + kc) * NR];
                    for ip in i0..i1 {
                        let at = (ip - i0) * MR * width + (jp - j0) * NR;
                        // SAFETY: supported() was checked by `Kernel::get`; the panel's rows hold
                        // kc pairs from p0 (packed, or A's rows checked by `product_with`); the
                        // tile at `at` spans MR rows of `width` ≥ NR floats in `buf`.
                        unsafe { tile(panel(ip, p0), kc, bp, &mut buf[at..], width, p0 > 0) };
                    }
                }
            }
        });
    }

    /// On AMX tiles made by `tiles`: A packed as rows of pairs, both operands' k-pairs padded
    /// with zeros to whole tiles, rows of A to whole blocks.
    fn run_amx<X: amx::Tiles>(
        &self,
        out: &Out,
        pa: &mut Vec<u32>,
        pb: &mut Vec<u32>,
        tiles: impl Fn() -> X + Sync,
    ) {
        let (m, n, k) = self.mnk;
        let kq = k.div_ceil(2).div_ceil(amx::KT) * amx::KT;
        pack_rows(
            self.a,
            self.lda,
            (m, k),
            (m.div_ceil(amx::MR) * amx::MR, kq),
            pa,
        );
        pack_b(self.b, k, n, kq, pb);
        let (pa, pb) = (&*pa, &*pb);
        units(self.mnk, amx::MR, out, |(i0, i1), (j0, j1), buf, width| {
            let mut t = tiles();
            // SAFETY: `Kernel::get` hands out `Kernel::Amx` only where the tile state is granted;
            // every block below reads amx::MR packed rows of kq pairs, kc rows of a 64-wide B
            // panel from column 0 or 32, and writes amx::MR rows of 32 floats inside `buf`.
            unsafe {
                t.start();
                for p0 in (0..kq).step_by(KC_PAIRS) {
                    let kc = KC_PAIRS.min(kq - p0);
                    for jp in j0..j1 {
                        for half in [0, NR / 2] {
                            let b = pb.as_ptr().add((jp * kq + p0) * NR + half);
                            for ip in i0..i1 {
                                let a = pa.as_ptr().add(ip * amx::MR * kq + p0);
                                let at = (ip - i0) * amx::MR * width + (jp - j0) * NR + half;
                                let c = buf.as_mut_ptr().add(at);
                                amx::block(&mut t, a, kq, b, kc, c, width, p0 > 0);
                            }
                        }
                    }
                }
                t.end();
            }
        });
    }
}

#[cfg(test)]
mod tests;
