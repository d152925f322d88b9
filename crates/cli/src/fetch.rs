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
use model_source::{Bars, Catalog, Hub, Request, list};

/// `ddim-edit fetch` arguments.
#[derive(Args)]
#[command(
    after_help = "Files go to the Hugging Face cache (HF_HUB_CACHE, HF_HOME/hub or \
    ~/.cache/huggingface/hub); HF_ENDPOINT and HF_TOKEN are honoured."
)]
pub struct FetchArgs {
    /// A model of weights.toml (see --list).
    #[arg(required_unless_present_any = ["repo", "list"], conflicts_with = "repo")]
    pub name: Option<String>,
    /// Any diffusers repository on the hub instead of a NAME: its model_index.json chooses the
    /// files.
    #[arg(long, value_name = "ORG/NAME")]
    pub repo: Option<String>,
    /// Branch, tag or commit (default: the commit weights.toml pins for NAME, main for --repo).
    #[arg(long, value_name = "R")]
    pub revision: Option<String>,
    /// Weight file variant, e.g. fp16 for `*.fp16.safetensors`.
    #[arg(long)]
    pub variant: Option<String>,
    /// List the models of weights.toml, the source each resolves to, and which are cached.
    #[arg(long)]
    pub list: bool,
    /// No progress bars or notes.
    #[arg(short, long)]
    pub quiet: bool,
    /// More log output (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Runs `ddim-edit fetch …`; prints the snapshot folder on stdout.
pub fn run(args: &FetchArgs) -> Result<()> {
    let catalog = Catalog::builtin()?;
    let hub = Hub::from_env()?;
    if args.list {
        print!("{}", list(&hub.cache, &catalog));
        return Ok(());
    }
    let request = Request::from_flags(
        &catalog,
        args.name.as_deref(),
        args.repo.as_deref(),
        args.revision.as_deref(),
        args.variant.as_deref(),
    )?;
    let snapshot = model_source::fetch(&hub, &request, &Bars::new(args.quiet))?;
    println!("{}", snapshot.display());
    Ok(())
}
