//! [`Pipeline::load_single_file`]: a Stable Diffusion checkpoint in the original LDM single-file
//! layout ([`sd_models::single_file`]), with its scheduler, tokenizer and component configs from
//! a diffusers folder, as diffusers' `StableDiffusionPipeline.from_single_file(file, config=…)`.

use std::path::{Path, PathBuf};

use burn::tensor::DType;
use ddim::{DdimSchedule, PredictionType, SchedulerConfig};
use sd_models::clip::{ClipTextConfig, ClipTextModel, ClipTokenizer};
use sd_models::single_file::{Options, Part, Prepared};
use sd_models::unet::{UNet2DConditionModel, UNetConfig};
use sd_models::vae::{AutoencoderKL, VaeConfig};
use sd_models::weights;

use crate::error::Result;
use crate::pipeline::{LoadOptions, Parts, Pipeline};

/// How to read a single-file checkpoint.
#[derive(Debug, Clone)]
pub struct SingleFileOptions {
    /// A diffusers folder with `scheduler/`, `tokenizer/` and the components' `config.json`
    /// (weights, if any, are not read).
    pub config_dir: PathBuf,
    /// Read the UNet's EMA copy where the file has one.
    pub ema: bool,
    /// Read the shape-given config fields off the file (for the family's published configs; off
    /// for a folder the user names).
    pub derive: bool,
    /// Overrides the scheduler config's `prediction_type`.
    pub prediction_type: Option<PredictionType>,
}

impl Pipeline {
    /// Loads the checkpoint `file` (see [`SingleFileOptions`]); `options.variant` does not apply.
    pub fn load_single_file(
        file: &Path,
        single: &SingleFileOptions,
        options: &LoadOptions,
    ) -> Result<Self> {
        let flags = Options {
            ema: single.ema,
            derive: single.derive,
        };
        let prepared = Prepared::new(file, &single.config_dir, flags)?;
        Self::load_prepared(&prepared, single, options)
    }

    /// [`Pipeline::load_single_file`] of a planned checkpoint.
    pub fn load_prepared(
        prepared: &Prepared,
        single: &SingleFileOptions,
        options: &LoadOptions,
    ) -> Result<Self> {
        let dir = &single.config_dir;
        let device = &options.device;
        let mut scheduler_config =
            SchedulerConfig::from_file(dir.join("scheduler/scheduler_config.json"))?;
        if let Some(p) = single.prediction_type {
            scheduler_config.prediction_type = p;
        }
        let tokenizer = ClipTokenizer::from_dir(&dir.join("tokenizer"))?;
        let config_text = |part: Part| prepared.component(part).config.to_string();

        let name = prepared.name(Part::TextEncoder);
        let config = ClipTextConfig::from_json_str(&config_text(Part::TextEncoder), &name)?;
        let text_encoder = weights::load_bytes(
            ClipTextModel::new(&config, device),
            prepared.weights(Part::TextEncoder)?,
            &name,
            options.dtype,
        )?;

        let name = prepared.name(Part::Unet);
        let unet_config = UNetConfig::from_json_str(&config_text(Part::Unet), &name)?;
        let unet = weights::load_bytes(
            UNet2DConditionModel::new(&unet_config, &name, device)?,
            prepared.weights(Part::Unet)?,
            &name,
            options.dtype,
        )?;

        let name = prepared.name(Part::Vae);
        let vae_config = VaeConfig::from_json_str(&config_text(Part::Vae), &name)?;
        let vae = weights::load_bytes(
            AutoencoderKL::new(&vae_config, device),
            prepared.weights(Part::Vae)?,
            &name,
            DType::F32,
        )?;
        Self::from_parts(Parts {
            dir: dir.clone(),
            tokenizer,
            text_encoder,
            unet,
            unet_config,
            vae,
            vae_config,
            schedule: DdimSchedule::new(scheduler_config)?,
            device: device.clone(),
            dtype: options.dtype,
        })
    }
}
