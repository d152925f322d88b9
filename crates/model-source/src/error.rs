//! The errors of catalog look-ups, `--model` resolution, file selection and atomic writes. The
//! fetch engine ([`crate::fetch`]) reports network and cache failures as `anyhow` chains naming
//! the file and repository instead: they are many, and only ever shown to a person.

use std::path::PathBuf;

/// What went wrong finding or writing a model source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("parsing {origin}")]
    Catalog {
        origin: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("unknown model {name:?}: weights.toml knows {known} (or use --repo ORG/NAME)")]
    UnknownModel { name: String, known: String },
    #[error("model {name} has no {variant:?} variant in weights.toml (available: {available})")]
    NoVariant {
        name: String,
        variant: String,
        available: String,
    },
    #[error(
        "--model toy: cannot locate the user's data folder to unpack the bundled toy model into \
         (no HOME or XDG_DATA_HOME)"
    )]
    NoDataDir,
    #[error(
        "--model {model:?} is neither a folder, a Hugging Face repo id (org/name) nor a known \
         model name ({known}, {toy})",
        toy = crate::TOY
    )]
    UnknownSource { model: String, known: String },
    #[error(
        "--config {name:?} is neither a folder, a cached model nor a preset ({known}): it names the \
         configs of a single-file checkpoint"
    )]
    UnknownConfig { name: String, known: String },
    #[error(
        "--model {path:?} is a file, not a model: expected a diffusers folder (with model_index.json), a single-file checkpoint (*.safetensors), a Hugging Face repo id or a model name"
    )]
    NotAFolder { path: PathBuf },
    #[error("cannot locate the Hugging Face cache (no HOME, HF_HOME or HF_HUB_CACHE)")]
    NoCache,
    #[error(
        "model {model:?} ({repo}) is not in the Hugging Face cache at {cache:?}; download it with `{fetch}`{note}"
    )]
    NotCached {
        model: String,
        repo: String,
        cache: PathBuf,
        /// The command that downloads it.
        fetch: String,
        /// More on where the model is now (empty, or starting with a separator).
        note: String,
    },
    #[error("model_index.json is not a JSON object")]
    IndexNotAnObject,
    #[error(
        "model_index.json lists the component `{component}` but the repository has no {component}/ files"
    )]
    ComponentWithoutFiles { component: String },
    #[error("{component}/ has no plain safetensors weights (found {found}): pass --variant")]
    NoPlainWeights { component: String, found: String },
    #[error(
        "{component}/ has weights only in formats ddim-edit does not read ({files}); it reads .safetensors"
    )]
    UnreadableWeights { component: String, files: String },
    #[error("cannot write {path:?}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
