//! Downloading a Stable Diffusion model into the Hugging Face cache, where `--model NAME|ORG/REPO`
//! finds it offline (and Python tools share the same copy): the engine of `ddim-edit fetch`,
//! `cargo xtask fetch` and of a `--model` that is not cached yet ([`crate::obtain`]).
//!
//! Built on the `hf-hub` crate (the Rust counterpart of `huggingface_hub`): `HF_ENDPOINT`,
//! `HF_TOKEN` (or `HF_TOKEN_PATH`, `HF_HOME/token`) and the cache location (`HF_HUB_CACHE`, else
//! `HF_HOME/hub`, else `~/.cache/huggingface/hub`, as [`crate::cache`] reads it) are honoured. A
//! request without a file list reads the repository's `model_index.json`, like diffusers'
//! `DiffusionPipeline.download`, and fetches each component's configs and `*.safetensors` weights
//! only ([`crate::select`]). A cut transfer is resumed with a `Range` request, LFS files are
//! checked against the SHA-256 the hub reports, and `refs/{revision}` is written only once every
//! file is in place. See `fetch/session.rs`.
//!
//! Errors are `anyhow` chains naming the repository, revision and file: they are shown to a
//! person, never matched on.

mod blob;
mod download;
mod request;
mod session;

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use hf_hub::{HFClient, HFError, HFRepository, RepoTypeModel, split_id};

use crate::cache::{hub_cache_from, repo_folder};
use crate::error::Error;
use crate::progress::Progress;
use crate::select::select_files;
use session::Session;

pub use request::Request;
pub use session::Fetched;

/// Where models come from and go to.
#[derive(Debug, Clone)]
pub struct Hub {
    /// Hub base URL, without a trailing `/`.
    pub endpoint: String,
    /// The hub cache folder (holding `models--org--name/`).
    pub cache: PathBuf,
    pub token: Option<String>,
}

impl Hub {
    /// The endpoint, cache and token the environment gives, as `huggingface_hub` reads them.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(|k| std::env::var_os(k))
    }

    /// [`Hub::from_env`] with the environment variables read through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Result<Self, Error> {
        let text = |k: &str| {
            var(k)
                .and_then(|v| v.into_string().ok())
                .filter(|v| !v.is_empty())
        };
        let endpoint = text("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".into());
        Ok(Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            cache: hub_cache_from(&var).ok_or(Error::NoCache)?,
            token: token_from(&text),
        })
    }
}

/// `HF_TOKEN`, else the file at `HF_TOKEN_PATH`, else `HF_HOME/token` (what `huggingface-cli
/// login` writes); none when `HF_HUB_DISABLE_IMPLICIT_TOKEN` is set.
fn token_from(var: &dyn Fn(&str) -> Option<String>) -> Option<String> {
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

/// Fetches `request` into `hub.cache`, reporting to `progress`, and returns its snapshot folder.
pub fn fetch(hub: &Hub, request: &Request, progress: &dyn Progress) -> Result<PathBuf> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(fetch_async(hub, request, progress))
}

