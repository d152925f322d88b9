//! The AMX micro-kernel (`TDPBF16PS`, Intel Sapphire Rapids and later): a 32 × 32 block of f32
//! sums in four 16 × 16 tiles, fed by two 16-row tiles of A and two 16-column tiles of B per 16
//! k-pairs. One `TDPBF16PS` does 16·16·32 bf16 multiply-adds, 16 times a `VDPBF16PS`.
//!
//! The tile program is written once, over [`Tiles`]: [`Hardware`] runs it on the tile registers
//! (inline assembly: Rust's AMX intrinsics are not stable), and the tests run the same program on
//! [`Emulated`] tiles, which follow the instruction's definition, so the packing, blocking and
//! edges are tested on every CPU and the instructions themselves where the CPU has them.
//!
//! Linux hands out the tile state (8 KiB per thread) only on request: [`granted`] asks once per
//! process (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, kernel 5.16+); without it the
//! first tile instruction would fault.

use super::NR;

/// Rows (and columns) of one tile; a tile row is 16 u32 k-pairs of A or B, or 16 f32 sums.
pub(super) const T: usize = 16;
/// Rows of A a block covers: two tiles.
pub(super) const MR: usize = 2 * T;
/// k-pairs one step of the block consumes: one tile row.
pub(super) const KT: usize = T;

/// Whether the CPU has AMX-TILE and AMX-BF16 (CPUID leaf 7, EDX bits 24 and 22).
pub(super) fn in_cpu() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid_count;
        // Leaf 7 is reported when the maximum leaf (leaf 0's EAX) is at least 7.
        if __cpuid_count(0, 0).eax < 7 {
            return false;
        }
        let edx = __cpuid_count(7, 0).edx;
        edx & (1 << 24) != 0 && edx & (1 << 22) != 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this process may use the tile registers: the CPU has them and Linux granted the tile
/// state (asked once; other systems are not asked and get `false`).
pub(super) fn granted() -> bool {
    static GRANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *GRANTED.get_or_init(|| in_cpu() && request_tile_state())
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_state() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with this code only sets a permission of the calling process.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn request_tile_state() -> bool {
    false
}

/// The eight tiles the block uses: C0…C3 (sums, row-major 2 × 2), A0, A1 (rows 0–15 and 16–31),
/// B0, B1 (columns 0–15 and 16–31). Every tile is 16 rows of 64 bytes.
pub(super) trait Tiles {
    /// Configures the tiles (palette 1, every tile 16 × 64 B) on this thread.
    ///
    /// # Safety
    /// The tile state is granted ([`granted`]) for [`Hardware`].
    unsafe fn start(&mut self);
    /// Releases the tile state of this thread.
    ///
    /// # Safety
    /// After [`Tiles::start`] on this thread.
    unsafe fn end(&mut self);
    /// Sum tile `i` ← 16 rows of 16 f32 from `src`, rows `ld` floats apart (zero when `src` is
    /// `None`).
    ///
    /// # Safety
    /// The rows are readable.
    unsafe fn load_c(&mut self, i: usize, src: Option<*const f32>, ld: usize);
    /// A tile `i` (or B tile `i` when `b`) ← 16 rows of 16 u32 from `src`, rows `ld` apart.
    ///
    /// # Safety
    /// The rows are readable.
    unsafe fn load(&mut self, b: bool, i: usize, src: *const u32, ld: usize);
    /// C(2i + j) += A(i) · B(j), pairs of bf16 with f32 sums.
    ///
    /// # Safety
    /// After [`Tiles::start`] on this thread.
    unsafe fn dot(&mut self, i: usize, j: usize);
    /// 16 rows of sum tile `i` → `dst`, rows `ld` floats apart.
    ///
    /// # Safety
    /// The rows are writable.
    unsafe fn store_c(&mut self, i: usize, dst: *mut f32, ld: usize);
}

/// One 32 × 32 block over `kc` k-pairs (a multiple of [`KT`]): `a` is the block's first row of A
/// as rows of u32 pairs `lda` apart, from its first pair; `b` is the block's first column of a B
/// panel (rows [`NR`] apart) from the same pair; `c` (rows `ldc` apart) is set, or added to when
/// `add`.
///
/// # Safety
/// [`MR`] rows of `kc` pairs at `a`, `kc` panel rows of 32 values at `b` and [`MR`] rows of 32
/// floats at `c` are in bounds; `t` is started on this thread.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn block<X: Tiles>(
    t: &mut X,
    a: *const u32,
    lda: usize,
    b: *const u32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    add: bool,
) {
    let corner = |i: usize| c.wrapping_add((i / 2) * T * ldc + (i % 2) * T);
    // SAFETY: every address is inside the operands by this function's contract.
    unsafe {
        for i in 0..4 {
            t.load_c(i, add.then(|| corner(i).cast_const()), ldc);
        }
        for p in (0..kc).step_by(KT) {
            t.load(false, 0, a.add(p), lda);
            t.load(false, 1, a.add(T * lda + p), lda);
            t.load(true, 0, b.add(p * NR), NR);
            t.load(true, 1, b.add(p * NR + T), NR);
            t.dot(0, 0);
            t.dot(0, 1);
            t.dot(1, 0);
            t.dot(1, 1);
        }
        for i in 0..4 {
            t.store_c(i, corner(i), ldc);
        }
    }
}

