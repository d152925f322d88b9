//! Images ↔ tensors, atomic file writes, and the seeded Gaussian noise of `generate`.

use std::io::Write;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use image::{RgbImage, imageops::FilterType};

use crate::error::{InversionError, Result};

/// An RGB image as `[1, 3, h, w]` in [-1, 1], resized (bicubic) to `size` = (width, height) first.
pub fn image_to_tensor(image: &RgbImage, size: (usize, usize), device: &Device) -> Tensor<4> {
    let (w, h) = size;
    let resized;
    let img = if image.dimensions() == (w as u32, h as u32) {
        image
    } else {
        resized = image::imageops::resize(image, w as u32, h as u32, FilterType::CatmullRom);
        &resized
    };
    let mut data = vec![0f32; 3 * h * w];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            data[c * h * w + y as usize * w + x as usize] = p.0[c] as f32 / 127.5 - 1.0;
        }
    }
    Tensor::from_data(TensorData::new(data, [1, 3, h, w]), device)
}

/// The decoder's output `[1, 3, h, w]` (about [-1, 1]) as 8-bit RGB: clamp(x/2 + 0.5) · 255, rounded,
/// as diffusers' `numpy_to_pil`.
pub fn tensor_to_image(x: Tensor<4>) -> Result<RgbImage> {
    let [_, c, h, w] = x.dims();
    let x = ((x * 0.5 + 0.5).clamp(0.0, 1.0) * 255.0).round();
    let values: Vec<f32> = x
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| InversionError::Argument(format!("decoded image: {e:?}")))?;
    if values.iter().any(|v| !v.is_finite()) {
        return Err(InversionError::NonFinite {
            stage: "VAE decode",
        });
    }
    let mut img = RgbImage::new(w as u32, h as u32);
    for (x, y, p) in img.enumerate_pixels_mut() {
        for ch in 0..3.min(c) {
            p.0[ch] = values[ch * h * w + y as usize * w + x as usize] as u8;
        }
    }
    Ok(img)
}

/// Decodes an image from bytes (PNG, JPEG, WebP); `origin` names it in errors.
pub fn decode_image(bytes: &[u8], origin: &str) -> Result<RgbImage> {
    image::load_from_memory(bytes)
        .map(|i| i.to_rgb8())
        .map_err(|e| InversionError::Image {
            origin: origin.to_string(),
            message: e.to_string(),
        })
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so that
/// `path` either keeps its old content or has the complete new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let err = |source| InversionError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// PNG bytes of an image.
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| InversionError::Argument(format!("PNG encoding: {e}")))?;
    Ok(out.into_inner())
}

/// Standard normal noise from a seed: SplitMix64 and Box–Muller in f64, so the same seed gives the
/// same latents on every backend and platform.
pub fn gaussian(seed: u64, n: usize) -> Vec<f32> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64 // (0, 1)
    };
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let (u1, u2) = (next(), next());
        let r = (-2.0 * u1.ln()).sqrt();
        let a = std::f64::consts::TAU * u2;
        out.push((r * a.cos()) as f32);
        out.push((r * a.sin()) as f32);
    }
    out.truncate(n);
    out
}
