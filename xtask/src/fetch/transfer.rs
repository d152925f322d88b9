//! One repository file into the Hugging Face cache, the layout `huggingface_hub` and `hf-hub`
//! share: `models--{org}--{name}/blobs/{etag}` holds the bytes, `snapshots/{commit}/{path}` is a
//! relative symlink to it, and a transfer in progress is `blobs/{etag}.incomplete` (the name
//! Python's `huggingface_hub` also resumes from).
//!
//! Why not `hf_hub::HFRepository::download_file`: it restarts a cut transfer from zero (it
//! recreates the `.incomplete` file), stores the blob without checking its hash, and does not say
//! which blob it was writing when it fails. Here the file's ETag and size come from a HEAD on its
//! `resolve` URL (relative redirects followed, absolute ones — to the CDN — read as they are,
//! like `huggingface_hub.get_hf_file_metadata`), the bytes from hf-hub's
//! `download_file_stream` with a `Range` continuing the partial blob, and for LFS files (whose
//! ETag is their SHA-256) the hash is checked before the blob gets its final name.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use hf_hub::{HFError, HFRepository, RepoTypeModel};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::header::{CONTENT_LENGTH, ETAG, LOCATION};
use sha2::{Digest, Sha256};

/// One line per file: name, bar, bytes, speed, time left.
const BAR_TEMPLATE: &str =
    "{msg:48!} {bar:24} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {eta:>4}";

/// Resumed attempts per file after the first transfer fails.
const MAX_RETRIES: u32 = 5;

/// A repository at one commit, and how to reach it.
pub struct Session {
    pub endpoint: String,
    pub token: Option<String>,
    pub repo_id: String,
    pub commit: String,
    pub repo: HFRepository<RepoTypeModel>,
    /// For HEAD requests: redirects are not followed, so the hub's own headers are read.
    pub http: reqwest::Client,
    /// `{cache}/models--{org}--{name}`.
    pub repo_dir: PathBuf,
    pub quiet: bool,
}

/// What the hub says about a file.
struct Remote {
    etag: String,
    size: u64,
}

/// How a file got into the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// Already there (this snapshot, or the same blob from another one).
    Cached,
    /// Downloaded: `bytes` transferred now, after `resumed_from` bytes found on disk.
    Downloaded { bytes: u64, resumed_from: u64 },
}

/// Whether a failed transfer may be continued.
enum Failure {
    Retry(anyhow::Error),
    Fatal(anyhow::Error),
}

impl Session {
    /// The snapshot folder of this commit.
    pub fn snapshot(&self) -> PathBuf {
        self.repo_dir.join("snapshots").join(&self.commit)
    }

    /// Makes `snapshots/{commit}/{file}` point at a complete, verified blob.
    pub async fn fetch_file(&self, file: &str) -> Result<Fetched> {
        check_repo_path(file)?;
        let pointer = self.snapshot().join(file);
        if pointer.is_file() {
            return Ok(Fetched::Cached);
        }
        let remote = self.head(file).await?;
        let blobs = self.repo_dir.join("blobs");
        let blob = blobs.join(&remote.etag);
        let fetched = if blob.is_file() {
            Fetched::Cached
        } else {
            std::fs::create_dir_all(&blobs).with_context(|| format!("creating {blobs:?}"))?;
            self.download_blob(file, &remote, &blob).await?
        };
        link_pointer(&pointer, file, &remote.etag)?;
        Ok(fetched)
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

    async fn download_blob(&self, file: &str, remote: &Remote, blob: &Path) -> Result<Fetched> {
        let partial_path = PathBuf::from(format!("{}.incomplete", blob.display()));
        let lfs = is_sha256(&remote.etag);
        let mut partial = Partial::open(&partial_path, lfs)
            .with_context(|| format!("opening {partial_path:?}"))?;
        if partial.len > remote.size {
            partial.truncate()?;
        }
        let resumed_from = partial.len;
        let bar = self.bar(file, remote.size);
        let mut failures = 0;
        while partial.len < remote.size {
            bar.set_position(partial.len);
            let error = match self.transfer(file, remote.size, &mut partial, &bar).await {
                Ok(()) if partial.len == remote.size => break,
                Ok(()) => anyhow!(
                    "the connection ended after {} of {} bytes",
                    partial.len,
                    remote.size
                ),
                Err(Failure::Fatal(e)) => {
                    bar.abandon();
                    return Err(e);
                }
                Err(Failure::Retry(e)) => e,
            };
            failures += 1;
            if failures > MAX_RETRIES {
                bar.abandon();
                return Err(error.context(format!(
                    "{file}: giving up after {MAX_RETRIES} resumed attempts; the {} bytes received \
                     stay in {partial_path:?} and the next fetch continues from there",
                    partial.len
                )));
            }
            bar.set_message(format!("{file} (resuming at byte {})", partial.len));
            tokio::time::sleep(Duration::from_millis(200 << failures)).await;
        }
        if let Some(actual) = partial.sha256_hex()
            && actual != remote.etag
        {
            drop(partial);
            bar.abandon();
            let _ = std::fs::remove_file(&partial_path);
            let _ = std::fs::remove_file(blob);
            let _ = std::fs::remove_file(self.snapshot().join(file));
            bail!(
                "corrupt download: its SHA-256 is {actual} but the hub reports {}; the \
                 download was deleted, fetch again",
                remote.etag
            );
        }
        drop(partial);
        std::fs::rename(&partial_path, blob)
            .with_context(|| format!("renaming {partial_path:?} to {blob:?}"))?;
        bar.finish();
        Ok(Fetched::Downloaded {
            bytes: remote.size - resumed_from,
            resumed_from,
        })
    }

    /// One GET of the bytes after `partial.len`, appended to `partial`.
    async fn transfer(
        &self,
        file: &str,
        size: u64,
        partial: &mut Partial,
        bar: &ProgressBar,
    ) -> Result<(), Failure> {
        let offset = partial.len;
        let (announced, mut stream) = self
            .repo
            .download_file_stream()
            .filename(file)
            .revision(self.commit.clone())
            .maybe_range((offset > 0).then_some(offset..size))
            .send()
            .await
            .map_err(|e| failure(file, e))?;
        if offset > 0 && announced.is_some_and(|n| n != size - offset) {
            // The server answered the whole file instead of the range: start over.
            partial.truncate().map_err(|e| Failure::Fatal(e.into()))?;
            return Err(Failure::Retry(anyhow!(
                "{file}: the server ignored the Range request"
            )));
        }
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| failure(file, e))?;
            if partial.len + chunk.len() as u64 > size {
                partial.truncate().map_err(|e| Failure::Fatal(e.into()))?;
                return Err(Failure::Fatal(anyhow!(
                    "{file}: the server sent more than the {size} bytes it announced"
                )));
            }
            partial
                .write(&chunk)
                .map_err(|e| Failure::Fatal(anyhow!("writing {:?}: {e}", partial.path)))?;
            bar.inc(chunk.len() as u64);
        }
        Ok(())
    }

    fn bar(&self, file: &str, size: u64) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let style = ProgressStyle::with_template(BAR_TEMPLATE)
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        ProgressBar::new(size)
            .with_style(style.progress_chars("=> "))
            .with_message(file.to_string())
    }
}

