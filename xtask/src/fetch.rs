//! `cargo xtask fetch`: download a Stable Diffusion model into the Hugging Face cache, where the
//! CLI's `--model NAME|ORG/REPO` finds it offline (and Python tools share the same copy).
//!
//! ```text
//! cargo xtask fetch sd-2-1-base [--variant fp16]         # a model of weights.toml
//! cargo xtask fetch --repo ORG/NAME [--revision R] [--variant fp16]
//! cargo xtask fetch --list                               # known models, and which are cached
//! ```
//!
//! Built on the `hf-hub` crate (the Rust counterpart of `huggingface_hub`): `HF_ENDPOINT`,
//! `HF_TOKEN` (or `HF_TOKEN_PATH`, `HF_HOME/token`) and the cache location (`HF_HUB_CACHE`, else
//! `HF_HOME/hub`, else `~/.cache/huggingface/hub`, as `inversion::hub` reads it) are honoured.
//! `--repo` reads the repository's `model_index.json`, like diffusers' `DiffusionPipeline.download`,
//! and fetches each component's configs and `*.safetensors` weights only. A cut transfer is
//! resumed with a `Range` request, LFS files are checked against the SHA-256 the hub reports, and
//! `refs/{revision}` is written only once every file is in place. See `fetch/transfer.rs`.

mod catalog;
mod transfer;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use hf_hub::{HFClient, HFError, split_id};
use inversion::hub::{cached_snapshot, hub_cache, repo_folder};

pub use catalog::{Catalog, Entry, UNUSED_COMPONENTS, select_files};
pub use transfer::Fetched;

const USAGE: &str = "usage: cargo xtask fetch NAME [--variant fp16] [-q]
       cargo xtask fetch --repo ORG/NAME [--revision R] [--variant fp16] [-q]
       cargo xtask fetch --list
NAME is a model of weights.toml (see --list). Files go to the Hugging Face cache
(HF_HUB_CACHE, HF_HOME/hub or ~/.cache/huggingface/hub); HF_ENDPOINT and HF_TOKEN are honoured.";

/// Where models come from and go to.
#[derive(Debug, Clone)]
pub struct Hub {
    /// Hub base URL, without a trailing `/`.
    pub endpoint: String,
    /// The hub cache folder (holding `models--org--name/`).
    pub cache: PathBuf,
    pub token: Option<String>,
    /// No progress bars or notes on stderr.
    pub quiet: bool,
}

impl Hub {
    /// The endpoint, cache and token the environment gives, as `huggingface_hub` reads them.
    pub fn from_env() -> Result<Self> {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "https://huggingface.co".into());
        Ok(Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            cache: hub_cache().context(
                "cannot locate the Hugging Face cache (no HOME, HF_HOME or HF_HUB_CACHE)",
            )?,
            token: token_from_env(),
            quiet: false,
        })
    }
}

/// `HF_TOKEN`, else the file at `HF_TOKEN_PATH`, else `HF_HOME/token` (what `huggingface-cli
/// login` writes); none when `HF_HUB_DISABLE_IMPLICIT_TOKEN` is set.
fn token_from_env() -> Option<String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if var("HF_HUB_DISABLE_IMPLICIT_TOKEN").is_some() {
        return None;
    }
    let read = |p: PathBuf| {
        std::fs::read_to_string(p)
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    };
    let home = var("HF_HOME")
        .map(PathBuf::from)
        .or_else(|| var("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("huggingface")))
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface")));
    var("HF_TOKEN")
        .or_else(|| var("HF_TOKEN_PATH").and_then(|p| read(PathBuf::from(p))))
        .or_else(|| home.and_then(|h| read(h.join("token"))))
}

/// What to download.
#[derive(Debug, Clone)]
pub struct Request {
    /// `org/name`.
    pub repo: String,
    /// Branch, tag or commit.
    pub revision: String,
    /// Weight file variant (`fp16`).
    pub variant: Option<String>,
    /// The exact files (a `weights.toml` entry); `None`: chosen from `model_index.json`.
    pub files: Option<Vec<String>>,
}

impl Request {
    /// The model `name` of the catalog.
    pub fn named(catalog: &Catalog, name: &str, variant: Option<&str>) -> Result<Self> {
        let entry = catalog.get(name)?;
        Ok(Self {
            repo: entry.repo.clone(),
            revision: entry.revision.clone(),
            variant: variant.map(String::from),
            files: Some(entry.files_for(name, variant)?),
        })
    }
}

/// Fetches `request` into `hub.cache` and returns its snapshot folder.
pub fn fetch(hub: &Hub, request: &Request) -> Result<PathBuf> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(fetch_async(hub, request))
}

