//! What to fetch: the models known by name (`weights.toml`) and, for any other diffusers
//! repository, the files its `model_index.json` components need — configs, tokenizer files and
//! the `*.safetensors` weights (of the asked variant), never `.ckpt`/`.bin`/`.msgpack`/`.onnx`.
//! The selection follows diffusers' `DiffusionPipeline.download` (variant file names
//! `model.fp16.safetensors`, `model.fp16-00001-of-00002.safetensors`,
//! `model.safetensors.index.fp16.json`).

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// `weights.toml`, compiled in like the CLI does, so both read the same catalog.
pub const WEIGHTS_TOML: &str = include_str!("../../../weights.toml");

/// Components that a diffusers Stable Diffusion repo lists but ddim-edit never reads (the SD 1.x
/// safety checker alone is 1.2 GB).
pub const UNUSED_COMPONENTS: [&str; 3] = ["safety_checker", "feature_extractor", "image_encoder"];

/// The models of `weights.toml`.
#[derive(Debug, Deserialize)]
pub struct Catalog {
    #[serde(default)]
    pub models: BTreeMap<String, Entry>,
}

/// One `[models.NAME]` table.
#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    /// Hub repository id (`org/name`).
    pub repo: String,
    /// Branch, tag or commit.
    #[serde(default = "default_revision")]
    pub revision: String,
    /// The reduced-precision variant the repository also holds (`fp16`).
    #[serde(default)]
    pub variant: Option<String>,
    /// The files the pipeline reads, with plain (f32) weight names.
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub license: String,
    /// Approximate download size, for `--list`.
    #[serde(default)]
    pub size: Option<String>,
}

fn default_revision() -> String {
    "main".into()
}

impl Catalog {
    /// The compiled-in `weights.toml`.
    pub fn builtin() -> Result<Self> {
        Self::parse(WEIGHTS_TOML).context("parsing the built-in weights.toml")
    }

    /// A catalog in the `weights.toml` format.
    pub fn parse(text: &str) -> Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// The entry called `name`, or an error listing the known names.
    pub fn get(&self, name: &str) -> Result<&Entry> {
        self.models.get(name).with_context(|| {
            let names: Vec<&str> = self.models.keys().map(String::as_str).collect();
            format!(
                "unknown model {name:?}: weights.toml knows {} (or use --repo ORG/NAME)",
                names.join(", ")
            )
        })
    }
}

impl Entry {
    /// The files to fetch: `files`, with `x.safetensors` renamed `x.{variant}.safetensors` when
    /// a variant is asked for. Only the variant the entry declares is accepted.
    pub fn files_for(&self, name: &str, variant: Option<&str>) -> Result<Vec<String>> {
        let Some(v) = variant else {
            return Ok(self.files.clone());
        };
        if self.variant.as_deref() != Some(v) {
            bail!(
                "model {name} has no {v:?} variant in weights.toml (available: {})",
                self.variant.as_deref().unwrap_or("none")
            );
        }
        Ok(self
            .files
            .iter()
            .map(|f| match f.strip_suffix(".safetensors") {
                Some(stem) => format!("{stem}.{v}.safetensors"),
                None => f.clone(),
            })
            .collect())
    }
}

/// What a repository file is, by name.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    /// JSON/text configuration, tokenizer vocabulary or merges.
    Config,
    /// A safetensors weight file or shard index, with its variant (`None`: the plain weights).
    Weights(Option<String>),
    /// Anything else: pickled or other-framework weights, images, docs.
    Other,
}

fn classify(name: &str) -> Kind {
    if let Some(stem) = name.strip_suffix(".safetensors") {
        // `model`, `model.fp16`, `model-00001-of-00002`, `model.fp16-00001-of-00002`
        let variant = stem
            .split_once('.')
            .map(|(_, v)| v.split('-').next().unwrap_or(v).to_string());
        return Kind::Weights(variant);
    }
    if let Some((_, rest)) = name.split_once(".safetensors.index") {
        // `model.safetensors.index.json` or `model.safetensors.index.fp16.json`
        return match rest.strip_suffix(".json") {
            Some("") => Kind::Weights(None),
            Some(v) => Kind::Weights(Some(v.trim_start_matches('.').to_string())),
            None => Kind::Other,
        };
    }
    if name.contains(".index.") {
        return Kind::Other; // index of .bin / .msgpack shards
    }
    if name.ends_with(".json") || name.ends_with(".txt") {
        return Kind::Config;
    }
    Kind::Other
}

/// The components of a `model_index.json`: keys whose value is `[library, class]` with a library.
pub fn components(model_index: &serde_json::Value) -> Result<Vec<String>> {
    let obj = model_index
        .as_object()
        .context("model_index.json is not a JSON object")?;
    Ok(obj
        .iter()
        .filter(|(k, v)| {
            !k.starts_with('_')
                && v.as_array()
                    .and_then(|a| a.first())
                    .is_some_and(|lib| !lib.is_null())
        })
        .map(|(k, _)| k.clone())
        .collect())
}

