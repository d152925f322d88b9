//! Pixel statistics of the toy scenes: which pixels belong to a shape, its colour, its shape class,
//! mask IoU and PSNR. The colour prototypes and shape geometry are those of
//! `tests/reference/toy_shapes.py`, read from the held-out set's `scenes.json`.

use std::collections::BTreeMap;

use image::RgbImage;

/// Shape geometry as `toy_shapes.py` draws it (circumradius `r`, centre `cx, cy`).
fn inside(shape: &str, dx: f64, dy: f64, r: f64) -> bool {
    use std::f64::consts::PI;
    match shape {
        "circle" => dx * dx + dy * dy <= r * r,
        "square" => dx.abs() <= 0.85 * r && dy.abs() <= 0.85 * r,
        "triangle" => {
            let s3 = 3f64.sqrt() / 2.0;
            let v = [(0.0, -r), (r * s3, r / 2.0), (-r * s3, r / 2.0)];
            (0..3).all(|i| {
                let ((ax, ay), (bx, by)) = (v[i], v[(i + 1) % 3]);
                (bx - ax) * (dy - ay) - (by - ay) * (dx - ax) >= 0.0
            })
        }
        "star" => {
            let half = PI / 5.0;
            let ang = dx.atan2(-dy).rem_euclid(2.0 * PI);
            let sector = (ang % (2.0 * half)) / (2.0 * half);
            // 0 towards a point, `half` between two points
            let phi = (1.0 - (sector - 0.5).abs() * 2.0) * half;
            let (px, py) = (r, 0.0);
            let (qx, qy) = (0.45 * r * half.cos(), 0.45 * r * half.sin());
            let (ex, ey) = (qx - px, qy - py);
            let den = ex * phi.sin() - ey * phi.cos();
            let s = (px * ey - py * ex) / -den;
            dx.hypot(dy) <= s
        }
        _ => false,
    }
}

/// The mask of `shape` drawn at (`cx`, `cy`) with radius `r` on a `size`×`size` grid: coverage of
/// 4×4 subsamples ≥ 0.5, as `toy_shapes.py` makes its masks.
pub fn render(shape: &str, cx: f64, cy: f64, r: f64, size: usize) -> Vec<bool> {
    const SUPER: usize = 4;
    let mut out = vec![false; size * size];
    for y in 0..size {
        for x in 0..size {
            let mut n = 0;
            for sy in 0..SUPER {
                for sx in 0..SUPER {
                    let px = x as f64 + (sx as f64 + 0.5) / SUPER as f64;
                    let py = y as f64 + (sy as f64 + 0.5) / SUPER as f64;
                    n += usize::from(inside(shape, px - cx, py - cy, r));
                }
            }
            out[y * size + x] = 2 * n >= SUPER * SUPER;
        }
    }
    out
}

/// Colour prototypes of the shapes and the background of one scene.
pub struct Palette {
    pub names: Vec<String>,
    pub colours: Vec<[f64; 3]>,
    pub background: [f64; 3],
}

impl Palette {
    /// Per pixel: the index of the nearest shape colour, or `None` where the background's colour
    /// is nearer.
    pub fn classify(&self, img: &RgbImage) -> Vec<Option<usize>> {
        let d2 = |p: &image::Rgb<u8>, c: &[f64; 3]| -> f64 {
            (0..3).map(|i| (p.0[i] as f64 - c[i]).powi(2)).sum()
        };
        img.pixels()
            .map(|p| {
                let (best, dist) = self
                    .colours
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (i, d2(p, c)))
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .unwrap_or((0, f64::INFINITY));
                (dist < d2(p, &self.background)).then_some(best)
            })
            .collect()
    }

    /// The pixels of the image that belong to a shape.
    pub fn foreground(&self, img: &RgbImage) -> Vec<bool> {
        self.classify(img).iter().map(Option::is_some).collect()
    }

    /// The colour most of the shape pixels have, if there are at least `min_pixels` of them.
    pub fn colour(&self, img: &RgbImage, min_pixels: usize) -> Option<&str> {
        let mut votes = vec![0usize; self.names.len()];
        for c in self.classify(img).into_iter().flatten() {
            votes[c] += 1;
        }
        let (best, n) = votes.iter().enumerate().max_by_key(|(_, n)| **n)?;
        (*n >= min_pixels).then(|| self.names[best].as_str())
    }
}

/// The shape class of a mask: the template (same area, same centroid) that overlaps it best.
pub fn shape_of<'a>(mask: &[bool], size: usize, shapes: &'a [String]) -> Option<&'a str> {
    let area = mask.iter().filter(|&&m| m).count();
    if area < 10 {
        return None;
    }
    let (mut sx, mut sy) = (0.0, 0.0);
    for (i, _) in mask.iter().enumerate().filter(|(_, m)| **m) {
        sx += (i % size) as f64 + 0.5;
        sy += (i / size) as f64 + 0.5;
    }
    let (cx, cy) = (sx / area as f64, sy / area as f64);
    shapes
        .iter()
        .map(|s| {
            // Area of the template per r², measured on a large rendering.
            let unit = render(s, 64.0, 64.0, 50.0, 128)
                .iter()
                .filter(|&&m| m)
                .count() as f64
                / 2500.0;
            let r = (area as f64 / unit).sqrt();
            // A triangle's centroid is its circumcentre; a star's and the others' too.
            (s.as_str(), iou(mask, &render(s, cx, cy, r, size)))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(s, _)| s)
}

