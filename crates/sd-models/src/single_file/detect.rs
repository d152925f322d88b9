//! What a single file is: a pickle (refused), an unsupported kind of checkpoint (named), or a
//! Stable Diffusion 1.x / 2.x one, told by its text encoder's layout. The tests are diffusers'
//! (`infer_diffusers_model_type`), on the key structure rather than on published sizes, so that
//! small models of either family are told apart too.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use super::{CLIP, Family, OPEN_CLIP, UNET};
use crate::error::{ModelError, Result};
use crate::weights::TensorInfo;

/// Refuses pickled checkpoints, by extension and by their first bytes.
pub(super) fn refuse_pickle(path: &Path) -> Result<()> {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    let by_name = match ext.as_deref() {
        Some("ckpt") => Some("a .ckpt file"),
        Some("pt" | "pth") => Some("a .pt file"),
        Some("bin") => Some("a .bin file"),
        Some("pkl" | "pickle") => Some("a pickle file"),
        _ => None,
    };
    let mut magic = [0u8; 4];
    let read = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut magic))
        .map_err(|e| ModelError::io(path, e))?;
    let by_content = match &magic[..read] {
        [b'P', b'K', 3, 4] => Some("a zip archive, as torch.save writes"),
        [0x80, 2..=5, ..] => Some("a pickle stream"),
        _ => None,
    };
    match by_name.or(by_content) {
        Some(kind) => Err(ModelError::PickledCheckpoint {
            path: path.to_path_buf(),
            kind,
            stem,
        }),
        None => Ok(()),
    }
}

/// The family of a checkpoint, or what unsupported kind it is.
pub(super) fn family(path: &Path, header: &BTreeMap<String, TensorInfo>) -> Result<Family> {
    let has = |prefix: &str| header.keys().any(|k| k.starts_with(prefix));
    let unsupported = |kind: &str| {
        Err(ModelError::UnsupportedCheckpoint {
            path: path.to_path_buf(),
            kind: kind.to_string(),
        })
    };
    if has("conditioner.embedders.1.") {
        return unsupported("an SDXL base");
    }
    if has("conditioner.embedders.") {
        return unsupported("an SDXL refiner");
    }
    if header.keys().any(|k| k.contains("joint_blocks.")) {
        return unsupported("a Stable Diffusion 3");
    }
    if header.keys().any(|k| k.contains("double_blocks.")) {
        return unsupported("a Flux");
    }
    if has("control_model.") {
        return unsupported("a ControlNet");
    }
    if !has(UNET) {
        let message = if has("down_blocks.") || has("text_model.") || has("encoder.down_blocks.") {
            "holds one diffusers component's weights (diffusers names such as down_blocks.*), not a whole \
             LDM checkpoint: pass the model's folder"
        } else {
            "has no model.diffusion_model.* tensors: not a Stable Diffusion checkpoint"
        };
        return Err(ModelError::single_file(path, message));
    }
    if has("model.diffusion_model.label_emb.") {
        return unsupported("a class-conditioned (unCLIP or upscaler)");
    }
    let conv_in = format!("{UNET}input_blocks.0.0.weight");
    match header.get(&conv_in).map(|t| t.shape.as_slice()) {
        Some([_, 4, ..]) => {}
        Some([_, 9, ..]) => return unsupported("an inpainting"),
        Some([_, 8, ..]) => return unsupported("an InstructPix2Pix"),
        Some([_, 5, ..]) => return unsupported("a depth-to-image"),
        Some([_, 7, ..]) => return unsupported("an x4 upscaler"),
        Some([_, n, ..]) => return unsupported(&format!("a {n}-channel UNet")),
        _ => {
            return Err(ModelError::single_file(
                path,
                format!("lacks {conv_in:?} (the UNet's input convolution, [out, 4, 3, 3])"),
            ));
        }
    }
    if has(CLIP) {
        Ok(Family::Sd1)
    } else if has(OPEN_CLIP) {
        Ok(Family::Sd2)
    } else {
        Err(ModelError::single_file(
            path,
            format!(
                "has no text encoder: neither {CLIP}* (CLIP, SD 1.x) nor {OPEN_CLIP}* (OpenCLIP, SD 2.x)"
            ),
        ))
    }
}
