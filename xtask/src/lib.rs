//! The library half of `cargo xtask`: the subcommands that integration tests drive directly
//! (`fetch` against a local stand-in for the hub, `convert` on the fixture models). `main.rs`
//! dispatches to them; `bench` and `fixtures` live in the binary only.

pub mod convert;
pub mod fetch;
