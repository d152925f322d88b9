//! What to fetch of a diffusers repository that `weights.toml` does not list: the files its
//! `model_index.json` components need — configs, tokenizer files and the `*.safetensors` weights
//! (of the asked variant), never `.ckpt`/`.bin`/`.msgpack`/`.onnx`. The selection follows
//! diffusers' `DiffusionPipeline.download` (variant file names `model.fp16.safetensors`,
//! `model.fp16-00001-of-00002.safetensors`, `model.safetensors.index.fp16.json`).

use crate::error::{Error, Result};

/// Components that a diffusers Stable Diffusion repo lists but ddim-edit never reads (the SD 1.x
/// safety checker alone is 1.2 GB).
pub const UNUSED_COMPONENTS: [&str; 3] = ["safety_checker", "feature_extractor", "image_encoder"];

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
    let obj = model_index.as_object().ok_or(Error::IndexNotAnObject)?;
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
            return Err(Error::ComponentWithoutFiles { component });
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
            return Err(Error::NoPlainWeights {
                component,
                found: found.join(", "),
            });
        }
        let pickled = here.iter().any(|n| {
            [".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".h5", ".onnx"]
                .iter()
                .any(|e| n.ends_with(e))
        });
        if weights.is_empty() && pickled {
            return Err(Error::UnreadableWeights {
                component,
                files: here.join(", "),
            });
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
}
