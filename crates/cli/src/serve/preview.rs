//! Live previews: the latents projected linearly to RGB. The projection is fitted per photo, by
//! least squares between the photo's own latent x₀ and the photo at latent resolution, so it
//! needs nothing of the model and suits any VAE; it costs a C×C solve once per photo and one
//! small matrix product per preview.

use burn::tensor::Tensor;
use image::RgbImage;
use image::imageops::FilterType;

/// RGB ≈ W · [z; 1] per latent pixel: three rows of C + 1 weights.
#[derive(Debug, Clone)]
pub struct Projection {
    rows: [Vec<f64>; 3],
}

/// The values of a `[1, C, h, w]` tensor in its first batch entry, or of entry `index`.
fn values(x: &Tensor<4>, index: usize) -> Option<(Vec<f32>, [usize; 3])> {
    let [n, c, h, w] = x.dims();
    let i = index.min(n.checked_sub(1)?);
    let one = x.clone().slice([i..i + 1, 0..c, 0..h, 0..w]);
    let v = one.into_data().convert::<f32>().try_to_vec::<f32>().ok()?;
    Some((v, [c, h, w]))
}

/// Solves `a · x = b` (n×n, row-major) by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Option<Vec<f64>> {
    for col in 0..n {
        let pivot =
            (col..n).max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))?;
        if a[pivot * n + col].abs() < 1e-12 {
            return None;
        }
        for k in 0..n {
            a.swap(col * n + k, pivot * n + k);
        }
        b.swap(col, pivot);
        for row in col + 1..n {
            let f = a[row * n + col] / a[col * n + col];
            for k in col..n {
                a[row * n + k] -= f * a[col * n + k];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row * n + k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row * n + row];
    }
    Some(x)
}

impl Projection {
    /// Fits the projection of the photo's latent `x0` `[1, C, h, w]` onto `photo` (any size).
    pub fn fit(x0: &Tensor<4>, photo: &RgbImage) -> Option<Self> {
        let (z, [c, h, w]) = values(x0, 0)?;
        let small = image::imageops::resize(photo, w as u32, h as u32, FilterType::Triangle);
        let n = c + 1;
        // Normal equations with a small ridge, so a flat photo still gives a solvable system.
        let mut ata = vec![0.0; n * n];
        let mut atb = [vec![0.0; n], vec![0.0; n], vec![0.0; n]];
        let mut feature = vec![1.0; n];
        for (x, y, p) in small.enumerate_pixels() {
            for ch in 0..c {
                feature[ch] = z[ch * h * w + y as usize * w + x as usize] as f64;
            }
            for i in 0..n {
                for j in 0..n {
                    ata[i * n + j] += feature[i] * feature[j];
                }
                for (rgb, row) in atb.iter_mut().enumerate() {
                    row[i] += feature[i] * (p.0[rgb] as f64 / 255.0);
                }
            }
        }
        for i in 0..n {
            ata[i * n + i] += 1e-6 * (h * w) as f64;
        }
        let [r, g, b] = atb.map(|rhs| solve(ata.clone(), rhs, n));
        Some(Self { rows: [r?, g?, b?] })
    }

    /// Batch entry `index` of `x` `[n, C, h, w]` as an RGB image at latent resolution.
    pub fn project(&self, x: &Tensor<4>, index: usize) -> Option<RgbImage> {
        let (z, [c, h, w]) = values(x, index)?;
        if c + 1 != self.rows[0].len() {
            return None;
        }
        let mut img = RgbImage::new(w as u32, h as u32);
        for (px, py, p) in img.enumerate_pixels_mut() {
            let at = py as usize * w + px as usize;
            for (rgb, row) in self.rows.iter().enumerate() {
                let v = row[c]
                    + (0..c)
                        .map(|ch| row[ch] * z[ch * h * w + at] as f64)
                        .sum::<f64>();
                p.0[rgb] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
        Some(img)
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, TensorData};

    use super::*;

    /// A photo that is exactly a linear function of a latent is recovered to the 8-bit rounding.
    #[test]
    fn the_fit_recovers_a_linear_map() {
        let (c, h, w) = (4usize, 6usize, 5usize);
        let z: Vec<f32> = (0..c * h * w)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let weights = [
            [0.2, -0.1, 0.05, 0.1, 0.5],
            [0.0, 0.15, -0.1, 0.05, 0.4],
            [-0.1, 0.0, 0.2, 0.1, 0.45],
        ];
        let at = |ch: usize, x: usize, y: usize| z[ch * h * w + y * w + x] as f64;
        let photo = RgbImage::from_fn(w as u32, h as u32, |x, y| {
            image::Rgb(weights.map(|row| {
                let v = row[c]
                    + (0..c)
                        .map(|ch| row[ch] * at(ch, x as usize, y as usize))
                        .sum::<f64>();
                (v.clamp(0.0, 1.0) * 255.0).round() as u8
            }))
        });
        let x0 = Tensor::<4>::from_data(TensorData::new(z, [1, c, h, w]), &Device::flex());
        let fit = Projection::fit(&x0, &photo).unwrap();
        let back = fit.project(&x0, 0).unwrap();
        for (a, b) in back.pixels().zip(photo.pixels()) {
            for k in 0..3 {
                assert!((a.0[k] as i32 - b.0[k] as i32).abs() <= 1, "{a:?} vs {b:?}");
            }
        }
        assert!(
            fit.project(&x0.slice([0..1, 0..3, 0..h, 0..w]), 0)
                .is_none(),
            "channel count checked"
        );
    }
}