/// The files of a diffusers repository to fetch, from its `model_index.json` and its file list
/// (`siblings`): `model_index.json`, then for each component except [`UNUSED_COMPONENTS`] its
/// configs and its safetensors weights of `variant` (falling back to the plain weights where a
/// component has no such variant, as diffusers does). Returns the files and notes for the user.
pub fn select_files(
    model_index: &serde_json::Value,
    siblings: &[String],
    variant: Option<&str>,
) -> Result<(Vec<String>, Vec<String>)> {
    let mut files = vec!["model_index.json".to_string()];
    let mut notes = Vec::new();
    for component in components(model_index)? {
        if UNUSED_COMPONENTS.contains(&component.as_str()) {
            notes.push(format!("skipping {component}/ (not used by ddim-edit)"));
            continue;
        }
        let prefix = format!("{component}/");
        let here: Vec<&str> = siblings
            .iter()
            .filter_map(|s| s.strip_prefix(&prefix).filter(|n| !n.contains('/')))
            .collect();
        if here.is_empty() {
            bail!(
                "model_index.json lists the component `{component}` but the repository has no {prefix} files"
            );
        }
        let kinds: Vec<(&str, Kind)> = here.iter().map(|n| (*n, classify(n))).collect();
        let weights_of = |v: Option<&str>| -> Vec<&str> {
            kinds
                .iter()
                .filter(|(_, k)| *k == Kind::Weights(v.map(String::from)))
                .map(|(n, _)| *n)
                .collect()
        };
        let mut weights = weights_of(variant);
        if weights.is_empty() && variant.is_some() {
            weights = weights_of(None);
            if !weights.is_empty() {
                notes.push(format!(
                    "{component}/ has no {} weights: fetching the plain ones",
                    variant.unwrap_or_default()
                ));
            }
        }
        let any_weights = kinds.iter().any(|(_, k)| matches!(k, Kind::Weights(_)));
        if weights.is_empty() && any_weights {
            let found: Vec<&str> = kinds
                .iter()
                .filter(|(_, k)| matches!(k, Kind::Weights(_)))
                .map(|(n, _)| *n)
                .collect();
            bail!(
                "{component}/ has no plain safetensors weights (found {}): pass --variant",
                found.join(", ")
            );
        }
        let pickled = here.iter().any(|n| {
            [".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".h5", ".onnx"]
                .iter()
                .any(|e| n.ends_with(e))
        });
        if weights.is_empty() && pickled {
            bail!(
                "{component}/ has weights only in formats ddim-edit does not read ({}); it reads .safetensors",
                here.join(", ")
            );
        }
        for (name, kind) in &kinds {
            if *kind == Kind::Config || weights.contains(name) {
                files.push(format!("{prefix}{name}"));
            }
        }
    }
    Ok((files, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_diffusers_file_names() {
        assert_eq!(classify("config.json"), Kind::Config);
        assert_eq!(classify("merges.txt"), Kind::Config);
        assert_eq!(classify("model.safetensors"), Kind::Weights(None));
        assert_eq!(
            classify("model.fp16.safetensors"),
            Kind::Weights(Some("fp16".into()))
        );
        assert_eq!(
            classify("m-00001-of-00002.safetensors"),
            Kind::Weights(None)
        );
        assert_eq!(
            classify("m.fp16-00001-of-00002.safetensors"),
            Kind::Weights(Some("fp16".into()))
        );
        assert_eq!(classify("m.safetensors.index.json"), Kind::Weights(None));
        assert_eq!(
            classify("m.safetensors.index.fp16.json"),
            Kind::Weights(Some("fp16".into()))
        );
        assert_eq!(classify("pytorch_model.bin.index.json"), Kind::Other);
        assert_eq!(classify("diffusion_pytorch_model.bin"), Kind::Other);
        assert_eq!(classify("v2-1_512-ema-pruned.ckpt"), Kind::Other);
    }

    #[test]
    fn selects_configs_and_safetensors_of_the_variant() {
        let index = serde_json::json!({
            "_class_name": "StableDiffusionPipeline",
            "unet": ["diffusers", "UNet2DConditionModel"],
            "scheduler": ["diffusers", "PNDMScheduler"],
            "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
            "requires_safety_checker": false,
            "image_encoder": [null, null]
        });
        let siblings: Vec<String> = [
            "model_index.json",
            "v1-5-pruned.ckpt",
            "scheduler/scheduler_config.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.bin",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "safety_checker/model.safetensors",
        ]
        .map(String::from)
        .to_vec();
        let (plain, notes) = select_files(&index, &siblings, None).unwrap();
        assert_eq!(
            plain,
            [
                "model_index.json",
                "scheduler/scheduler_config.json",
                "unet/config.json",
                "unet/diffusion_pytorch_model.safetensors"
            ]
        );
        assert!(notes[0].contains("safety_checker"));
        let (fp16, _) = select_files(&index, &siblings, Some("fp16")).unwrap();
        assert_eq!(fp16[3], "unet/diffusion_pytorch_model.fp16.safetensors");
    }

    #[test]
    fn pickled_only_weights_are_an_error() {
        let index = serde_json::json!({ "vae": ["diffusers", "AutoencoderKL"] });
        let siblings = vec![
            "vae/config.json".into(),
            "vae/diffusion_pytorch_model.bin".into(),
        ];
        let e = select_files(&index, &siblings, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("vae/") && e.contains(".bin"), "{e}");
    }

    #[test]
    fn builtin_catalog_names_the_default_model_and_variants() {
        let c = Catalog::builtin().unwrap();
        let e = c.get("sd-2-1-base").unwrap();
        let files = e.files_for("sd-2-1-base", Some("fp16")).unwrap();
        assert!(files.contains(&"unet/diffusion_pytorch_model.fp16.safetensors".to_string()));
        assert!(e.files_for("sd-2-1-base", Some("bf16")).is_err());
        assert!(
            c.get("sd-9")
                .unwrap_err()
                .to_string()
                .contains("sd-2-1-base")
        );
    }
}