/// [`fetch`], inside a tokio runtime.
pub async fn fetch_async(hub: &Hub, request: &Request) -> Result<PathBuf> {
    let repo_id = request.repo.as_str();
    let (owner, name) = split_id(repo_id);
    if owner.is_empty() || name.is_empty() || name.contains('/') {
        bail!("{repo_id:?} is not a repository id of the form ORG/NAME");
    }
    let mut builder = HFClient::builder()
        .endpoint(&hub.endpoint)
        .cache_dir(&hub.cache);
    if let Some(token) = &hub.token {
        builder = builder.token(token);
    }
    let client = builder
        .build()
        .with_context(|| format!("hub client for {}", hub.endpoint))?;
    let repo = client.model(owner, name);
    let revision = &request.revision;
    let info = repo.info().revision(revision.clone()).send().await.map_err(|e| match e {
        HFError::RepoNotFound { .. } => anyhow::anyhow!(
            "repository {repo_id} not found on {} (a private or gated repository needs HF_TOKEN)",
            hub.endpoint
        ),
        HFError::RevisionNotFound { .. } => {
            anyhow::anyhow!("revision {revision:?} not found in {repo_id}")
        }
        e => anyhow::Error::new(e).context(format!("reading {repo_id}@{revision} from {}", hub.endpoint)),
    })?;
    let commit = info
        .sha
        .with_context(|| format!("the hub gave no commit for {repo_id}@{revision}"))?;
    let siblings: Vec<String> = info
        .siblings
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.rfilename)
        .collect();
    let session = transfer::Session {
        endpoint: hub.endpoint.clone(),
        token: hub.token.clone(),
        repo_id: repo_id.to_string(),
        commit: commit.clone(),
        repo,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the HTTP client")?,
        repo_dir: repo_folder(&hub.cache, repo_id),
        quiet: hub.quiet,
    };
    let note = |s: &str| {
        if !hub.quiet {
            eprintln!("{s}");
        }
    };
    let mut index_fetched = None;
    let files = match &request.files {
        Some(files) => {
            let missing: Vec<&str> = files
                .iter()
                .filter(|f| !siblings.is_empty() && !siblings.contains(f))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                bail!("{repo_id}@{revision} has no {}", missing.join(", "));
            }
            files.clone()
        }
        None => {
            index_fetched = Some(fetch_file(&session, "model_index.json").await?);
            let index = session.snapshot().join("model_index.json");
            let text =
                std::fs::read_to_string(&index).with_context(|| format!("reading {index:?}"))?;
            let json = serde_json::from_str(&text)
                .with_context(|| format!("model_index.json of {repo_id} is not valid JSON"))?;
            let (files, notes) = select_files(&json, &siblings, request.variant.as_deref())
                .with_context(|| format!("choosing the files of {repo_id}"))?;
            for n in &notes {
                note(n);
            }
            files
        }
    };
    let (mut downloaded, mut bytes) = (0, 0);
    for file in &files {
        let fetched = match index_fetched.take().filter(|_| file == "model_index.json") {
            Some(f) => f,
            None => fetch_file(&session, file).await?,
        };
        if let Fetched::Downloaded { bytes: b, .. } = fetched {
            downloaded += 1;
            bytes += b;
        }
    }
    if revision != &commit {
        let reference = session.repo_dir.join("refs").join(revision);
        if let Some(parent) = reference.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {parent:?}"))?;
        }
        std::fs::write(&reference, &commit).with_context(|| format!("writing {reference:?}"))?;
    }
    note(&format!(
        "{repo_id}@{commit}: {} files, {downloaded} downloaded ({:.1} MB), {} already cached",
        files.len(),
        bytes as f64 / 1e6,
        files.len() - downloaded
    ));
    Ok(session.snapshot())
}

