//! `AutoencoderKL` of diffusers: the image ↔ latent autoencoder of Stable Diffusion
//! (Rombach et al., arXiv 2112.10752, KL-regularised variant).
//!
//! `encode` returns the diagonal Gaussian posterior (mean and log-variance); inversion uses the mean.
//! `decode` maps latents (already divided by `scaling_factor`) back to images in [-1, 1].

pub mod config;
pub mod model;

pub use config::VaeConfig;
pub use model::{AutoencoderKL, Posterior};
