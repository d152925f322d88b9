//! The error type of the pipelines.

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
    /// Invalid combination of steps and start step, or other bad argument.
    #[error("{0}")]
    Argument(String),
    /// A trajectory file is unusable.
    #[error("trajectory {path:?}: {message}")]
    Trajectory { path: PathBuf, message: String },
    /// The computation produced NaN or infinite values (e.g. f16 overflow).
    #[error(
        "{stage} produced non-finite values (NaN/inf); with f16/bf16 try f32 (this is the usual cause of black images)"
    )]
    NonFinite { stage: &'static str },
    #[error("cannot write {path:?}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = InversionError> = std::result::Result<T, E>;