async fn fetch_file(session: &transfer::Session, file: &str) -> Result<Fetched> {
    session.fetch_file(file).await.with_context(|| {
        format!(
            "fetching {file} from {}@{}",
            session.repo_id, session.commit
        )
    })
}

/// The `--list` table: each model of the catalog and whether `cache` holds it.
pub fn list(cache: &Path, catalog: &Catalog) -> String {
    let mut out = format!("Hugging Face cache: {}\n", cache.display());
    for (name, entry) in &catalog.models {
        // As `--model NAME` resolves it: the pinned revision, else the repository's `main`.
        let snapshot = cached_snapshot(cache, &entry.repo, &entry.revision)
            .or_else(|| cached_snapshot(cache, &entry.repo, "main"));
        let status = match snapshot {
            None => "not cached".to_string(),
            Some(dir) => {
                let have =
                    |files: &[String]| files.iter().filter(|f| dir.join(f).is_file()).count();
                let all = entry.files.len();
                let variant = entry.variant.as_deref();
                let variant_files = entry.files_for(name, variant).unwrap_or_default();
                match (have(entry.files.as_slice()), variant) {
                    (n, _) if n == all => "cached".to_string(),
                    (_, Some(v)) if have(&variant_files) == all => format!("cached ({v})"),
                    (n, _) => format!("incomplete ({n} of {all} files)"),
                }
            }
        };
        out += &format!(
            "{name:<12} {status:<26} {} — {}\n{:39}{}; {}\n",
            entry.repo,
            entry.description,
            "",
            entry.size.as_deref().unwrap_or("size unknown"),
            entry.license
        );
    }
    out
}

/// `cargo xtask fetch …` (see the module docs).
pub fn run(args: &[String]) -> Result<()> {
    let (mut name, mut repo, mut revision, mut variant) = (None, None, None, None);
    let (mut show_list, mut quiet) = (false, false);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--list" => show_list = true,
            "--repo" => repo = Some(value("--repo")?),
            "--revision" => revision = Some(value("--revision")?),
            "--variant" => variant = Some(value("--variant")?),
            "-q" | "--quiet" => quiet = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            flag if flag.starts_with('-') => bail!("unknown option {flag}\n{USAGE}"),
            model if name.is_none() => name = Some(model.to_string()),
            extra => bail!("unexpected argument {extra:?}: one model at a time\n{USAGE}"),
        }
    }
    let catalog = Catalog::builtin()?;
    let mut hub = Hub::from_env()?;
    hub.quiet = quiet;
    if show_list {
        print!("{}", list(&hub.cache, &catalog));
        return Ok(());
    }
    let mut request = match (name, repo) {
        (Some(n), None) => Request::named(&catalog, &n, variant.as_deref())?,
        (None, Some(r)) => Request {
            repo: r,
            revision: "main".into(),
            variant,
            files: None,
        },
        (Some(_), Some(_)) => bail!("give a model NAME or --repo, not both\n{USAGE}"),
        (None, None) => bail!("which model?\n{USAGE}"),
    };
    if let Some(r) = revision {
        request.revision = r;
    }
    let snapshot = fetch(&hub, &request)?;
    println!("{}", snapshot.display());
    Ok(())
}
