//! The error type of `sd-models`: every failure names the file, key or field it is about.

use std::path::PathBuf;

/// Errors raised while reading configs, tokenizers and weights, or building models.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("cannot read {path:?}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file the model needs is absent.
    #[error("missing {what}: {path:?} does not exist")]
    MissingFile { path: PathBuf, what: String },
    /// A JSON config is malformed or has an invalid value.
    #[error("invalid config {path:?}: {message}")]
    Config { path: PathBuf, message: String },
    /// The config asks for a block or option this crate does not implement.
    #[error("unsupported {what} {name:?} in {path:?} (supported: {supported})")]
    Unsupported {
        path: PathBuf,
        what: &'static str,
        name: String,
        supported: &'static str,
    },
    /// A config number that sizes the model is above this crate's limit (`sd_models::config`).
    #[error("{path:?}: {field} = {value} is over the limit of {max}")]
    OutOfRange {
        path: PathBuf,
        field: String,
        value: usize,
        max: usize,
    },
    /// The tokenizer files could not be turned into a tokenizer.
    #[error("invalid tokenizer in {path:?}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    /// A safetensors file is truncated or its header is corrupt.
    #[error("corrupt safetensors file {path:?}: {message}")]
    CorruptWeights { path: PathBuf, message: String },
    /// A weight the model needs is not in the file.
    #[error("{path:?} lacks weight {key:?}{more}")]
    MissingTensor {
        path: PathBuf,
        key: String,
        /// ", and N more" when several are missing.
        more: String,
    },
    /// The file holds a weight that no parameter of the model takes.
    #[error("{path:?} has unexpected weight {key:?}{more} (not a parameter of this model)")]
    UnexpectedTensor {
        path: PathBuf,
        key: String,
        more: String,
    },
    /// A weight has the wrong shape for the configured model.
    #[error("{path:?}: weight {key:?} has shape {found:?}, the config expects {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A weight has a dtype that cannot be used as a float parameter.
    #[error("{path:?}: weight {key:?} has dtype {dtype}, expected F32, F16 or BF16")]
    BadDtype {
        path: PathBuf,
        key: String,
        dtype: String,
    },
    /// An input tensor does not have the shape a model needs.
    #[error("{what}: expected {expected}, got {found:?}")]
    InputShape {
        what: &'static str,
        expected: String,
        found: Vec<usize>,
    },
    /// A pickled PyTorch checkpoint: unpickling it would run the code it holds.
    #[error(
        "{path:?} is a pickled PyTorch checkpoint ({kind}): loading one runs whatever code it holds, so it is not read. \
         Convert it to safetensors where you trust it, e.g. `python -c \"import torch, safetensors.torch as st; \
         sd = torch.load('{stem}.ckpt', map_location='cpu', weights_only=True); sd = sd.get('state_dict', sd); \
         st.save_file({{k: v.contiguous() for k, v in sd.items() if isinstance(v, torch.Tensor)}}, '{stem}.safetensors')\"` \
         (weights_only=True refuses to run code), then pass the .safetensors file"
    )]
    PickledCheckpoint {
        path: PathBuf,
        kind: &'static str,
        stem: String,
    },
    /// A single-file checkpoint of a model family this crate does not run.
    #[error(
        "{path:?} is {kind} checkpoint, which is not supported yet (supported: Stable Diffusion 1.x and 2.x text-to-image)"
    )]
    UnsupportedCheckpoint { path: PathBuf, kind: String },
    /// A single-file checkpoint whose tensors do not form a Stable Diffusion model.
    #[error("single-file checkpoint {path:?}: {message}")]
    SingleFile { path: PathBuf, message: String },
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn single_file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::SingleFile {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Config {
            path: path.into(),
            message: message.into(),
        }
    }
}
