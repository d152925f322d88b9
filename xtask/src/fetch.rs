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
use model_source::{Bars, Catalog, Hub, Request, list};

/// `cargo xtask fetch` arguments.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Files go to the Hugging Face cache (HF_HUB_CACHE, HF_HOME/hub or \
    ~/.cache/huggingface/hub); HF_ENDPOINT and HF_TOKEN are honoured."
)]
pub struct Args {
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
    /// List the models of weights.toml, and which are cached.
    #[arg(long)]
    pub list: bool,
    /// No progress bars or notes.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs `cargo xtask fetch …`; prints the snapshot folder on stdout.
pub fn run(args: Args) -> Result<()> {
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