/// The tile registers.
pub(super) struct Hardware;

#[cfg(target_arch = "x86_64")]
impl Tiles for Hardware {
    unsafe fn start(&mut self) {
        // Palette 1; bytes 16..32: colsb of tiles 0–7 (u16), bytes 48..56: their rows.
        let mut cfg = [0u8; 64];
        cfg[0] = 1;
        for t in 0..8 {
            cfg[16 + 2 * t] = (4 * T) as u8;
            cfg[48 + t] = T as u8;
        }
        // SAFETY: the caller holds the tile permission; `cfg` is a valid palette-1 config.
        unsafe { std::arch::asm!("ldtilecfg [{}]", in(reg) cfg.as_ptr(), options(nostack)) };
    }

    unsafe fn end(&mut self) {
        // SAFETY: releases the state `start` configured.
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
    }

    #[inline(always)]
    unsafe fn load_c(&mut self, i: usize, src: Option<*const f32>, ld: usize) {
        // SAFETY: the caller's contract; tiles 0–3 are the sums.
        unsafe {
            match (i, src) {
                (0, None) => std::arch::asm!("tilezero tmm0", options(nostack, nomem)),
                (1, None) => std::arch::asm!("tilezero tmm1", options(nostack, nomem)),
                (2, None) => std::arch::asm!("tilezero tmm2", options(nostack, nomem)),
                (_, None) => std::arch::asm!("tilezero tmm3", options(nostack, nomem)),
                (i, Some(s)) => tile_load(i, s.cast(), 4 * ld),
            }
        }
    }

    #[inline(always)]
    unsafe fn load(&mut self, b: bool, i: usize, src: *const u32, ld: usize) {
        // SAFETY: the caller's contract; tiles 4, 5 are A and 6, 7 are B.
        unsafe { tile_load(4 + 2 * b as usize + i, src.cast(), 4 * ld) }
    }

    #[inline(always)]
    unsafe fn dot(&mut self, i: usize, j: usize) {
        // SAFETY: the tiles are configured (the caller's contract).
        unsafe {
            match (i, j) {
                (0, 0) => std::arch::asm!("tdpbf16ps tmm0, tmm4, tmm6", options(nostack, nomem)),
                (0, _) => std::arch::asm!("tdpbf16ps tmm1, tmm4, tmm7", options(nostack, nomem)),
                (_, 0) => std::arch::asm!("tdpbf16ps tmm2, tmm5, tmm6", options(nostack, nomem)),
                _ => std::arch::asm!("tdpbf16ps tmm3, tmm5, tmm7", options(nostack, nomem)),
            }
        }
    }

