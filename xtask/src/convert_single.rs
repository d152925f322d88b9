//! `cargo xtask convert --from-single-file FILE --out DIR [--config C] [--prediction-type P]
//! [--no-ema] [--dtype D]`: a single-file LDM checkpoint written as a diffusers folder, the same
//! tensors `ddim-edit --model FILE` loads ([`sd_models::single_file::Prepared`]), so the folder
//! edits exactly as the file does and diffusers' `from_pretrained` reads it.
//!
//! The folder is written under a temporary name beside `DIR` and renamed into place when
//! complete: an interrupted conversion leaves no half folder under the real name.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sd_models::single_file::{Options, Part, Prepared, SingleFile};
use serde_json::{Value, json};

/// What a single-file conversion reads.
#[derive(Debug, Clone)]
pub struct Source {
    pub file: PathBuf,
    /// `--config`: a folder, cached model or preset (default: the file's family's preset).
    pub config: Option<String>,
    /// `--prediction-type`: `epsilon` or `v_prediction`.
    pub prediction_type: Option<String>,
    pub ema: bool,
}

/// Writes `source` as a diffusers folder at `out` (which must not exist yet).
pub fn write_folder(source: &Source, out: &Path) -> Result<()> {
    if out.exists() {
        bail!("--out {out:?} exists: give a folder that does not exist yet");
    }
    let file = SingleFile::open(&source.file)?;
    let preset = file.family().default_config();
    let (config_dir, derive) =
        model_source::preset::single_file_config(source.config.as_deref(), preset)?;
    let prepared = Prepared::from_file(
        file,
        &config_dir,
        Options {
            ema: source.ema,
            derive,
        },
    )?;
    let name = out.file_name().context("--out needs a folder name")?;
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = parent.join(format!(
        ".{}.partial-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = stage(&prepared, &config_dir, source, &staging).and_then(|()| {
        std::fs::rename(&staging, out).with_context(|| format!("renaming {staging:?} to {out:?}"))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path:?}"))?;
    serde_json::from_str(&text).with_context(|| format!("{path:?} is not JSON"))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {parent:?}"))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {path:?}"))
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write(path, text.as_bytes())
}

fn stage(prepared: &Prepared, config_dir: &Path, source: &Source, dir: &Path) -> Result<()> {
    // The pipeline's index, without the safety checker the published repositories list.
    let mut index = read_json(&config_dir.join("model_index.json"))?;
    if let Some(obj) = index.as_object_mut() {
        for unused in ["safety_checker", "feature_extractor", "image_encoder"] {
            if obj.contains_key(unused) {
                obj.insert(unused.into(), json!([null, null]));
            }
        }
        obj.insert("requires_safety_checker".into(), json!(false));
    }
    write_json(&dir.join("model_index.json"), &index)?;
    let mut scheduler = read_json(&config_dir.join("scheduler/scheduler_config.json"))?;
    if let (Some(p), Some(obj)) = (&source.prediction_type, scheduler.as_object_mut()) {
        obj.insert("prediction_type".into(), json!(p));
    }
    write_json(&dir.join("scheduler/scheduler_config.json"), &scheduler)?;
    let tokenizer = config_dir.join("tokenizer");
    for entry in std::fs::read_dir(&tokenizer).with_context(|| format!("reading {tokenizer:?}"))? {
        let path = entry?.path();
        if std::fs::metadata(&path)?.is_file() {
            let name = path.file_name().context("a file name")?;
            let bytes = std::fs::read(&path).with_context(|| format!("reading {path:?}"))?;
            write(&dir.join("tokenizer").join(name), &bytes)?;
        }
    }
    for (part, weights) in [
        (Part::Unet, "diffusion_pytorch_model.safetensors"),
        (Part::Vae, "diffusion_pytorch_model.safetensors"),
        (Part::TextEncoder, "model.safetensors"),
    ] {
        let folder = dir.join(part.name());
        write_json(
            &folder.join("config.json"),
            &prepared.component(part).config,
        )?;
        write(&folder.join(weights), &prepared.weights(part)?)?;
    }
    Ok(())
}
