//! The bytes of one blob: appended to `blobs/{etag}.incomplete` from where an earlier transfer
//! stopped, retried with a `Range` request when the connection fails, read back from disk and
//! checked against the hub's size and hash, then renamed to `blobs/{etag}`. The caller holds the
//! blob's lock throughout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use hf_hub::HFError;

use super::blob::{Partial, verify};
use super::session::{Fetched, Remote, Session};

/// Resumed attempts per file after the first transfer fails.
const MAX_RETRIES: u32 = 5;

/// Whether a failed transfer may be continued.
enum Failure {
    Retry(anyhow::Error),
    Fatal(anyhow::Error),
}

impl Session<'_> {
    /// Downloads `file`'s bytes into `blob`, continuing a partial one.
    pub(super) async fn download_blob(
        &self,
        file: &str,
        remote: &Remote,
        blob: &Path,
    ) -> Result<Fetched> {
        let partial_path = PathBuf::from(format!("{}.incomplete", blob.display()));
        let mut partial =
            Partial::open(&partial_path).with_context(|| format!("opening {partial_path:?}"))?;
        if partial.len > remote.size {
            partial.truncate()?;
        }
        let resumed_from = partial.len;
        let progress = self.progress;
        progress.start(file, remote.size, partial.len);
        let mut failures = 0;
        while partial.len < remote.size {
            let error = match self.transfer(file, remote.size, &mut partial).await {
                Ok(()) if partial.len == remote.size => break,
                Ok(()) => anyhow!(
                    "the connection ended after {} of {} bytes",
                    partial.len,
                    remote.size
                ),
                Err(Failure::Fatal(e)) => {
                    progress.finish(false);
                    return Err(e);
                }
                Err(Failure::Retry(e)) => e,
            };
            failures += 1;
            if failures > MAX_RETRIES {
                progress.finish(false);
                return Err(error.context(format!(
                    "{file}: giving up after {MAX_RETRIES} resumed attempts; the {} bytes received \
                     stay in {partial_path:?} and the next fetch continues from there",
                    partial.len
                )));
            }
            progress.resume(file, partial.len);
            tokio::time::sleep(Duration::from_millis(200 << failures)).await;
        }
        drop(partial);
        let checked = verify(&partial_path, &remote.etag, Some(remote.size))
            .with_context(|| format!("reading back {partial_path:?}"))?;
        if let Err(why) = checked {
            progress.finish(false);
            let _ = std::fs::remove_file(&partial_path);
            let _ = std::fs::remove_file(blob);
            let _ = std::fs::remove_file(self.snapshot().join(file));
            bail!("corrupt download: {why}; the download was deleted, fetch again");
        }
        std::fs::rename(&partial_path, blob)
            .with_context(|| format!("renaming {partial_path:?} to {blob:?}"))?;
        progress.finish(true);
        Ok(Fetched::Downloaded {
            bytes: remote.size - resumed_from,
            resumed_from,
        })
    }

    /// One GET of the bytes after `partial.len`, appended to `partial`.
    async fn transfer(&self, file: &str, size: u64, partial: &mut Partial) -> Result<(), Failure> {
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
            self.progress.advance(chunk.len() as u64);
        }
        Ok(())
    }
}

/// Network failures and server errors are retried; anything else is final.
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
