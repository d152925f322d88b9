//! `ddim-edit fetch`: download a model into the Hugging Face cache, where `--model NAME|ORG/NAME`
//! finds it offline — the same engine ([`model_source::fetch()`]) as `cargo xtask fetch` and as a
//! `--model` that is not cached yet.
//!
//! ```text
//! ddim-edit fetch sd-2-1-base [--variant fp16]           # a model of weights.toml
//! ddim-edit fetch --repo ORG/NAME [--revision R] [--variant fp16]
//! ddim-edit fetch --list                                 # known models, and which are cached
//! ```

use anyhow::Result;
use clap::Args;

/// `ddim-edit fetch` arguments.
#[derive(Args)]
#[command(
    after_help = "Files go to the Hugging Face cache (HF_HUB_CACHE, HF_HOME/hub or \
    ~/.cache/huggingface/hub); HF_ENDPOINT and HF_TOKEN are honoured."
)]
pub struct FetchCommand {
    #[command(flatten)]
    pub fetch: model_source::FetchArgs,
    /// More log output (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Runs `ddim-edit fetch …`; prints the list or the snapshot folder on stdout.
pub fn run(args: &FetchCommand) -> Result<()> {
    print!("{}", args.fetch.run()?);
    Ok(())
}
