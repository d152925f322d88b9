//! `--model FILE.safetensors`: a single-file SD 1.x / 2.x checkpoint in the original LDM layout
//! ([`sd_models::single_file`]), with `--config`, `--prediction-type` and `--no-ema`. As
//! diffusers' `from_single_file`, an SD 2.x file is configured as SD 2.1 (768 px, v-prediction)
//! unless `--config` names another.

use std::path::Path;

use anyhow::{Context, Result, bail};
use inversion::{LoadOptions, Pipeline, PredictionType, SingleFileOptions};
use model_source::Progress;
use sd_models::single_file::{Family, Options, Prepared, SingleFile};

use crate::args::Common;

/// Whether `--model` names a checkpoint file: a `.safetensors` file, or a pickled checkpoint,
/// which the loader refuses with its own message. Other files get `model_source`'s error.
pub(crate) fn is_checkpoint(path: &Path) -> bool {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    path.is_file()
        && matches!(
            ext.as_deref(),
            Some("safetensors" | "sft" | "ckpt" | "pt" | "pth" | "bin")
        )
}

/// `--config`, `--prediction-type` and `--no-ema` with a model that is not a single file.
pub(crate) fn no_single_file_flags(common: &Common) -> Result<()> {
    let given: Vec<&str> = [
        ("--config", common.config.is_some()),
        ("--prediction-type", common.prediction_type.is_some()),
        ("--no-ema", common.no_ema),
    ]
    .into_iter()
    .filter_map(|(flag, set)| set.then_some(flag))
    .collect();
    if !given.is_empty() {
        bail!(
            "{} only apply to a single-file checkpoint (--model FILE.safetensors); --model {:?} is not a file",
            given.join(", "),
            common.model
        );
    }
    Ok(())
}

/// Loads `common.model`, a single file, with the config folder its flags name.
pub(crate) fn load(
    common: &Common,
    options: &LoadOptions,
    notes: &dyn Progress,
) -> Result<Pipeline> {
    let path = Path::new(&common.model);
    if common.variant.is_some() {
        bail!(
            "--variant picks a diffusers folder's weight files; it does not apply to the single file {path:?}"
        );
    }
    let file = SingleFile::open(path)?;
    let preset = file.family().default_config();
    let (config_dir, derive) =
        model_source::preset::single_file_config(common.config.as_deref(), preset)?;
    if common.config.is_none() && file.family() == Family::Sd2 && common.prediction_type.is_none() {
        notes.note(&format!(
            "{path:?}: a Stable Diffusion 2.x checkpoint, configured as sd-2-1 (768 px, v_prediction) \
             as diffusers does; for a 512 px base model pass --config sd-2-1-base"
        ));
    }
    let single = SingleFileOptions {
        config_dir,
        ema: !common.no_ema,
        derive,
        prediction_type: common.prediction_type.as_deref().map(|p| match p {
            "v_prediction" => PredictionType::VPrediction,
            _ => PredictionType::Epsilon,
        }),
    };
    let flags = Options {
        ema: single.ema,
        derive,
    };
    let prepared = Prepared::from_file(file, &single.config_dir, flags)
        .with_context(|| format!("with the configs of {:?}", single.config_dir))?;
    log::info!(
        "{path:?}: {} checkpoint, {} UNet weights, configs from {:?}",
        prepared.file.family().name(),
        if prepared.ema { "EMA" } else { "trained" },
        single.config_dir
    );
    let pipeline = Pipeline::load_prepared(&prepared, &single, options);
    if derive && pipeline.is_err() {
        let name = common.config.as_deref().unwrap_or(preset);
        return pipeline.with_context(|| {
            format!(
                "the file's shapes with {name}'s other settings (heads, groups, sizes) do not make a \
                 model; pass --config with the diffusers folder of its architecture"
            )
        });
    }
    Ok(pipeline?)
}
