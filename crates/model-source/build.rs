//! Bundles the toy model (`tests/fixtures/models/toy`, trained by `tests/reference/train_toy.py`)
//! into the crate, so that `--model toy` works for an installed binary: every file of the folder,
//! with the f32 tensors of its `*.safetensors` weights stored as f16 (rounded to nearest even;
//! other dtypes, such as CLIP's int64 `position_ids`, and the `__metadata__` header as they are).
//! f16 halves the weights (23 MB → 11 MB); `crate::toy` says what that changes in an edit.
//!
//! Writes `$OUT_DIR/toy/…` and `$OUT_DIR/toy.rs`, which `crate::toy` includes: the files as
//! `(path, bytes)` and a digest of them that names the folder they are unpacked to.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let toy = manifest.join("../../tests/fixtures/models/toy");
    println!("cargo::rerun-if-changed={}", toy.display());
    let mut files = Vec::new();
    walk(&toy, Path::new(""), &mut files);
    files.sort();
    let mut table = String::new();
    // FNV-1a over every path and content: a new toy model gets a new folder.
    let mut digest: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |bytes: &[u8]| {
        for &b in bytes {
            digest = (digest ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for rel in &files {
        let src = toy.join(rel);
        let bytes = std::fs::read(&src).unwrap_or_else(|e| panic!("reading {src:?}: {e}"));
        let bytes = if rel.ends_with(".safetensors") {
            to_f16(&bytes, &src)
        } else {
            bytes
        };
        let dst = out.join("toy").join(rel);
        std::fs::create_dir_all(dst.parent().expect("a file in a folder"))
            .unwrap_or_else(|e| panic!("creating the folder of {dst:?}: {e}"));
        std::fs::write(&dst, &bytes).unwrap_or_else(|e| panic!("writing {dst:?}: {e}"));
        mix(rel.as_bytes());
        mix(&(bytes.len() as u64).to_le_bytes());
        mix(&bytes);
        writeln!(
            table,
            "    ({rel:?}, include_bytes!({:?})),",
            dst.display().to_string()
        )
        .expect("writing to a String");
    }
    let code = format!(
        "/// The toy model's files: path in the folder, bytes.\n\
         pub const FILES: &[(&str, &[u8])] = &[\n{table}];\n\
         /// FNV-1a of every path and content.\n\
         pub const DIGEST: &str = \"{digest:016x}\";\n"
    );
    std::fs::write(out.join("toy.rs"), code).expect("writing toy.rs");
}

/// The files under `root/rel`, as `/`-separated relative paths (hidden files left out).
fn walk(root: &Path, rel: &Path, files: &mut Vec<String>) {
    let dir = root.join(rel);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {dir:?}: {e}"));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("reading {dir:?}: {e}"));
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let rel = rel.join(&name);
        if entry.path().is_dir() {
            walk(root, &rel, files);
        } else {
            files.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// A safetensors file with its F32 tensors as F16.
fn to_f16(bytes: &[u8], src: &Path) -> Vec<u8> {
    let tensors = SafeTensors::deserialize(bytes)
        .unwrap_or_else(|e| panic!("{src:?} is not a safetensors file: {e}"));
    let (_, header) = SafeTensors::read_metadata(bytes)
        .unwrap_or_else(|e| panic!("reading the header of {src:?}: {e}"));
    let cast: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let (dtype, data) = match view.dtype() {
                Dtype::F32 => (
                    Dtype::F16,
                    view.data()
                        .chunks_exact(4)
                        .flat_map(|c| {
                            let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                            let h = half::f16::from_f32(v);
                            assert!(
                                h.is_finite() || !v.is_finite(),
                                "{src:?}: {name} overflows f16"
                            );
                            h.to_le_bytes()
                        })
                        .collect(),
                ),
                other => (other, view.data().to_vec()),
            };
            (name, dtype, view.shape().to_vec(), data)
        })
        .collect();
    let views: Vec<(&str, TensorView<'_>)> = cast
        .iter()
        .map(|(name, dtype, shape, data)| {
            let view = TensorView::new(*dtype, shape.clone(), data)
                .unwrap_or_else(|e| panic!("{src:?}: {name}: {e}"));
            (name.as_str(), view)
        })
        .collect();
    let metadata: Option<HashMap<String, String>> = header.metadata().clone();
    safetensors::serialize(views, metadata)
        .unwrap_or_else(|e| panic!("writing {src:?} as f16: {e}"))
}
