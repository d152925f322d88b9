//! `AutoencoderKL` of diffusers: the image ↔ latent autoencoder of Stable Diffusion
//! (Rombach et al., arXiv 2112.10752, KL-regularised variant).
//!
//! `encode` returns the diagonal Gaussian posterior (mean and log-variance); inversion uses the mean.
//! `decode` maps latents (already divided by `scaling_factor`) back to images in [-1, 1].
//! [`AutoencoderTiny`] (TAESD) is the small distilled autoencoder of the same latent space, for
//! fast previews.

pub mod config;
pub mod model;
pub mod tiny;
pub mod tiny_config;

pub use config::VaeConfig;
pub use model::{AutoencoderKL, Posterior};
pub use tiny::AutoencoderTiny;
pub use tiny_config::AutoencoderTinyConfig;
