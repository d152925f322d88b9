//! Config folders for single-file checkpoints (`--model FILE.safetensors`): the published
//! scheduler, tokenizer and component configs of SD 1.5, SD 2.1-base and SD 2.1, without their
//! weights, as diffusers' `from_single_file(config=…)` reads them from a model repository.
//!
//! A cached copy of the catalog model serves when there is one; otherwise the configs bundled
//! here (`tests/fixtures/configs/<name>`, as published) and the CLIP vocabulary of the bundled toy
//! model (the same `vocab.json` and `merges.txt` as every SD tokenizer) are unpacked once into the
//! user's data folder as `ddim-edit/config-{name}-{digest}/`, like the toy model.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::resolve::resolve_in;
use crate::toy::unpack_files;

/// The names a single file's configs can be given by (`--config NAME`).
pub const PRESETS: &[&str] = &["sd-1-5", "sd-2-1-base", "sd-2-1"];

macro_rules! configs {
    ($name:literal) => {
        [
            (
                "model_index.json",
                include_bytes!(concat!(
                    "../../../tests/fixtures/configs/",
                    $name,
                    "/model_index.json"
                )) as &[u8],
            ),
            (
                "scheduler/scheduler_config.json",
                include_bytes!(concat!(
                    "../../../tests/fixtures/configs/",
                    $name,
                    "/scheduler/scheduler_config.json"
                )),
            ),
            (
                "text_encoder/config.json",
                include_bytes!(concat!(
                    "../../../tests/fixtures/configs/",
                    $name,
                    "/text_encoder/config.json"
                )),
            ),
            (
                "unet/config.json",
                include_bytes!(concat!(
                    "../../../tests/fixtures/configs/",
                    $name,
                    "/unet/config.json"
                )),
            ),
            (
                "vae/config.json",
                include_bytes!(concat!(
                    "../../../tests/fixtures/configs/",
                    $name,
                    "/vae/config.json"
                )),
            ),
        ]
    };
}

const SD15: [(&str, &[u8]); 5] = configs!("sd-1-5");
const SD21_BASE: [(&str, &[u8]); 5] = configs!("sd-2-1-base");
const SD21: [(&str, &[u8]); 5] = configs!("sd-2-1");

/// SD 2.x tokenizers pad with "!" (`special_tokens_map.json`), SD 1.x with `<|endoftext|>`.
const SD2_SPECIAL_TOKENS: &[u8] =
    include_bytes!("../../../tests/fixtures/models/tiny-sd2/tokenizer/special_tokens_map.json");

/// The files of preset `name`.
fn files(name: &str) -> Option<Vec<(&'static str, &'static [u8])>> {
    let (configs, sd2) = match name {
        "sd-1-5" => (SD15, false),
        "sd-2-1-base" => (SD21_BASE, true),
        "sd-2-1" => (SD21, true),
        _ => return None,
    };
    let mut files = configs.to_vec();
    for (path, bytes) in crate::toy::FILES {
        let Some(file) = path.strip_prefix("tokenizer/") else {
            continue;
        };
        let bytes = match file {
            "special_tokens_map.json" if sd2 => SD2_SPECIAL_TOKENS,
            _ => *bytes,
        };
        files.push((path, bytes));
    }
    Some(files)
}

/// The config folder of preset `name`: its cached catalog model, else the bundled configs
/// unpacked under the user's data folder.
pub fn config_folder(name: &str) -> Result<PathBuf> {
    if let Ok(dir) = resolve_in(name, crate::hub_cache()) {
        return Ok(dir);
    }
    let data = dirs::data_dir().ok_or(Error::NoDataDir)?;
    unpack_preset(&data, name)
}

/// The config folder of a single-file checkpoint, and whether its shape-given fields are to be
/// read off the file: `--config` as a folder or a cached model (used as it is), a preset
/// (adapted), or without `--config` the preset of the file's family, `family_preset`.
pub fn single_file_config(config: Option<&str>, family_preset: &str) -> Result<(PathBuf, bool)> {
    let Some(config) = config else {
        return Ok((config_folder(family_preset)?, true));
    };
    if Path::new(config).is_dir() {
        return Ok((PathBuf::from(config), false));
    }
    if PRESETS.contains(&config) {
        return Ok((config_folder(config)?, true));
    }
    match resolve_in(config, crate::hub_cache()) {
        Ok(dir) => Ok((dir, false)),
        Err(Error::NotCached { .. } | Error::UnknownSource { .. } | Error::NotAFolder { .. }) => {
            Err(Error::UnknownConfig {
                name: config.to_string(),
                known: PRESETS.join(", "),
            })
        }
        Err(e) => Err(e),
    }
}

/// Unpacks preset `name` under `data` (as `ddim-edit/config-{name}-{digest}/`) where a file is
/// missing or differs, and returns the folder.
pub fn unpack_preset(data: &Path, name: &str) -> Result<PathBuf> {
    let files = files(name).ok_or_else(|| Error::UnknownConfig {
        name: name.to_string(),
        known: PRESETS.join(", "),
    })?;
    // FNV-1a over every path and content, as the toy model's folder.
    let mut digest: u64 = 0xcbf2_9ce4_8422_2325;
    for (path, bytes) in &files {
        for &b in path.as_bytes().iter().chain(*bytes) {
            digest = (digest ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    let dir = data
        .join("ddim-edit")
        .join(format!("config-{name}-{digest:016x}"));
    unpack_files(&dir, &files)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each preset is its published configs plus a tokenizer: SD 1.x's is the fixture models'
    /// SD 1 tokenizer, SD 2.x's their SD 2 one, file for file.
    #[test]
    fn presets_unpack_the_published_configs_and_the_familys_tokenizer() {
        let data = tempfile::tempdir().unwrap();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        for (name, tokenizer) in [
            ("sd-1-5", "tiny-sd1"),
            ("sd-2-1-base", "tiny-sd2"),
            ("sd-2-1", "tiny-sd2"),
        ] {
            let dir = unpack_preset(data.path(), name).unwrap();
            assert_eq!(unpack_preset(data.path(), name).unwrap(), dir);
            for part in [
                "model_index.json",
                "scheduler/scheduler_config.json",
                "unet/config.json",
            ] {
                let want = std::fs::read(fixtures.join("configs").join(name).join(part)).unwrap();
                assert_eq!(
                    std::fs::read(dir.join(part)).unwrap(),
                    want,
                    "{name} {part}"
                );
            }
            let want = fixtures.join("models").join(tokenizer).join("tokenizer");
            for file in [
                "vocab.json",
                "merges.txt",
                "special_tokens_map.json",
                "tokenizer_config.json",
            ] {
                let got = std::fs::read(dir.join("tokenizer").join(file)).unwrap();
                assert!(
                    got == std::fs::read(want.join(file)).unwrap(),
                    "{name} {file}"
                );
            }
        }
        let e = unpack_preset(data.path(), "sd-3").unwrap_err().to_string();
        assert!(e.contains("sd-1-5, sd-2-1-base, sd-2-1"), "{e}");
    }
}
