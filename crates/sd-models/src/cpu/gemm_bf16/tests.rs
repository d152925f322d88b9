//! The kernels against their scalar reference, and the reference against f64 sums.
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

/// The kernels this CPU runs: the reference loop, the AMX tile program on emulated tiles, and
/// the hardware kernels it has.
fn kernels() -> Vec<Option<Kernel>> {
    let mut kernels = vec![None, Some(Kernel::AmxEmulated)];
    match supported() {
        true => kernels.push(Some(Kernel::Avx512Bf16)),
        false => eprintln!("no AVX512-BF16 on this CPU: VDPBF16PS not tested"),
    }
    match amx::granted() {
        true => kernels.push(Some(Kernel::Amx)),
        false => eprintln!("no AMX tiles granted on this CPU: TDPBF16PS not tested"),
    }
    kernels
}

/// `got` from `kernel` against the reference `want` of the kernel's order: equal bit for bit,
/// except on the AMX hardware, whose order inside one instruction Intel's manuals describe in
/// two ways: there within the f32 summation bound of two orders of the same k exact products,
/// 2·k·2⁻²⁴·Σ|a·b| (`abs`: that sum).
fn assert_agrees(kernel: Option<Kernel>, got: f32, want: f32, (abs, k): (f32, usize), at: &str) {
    if kernel == Some(Kernel::Amx) {
        let bound = 2.0 * k as f64 * f32::EPSILON as f64 / 2.0 * abs as f64 * 1.001;
        assert!(
            ((got - want) as f64).abs() <= bound,
            "{kernel:?} {at}: {got} vs {want}"
        );
    } else {
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "{kernel:?} {at}: {got} vs {want}"
        );
    }
}

#[test]
fn products_equal_the_scalar_reference_bit_for_bit() {
    // Edges in every dimension (odd k, partial tiles, blocks and units, several k blocks of
    // both kernels), strided.
    for kernel in kernels() {
        let order = kernel.map_or(Order::OddFirst, Kernel::order);
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
            let dense = Dense { b: &b, ld: ldb, k };
            product_with(kernel, (m, n, k), &a, lda, &dense, Out::matrix(&mut c, ldc));
            let want = reference_with(order, (m, n, k), &a, lda, &dense);
            let (a_abs, b_abs): (Vec<f32>, Vec<bf16>) = (
                a.iter().map(|x| x.abs()).collect(),
                b.iter()
                    .map(|x| bf16::from_bits(x.to_bits() & 0x7fff))
                    .collect(),
            );
            let abs_b = Dense {
                b: &b_abs,
                ld: ldb,
                k,
            };
            let abs = reference_with(order, (m, n, k), &a_abs, lda, &abs_b);
            for i in 0..m {
                for j in 0..n {
                    let (got, want, abs) = (c[i * ldc + j], want[i * n + j], abs[i * n + j]);
                    assert_agrees(
                        kernel,
                        got,
                        want,
                        (abs, k),
                        &format!("{m}×{n}×{k} ({i}, {j})"),
                    );
                }
            }
        }
    }
}

#[test]
fn the_kernel_of_the_process_follows_the_cpu_and_the_cap() {
    let kernel = Kernel::get();
    if super::super::Simd::get() >= super::super::Simd::Amx {
        assert_eq!(kernel, Some(Kernel::Amx));
    } else {
        assert_eq!(kernel, supported().then_some(Kernel::Avx512Bf16));
    }
    assert_eq!(Kernel::Avx512Bf16.order(), Order::OddFirst);
    assert_eq!(Kernel::Amx.order(), Order::EvenFirst);
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
            let (sum, abs): (f64, f64) = terms.fold((0.0, 0.0), |(s, t), x| (s + x, t + x.abs()));
            let bound = abs * k as f64 * f32::EPSILON as f64 / 2.0;
            assert!((r[i * n + j] as f64 - sum).abs() <= bound, "({i}, {j})");
        }
    }
}

