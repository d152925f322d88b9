//! The arguments of a fetch, shared by `ddim-edit fetch` and `cargo xtask fetch`, and what they
//! run: one engine ([`crate::fetch()`]), one set of flags.

use crate::{Bars, Catalog, Hub, Request, list};

/// `fetch` arguments: `NAME | --repo ORG/NAME [--revision R] [--variant V] | --list`.
#[derive(clap::Args, Debug, Clone)]
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
}

impl FetchArgs {
    /// Lists the catalog, or fetches the model; returns what to print on stdout (the list, or the
    /// snapshot folder).
    pub fn run(&self) -> anyhow::Result<String> {
        let catalog = Catalog::builtin()?;
        let hub = Hub::from_env()?;
        if self.list {
            return Ok(list(&hub.cache, &catalog));
        }
        let request = Request::from_flags(
            &catalog,
            self.name.as_deref(),
            self.repo.as_deref(),
            self.revision.as_deref(),
            self.variant.as_deref(),
        )?;
        let snapshot = crate::fetch(&hub, &request, &Bars::new(self.quiet))?;
        Ok(format!("{}\n", snapshot.display()))
    }
}
