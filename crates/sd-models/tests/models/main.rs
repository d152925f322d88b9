//! The integration tests of `sd-models`, in one binary (each test binary links all of Burn).
//!
//! - `parity`: component outputs against diffusers/transformers on the fixture models;
//! - `tokenizer`: token ids against transformers' `CLIPTokenizer`;
//! - `single_file`: LDM single-file checkpoints (key map, architecture from shapes, bad files);
//! - `weights`: strict weight loading;
//! - `manifests`: full-size parameter names and shapes, and the presets;
//! - `full_size`: one full-size UNet pass (ignored by default).

mod full_size;
mod manifests;
mod parity;
mod single_file;
mod tokenizer;
mod weights;
