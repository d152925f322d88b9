//! CPU kernels for the ops where Burn's `flex` backend is slow, each behind one dispatch point.
//!
//! Every public function here takes Burn modules and tensors and decides once: on the CPU backend
//! (`flex`), with a shape and dtype the kernel supports, it runs the kernel; anywhere else it runs
//! Burn's own op, so another backend's path is plainly `conv.forward(x)`, `silu(norm.forward(x))`,
//! …. Kernels that are plain loops are compiled twice, for the baseline target and for AVX2, and
//! `simd!` picks one with run-time CPU feature detection.
//!
//! - [`conv`]: 2-D convolution as banded im2col matrix products;
//! - [`upsample_conv`]: nearest 2× upsampling then a 3×3 convolution, in four phases;
//! - [`norm`]: group norm + SiLU in one pass;
//! - [`activation`]: GEGLU, exact GELU, quick GELU;
//! - `math`: the branch-free scalar `exp`/`erf` the fused kernels vectorise.
//!
//! Measurements behind each: `cargo xtask bench --component ops`.

/// Calls `$kernel(args…)` compiled for AVX2 where the CPU has it (checked at run time), else for
/// the baseline target: the kernels are plain loops that the compiler vectorises 8 wide with AVX2.
/// Another instruction set is one more branch here.
macro_rules! simd {
    ($kernel:ident($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2")]
            unsafe fn avx2(f: impl FnOnce()) {
                f()
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked above).
                unsafe { avx2(|| $kernel($($arg),*)) }
            } else {
                $kernel($($arg),*)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $kernel($($arg),*)
        }
    }};
}

pub mod activation;
pub mod conv;
mod math;
pub mod norm;
pub mod upsample_conv;

pub use activation::{geglu, gelu, quick_gelu};
pub use conv::conv2d_forward;
pub use norm::group_norm_silu;
pub use upsample_conv::upsample_nearest_conv;

use burn::tensor::{DType, Device, Tensor};

/// Whether `x` lives on the CPU backend (`flex`), where the kernels apply.
pub(crate) fn on_flex<const D: usize>(x: &Tensor<D>) -> bool {
    x.device() == Device::flex()
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
