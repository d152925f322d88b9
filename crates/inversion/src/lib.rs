//! Editing real images with Stable Diffusion by DDIM inversion.
//!
//! [`Pipeline::load`] reads a diffusers folder and holds its models; its methods are the
//! primitives (prompt conditioning, one guided UNet evaluation, encode, decode). The algorithms are
//! free functions over `&Pipeline`, one module each in [`algorithms`]: [`edit`] = encode →
//! [`invert`] with the prompt that describes the image → [`sample`] from an intermediate step with
//! the edited prompt → decode; with [`EditOptions::attention`] the source and edited prompt are
//! sampled together under Prompt-to-Prompt's attention control ([`P2p`]), and
//! [`EditOptions::inversion`] selects negative-prompt or direct inversion ([`Inversion`]). Progress goes to a [`Progress`] observer; the library never prints
//! nor writes files (callers write [`Trajectory::to_bytes`] and the images).
//! DDIM: Song et al., arXiv 2010.02502; Stable Diffusion: Rombach et al., arXiv 2112.10752.
//! The scheduler hands out f64 coefficients (crate `ddim`); this crate applies them to tensors.

pub mod algorithms;
mod checks;
mod conditioning;
pub mod error;
pub mod image;
pub mod noise;
pub mod pipeline;
pub mod preview;
pub mod progress;
pub mod single_file;
pub mod trajectory;
pub mod words;

pub use algorithms::branches::{Inversion, branch_conditioning, sample_branches};
pub use algorithms::edit::{
    DEFAULT_GUIDANCE, DEFAULT_INVERSION_GUIDANCE, EditOptions, EditOutput, InversionKey,
    check_method, default_inversion, default_start_step, edit, edit_from, edit_latents,
    plain_start_step,
};
pub use algorithms::invert::{extend_inversion, invert, start_latents};
pub use algorithms::null_text::{NullEmbeddings, NullTextOptions, optimize_null_text};
pub use algorithms::p2p::{P2p, P2pOptions};
pub use algorithms::sample::sample;
pub use algorithms::{apply_step, check_start};
pub use ddim::PredictionType;
pub use error::{InversionError, Result};
pub use pipeline::{Conditioning, LoadOptions, Parts, Pipeline};
pub use preview::PreviewDecoder;
pub use progress::{NoProgress, Phase, Progress};
pub use single_file::SingleFileOptions;
pub use trajectory::{Trajectory, latents_bytes};