    #[inline(always)]
    unsafe fn store_c(&mut self, i: usize, dst: *mut f32, ld: usize) {
        let (p, s) = (dst.cast::<u8>(), 4 * ld);
        // SAFETY: the caller's contract.
        unsafe {
            match i {
                0 => {
                    std::arch::asm!("tilestored [{} + {}*1], tmm0", in(reg) p, in(reg) s, options(nostack))
                }
                1 => {
                    std::arch::asm!("tilestored [{} + {}*1], tmm1", in(reg) p, in(reg) s, options(nostack))
                }
                2 => {
                    std::arch::asm!("tilestored [{} + {}*1], tmm2", in(reg) p, in(reg) s, options(nostack))
                }
                _ => {
                    std::arch::asm!("tilestored [{} + {}*1], tmm3", in(reg) p, in(reg) s, options(nostack))
                }
            }
        }
    }
}

/// `tileloadd tmm(i), [src + stride·row]`.
///
/// # Safety
/// 16 rows of 64 bytes from `src`, `stride` bytes apart, are readable; the tiles are configured.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile_load(i: usize, src: *const u8, stride: usize) {
    macro_rules! load {
        ($tmm:literal) => {
            std::arch::asm!(
                concat!("tileloadd ", $tmm, ", [{} + {}*1]"),
                in(reg) src,
                in(reg) stride,
                options(nostack, readonly)
            )
        };
    }
    // SAFETY: the caller's contract.
    unsafe {
        match i {
            0 => load!("tmm0"),
            1 => load!("tmm1"),
            2 => load!("tmm2"),
            3 => load!("tmm3"),
            4 => load!("tmm4"),
            5 => load!("tmm5"),
            6 => load!("tmm6"),
            _ => load!("tmm7"),
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl Tiles for Hardware {
    unsafe fn start(&mut self) {
        unreachable!("granted() is false off x86-64")
    }
    unsafe fn end(&mut self) {}
    unsafe fn load_c(&mut self, _: usize, _: Option<*const f32>, _: usize) {}
    unsafe fn load(&mut self, _: bool, _: usize, _: *const u32, _: usize) {}
    unsafe fn dot(&mut self, _: usize, _: usize) {}
    unsafe fn store_c(&mut self, _: usize, _: *mut f32, _: usize) {}
}

/// Tiles in memory, computing `TDPBF16PS` as Intel's intrinsics guide defines it: per output,
/// per k-pair in order, the even product then the odd one, each added to the f32 sum
/// ([`super::Order::EvenFirst`]). Denormals are kept (the instruction flushes them; the tests'
/// values have none).
#[cfg(test)]
#[derive(Default)]
pub(super) struct Emulated {
    c: [[[f32; T]; T]; 4],
    ab: [[[u32; T]; T]; 4],
}

#[cfg(test)]
impl Tiles for Emulated {
    unsafe fn start(&mut self) {}
    unsafe fn end(&mut self) {}

    unsafe fn load_c(&mut self, i: usize, src: Option<*const f32>, ld: usize) {
        for (r, row) in self.c[i].iter_mut().enumerate() {
            for (j, x) in row.iter_mut().enumerate() {
                // SAFETY: the caller's contract.
                *x = src.map_or(0.0, |s| unsafe { *s.add(r * ld + j) });
            }
        }
    }

    unsafe fn load(&mut self, b: bool, i: usize, src: *const u32, ld: usize) {
        for (r, row) in self.ab[2 * b as usize + i].iter_mut().enumerate() {
            for (j, x) in row.iter_mut().enumerate() {
                // SAFETY: the caller's contract.
                *x = unsafe { *src.add(r * ld + j) };
            }
        }
    }

    unsafe fn dot(&mut self, i: usize, j: usize) {
        let f = |x: u32| f32::from_bits(x << 16);
        let (a, b) = (self.ab[i], self.ab[2 + j]);
        for (m, row) in self.c[2 * i + j].iter_mut().enumerate() {
            for (k, &pa) in a[m].iter().enumerate() {
                for (n, acc) in row.iter_mut().enumerate() {
                    *acc += f(pa & 0xffff) * f(b[k][n] & 0xffff);
                    *acc += f(pa >> 16) * f(b[k][n] >> 16);
                }
            }
        }
    }

    unsafe fn store_c(&mut self, i: usize, dst: *mut f32, ld: usize) {
        for (r, row) in self.c[i].iter().enumerate() {
            for (j, &x) in row.iter().enumerate() {
                // SAFETY: the caller's contract.
                unsafe { *dst.add(r * ld + j) = x };
            }
        }
    }
}
