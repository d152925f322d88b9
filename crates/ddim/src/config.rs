//! `SchedulerConfig`: the fields of a diffusers `scheduler_config.json` that define a DDIM schedule.
//!
//! Stable Diffusion checkpoints ship a `PNDMScheduler` or `DDIMScheduler` config; diffusers builds a
//! `DDIMScheduler` from either with `DDIMScheduler.from_config`, which reads the keys below and takes
//! `DDIMScheduler`'s defaults for the missing ones. Unknown keys (`skip_prk_steps`, `_class_name`, …) are
//! ignored exactly as diffusers ignores them.

use std::path::Path;

use serde::Deserialize;

use crate::error::{DdimError, Result};

/// How the betas of the training noise schedule are laid out.
#[derive(Debug, Clone, PartialEq)]
pub enum BetaSchedule {
    /// `linear`: betas evenly spaced from `beta_start` to `beta_end`.
    Linear,
    /// `scaled_linear`: square roots evenly spaced, then squared (Stable Diffusion).
    ScaledLinear,
    /// `squaredcos_cap_v2`: the cosine schedule of Nichol & Dhariwal (arXiv 2102.09672), betas capped at 0.999.
    SquaredCosCapV2,
    /// `trained_betas`: betas given explicitly in the config.
    Trained(Vec<f64>),
}

/// How inference timesteps are picked from the training range (diffusers' `timestep_spacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

impl TimestepSpacing {
    pub fn name(self) -> &'static str {
        match self {
            Self::Leading => "leading",
            Self::Trailing => "trailing",
            Self::Linspace => "linspace",
        }
    }
}

/// What the denoising model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionType {
    /// The added noise ε.
    Epsilon,
    /// The velocity v = √ᾱ·ε − √(1−ᾱ)·x₀ (Salimans & Ho, arXiv 2202.00512; SD 2.x at 768 px).
    VPrediction,
    /// The clean sample x₀.
    Sample,
}

/// A parsed DDIM scheduler configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    pub set_alpha_to_one: bool,
    pub prediction_type: PredictionType,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
}

impl Default for SchedulerConfig {
    /// `DDIMScheduler()`'s defaults.
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
            set_alpha_to_one: true,
            prediction_type: PredictionType::Epsilon,
            clip_sample: true,
            clip_sample_range: 1.0,
        }
    }
}

/// The raw JSON shape; every field optional so that diffusers' defaults apply.
#[derive(Deserialize)]
struct RawConfig {
    num_train_timesteps: Option<usize>,
    beta_start: Option<f64>,
    beta_end: Option<f64>,
    beta_schedule: Option<String>,
    trained_betas: Option<Vec<f64>>,
    timestep_spacing: Option<String>,
    steps_offset: Option<usize>,
    set_alpha_to_one: Option<bool>,
    prediction_type: Option<String>,
    clip_sample: Option<bool>,
    clip_sample_range: Option<f64>,
    thresholding: Option<bool>,
    rescale_betas_zero_snr: Option<bool>,
}

impl SchedulerConfig {
    /// The schedule of Stable Diffusion 1.x/2.x (`scaled_linear` 0.00085–0.012, `leading`, offset 1).
    pub fn stable_diffusion(prediction_type: PredictionType) -> Self {
        Self {
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            steps_offset: 1,
            set_alpha_to_one: false,
            prediction_type,
            clip_sample: false,
            ..Self::default()
        }
    }

