//! One repository file into the Hugging Face cache, the layout `huggingface_hub` and `hf-hub`
//! share: `models--{org}--{name}/blobs/{etag}` holds the bytes, `snapshots/{commit}/{path}` is a
//! relative symlink to it, and a transfer in progress is `blobs/{etag}.incomplete` (the name
//! Python's `huggingface_hub` also resumes from).
//!
//! Why not `hf_hub::HFRepository::download_file`: it restarts a cut transfer from zero (it
//! recreates the `.incomplete` file), stores the blob without checking its hash, and does not say
//! which blob it was writing when it fails. Here the file's ETag and size come from a HEAD on its
//! `resolve` URL (relative redirects followed, absolute ones — to the CDN — read as they are,
//! like `huggingface_hub.get_hf_file_metadata`), the bytes from hf-hub's `download_file_stream`
//! with a `Range` continuing the partial blob (`download.rs`), and for LFS files (whose ETag is
//! their SHA-256) the hash is checked before the blob gets its final name.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use hf_hub::{HFRepository, RepoTypeModel};
use reqwest::header::{CONTENT_LENGTH, ETAG, LOCATION};

use super::blob::{BlobLock, check_repo_path, link_pointer, verify};
use crate::progress::Progress;

/// A repository at one commit, and how to reach it.
pub struct Session<'a> {
    pub endpoint: String,
    pub token: Option<String>,
    pub repo_id: String,
    pub commit: String,
    pub repo: HFRepository<RepoTypeModel>,
    /// For HEAD requests: redirects are not followed, so the hub's own headers are read.
    pub http: reqwest::Client,
    /// `{cache}/models--{org}--{name}`.
    pub repo_dir: PathBuf,
    pub progress: &'a dyn Progress,
}

/// What the hub says about a file.
pub struct Remote {
    pub etag: String,
    pub size: u64,
}

/// How a file got into the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// Already there (this snapshot, or the same blob from another one).
    Cached,
    /// Downloaded: `bytes` transferred now, after `resumed_from` bytes found on disk.
    Downloaded { bytes: u64, resumed_from: u64 },
}

