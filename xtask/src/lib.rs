//! The library half of `cargo xtask`: the subcommand that integration tests drive directly
//! (`convert` on the fixture models). `main.rs` dispatches to it; `fetch` (a shell over the
//! `model-source` crate), `bench`, `eval-toy` and `fixtures` live in the binary only.

pub mod convert;
