//! A convolution's im2col matrix as a right operand read straight from the image (implicit
//! GEMM): the k-pairs of rows are gathered from the input when B is packed, so no im2col matrix
//! is written and read again.

use super::Operand;
use super::pack::{Right, interleave};

/// The im2col matrix of a convolution over a batch of images, without the matrix: row
/// k = (c, dy, dx) (the weight's `[cin, kh, kw]` order), column j = (image, y, x) holds the input
/// value at `origin + image·image_stride + c·plane + (y·sh + dy)·row + x·sw + dx`. The input is
/// already padded (or the convolution unpadded), so every tap is inside it; a window of a larger
/// padded image is a non-zero `origin` with that image's strides.
pub struct ConvColumns<'a, T> {
    pub x: &'a [T],
    pub origin: usize,
    /// Values between images, channels and rows of the input.
    pub strides: [usize; 3],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// Output rows and columns per image.
    pub out: [usize; 2],
    /// Input channels.
    pub cin: usize,
}

impl<T> ConvColumns<'_, T> {
    /// Rows of the matrix: cin · kh · kw.
    pub fn k(&self) -> usize {
        self.cin * self.kernel[0] * self.kernel[1]
    }

    /// The offset of row `k`'s tap from a column's base.
    fn tap(&self, k: usize) -> usize {
        let [kh, kw] = self.kernel;
        let (c, r) = (k / (kh * kw), k % (kh * kw));
        c * self.strides[1] + (r / kw) * self.strides[2] + r % kw
    }
}

impl<T: Operand> Right for ConvColumns<'_, T> {
    fn pairs(&self, p: usize, c0: usize, dst: &mut [u32]) {
        let [ho, wo] = self.out;
        let [sh, sw] = self.stride;
        let even = self.tap(2 * p);
        let odd = (2 * p + 1 < self.k()).then(|| self.tap(2 * p + 1));
        let (mut j, mut d) = (c0, 0);
        // Runs of columns along one output row: contiguous input at stride 1.
        while d < dst.len() {
            let (image, pos) = (j / (ho * wo), j % (ho * wo));
            let (y, x) = (pos / wo, pos % wo);
            let len = (wo - x).min(dst.len() - d);
            let base = self.origin + image * self.strides[0] + y * sh * self.strides[2] + x * sw;
            let out = &mut dst[d..d + len];
            let span = (len - 1) * sw + 1;
            let e = &self.x[base + even..][..span];
            match odd {
                Some(odd) if sw == 1 => interleave(e, &self.x[base + odd..][..span], out),
                Some(odd) => {
                    let o = &self.x[base + odd..][..span];
                    let pairs = e.iter().step_by(sw).zip(o.iter().step_by(sw));
                    for (dst, (e, o)) in out.iter_mut().zip(pairs) {
                        *dst = e.bf16_bits() as u32 | ((o.bf16_bits() as u32) << 16);
                    }
                }
                None => {
                    for (dst, e) in out.iter_mut().zip(e.iter().step_by(sw)) {
                        *dst = e.bf16_bits() as u32;
                    }
                }
            }
            j += len;
            d += len;
        }
    }
}