    /// Parses a `scheduler_config.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| DdimError::Io {
            path: path.to_path_buf(),
            source,
        };
        // A regular file of at most 16 MiB: a device or FIFO would be read until memory ran out.
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() || meta.len() > 16 << 20 {
            return Err(io(std::io::Error::other(
                "not a regular file of at most 16 MiB",
            )));
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::from_json_str(&text).map_err(|e| match e {
            DdimError::Parse { message, .. } => DdimError::Parse {
                origin: format!("{path:?}"),
                message,
            },
            other => other,
        })
    }

    /// Parses the text of a `scheduler_config.json`.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| DdimError::Parse {
            origin: "(string)".into(),
            message: e.to_string(),
        })?;
        Self::from_raw(raw)
    }

    /// Builds a config from an already parsed JSON value (e.g. a field of a larger document).
    pub fn from_json_value(value: serde_json::Value) -> Result<Self> {
        let raw: RawConfig = serde_json::from_value(value).map_err(|e| DdimError::Parse {
            origin: "(value)".into(),
            message: e.to_string(),
        })?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawConfig) -> Result<Self> {
        let d = Self::default();
        for (field, set) in [
            ("thresholding", raw.thresholding),
            ("rescale_betas_zero_snr", raw.rescale_betas_zero_snr),
        ] {
            if set == Some(true) {
                return Err(DdimError::Unsupported {
                    field,
                    value: "true".into(),
                    supported: "false",
                });
            }
        }
        let num_train_timesteps = raw.num_train_timesteps.unwrap_or(d.num_train_timesteps);
        if num_train_timesteps == 0 || num_train_timesteps > MAX_TRAIN_TIMESTEPS {
            return Err(DdimError::Invalid(format!(
                "num_train_timesteps must lie in 1..={MAX_TRAIN_TIMESTEPS}, found {num_train_timesteps}"
            )));
        }
        let beta_schedule = beta_schedule(
            raw.trained_betas,
            raw.beta_schedule.as_deref(),
            num_train_timesteps,
        )?;
        let timestep_spacing = match raw.timestep_spacing.as_deref().unwrap_or("leading") {
            "leading" => TimestepSpacing::Leading,
            "trailing" => TimestepSpacing::Trailing,
            "linspace" => TimestepSpacing::Linspace,
            other => {
                return Err(DdimError::Unsupported {
                    field: "timestep_spacing",
                    value: other.into(),
                    supported: "leading, trailing, linspace",
                });
            }
        };
        let prediction_type = match raw.prediction_type.as_deref().unwrap_or("epsilon") {
            "epsilon" => PredictionType::Epsilon,
            "v_prediction" => PredictionType::VPrediction,
            "sample" => PredictionType::Sample,
            other => {
                return Err(DdimError::Unsupported {
                    field: "prediction_type",
                    value: other.into(),
                    supported: "epsilon, v_prediction, sample",
                });
            }
        };
        let clip_sample_range = raw.clip_sample_range.unwrap_or(d.clip_sample_range);
        if clip_sample_range.is_nan() || clip_sample_range <= 0.0 {
            return Err(DdimError::Invalid(format!(
                "clip_sample_range must be > 0, found {clip_sample_range}"
            )));
        }
        Ok(Self {
            num_train_timesteps,
            beta_start: raw.beta_start.unwrap_or(d.beta_start),
            beta_end: raw.beta_end.unwrap_or(d.beta_end),
            beta_schedule,
            timestep_spacing,
            steps_offset: raw.steps_offset.unwrap_or(d.steps_offset),
            set_alpha_to_one: raw.set_alpha_to_one.unwrap_or(d.set_alpha_to_one),
            prediction_type,
            clip_sample: raw.clip_sample.unwrap_or(d.clip_sample),
            clip_sample_range,
        })
    }
}

/// The largest `num_train_timesteps` accepted: Stable Diffusion trains with 1000; the bound keeps
/// a corrupt config from sizing the schedule's tables.
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// `trained_betas` when given (one value in [0, 1) per training timestep), else the named schedule.
fn beta_schedule(
    trained: Option<Vec<f64>>,
    name: Option<&str>,
    num_train_timesteps: usize,
) -> Result<BetaSchedule> {
    if let Some(betas) = trained {
        if betas.len() != num_train_timesteps {
            return Err(DdimError::Invalid(format!(
                "trained_betas has {} values but num_train_timesteps is {num_train_timesteps}",
                betas.len()
            )));
        }
        if let Some(b) = betas.iter().find(|b| !(0.0..1.0).contains(*b)) {
            return Err(DdimError::Invalid(format!(
                "trained_betas must lie in [0, 1), found {b}"
            )));
        }
        return Ok(BetaSchedule::Trained(betas));
    }
    match name.unwrap_or("linear") {
        "linear" => Ok(BetaSchedule::Linear),
        "scaled_linear" => Ok(BetaSchedule::ScaledLinear),
        "squaredcos_cap_v2" => Ok(BetaSchedule::SquaredCosCapV2),
        other => Err(DdimError::Unsupported {
            field: "beta_schedule",
            value: other.into(),
            supported: "linear, scaled_linear, squaredcos_cap_v2 or trained_betas",
        }),
    }
}