/// Intersection over union of two masks (1 for two empty masks).
pub fn iou(a: &[bool], b: &[bool]) -> f64 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// `mask` grown by `r` pixels (square neighbourhood).
pub fn dilate(mask: &[bool], size: usize, r: usize) -> Vec<bool> {
    let mut out = vec![false; mask.len()];
    for (i, _) in mask.iter().enumerate().filter(|(_, m)| **m) {
        let (x, y) = (i % size, i / size);
        for yy in y.saturating_sub(r)..(y + r + 1).min(size) {
            for xx in x.saturating_sub(r)..(x + r + 1).min(size) {
                out[yy * size + xx] = true;
            }
        }
    }
    out
}

/// The background whose colour is nearest the mean colour of `img` over `region` (`None` for an
/// empty region).
pub fn nearest_background<'a>(
    img: &RgbImage,
    region: &[bool],
    backgrounds: &'a BTreeMap<String, [f64; 3]>,
) -> Option<&'a str> {
    let (mut sum, mut n) = ([0.0; 3], 0usize);
    for (p, _) in img.pixels().zip(region).filter(|(_, r)| **r) {
        for (s, v) in sum.iter_mut().zip(p.0) {
            *s += f64::from(v);
        }
        n += 1;
    }
    if n == 0 {
        return None;
    }
    let m = sum.map(|v| v / n as f64);
    let d2 = |b: &[f64; 3]| (0..3).map(|c| (m[c] - b[c]).powi(2)).sum::<f64>();
    backgrounds
        .iter()
        .min_by(|a, b| d2(a.1).total_cmp(&d2(b.1)))
        .map(|(name, _)| name.as_str())
}

/// PSNR in dB between two images over the pixels where `keep` is true (all if `None`).
pub fn psnr(a: &RgbImage, b: &RgbImage, keep: Option<&[bool]>) -> f64 {
    let (mut se, mut n) = (0.0, 0usize);
    for (i, (p, q)) in a.pixels().zip(b.pixels()).enumerate() {
        if keep.is_some_and(|k| !k[i]) {
            continue;
        }
        for c in 0..3 {
            se += (p.0[c] as f64 - q.0[c] as f64).powi(2);
        }
        n += 3;
    }
    if n == 0 {
        return f64::NAN;
    }
    let mse = se / n as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPES: [&str; 4] = ["circle", "square", "triangle", "star"];

    #[test]
    fn every_template_is_recognised_as_itself() {
        let shapes: Vec<String> = SHAPES.iter().map(|s| s.to_string()).collect();
        for s in SHAPES {
            for r in [10.0, 16.0, 22.0] {
                let mask = render(s, 30.3, 33.7, r, 64);
                assert_eq!(shape_of(&mask, 64, &shapes), Some(s), "{s} r={r}");
            }
        }
    }

    #[test]
    fn the_background_is_the_mean_colour_of_its_region() {
        let backgrounds: BTreeMap<String, [f64; 3]> = [
            ("white", [245.0; 3]),
            ("gray", [128.0; 3]),
            ("black", [20.0; 3]),
        ]
        .map(|(n, c)| (n.to_string(), c))
        .into();
        // Left half white, right half black: the mean of both halves (132.5) is gray's.
        let img = RgbImage::from_fn(4, 2, |x, _| image::Rgb([if x < 2 { 245 } else { 20 }; 3]));
        let left = [true, true, false, false, true, true, false, false];
        let right = left.map(|l| !l);
        assert_eq!(nearest_background(&img, &left, &backgrounds), Some("white"));
        assert_eq!(
            nearest_background(&img, &right, &backgrounds),
            Some("black")
        );
        assert_eq!(
            nearest_background(&img, &[true; 8], &backgrounds),
            Some("gray")
        );
        assert_eq!(nearest_background(&img, &[false; 8], &backgrounds), None);
    }

    #[test]
    fn circle_area_and_iou_follow_geometry() {
        let a = render("circle", 32.0, 32.0, 10.0, 64);
        let area = a.iter().filter(|&&m| m).count() as f64;
        assert!((area - std::f64::consts::PI * 100.0).abs() < 6.0, "{area}");
        let b = render("circle", 34.0, 32.0, 10.0, 64);
        // Two unit discs 0.2 apart (radius 10, 2 px) overlap by 2 acos(0.1) − 0.1·√3.96 of π each.
        let lens = 2.0 * (0.1f64).acos() - 0.1 * (3.96f64).sqrt();
        let expected = lens / (2.0 * std::f64::consts::PI - lens);
        assert!((iou(&a, &b) - expected).abs() < 0.02, "{}", iou(&a, &b));
    }
}
