//! Editing real images with Stable Diffusion by DDIM inversion.
//!
//! `Pipeline::load` reads a diffusers folder; `edit` = encode → `invert` with the prompt that
//! describes the image → `sample` from an intermediate step with the edited prompt → decode.
//! DDIM: Song et al., arXiv 2010.02502; Stable Diffusion: Rombach et al., arXiv 2112.10752.
//! The scheduler hands out f64 coefficients (crate `ddim`); this crate applies them to tensors.

pub mod algorithms;
pub mod error;
pub mod io;
pub mod pipeline;
pub mod progress;
pub mod trajectory;

pub use algorithms::{
    DEFAULT_GUIDANCE, DEFAULT_INVERSION_GUIDANCE, EditOptions, EditOutput, apply_step, check_start,
    default_start_step,
};
pub use error::{InversionError, Result};
pub use pipeline::{Conditioning, LoadOptions, Pipeline};
pub use progress::{NoProgress, Phase, Progress};
/// The model crate, for callers that need its device probe or model types directly.
pub use sd_models;
pub use trajectory::{Trajectory, latents_bytes};
