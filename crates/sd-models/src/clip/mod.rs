//! The text side of Stable Diffusion: CLIP's BPE tokenizer and `CLIPTextModel`.
//!
//! Mirrors transformers' `CLIPTextModel` (Radford et al., arXiv 2103.00020): token + position
//! embeddings, pre-norm transformer layers with causal self-attention, final layer norm. SD 1.x uses
//! OpenAI's ViT-L/14 text tower (quick_gelu); SD 2.x uses OpenCLIP-H's, cut to 23 of its 24 layers
//! (exact gelu) — the "penultimate layer" is simply a 23-layer config here.

pub mod config;
pub mod model;
pub mod tokenizer;

pub use config::{ClipTextConfig, HiddenAct};
pub use model::ClipTextModel;
pub use tokenizer::{ClipTokenizer, TokenizedPrompt};