/// [`fetch`], inside a tokio runtime.
pub async fn fetch_async(hub: &Hub, request: &Request, progress: &dyn Progress) -> Result<PathBuf> {
    let (session, siblings) = open(hub, request, progress).await?;
    let (repo_id, revision) = (&request.repo, &request.revision);
    let (files, index) = match &request.files {
        Some(files) => {
            let missing: Vec<&str> = files
                .iter()
                .filter(|f| !siblings.is_empty() && !siblings.contains(f))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                bail!("{repo_id}@{revision} has no {}", missing.join(", "));
            }
            (files.clone(), None)
        }
        None => {
            let (files, index) = choose_files(&session, &siblings, request).await?;
            (files, Some(index))
        }
    };
    // What each file needs (HEAD requests for those not in the cache), so the total is known.
    let mut planned = Vec::with_capacity(files.len());
    for file in &files {
        let remote = if file == "model_index.json" && index.is_some() {
            None // fetched already, to choose the files
        } else {
            session.plan(file).await?
        };
        planned.push((file, remote));
    }
    let to_fetch: Vec<u64> = planned
        .iter()
        .filter_map(|(_, r)| r.as_ref().map(|r| r.size))
        .collect();
    progress.plan(to_fetch.len(), to_fetch.iter().sum());
    let (mut downloaded, mut bytes) = (0, 0);
    if let Some(Fetched::Downloaded { bytes: b, .. }) = index {
        downloaded += 1;
        bytes += b;
    }
    for (file, remote) in &planned {
        let Some(remote) = remote else { continue };
        if let Fetched::Downloaded { bytes: b, .. } = session.fetch_remote(file, remote).await? {
            downloaded += 1;
            bytes += b;
        }
    }
    progress.done();
    let commit = &session.commit;
    if revision != commit {
        let reference = session.repo_dir.join("refs").join(revision);
        if let Some(parent) = reference.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {parent:?}"))?;
        }
        std::fs::write(&reference, commit).with_context(|| format!("writing {reference:?}"))?;
    }
    progress.note(&format!(
        "{repo_id}@{commit}: {} files, {downloaded} downloaded ({:.1} MB), {} already cached",
        files.len(),
        bytes as f64 / 1e6,
        files.len() - downloaded
    ));
    Ok(session.snapshot())
}

/// The session of `request`'s repository at the commit its revision names, and the
/// repository's file list.
async fn open<'a>(
    hub: &Hub,
    request: &Request,
    progress: &'a dyn Progress,
) -> Result<(Session<'a>, Vec<String>)> {
    let repo_id = request.repo.as_str();
    let (owner, name) = split_id(repo_id);
    let part_ok = |p: &str| !p.is_empty() && p != "." && p != ".." && !p.contains(['/', '\\']);
    if !part_ok(owner) || !part_ok(name) {
        bail!("{repo_id:?} is not a repository id of the form ORG/NAME");
    }
    if !crate::cache::is_safe_revision(&request.revision) {
        bail!(
            "--revision {:?} is not a branch, tag or commit name (no empty, `.` or `..` components)",
            request.revision
        );
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
    let (commit, siblings) = commit_and_files(&repo, hub, request).await?;
    let session = Session {
        endpoint: hub.endpoint.clone(),
        token: hub.token.clone(),
        repo_id: repo_id.to_string(),
        commit,
        repo,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the HTTP client")?,
        repo_dir: repo_folder(&hub.cache, repo_id),
        progress,
    };
    Ok((session, siblings))
}

/// The commit `request.revision` names, and the repository's file list.
async fn commit_and_files(
    repo: &HFRepository<RepoTypeModel>,
    hub: &Hub,
    request: &Request,
) -> Result<(String, Vec<String>)> {
    let (repo_id, revision) = (&request.repo, &request.revision);
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
    // The commit names the snapshot folder: anything but a commit hash could point outside the cache.
    if !crate::cache::is_commit_hash(&commit) {
        bail!(
            "{} answered {commit:?} as the commit of {repo_id}@{revision}, which is not a 40-digit hex commit hash; refusing it",
            hub.endpoint
        );
    }
    let siblings = info
        .siblings
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.rfilename)
        .collect();
    Ok((commit, siblings))
}

/// Fetches `model_index.json` and chooses the files of its components; returns them and how
/// `model_index.json` got into the cache.
async fn choose_files(
    session: &Session<'_>,
    siblings: &[String],
    request: &Request,
) -> Result<(Vec<String>, Fetched)> {
    let repo_id = &request.repo;
    let fetched = session.fetch_file("model_index.json").await?;
    let index = session.snapshot().join("model_index.json");
    let text = std::fs::read_to_string(&index).with_context(|| format!("reading {index:?}"))?;
    let json = serde_json::from_str(&text)
        .with_context(|| format!("model_index.json of {repo_id} is not valid JSON"))?;
    let (files, notes) = select_files(&json, siblings, request.variant.as_deref())
        .with_context(|| format!("choosing the files of {repo_id}"))?;
    for n in &notes {
        session.progress.note(n);
    }
    Ok((files, fetched))
}
