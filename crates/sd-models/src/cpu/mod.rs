//! CPU kernels for the ops where Burn's `flex` backend is slow, each behind one dispatch point.
//!
//! Every public function here takes Burn modules and tensors and decides once: on the CPU backend
//! (`flex`), with a shape and dtype the kernel supports, it runs the kernel; anywhere else it runs
//! Burn's own op, so another backend's path is plainly `conv.forward(x)`, `silu(norm.forward(x))`,
//! …. Kernels that are plain loops are compiled three times, for the baseline target, AVX2 and
//! AVX-512, and `simd!` picks one by run-time CPU feature detection ([`Simd`]); one binary serves
//! every x86-64 CPU, and `DDIM_EDIT_SIMD=avx512|avx2|scalar` forces a lower path (A/B runs,
//! tests; `avx512` keeps the bf16 products off the AMX tiles).
//!
//! - [`conv`]: 2-D convolution as implicit-GEMM products over shifted views of the padded input
//!   (f32, stride 1, wide layers: `tap_conv`), as banded im2col matrix products (other f32), or as
//!   implicit-GEMM bf16 products under bf16 autocast (`implicit_conv`);
//! - [`upsample_conv`]: nearest 2× upsampling then a 3×3 convolution, in four phases;
//! - [`norm`]: group norm + SiLU in one pass;
//! - [`activation`]: GEGLU, exact GELU, quick GELU;
//! - [`attention`]: multi-head attention on the bf16 kernel under bf16 autocast;
//! - [`gemm_bf16`]: bf16 matrix products with f32 accumulation (AMX or AVX512-BF16), behind
//!   [`linear_forward`] and the convolutions when the weights are bf16 ([`bf16_autocast`]);
//! - `math`: the branch-free scalar `exp`/`erf` the fused kernels vectorise.
//!
//! Measurements behind each: `cargo xtask bench --component ops`.

/// Calls `$kernel(args…)` compiled for the instruction set `$simd` (a [`Simd`] the CPU has, from
/// [`Simd::get`]): the kernels are plain loops that the compiler vectorises 16 wide with AVX-512,
/// 8 wide with AVX2, and for the baseline target otherwise.
macro_rules! simd {
    ($simd:expr, $kernel:ident($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2")]
            unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            #[target_feature(enable = "avx2")]
            unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            match $simd {
                // SAFETY: `Simd::Amx`, `Simd::Avx512` and `Simd::Avx2` are only handed out where
                // the CPU has them (`Simd::available`; AMX implies AVX-512).
                $crate::cpu::Simd::Avx512 | $crate::cpu::Simd::Amx => {
                    unsafe { avx512(|| $kernel($($arg),*)) }
                }
                $crate::cpu::Simd::Avx2 => unsafe { avx2(|| $kernel($($arg),*)) },
                $crate::cpu::Simd::Scalar => $kernel($($arg),*),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = $simd;
            $kernel($($arg),*)
        }
    }};
}

pub mod activation;
mod alloc;
pub mod attention;
pub mod conv;
pub mod gemm_bf16;
mod implicit_conv;
pub mod linear;
mod math;
pub mod norm;
mod simd;
mod tap_conv;
pub mod upsample_conv;
mod view;

pub use activation::{geglu, gelu, quick_gelu};
pub use alloc::reuse_freed_memory;
pub use attention::{multi_head_bf16, multi_head_f32};
pub use conv::{conv2d_forward, conv2d_im2col};
pub use linear::linear_forward;
pub use norm::group_norm_silu;
pub use simd::{SIMD_ENV, Simd, bf16_autocast};
pub use upsample_conv::upsample_nearest_conv;

use burn::tensor::{DType, Device, Tensor};

/// Whether `x` lives on the CPU backend (`flex`) without autodiff, where the kernels apply. Device
/// equality does not tell the autodiff device from the plain one, and the kernels record no
/// gradient, so autodiff tensors (null-text inversion) take Burn's own ops.
pub(crate) fn on_flex<const D: usize>(x: &Tensor<D>) -> bool {
    x.device() == Device::flex() && !x.is_autodiff()
}

/// An f32 output buffer shared by parallel tasks, each writing its own disjoint block of it (the
/// callers say which), while the buffer outlives them.
#[derive(Clone, Copy)]
pub(crate) struct Shared(pub(crate) *mut f32);
// SAFETY: every user writes disjoint ranges from its tasks and keeps the buffer alive meanwhile
// (`gemm_bf16::Out::holds`, `attention::multi_head_f32`).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The address of element `i` (a method, so that closures capture `Shared` whole).
    pub(crate) fn at(&self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// Whether `x` is an f32 tensor on the CPU backend: the element-wise kernels' domain.
pub(crate) fn f32_on_flex<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32 && on_flex(x)
}

/// max |a − b| of two tensors of the same shape: the kernels' tests against Burn's ops.
#[cfg(test)]
pub(crate) fn max_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).abs().max().into_scalar()
}
