//! The error type of the pipelines. Messages speak of the pipeline's own terms (steps, start
//! step, guidance); the command line maps the argument errors to its flag names.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum InversionError {
    #[error(transparent)]
    Model(#[from] sd_models::ModelError),
    #[error(transparent)]
    Schedule(#[from] ddim::DdimError),
    /// The model folder lacks a component or its `model_index.json` is unusable.
    #[error("model folder {dir:?}: {message}")]
    ModelDir { dir: PathBuf, message: String },
    /// Two components of a model folder do not fit together.
    #[error("{first:?} and {second:?} do not fit together: {message}")]
    Components {
        first: PathBuf,
        second: PathBuf,
        message: String,
    },
    /// An input image could not be read or decoded.
    #[error("cannot read image {origin}: {message}")]
    Image { origin: String, message: String },
    /// A requested image size does not fit the model's down-sampling.
    #[error(
        "size {width}x{height} is not a multiple of {multiple} in both directions (the model's down-sampling); nearest valid sizes: {suggestions}"
    )]
    Size {
        width: usize,
        height: usize,
        multiple: usize,
        suggestions: String,
    },
    /// A requested image size far beyond what the model was trained at.
    #[error(
        "size {width}x{height} is more than {factor}× the model's native {native} px on a side (at most {max}x{max}): the UNet's self-attention grows with the fourth power of the side, so this would run for a very long time on a lot of memory"
    )]
    TooLarge {
        width: usize,
        height: usize,
        native: usize,
        factor: usize,
        max: usize,
    },
    /// A schedule of zero steps.
    #[error("the number of steps must be at least 1")]
    NoSteps,
    /// A start step outside the schedule.
    #[error(
        "start step {start} must be smaller than the number of steps {steps} (steps 0..{} exist)",
        steps.saturating_sub(1)
    )]
    StartStep { start: usize, steps: usize },
    /// A guidance scale that is NaN or infinite.
    #[error("guidance {value} is not a finite number")]
    Guidance { value: f64 },
    /// A trajectory made with another number of steps.
    #[error("the trajectory was made with {found} steps, not {steps}")]
    TrajectorySteps { found: usize, steps: usize },
    /// A trajectory that does not fit the requested sampling otherwise.
    #[error("the trajectory {message}")]
    TrajectoryMismatch { message: String },
    /// A trajectory file is unusable.
    #[error("trajectory {path:?}: {message}")]
    Trajectory { path: PathBuf, message: String },
    /// The computation produced NaN or infinite values; `causes` names the likely ones.
    #[error("{stage} produced non-finite values (NaN/inf); {causes}")]
    NonFinite {
        stage: &'static str,
        causes: &'static str,
    },
    /// An editing option that does not fit the prompts or the other options.
    #[error("{flag} {message}")]
    EditOption { flag: &'static str, message: String },
    /// The progress observer asked the run to stop.
    #[error("cancelled")]
    Cancelled,
    /// Tensor data could not be read back from the device or serialised.
    #[error("cannot serialise {what}: {message}")]
    Serialize { what: &'static str, message: String },
}

pub type Result<T, E = InversionError> = std::result::Result<T, E>;
