//! Branch-free scalar functions for the fused kernels: written so that loops over them vectorise,
//! and within a few ulp of the standard library (`exp` within 3 ulp, `erf` within 5e-7 absolute).

/// eˣ for f32, branch-free so that loops over it vectorise: x = n·ln2 + r with |r| ≤ ln2/2, the
/// degree-7 Taylor polynomial of eʳ (truncation < 2e-8 relative), and n added to the exponent
/// bits. Arguments are clamped to [−87.3, 88] (results from about 1.2e-38 to 1.7e38), which the
/// callers' saturating uses (`1 + e⁻ˣ`, `e^(−x²)`) do not notice.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.0);
    // Round to nearest by the 1.5·2²³ trick (vectorises, unlike `f32::round`): t = 1.5·2²³ + n
    // exactly, so n is also the difference of the bit patterns. No float-to-int conversion: `as
    // i32` saturates, which the compiler does one lane at a time.
    const MAGIC: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    // ln 2 split in two so that n·ln2 is exact enough.
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668
                        + r * (0.008_333_334 + r * (0.001_388_889 + r * 0.000_198_412_7))))));
    p * f32::from_bits(((ni + 127) << 23) as u32)
}

/// x·sigmoid(x).
#[inline(always)]
pub(super) fn silu1(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// erf(x): its Taylor series below |x| = 0.5 (truncated after x¹³, error < 2e-8), Abramowitz &
/// Stegun 7.1.26 above (error < 1.5e-7 in exact arithmetic); < 5e-7 absolute in f32. Both are
/// computed and one selected, which keeps the loops branch-free.
#[inline(always)]
pub(super) fn erf(x: f32) -> f32 {
    let a = x.abs();
    let z = a * a;
    let series = std::f32::consts::FRAC_2_SQRT_PI
        * a
        * (1.0
            + z * (-1.0 / 3.0
                + z * (1.0 / 10.0
                    + z * (-1.0 / 42.0
                        + z * (1.0 / 216.0 + z * (-1.0 / 1320.0 + z * (1.0 / 9360.0)))))));
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let tail = 1.0 - poly * exp(-z);
    let y = if a < 0.5 { series } else { tail };
    y.copysign(x)
}

/// Exact (erf) GELU, as `torch.nn.functional.gelu`.
#[inline(always)]
pub(super) fn gelu1(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_erf_match_the_standard_library() {
        for i in -8000..=8000 {
            let x = i as f32 * 0.01;
            let (got, want) = (exp(x), x.exp());
            assert!(
                ((got - want) / want).abs() < 3.0 * f32::EPSILON,
                "exp({x}) = {got}, std {want}"
            );
        }
        // The clamp's ends (2⁻¹²⁶ and 2¹²⁷ are the extreme scales) and NaN, which the exponent
        // read from the float's bits must not turn into a number.
        for x in [-87.3f32, 88.0] {
            let (got, want) = (exp(x), x.exp());
            assert!(
                ((got - want) / want).abs() < 3.0 * f32::EPSILON,
                "exp({x}) = {got}"
            );
        }
        assert!(exp(f32::NAN).is_nan() && exp(-f32::NAN).is_nan());
        // Python's math.erf at a few points, and libm's f64 erf on a dense grid.
        for (x, want) in [
            (0.1f32, 0.112_462_916_018_284_9f64),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (-0.7, -0.677_801_193_837_418_4),
            (3.0, 0.999_977_909_503_001_4),
        ] {
            assert!((erf(x) as f64 - want).abs() < 5e-7, "erf({x}) = {}", erf(x));
        }
        for i in -6000..=6000 {
            let x = i as f32 * 1e-3;
            let want = libm::erf(x as f64);
            assert!(
                (erf(x) as f64 - want).abs() < 5e-7,
                "erf({x}) = {}, libm {want}",
                erf(x)
            );
        }
    }
}
