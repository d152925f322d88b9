//! Stable Diffusion's models in Burn, loaded from diffusers-layout folders.
//!
//! - [`clip`]: CLIP BPE tokenizer and `CLIPTextModel` (transformers).
//! - [`unet`]: `UNet2DConditionModel` (diffusers), the noise predictor.
//! - [`vae`]: `AutoencoderKL` (diffusers), image ↔ latent.
//!
//! Models are written once against Burn's device-agnostic `Tensor`; the backend is the `Device`
//! they are built on (CPU `flex`, wgpu or CUDA, as compiled in). Latent diffusion: Rombach et al.,
//! arXiv 2112.10752.

pub mod attention;
pub mod autocast;
pub mod clip;
pub mod config;
pub mod cpu;
pub mod device;
pub mod error;
pub mod layers;
pub mod resnet;
pub mod single_file;
pub mod weights;

pub use error::{ModelError, Result};
pub mod unet;
pub mod vae;
