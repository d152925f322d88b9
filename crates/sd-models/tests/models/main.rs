//! The integration tests of `sd-models`, in one binary (each test binary links all of Burn).
//!
//! - `parity`: component outputs against diffusers/transformers on the fixture models;
//! - `tokenizer`: token ids against transformers' `CLIPTokenizer`;
//! - `weights`: strict weight loading;
//! - `manifests`: full-size parameter names and shapes, and the presets;
//! - `full_size`: one full-size UNet pass (ignored by default).

mod full_size;
mod manifests;
mod parity;
mod tokenizer;
mod weights;
