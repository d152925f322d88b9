//! Images ↔ tensors: decoding input files, and the decoder's output as 8-bit RGB.

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
        .map_err(|e| InversionError::Serialize {
            what: "the decoded image",
            message: format!("{e:?}"),
        })?;
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
