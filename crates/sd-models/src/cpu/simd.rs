//! Which vector instruction set the CPU kernels use: detected once at run time, capped by the
//! `DDIM_EDIT_SIMD` environment variable, so that one binary runs on every x86-64 CPU and a lower
//! path can be forced on a machine that has a higher one (same-run A/B, tests of every path).
//!
//! The `gemm` crate under Burn's matrix products does its own detection (AVX-512 where present,
//! through Burn's `x86-v4` feature); the cap applies to this crate's kernels only.

use std::sync::OnceLock;

/// The environment variable that caps [`Simd::get`]: `scalar`, `avx2`, `avx512` or `amx`.
pub const SIMD_ENV: &str = "DDIM_EDIT_SIMD";

/// An instruction set the kernels are compiled for, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Simd {
    /// The baseline target (SSE2 on x86-64).
    Scalar,
    /// AVX2 (8 f32 lanes).
    Avx2,
    /// AVX-512 F/BW/DQ/VL (16 f32 lanes).
    Avx512,
    /// AVX-512 and the AMX-BF16 tiles (granted by the OS), which only the bf16 products use
    /// ([`super::gemm_bf16::Kernel::Amx`]); the f32 kernels run their AVX-512 builds.
    Amx,
}

impl Simd {
    /// Every level, lowest first.
    pub const ALL: [Simd; 4] = [Simd::Scalar, Simd::Avx2, Simd::Avx512, Simd::Amx];

    /// The level's name, as `DDIM_EDIT_SIMD` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Simd::Scalar => "scalar",
            Simd::Avx2 => "avx2",
            Simd::Avx512 => "avx512",
            Simd::Amx => "amx",
        }
    }

    /// Whether this CPU can run code compiled for the level.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Simd::Scalar => true,
                Simd::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
                Simd::Avx512 => {
                    std::arch::is_x86_feature_detected!("avx512f")
                        && std::arch::is_x86_feature_detected!("avx512bw")
                        && std::arch::is_x86_feature_detected!("avx512dq")
                        && std::arch::is_x86_feature_detected!("avx512vl")
                        && std::arch::is_x86_feature_detected!("avx2")
                }
                Simd::Amx => Simd::Avx512.available() && super::gemm_bf16::amx_granted(),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Simd::Scalar
        }
    }

    /// The cap `DDIM_EDIT_SIMD` sets: `Ok(None)` when unset or empty, an error naming the variable
    /// and the accepted values otherwise.
    pub fn from_env() -> Result<Option<Simd>, String> {
        match std::env::var(SIMD_ENV) {
            Ok(v) if !v.trim().is_empty() => Simd::parse(v.trim()).map(Some),
            _ => Ok(None),
        }
    }

    fn parse(v: &str) -> Result<Simd, String> {
        Simd::ALL
            .into_iter()
            .find(|s| s.name() == v.to_ascii_lowercase())
            .ok_or_else(|| {
                let names: Vec<_> = Simd::ALL.iter().map(|s| s.name()).collect();
                format!("{SIMD_ENV}={v:?}: expected one of {}", names.join(", "))
            })
    }

    /// The highest level this CPU has, at most `cap`.
    pub fn best(cap: Option<Simd>) -> Simd {
        Simd::ALL
            .into_iter()
            .rev()
            .filter(|s| cap.is_none_or(|c| *s <= c))
            .find(|s| s.available())
            .unwrap_or(Simd::Scalar)
    }

    /// The level the kernels use in this process: [`Simd::best`] under the `DDIM_EDIT_SIMD` cap (a
    /// value it does not accept is ignored here; front ends report it with [`Simd::from_env`]).
    pub fn get() -> Simd {
        static LEVEL: OnceLock<Simd> = OnceLock::new();
        *LEVEL.get_or_init(|| Simd::best(Simd::from_env().ok().flatten()))
    }
}

/// Whether `--dtype bf16` on the CPU backend runs as bf16 autocast: bf16 weights in every linear
/// and convolution layer, their products in bf16 with f32 accumulation ([`super::gemm_bf16`]),
/// everything else in f32 (as `torch.autocast("cpu", torch.bfloat16)`). That needs AVX512-BF16
/// (or AMX) and the AVX-512 level; elsewhere the whole model is cast to bf16, which is slower
/// than f32.
pub fn bf16_autocast() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| Simd::get() >= Simd::Avx512 && super::gemm_bf16::Kernel::get().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_cap_and_fall_back() {
        assert_eq!(Simd::parse("AVX2"), Ok(Simd::Avx2));
        let e = Simd::parse("sse4").unwrap_err();
        assert!(
            e.contains("DDIM_EDIT_SIMD") && e.contains("avx512, amx"),
            "{e}"
        );
        assert_eq!(Simd::parse("amx"), Ok(Simd::Amx));
        assert_eq!(Simd::best(Some(Simd::Scalar)), Simd::Scalar);
        let best = Simd::best(None);
        assert!(best.available());
        assert!(Simd::ALL.iter().all(|s| *s <= best || !s.available()));
        assert!(Simd::best(Some(Simd::Avx2)) <= Simd::Avx2);
    }
}
