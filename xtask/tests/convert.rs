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

/// A safetensors file's tensors by name: (dtype, shape, bytes).
fn tensors(
    path: &std::path::Path,
) -> std::collections::BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect()
}

/// `--from-single-file` on the tiny SD 2 checkpoint writes a diffusers folder whose tensors are
/// the fixture folder's (the VAE's legacy attention names as diffusers renames them), whose
/// configs and tokenizer are the `--config` folder's, with `--prediction-type` in the scheduler;
/// the folder loads. An existing `--out`, or a bad file, writes nothing.
#[test]
fn a_single_file_becomes_the_diffusers_folder_it_was_written_from() {
    use xtask::convert_single::{Source, write_folder};
    let fixtures = model_dir().join("..");
    let folder = fixtures.join("tiny-sd2");
    let source = Source {
        file: fixtures.join("single-file/tiny-sd2.safetensors"),
        config: Some(folder.display().to_string()),
        prediction_type: Some("v_prediction".into()),
        ema: true,
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("converted");
    write_folder(&source, &out).unwrap();
    for (part, file) in [
        ("unet", "diffusion_pytorch_model.safetensors"),
        ("vae", "diffusion_pytorch_model.safetensors"),
        ("text_encoder", "model.safetensors"),
    ] {
        let legacy = |k: &str| {
            k.replace(".query.", ".to_q.")
                .replace(".key.", ".to_k.")
                .replace(".value.", ".to_v.")
                .replace(".proj_attn.", ".to_out.0.")
        };
        let want: std::collections::BTreeMap<_, _> = tensors(&folder.join(part).join(file))
            .into_iter()
            .map(|(k, v)| (legacy(&k), v))
            .collect();
        assert!(
            tensors(&out.join(part).join(file)) == want,
            "{part}: tensors differ"
        );
        let config = |dir: &std::path::Path| {
            let text = std::fs::read_to_string(dir.join(part).join("config.json")).unwrap();
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        };
        assert_eq!(config(&out), config(&folder), "{part} config");
    }
    for f in [
        "vocab.json",
        "merges.txt",
        "special_tokens_map.json",
        "tokenizer_config.json",
    ] {
        let read = |dir: &std::path::Path| std::fs::read(dir.join("tokenizer").join(f)).unwrap();
        assert!(read(&out) == read(&folder), "{f}");
    }
    let scheduler = std::fs::read_to_string(out.join("scheduler/scheduler_config.json")).unwrap();
    assert!(
        scheduler.contains("\"prediction_type\": \"v_prediction\""),
        "{scheduler}"
    );
    Pipeline::load(&out, &LoadOptions::new(Device::flex())).unwrap();

    let err = write_folder(&source, &out).unwrap_err().to_string();
    assert!(err.contains("exists"), "{err}");
    let bad = tmp.path().join("bad.safetensors");
    std::fs::write(&bad, b"\x10\x00\x00\x00\x00\x00\x00\x00{}").unwrap();
    let bad_source = Source {
        file: bad,
        ..source
    };
    assert!(write_folder(&bad_source, &tmp.path().join("never")).is_err());
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left.len(),
        2,
        "only converted/ and bad.safetensors: {left:?}"
    );
}
