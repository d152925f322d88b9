//! `--model`: a diffusers folder, a Hugging Face repo id in the local cache, or a `weights.toml` name.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
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

/// The Hugging Face hub cache: `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hub_cache() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(p).join("hub"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

/// The snapshot folder of `repo` at `revision` (a branch name or commit) in the hub cache.
pub fn cached_snapshot(cache: &Path, repo: &str, revision: &str) -> Option<PathBuf> {
    let root = cache.join(format!("models--{}", repo.replace('/', "--")));
    let commit = std::fs::read_to_string(root.join("refs").join(revision))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| revision.to_string());
    let snap = root.join("snapshots").join(commit);
    snap.join("model_index.json").is_file().then_some(snap)
}

/// Resolves `--model` to a local diffusers folder without touching the network.
pub fn resolve(model: &str) -> Result<PathBuf> {
    let as_path = Path::new(model);
    if as_path.is_dir() {
        return Ok(as_path.to_path_buf());
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
                "--model {model:?} is neither a folder, a Hugging Face repo id (org/name) nor a known model name ({})",
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