/// The im2col matrix of `x` (`[b, cin, h, w]`, unpadded) built the plain way: row (c, dy, dx),
/// column (image, y, x).
fn im2col(
    x: &[f32],
    [b, cin, h, w]: [usize; 4],
    [kh, kw]: [usize; 2],
    [sh, sw]: [usize; 2],
) -> Vec<f32> {
    let (ho, wo) = ((h - kh) / sh + 1, (w - kw) / sw + 1);
    let n = b * ho * wo;
    let mut m = vec![0f32; cin * kh * kw * n];
    for c in 0..cin {
        for dy in 0..kh {
            for dx in 0..kw {
                let row = (c * kh + dy) * kw + dx;
                for i in 0..b {
                    for y in 0..ho {
                        for xx in 0..wo {
                            let j = (i * ho + y) * wo + xx;
                            let at = ((i * cin + c) * h + y * sh + dy) * w + xx * sw + dx;
                            m[row * n + j] = x[at];
                        }
                    }
                }
            }
        }
    }
    m
}

#[test]
fn implicit_convolutions_equal_the_product_with_the_im2col_matrix() {
    // bf16 weights with an even k are read in place, odd k packed; outputs scattered per image.
    for (dims, kernel, stride) in [
        ([2, 6, 9, 7], [3, 3], [1, 1]),
        ([1, 5, 8, 8], [3, 3], [2, 2]),
        ([2, 3, 5, 4], [1, 1], [1, 1]),
        ([3, 4, 4, 4], [2, 2], [1, 1]),
    ] {
        let [b, cin, h, w] = dims;
        let ([kh, kw], [sh, sw]) = (kernel, stride);
        let (ho, wo) = ((h - kh) / sh + 1, (w - kw) / sw + 1);
        let (cout, k, l) = (13, cin * kh * kw, ho * wo);
        let x = values(b * cin * h * w, 5);
        let weight: Vec<bf16> = values(cout * k, 6)
            .into_iter()
            .map(bf16::from_f32)
            .collect();
        let columns = ConvColumns {
            x: &x,
            origin: 0,
            strides: [cin * h * w, h * w, w],
            kernel,
            stride,
            out: [ho, wo],
            cin,
        };
        let abs_x: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        let abs_w: Vec<bf16> = weight
            .iter()
            .map(|v| bf16::from_bits(v.to_bits() & 0x7fff))
            .collect();
        let plain = im2col(&x, dims, kernel, stride);
        let abs_plain = im2col(&abs_x, dims, kernel, stride);
        for code in kernels() {
            let order = code.map_or(Order::OddFirst, Kernel::order);
            let mut got = vec![f32::NAN; b * cout * l];
            let out = Out {
                c: &mut got,
                ld: l,
                cols: l,
                image: cout * l,
            };
            product_with(code, (cout, b * l, k), &weight, k, &columns, out);
            let (ld, mnk) = (b * l, (cout, b * l, k));
            let want = reference_with(order, mnk, &weight, k, &Dense { b: &plain, ld, k });
            let abs = reference_with(
                order,
                mnk,
                &abs_w,
                k,
                &Dense {
                    b: &abs_plain,
                    ld,
                    k,
                },
            );
            for i in 0..b {
                for co in 0..cout {
                    for p in 0..l {
                        let (e, s) = (co * b * l + i * l + p, (i * cout + co) * l + p);
                        let at = format!("{dims:?} {kernel:?} image {i} ({co}, {p})");
                        assert_agrees(code, got[s], want[e], (abs[e], k), &at);
                    }
                }
            }
        }
    }
}

#[test]
fn bf16_left_operands_are_read_in_place_only_on_pair_boundaries() {
    let a: Vec<bf16> = values(40, 8).into_iter().map(bf16::from_f32).collect();
    assert!(bf16::in_place(&a, 10, 10).is_some());
    assert!(bf16::in_place(&a, 10, 9).is_none());
    assert!(bf16::in_place(&a, 9, 8).is_none());
    assert!(bf16::in_place(&a[1..], 10, 8).is_none());
    assert!(f32::in_place(&[0f32; 4], 2, 2).is_none());
    // In place and packed give the same bits: k = 600 in place (lda 602), as f32 packed.
    let (m, n, k) = (13, 70, 600);
    let a: Vec<bf16> = values(m * 602, 9).into_iter().map(bf16::from_f32).collect();
    let af: Vec<f32> = a.iter().map(|v| v.to_f32()).collect();
    let b = values(k * n, 10);
    let (mut c1, mut c2) = (vec![0f32; m * n], vec![0f32; m * n]);
    matmul((m, n, k), &a, 602, &b, n, &mut c1, n);
    matmul((m, n, k), &af, 602, &b, n, &mut c2, n);
    assert!(c1.iter().zip(&c2).all(|(x, y)| x.to_bits() == y.to_bits()));
}
