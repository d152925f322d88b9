//! `cargo xtask convert` on the tiny SD1 fixture: same layout, float tensors cast (f16 values
//! equal to `half`'s rounding of the f32 ones), int64 `position_ids` and metadata unchanged,
//! configs copied byte for byte, and the result loads in the pipeline.

use std::path::PathBuf;

use burn::tensor::Device;
use inversion::{LoadOptions, Pipeline};
use safetensors::{Dtype, SafeTensors};
use xtask::convert::{convert, parse_dtype};

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models/tiny-sd1")
}

#[test]
fn f16_copy_has_the_same_layout_and_rounded_weights() {
    let out = tempfile::tempdir().unwrap();
    let summary = convert(&model_dir(), parse_dtype("fp16").unwrap(), out.path()).unwrap();
    assert_eq!(summary.converted.len(), 3);
    assert_eq!(summary.overflows, 0);
    assert!(
        summary
            .copied
            .contains(&PathBuf::from("tokenizer/vocab.json"))
    );
    for f in &summary.copied {
        assert_eq!(
            std::fs::read(out.path().join(f)).unwrap(),
            std::fs::read(model_dir().join(f)).unwrap(),
            "{f:?}"
        );
    }
    for f in &summary.converted {
        let (a, b) = (
            std::fs::read(model_dir().join(f)).unwrap(),
            std::fs::read(out.path().join(f)).unwrap(),
        );
        assert!(b.len() < a.len() * 6 / 10, "{f:?} is about half the size");
        let (src, dst) = (
            SafeTensors::deserialize(&a).unwrap(),
            SafeTensors::deserialize(&b).unwrap(),
        );
        assert_eq!(
            SafeTensors::read_metadata(&b).unwrap().1.metadata(),
            SafeTensors::read_metadata(&a).unwrap().1.metadata()
        );
        assert_eq!(src.len(), dst.len());
        for (name, s) in src.tensors() {
            let d = dst.tensor(&name).unwrap();
            assert_eq!(s.shape(), d.shape(), "{name}");
            if s.dtype() == Dtype::I64 {
                assert_eq!(
                    (d.dtype(), d.data()),
                    (Dtype::I64, s.data()),
                    "{name} kept as is"
                );
                continue;
            }
            assert_eq!(d.dtype(), Dtype::F16, "{name}");
            let expected: Vec<u8> = s
                .data()
                .chunks_exact(4)
                .flat_map(|c| {
                    half::f16::from_f32(f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes()
                })
                .collect();
            assert_eq!(d.data(), expected.as_slice(), "{name}");
        }
    }
    assert!(
        std::fs::read_dir(out.path().join("unet"))
            .unwrap()
            .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp")),
        "no temporaries left"
    );
    Pipeline::load(out.path(), &LoadOptions::new(Device::flex())).unwrap();
}

#[test]
fn bad_requests_are_clear_errors() {
    assert!(
        parse_dtype("int8")
            .unwrap_err()
            .to_string()
            .contains("f16, bf16 or f32")
    );
    let out = tempfile::tempdir().unwrap();
    let err = convert(out.path(), Dtype::F16, &out.path().join("x")).unwrap_err();
    assert!(err.to_string().contains("not a diffusers folder"), "{err}");
    let err = convert(&model_dir(), Dtype::F16, &model_dir()).unwrap_err();
    assert!(err.to_string().contains("another folder"), "{err}");
}
