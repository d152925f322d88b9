//! `--model toy`: the small model trained on synthetic shapes (`tests/reference/train_toy.py`),
//! bundled into the binary by `build.rs` (weights in f16) so that an installed `ddim-edit` can try
//! an edit offline with nothing downloaded. It is unpacked once into the user's data folder
//! (`$XDG_DATA_HOME` or `~/.local/share` on Linux, `~/Library/Application Support` on macOS) as
//! `ddim-edit/toy-{digest}/`, every file written atomically; each later use compares the files with
//! the bundled bytes and rewrites any that differ (a damaged or edited copy), so what loads is
//! always the bundled model.
//!
//! f16 against the f32 fixture (`tests/fixtures/models/toy`, which the parity tests against
//! diffusers keep using): the README edit of the CLI test `toy_model_edits_the_readme_example`
//! measures the same colour, PSNR outside the shape and mask IoU within the test's margins (see
//! that test), and the bundle's values are the fixture's rounded to nearest (a unit test below).

use std::path::{Path, PathBuf};

use crate::atomic::write_all_atomic;
use crate::error::{Error, Result};

mod bundle {
    include!(concat!(env!("OUT_DIR"), "/toy.rs"));
}

pub use bundle::{DIGEST, FILES};

/// The toy model's folder in the user's data folder, unpacked there first if needed.
pub fn toy_dir() -> Result<PathBuf> {
    let data = dirs::data_dir().ok_or(Error::NoDataDir)?;
    unpack_toy(&data)
}

/// Unpacks the toy model under `data` (as `ddim-edit/toy-{DIGEST}/`) where any file is missing or
/// differs from the bundled one, and returns the folder.
pub fn unpack_toy(data: &Path) -> Result<PathBuf> {
    let dir = data.join("ddim-edit").join(format!("toy-{DIGEST}"));
    unpack_files(&dir, FILES)?;
    Ok(dir)
}

/// Writes each of `files` (path under `dir`, bytes) that is missing or differs, atomically.
pub(crate) fn unpack_files(dir: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    let stale: Vec<(PathBuf, &[u8])> = files
        .iter()
        .map(|(name, bytes)| (dir.join(name), *bytes))
        .filter(|(path, bytes)| !same_content(path, bytes))
        .collect();
    for (path, _) in &stale {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| Error::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
    }
    let files: Vec<(&Path, &[u8])> = stale.iter().map(|(p, b)| (p.as_path(), *b)).collect();
    write_all_atomic(&files)
}

/// Whether `path` is a regular file holding exactly `bytes` (its size is checked before reading).
fn same_content(path: &Path, bytes: &[u8]) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64)
        && std::fs::read(path).is_ok_and(|read| read == bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/toy")
    }

    /// The tensors of a safetensors file: name → (dtype, shape, values as f32 or raw bytes).
    fn tensors(bytes: &[u8]) -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let data = &bytes[8 + n..];
        let mut out: Vec<_> = header
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k != "__metadata__")
            .map(|(k, v)| {
                let [a, b] = [0, 1].map(|i| v["data_offsets"][i].as_u64().unwrap() as usize);
                let shape = v["shape"].as_array().unwrap();
                let shape = shape.iter().map(|d| d.as_u64().unwrap() as usize).collect();
                let dtype = v["dtype"].as_str().unwrap().to_string();
                (k.clone(), dtype, shape, data[a..b].to_vec())
            })
            .collect();
        out.sort();
        out
    }

    /// Every file of the fixture is bundled; configs as they are, every f32 tensor as the f16
    /// nearest to it, every other tensor unchanged.
    #[test]
    fn the_bundle_is_the_fixture_with_f16_weights() {
        assert_eq!(FILES.len(), 13);
        let mut weights = 0;
        for (name, bundled) in FILES {
            let original = std::fs::read(fixture().join(name)).unwrap();
            if !name.ends_with(".safetensors") {
                assert_eq!(&original[..], *bundled, "{name}");
                continue;
            }
            let (ours, theirs) = (tensors(bundled), tensors(&original));
            assert_eq!(ours.len(), theirs.len(), "{name}");
            for (o, t) in ours.iter().zip(&theirs) {
                assert_eq!((&o.0, &o.2), (&t.0, &t.2), "{name}: name and shape");
                if t.1 != "F32" {
                    assert_eq!(o, t, "{name}: {} copied as it is", t.0);
                    continue;
                }
                assert_eq!(o.1, "F16", "{name}: {}", t.0);
                for (h, f) in o.3.chunks_exact(2).zip(t.3.chunks_exact(4)) {
                    let f = f32::from_le_bytes(f.try_into().unwrap());
                    let h = half::f16::from_le_bytes(h.try_into().unwrap()).to_f32();
                    // Round to nearest: within half an f16 ulp (2^-11 relative, 2^-25 subnormal).
                    assert!(
                        (h - f).abs() <= f.abs() * 2f32.powi(-11) + 2f32.powi(-25),
                        "{f} → {h}"
                    );
                }
                weights += 1;
            }
        }
        assert!(weights > 100, "{weights} f32 tensors");
        let size: usize = FILES.iter().map(|(_, b)| b.len()).sum();
        assert!(size < 13_000_000, "bundle of {size} bytes");
    }

    /// Unpacked once; a damaged or removed file is restored on the next use, and the rest is
    /// left as it is.
    #[test]
    fn the_toy_model_is_unpacked_once_and_repaired_on_reuse() {
        let data = tempfile::tempdir().unwrap();
        let dir = unpack_toy(data.path()).unwrap();
        assert_eq!(dir, data.path().join(format!("ddim-edit/toy-{DIGEST}")));
        for (name, bytes) in FILES {
            assert_eq!(std::fs::read(dir.join(name)).unwrap(), *bytes, "{name}");
        }
        let unet = dir.join("unet/diffusion_pytorch_model.safetensors");
        let config = dir.join("unet/config.json");
        let config_time = std::fs::metadata(&config).unwrap().modified().unwrap();
        let mut bad = std::fs::read(&unet).unwrap();
        bad[1000] ^= 1;
        std::fs::write(&unet, bad).unwrap();
        std::fs::remove_file(dir.join("tokenizer/vocab.json")).unwrap();
        assert_eq!(unpack_toy(data.path()).unwrap(), dir);
        for (name, bytes) in FILES {
            assert_eq!(std::fs::read(dir.join(name)).unwrap(), *bytes, "{name}");
        }
        let unchanged = std::fs::metadata(&config).unwrap().modified().unwrap();
        assert_eq!(unchanged, config_time, "a sound file was rewritten");
        let left: Vec<_> = std::fs::read_dir(dir.join("unet")).unwrap().collect();
        assert_eq!(left.len(), 2, "temporaries left behind");
    }

    #[test]
    fn an_unwritable_data_folder_is_an_error_naming_it() {
        let data = tempfile::tempdir().unwrap();
        let file = data.path().join("not-a-folder");
        std::fs::write(&file, b"x").unwrap();
        let e = unpack_toy(&file).unwrap_err();
        assert!(matches!(e, Error::Write { .. }), "{e}");
        assert!(e.to_string().contains("not-a-folder"), "{e}");
    }
}