fn failure(file: &str, e: HFError) -> Failure {
    let retry = match &e {
        HFError::Request { .. } | HFError::RateLimited { .. } => true,
        HFError::Http { context } => context.status.is_server_error(),
        _ => false,
    };
    let e = anyhow::Error::new(e).context(format!("downloading {file}"));
    if retry {
        Failure::Retry(e)
    } else {
        Failure::Fatal(e)
    }
}

/// A `.incomplete` blob opened for appending, with the SHA-256 of what it holds.
struct Partial {
    path: PathBuf,
    file: File,
    len: u64,
    hasher: Option<Sha256>,
}

impl Partial {
    fn open(path: &Path, hash: bool) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        let mut hasher = hash.then(Sha256::new);
        if let Some(h) = hasher.as_mut().filter(|_| len > 0) {
            let mut reader = File::open(path)?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match reader.read(&mut buf)? {
                    0 => break,
                    n => h.update(&buf[..n]),
                }
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            len,
            hasher,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        if let Some(h) = &mut self.hasher {
            h.update(bytes);
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn truncate(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.len = 0;
        if let Some(h) = &mut self.hasher {
            *h = Sha256::new();
        }
        Ok(())
    }

    fn sha256_hex(&mut self) -> Option<String> {
        let digest = self.hasher.take()?.finalize();
        Some(digest.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// LFS files' ETag is the SHA-256 of their content; git-stored files' is a 40-digit git hash.
fn is_sha256(etag: &str) -> bool {
    etag.len() == 64 && etag.chars().all(|c| c.is_ascii_hexdigit())
}

/// Rejects repository paths that would land outside the snapshot folder.
fn check_repo_path(file: &str) -> Result<()> {
    let bad = file.is_empty()
        || file.starts_with('/')
        || file.contains('\\')
        || file
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        bail!("refusing the repository path {file:?}");
    }
    Ok(())
}

/// `snapshots/{commit}/{file}` → `../…/blobs/{etag}` (a relative symlink, as `huggingface_hub`
/// writes it; a copy where symlinks are unavailable).
fn link_pointer(pointer: &Path, file: &str, etag: &str) -> Result<()> {
    let parent = pointer
        .parent()
        .context("snapshot pointer without a folder")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {parent:?}"))?;
    let _ = std::fs::remove_file(pointer);
    // From the pointer's folder up to the repo folder: `snapshots/{commit}/` plus the file's
    // own sub-folders.
    let target = format!("{}blobs/{etag}", "../".repeat(file.split('/').count() + 1));
    #[cfg(unix)]
    std::os::unix::fs::symlink(&target, pointer)
        .with_context(|| format!("linking {pointer:?} to {target}"))?;
    #[cfg(not(unix))]
    std::fs::copy(parent.join(&target), pointer)
        .with_context(|| format!("copying {target} to {pointer:?}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_template_parses() {
        assert!(ProgressStyle::with_template(BAR_TEMPLATE).is_ok());
    }

    #[test]
    fn repository_paths_stay_inside_the_snapshot() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "unet/../../x",
            "a//b",
            "a\\b",
            "./a",
        ] {
            assert!(check_repo_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_repo_path("unet/diffusion_pytorch_model.safetensors").is_ok());
    }
}
