//! Where ddim-edit's models come from, without touching Burn: the models known by name
//! (`weights.toml`, [`Catalog`]), what `--model` means ([`resolve`]: a folder, a Hugging Face repo
//! id or a catalog name in the local cache, or the toy model bundled in the binary), the Hugging Face
//! cache layout ([`cache`]), downloading into it ([`fetch()`]; [`resolve_or_fetch`] for a `--model`
//! that is not cached yet), the bundled toy model ([`toy`]), and atomic file writes.
//!
//! The CLI and `cargo xtask` both call this crate, so a model fetched by one is found by the
//! other, and Python's `huggingface_hub` shares the same cache.

pub mod atomic;
pub mod cache;
pub mod catalog;
pub mod error;
pub mod fetch;
mod fetch_args;
pub mod obtain;
pub mod preset;
pub mod progress;
pub mod resolve;
pub mod select;
pub mod toy;

pub use atomic::{write_all_atomic, write_atomic, write_atomic_with};
pub use cache::{
    cached_snapshot, hub_cache, hub_cache_from, is_commit_hash, is_safe_revision, repo_folder,
};
pub use catalog::{Catalog, Entry, WEIGHTS_TOML, list};
pub use error::{Error, Result};
pub use fetch::{Fetched, Hub, Request, fetch, fetch_async};
pub use fetch_args::FetchArgs;
pub use obtain::{is_offline, resolve_or_fetch, resolve_or_fetch_with};
pub use preset::PRESETS;
pub use progress::{Bars, NoProgress, Progress};
pub use resolve::{DEFAULT_MODEL, TOY, resolve, resolve_in};
pub use select::{UNUSED_COMPONENTS, select_files};
pub use toy::{toy_dir, unpack_toy};
