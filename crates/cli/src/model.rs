//! `--model`: a diffusers folder, a Hugging Face repo id in the local cache, or a `weights.toml` name.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use inversion::hub::{cached_snapshot, hub_cache};
use serde::Deserialize;

/// The models this project knows how to fetch (`weights.toml`, compiled in).
const WEIGHTS_TOML: &str = include_str!("../../../weights.toml");

/// The default `--model`.
pub const DEFAULT_MODEL: &str = "sd-2-1-base";

#[derive(Deserialize)]
struct Catalog {
    #[serde(default)]
    models: std::collections::BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    repo: String,
    #[serde(default)]
    revision: Option<String>,
}

/// `--model toy`: the small model trained on synthetic shapes that ships with the sources
/// (`tests/reference/train_toy.py`), for trying the tool offline.
pub const TOY: &str = "toy";

/// Where the toy model is: in the source tree this binary was built from.
fn toy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/toy")
}

/// Resolves `--model` to a local diffusers folder without touching the network.
pub fn resolve(model: &str) -> Result<PathBuf> {
    let as_path = Path::new(model);
    if as_path.is_dir() {
        return Ok(as_path.to_path_buf());
    }
    if model == TOY {
        let dir = toy_dir();
        if dir.join("model_index.json").is_file() {
            return Ok(dir);
        }
        bail!(
            "--model toy: the toy model is not at {dir:?} (it ships with the ddim-edit sources; \
             pass its folder to --model instead)"
        );
    }
    let catalog: Catalog =
        toml::from_str(WEIGHTS_TOML).context("parsing the built-in weights.toml")?;
    let (repo, revision, fetch) = match catalog.models.get(model) {
        Some(e) => (
            e.repo.clone(),
            e.revision.clone().unwrap_or_else(|| "main".into()),
            format!("cargo xtask fetch {model}"),
        ),
        None if model.contains('/') && !model.starts_with('.') && !as_path.is_absolute() => (
            model.to_string(),
            "main".to_string(),
            format!("cargo xtask fetch --repo {model}"),
        ),
        None => {
            let names: Vec<&str> = catalog.models.keys().map(String::as_str).collect();
            bail!(
                "--model {model:?} is neither a folder, a Hugging Face repo id (org/name) nor a known model name ({}, {TOY})",
                names.join(", ")
            )
        }
    };
    let cache = hub_cache()
        .context("cannot locate the Hugging Face cache (no HOME, HF_HOME or HF_HUB_CACHE)")?;
    if let Some(dir) =
        cached_snapshot(&cache, &repo, &revision).or_else(|| cached_snapshot(&cache, &repo, "main"))
    {
        return Ok(dir);
    }
    bail!(
        "model {model:?} ({repo}) is not in the Hugging Face cache at {cache:?}; download it with `{fetch}`"
    )
}
