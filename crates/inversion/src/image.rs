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
            causes: crate::pipeline::non_finite_causes(burn::tensor::DType::F32),
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
    if image::guess_format(bytes).ok() == Some(image::ImageFormat::Jpeg) && jpeg_is_truncated(bytes)
    {
        return Err(InversionError::Image {
            origin: origin.to_string(),
            message: "the JPEG is truncated (its last scan has no end-of-image marker); the decoder would fill the missing part in".into(),
        });
    }
    image::load_from_memory(bytes)
        .map(|i| i.to_rgb8())
        .map_err(|e| InversionError::Image {
            origin: origin.to_string(),
            message: match (&e, dimensions(bytes)) {
                (image::ImageError::Limits(_), Some((w, h))) => format!(
                    "{w}x{h} pixels need more memory than the decoder's limit of {} MiB ({e})",
                    image::Limits::default().max_alloc.unwrap_or(0) >> 20
                ),
                _ => e.to_string(),
            },
        })
}

/// The width and height an image's header declares, if it can be read.
fn dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()?;
    // The header alone: no limit to trip over, and the input's own size bounds what is read.
    reader.no_limits();
    reader.into_dimensions().ok()
}

/// Whether the last start-of-scan marker (`FF DA`) of a JPEG has no end-of-image marker (`FF D9`)
/// after it. Entropy-coded data stuffs every `FF` with `00`, so neither appears inside a scan; an
/// EXIF thumbnail's own markers come before the main image's.
fn jpeg_is_truncated(bytes: &[u8]) -> bool {
    let last = |marker: u8| bytes.windows(2).rposition(|w| w == [0xFF, marker]);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi < sos,
        (Some(_), None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG chunk: length, type, data, CRC-32 of type and data.
    fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut crc = !0u32;
        for &byte in kind.iter().chain(data) {
            crc ^= byte as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
        chunk.extend_from_slice(kind);
        chunk.extend_from_slice(data);
        chunk.extend_from_slice(&(!crc).to_be_bytes());
        chunk
    }

    /// A 65-byte PNG whose header declares 100000×100000 RGB pixels (30 GB decoded) is refused
    /// with its dimensions named.
    #[test]
    fn an_image_over_the_memory_limit_names_its_dimensions() {
        let mut ihdr = 100_000u32.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(png_chunk(b"IHDR", &ihdr));
        png.extend(png_chunk(
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        ));
        png.extend(png_chunk(b"IEND", &[]));
        let err = decode_image(&png, "huge.png").unwrap_err().to_string();
        assert!(
            err.contains("huge.png")
                && err.contains("100000x100000 pixels")
                && err.contains("limit of 512 MiB"),
            "{err}"
        );
    }

    /// A JPEG cut short is refused by name, not decoded with its missing half filled in.
    #[test]
    fn a_truncated_jpeg_is_an_error() {
        let img = RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 5) as u8, 90])
        });
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&img)
            .unwrap();
        assert_eq!(
            decode_image(&jpeg, "whole.jpg").unwrap().dimensions(),
            (64, 48)
        );
        let cut = &jpeg[..jpeg.len() * 6 / 10];
        let err = decode_image(cut, "cut.jpg").unwrap_err().to_string();
        assert!(
            err.contains("cut.jpg") && err.contains("truncated"),
            "{err}"
        );
    }
}
