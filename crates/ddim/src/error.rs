//! Errors of the scheduler crate.

use std::path::PathBuf;

/// Everything that can go wrong when configuring a DDIM schedule.
#[derive(Debug, thiserror::Error)]
pub enum DdimError {
    /// The scheduler config file could not be read.
    #[error("cannot read scheduler config {path:?}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The scheduler config is not valid JSON of the expected shape.
    #[error("invalid scheduler config {origin}: {message}")]
    Parse { origin: String, message: String },
    /// A string field names something this crate does not implement.
    #[error("unsupported {field} {value:?} in scheduler config (supported: {supported})")]
    Unsupported {
        field: &'static str,
        value: String,
        supported: &'static str,
    },
    /// A numeric field is out of its valid range.
    #[error("invalid scheduler config: {0}")]
    Invalid(String),
    /// The number of inference steps is 0 or larger than the training schedule.
    #[error(
        "invalid number of steps {steps}: must be between 1 and {max_steps}, the most this schedule \
         takes (num_train_timesteps {num_train_timesteps})"
    )]
    Steps {
        steps: usize,
        /// [`DdimSchedule::max_steps`](crate::DdimSchedule::max_steps).
        max_steps: usize,
        num_train_timesteps: usize,
    },
    /// The chosen spacing/offset pushes a timestep out of the training range.
    #[error(
        "{steps} steps with timestep_spacing {spacing} and steps_offset {offset} give timestep {timestep}, \
         outside the trained range 0..{num_train_timesteps}; the most steps this schedule takes is {max_steps}"
    )]
    TimestepOutOfRange {
        steps: usize,
        spacing: &'static str,
        offset: usize,
        timestep: i64,
        num_train_timesteps: usize,
        /// [`DdimSchedule::max_steps`](crate::DdimSchedule::max_steps).
        max_steps: usize,
    },
}

impl DdimError {
    /// The number of steps asked for, when that number is what is wrong: front ends name their
    /// own flag with it.
    pub fn bad_steps(&self) -> Option<usize> {
        match self {
            Self::Steps { steps, .. } | Self::TimestepOutOfRange { steps, .. } => Some(*steps),
            _ => None,
        }
    }
}

pub type Result<T, E = DdimError> = std::result::Result<T, E>;
