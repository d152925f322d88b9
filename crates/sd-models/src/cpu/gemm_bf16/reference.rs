//! The products as the kernels compute them, one scalar at a time: the tests require the kernels
//! to equal these bit for bit, and these to stay within f32 summation error of f64 sums.

use super::{Dense, Operand, Right};

/// The order in which a kernel adds a k-pair's two products to a sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// `VDPBF16PS`: the odd product, then the even one.
    OddFirst,
    /// `TDPBF16PS` as Intel's intrinsics guide defines it: the even product, then the odd one.
    EvenFirst,
}

/// The product as the `VDPBF16PS` kernel computes it: operands rounded to bf16, and per output
/// the k-pairs in order, odd product before even, each added to an f32 sum.
pub fn reference<A: Operand, B: Operand>(
    mnk: (usize, usize, usize),
    a: &[A],
    lda: usize,
    b: &[B],
    ldb: usize,
) -> Vec<f32> {
    let k = mnk.2;
    reference_with(Order::OddFirst, mnk, a, lda, &Dense { b, ld: ldb, k })
}

/// [`reference`] of any [`Right`] operand (read one k-pair at a time), in either [`Order`].
pub fn reference_with<A: Operand, R: Right>(
    order: Order,
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
            let even = f(a[i * lda + 2 * p].bf16_bits() as u32);
            // The odd partner of an odd k's last value is zero: its product adds nothing.
            let odd = (2 * p + 1 < k).then(|| f(a[i * lda + 2 * p + 1].bf16_bits() as u32));
            for (acc, &pair) in c[i * n..(i + 1) * n].iter_mut().zip(&pairs) {
                let odd = odd.map(|o| o * f(pair >> 16));
                if order == Order::OddFirst
                    && let Some(o) = odd
                {
                    *acc += o;
                }
                *acc += even * f(pair & 0xffff);
                if order == Order::EvenFirst
                    && let Some(o) = odd
                {
                    *acc += o;
                }
            }
        }
    }
    c
}
