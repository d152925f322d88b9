//! `cargo xtask fetch`: download a Stable Diffusion model into the Hugging Face cache, where the
//! CLI's `--model NAME|ORG/REPO` finds it offline. A thin shell over [`model_source::fetch()`],
//! as `ddim-edit fetch` is.
//!
//! ```text
//! cargo xtask fetch sd-2-1-base [--variant fp16]         # a model of weights.toml
//! cargo xtask fetch --repo ORG/NAME [--revision R] [--variant fp16]
//! cargo xtask fetch --list                               # known models, and which are cached
//! ```

use anyhow::Result;

/// `cargo xtask fetch` arguments: those of `ddim-edit fetch`.
pub type Args = model_source::FetchArgs;

/// Runs `cargo xtask fetch …`; prints the list or the snapshot folder on stdout.
pub fn run(args: Args) -> Result<()> {
    print!("{}", args.run()?);
    Ok(())
}
