//! Strict weight loading: corrupt, truncated, incomplete or mis-shaped files are errors that name the
//! file and the key.

use std::collections::HashMap;

use burn::tensor::{DType, Device};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use sd_models::ModelError;
use sd_models::vae::AutoencoderKL;
use test_support::model_dir;

/// The tiny SD2 VAE folder copied into a temp dir, with its weights rewritten by `edit`.
fn vae_with(
    edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<u8>)>),
) -> (tempfile::TempDir, Result<AutoencoderKL, ModelError>) {
    let src = model_dir("tiny-sd2").join("vae");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("diffusion_pytorch_model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<String, (Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, (s, d))| {
            (
                k.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    std::fs::write(
        dir.path().join("diffusion_pytorch_model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    let result = AutoencoderKL::load(dir.path(), None, DType::F32, &Device::flex()).map(|(m, _)| m);
    (dir, result)
}

#[test]
fn missing_unexpected_and_misshaped_weights_are_named() {
    let (_d, r) = vae_with(|t| {
        t.remove("decoder.conv_out.bias");
    });
    let e = r.unwrap_err();
    assert!(
        matches!(&e, ModelError::MissingTensor { key, .. } if key == "decoder.conv_out.bias"),
        "{e}"
    );

    let (_d, r) = vae_with(|t| {
        t.insert("decoder.extra.weight".into(), (vec![2], vec![0; 8]));
    });
    let e = r.unwrap_err();
    assert!(
        matches!(&e, ModelError::UnexpectedTensor { key, .. } if key == "decoder.extra.weight"),
        "{e}"
    );

    let (_d, r) = vae_with(|t| {
        t.insert("decoder.conv_out.bias".into(), (vec![4], vec![0; 16]));
    });
    let e = r.unwrap_err();
    assert!(
        matches!(&e, ModelError::ShapeMismatch { key, expected, found, .. } if key == "decoder.conv_out.bias" && expected == &vec![3] && found == &vec![4]),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("diffusion_pytorch_model.safetensors"),
        "{e}"
    );
}

#[test]
fn truncated_and_corrupt_files_name_the_file() {
    let src = model_dir("tiny-sd2").join("vae");
    for (what, cut) in [("truncated", 0.5), ("header only", 0.001)] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
        let bytes = std::fs::read(src.join("diffusion_pytorch_model.safetensors")).unwrap();
        let n = ((bytes.len() as f64) * cut) as usize;
        std::fs::write(
            dir.path().join("diffusion_pytorch_model.safetensors"),
            &bytes[..n],
        )
        .unwrap();
        let e = AutoencoderKL::load(dir.path(), None, DType::F32, &Device::flex()).unwrap_err();
        assert!(
            matches!(e, ModelError::CorruptWeights { .. }),
            "{what}: {e}"
        );
        assert!(
            e.to_string()
                .contains("diffusion_pytorch_model.safetensors"),
            "{what}: {e}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let e = AutoencoderKL::load(dir.path(), None, DType::F32, &Device::flex()).unwrap_err();
    assert!(
        matches!(e, ModelError::MissingFile { .. })
            && e.to_string()
                .contains("diffusion_pytorch_model.safetensors"),
        "{e}"
    );
}

/// A header in memory reads as the same file on disk does; a shape whose byte count overflows 64
/// bits (2³² × 2³² f32 wraps to 0, the size of empty `data_offsets`) is refused, not taken for an
/// empty tensor.
#[test]
fn headers_parse_from_bytes_and_an_overflowing_shape_is_refused() {
    let path = model_dir("tiny-sd2").join("vae/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let header = sd_models::weights::parse_header(&bytes, &path).unwrap();
    assert_eq!(header, sd_models::weights::read_header(&path).unwrap());
    assert_eq!(header["decoder.conv_out.bias"].shape, vec![3]);

    let json = r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#;
    let mut file = (json.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(json.as_bytes());
    let regression = test_support::fixtures().join("../../fuzz/regressions/safetensors_header");
    assert_eq!(
        std::fs::read(regression.join("shape-overflow")).unwrap(),
        file
    );
    let e =
        sd_models::weights::parse_header(&file, std::path::Path::new("w.safetensors")).unwrap_err();
    assert!(
        matches!(e, ModelError::CorruptWeights { .. })
            && e.to_string().contains("w.safetensors")
            && e.to_string()
                .contains("byte range does not match dtype and shape"),
        "{e}"
    );
}
