//! The cache's files: a `.incomplete` blob with the hash of what it holds, the check that a
//! repository path stays inside its snapshot, and the snapshot's symlink to its blob.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// A `.incomplete` blob opened for appending, with the SHA-256 of what it holds.
pub(super) struct Partial {
    pub path: PathBuf,
    file: File,
    pub len: u64,
    hasher: Option<Sha256>,
}

impl Partial {
    pub(super) fn open(path: &Path, hash: bool) -> std::io::Result<Self> {
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

    pub(super) fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        if let Some(h) = &mut self.hasher {
            h.update(bytes);
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    pub(super) fn truncate(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.len = 0;
        if let Some(h) = &mut self.hasher {
            *h = Sha256::new();
        }
        Ok(())
    }

    pub(super) fn sha256_hex(&mut self) -> Option<String> {
        let digest = self.hasher.take()?.finalize();
        Some(digest.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// LFS files' ETag is the SHA-256 of their content; git-stored files' is a 40-digit git hash.
pub(super) fn is_sha256(etag: &str) -> bool {
    etag.len() == 64 && etag.chars().all(|c| c.is_ascii_hexdigit())
}

/// Rejects repository paths that would land outside the snapshot folder.
pub(super) fn check_repo_path(file: &str) -> Result<()> {
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
pub(super) fn link_pointer(pointer: &Path, file: &str, etag: &str) -> Result<()> {
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