impl Session<'_> {
    /// The snapshot folder of this commit.
    pub fn snapshot(&self) -> PathBuf {
        self.repo_dir.join("snapshots").join(&self.commit)
    }

    /// Makes `snapshots/{commit}/{file}` point at a complete, verified blob.
    pub async fn fetch_file(&self, file: &str) -> Result<Fetched> {
        match self.plan(file).await? {
            None => Ok(Fetched::Cached),
            Some(remote) => self.fetch_remote(file, &remote).await,
        }
    }

    /// What the hub says about `file` (a HEAD request), or `None` when the snapshot already
    /// points at a sound copy of it (no network).
    pub async fn plan(&self, file: &str) -> Result<Option<Remote>> {
        self.plan_unnamed(file)
            .await
            .with_context(|| self.context(file))
    }

    async fn plan_unnamed(&self, file: &str) -> Result<Option<Remote>> {
        check_repo_path(file)?;
        let pointer = self.snapshot().join(file);
        if pointer.is_file() && self.cached_pointer_is_sound(file, &pointer)? {
            return Ok(None);
        }
        self.head(file).await.map(Some)
    }

    /// [`Session::fetch_file`] once [`Session::plan`] has read `remote`.
    pub async fn fetch_remote(&self, file: &str, remote: &Remote) -> Result<Fetched> {
        self.fetch_remote_unnamed(file, remote)
            .await
            .with_context(|| self.context(file))
    }

    fn context(&self, file: &str) -> String {
        format!("fetching {file} from {}@{}", self.repo_id, self.commit)
    }

    async fn fetch_remote_unnamed(&self, file: &str, remote: &Remote) -> Result<Fetched> {
        let pointer = self.snapshot().join(file);
        let blobs = self.repo_dir.join("blobs");
        std::fs::create_dir_all(&blobs).with_context(|| format!("creating {blobs:?}"))?;
        let blob = blobs.join(&remote.etag);
        // One writer per blob: a second fetch of the same repository waits here, then finds the
        // blob complete.
        let _lock = BlobLock::acquire(&blobs.join(format!("{}.lock", remote.etag))).await?;
        let cached = blob.is_file()
            && match verify(&blob, &remote.etag, Some(remote.size))? {
                Ok(()) => true,
                Err(why) => {
                    self.progress.note(&format!(
                        "{file}: the cached blob is damaged ({why}); fetching it again"
                    ));
                    std::fs::remove_file(&blob).with_context(|| format!("removing {blob:?}"))?;
                    false
                }
            };
        let fetched = if cached {
            self.progress.skip(file, remote.size);
            Fetched::Cached
        } else {
            self.download_blob(file, remote, &blob).await?
        };
        link_pointer(&pointer, file, &remote.etag)?;
        Ok(fetched)
    }

    /// Whether the blob a snapshot pointer links to still has the hash its name (the ETag) says;
    /// a damaged one is removed with its pointer, to be fetched again. Needs no network.
    fn cached_pointer_is_sound(&self, file: &str, pointer: &Path) -> Result<bool> {
        let etag = std::fs::read_link(pointer)
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
        let Some(etag) = etag else {
            return Ok(true); // a copy, where symlinks are unavailable: nothing names its hash
        };
        match verify(pointer, &etag, None).with_context(|| format!("reading {pointer:?}"))? {
            Ok(()) => Ok(true),
            Err(why) => {
                self.progress.note(&format!(
                    "{file}: the cached copy is damaged ({why}); fetching it again"
                ));
                let _ = std::fs::remove_file(self.repo_dir.join("blobs").join(&etag));
                let _ = std::fs::remove_file(pointer);
                Ok(false)
            }
        }
    }

    /// `{endpoint}/{repo}/resolve/{commit}/{file}`, the file path percent-encoded per segment.
    fn resolve_url(&self, file: &str) -> Result<reqwest::Url> {
        let base = format!("{}/{}/resolve/{}", self.endpoint, self.repo_id, self.commit);
        let mut url = reqwest::Url::parse(&base).with_context(|| format!("bad URL {base:?}"))?;
        url.path_segments_mut()
            .map_err(|()| anyhow!("bad URL {base:?}"))?
            .extend(file.split('/'));
        Ok(url)
    }

    /// The ETag and size of `file`, from a HEAD on its `resolve` URL.
    async fn head(&self, file: &str) -> Result<Remote> {
        let mut url = self.resolve_url(file)?;
        for _ in 0..10 {
            let mut request = self.http.head(url.clone());
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            let response = request
                .send()
                .await
                .with_context(|| format!("HEAD {url}"))?;
            let status = response.status();
            let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
            if status.is_redirection()
                && let Some(location) = header(LOCATION.as_str())
                && !location.contains("://")
                && !location.starts_with("//")
            {
                url = url
                    .join(location)
                    .with_context(|| format!("redirect to {location:?}"))?;
                continue;
            }
            match status.as_u16() {
                404 => bail!("not found on the hub ({url} answered 404)"),
                401 | 403 => bail!(
                    "access denied ({status}): {} may be gated or private; accept its licence \
                     on the hub and set HF_TOKEN",
                    self.repo_id
                ),
                _ if !status.is_success() && !status.is_redirection() => {
                    bail!("HEAD {url} answered {status}")
                }
                _ => {}
            }
            let etag = header("x-linked-etag")
                .or(header(ETAG.as_str()))
                .map(|e| e.trim_start_matches("W/").trim_matches('"').to_string())
                .with_context(|| format!("{file}: the hub sent no ETag ({url})"))?;
            if etag.is_empty() || !etag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                bail!("{file}: unusable ETag {etag:?} from {url}");
            }
            let size = header("x-linked-size")
                .or(header(CONTENT_LENGTH.as_str()))
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("{file}: the hub sent no size ({url})"))?;
            return Ok(Remote { etag, size });
        }
        bail!("{file}: too many redirects from {url}")
    }
}
