//! Stable Diffusion models in Burn (in progress).
