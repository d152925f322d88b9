//! The cache's files: a `.incomplete` blob with the hash of what it holds, the check that a
//! repository path stays inside its snapshot, and the snapshot's symlink to its blob.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// A `.incomplete` blob opened for appending. Only the holder of the blob's [`BlobLock`] opens it.
pub(super) struct Partial {
    pub path: PathBuf,
    file: File,
    pub len: u64,
}

impl Partial {
    pub(super) fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            len,
        })
    }

    pub(super) fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    pub(super) fn truncate(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.len = 0;
        Ok(())
    }
}

/// An exclusive lock on one blob (`blobs/{etag}.lock`, an OS file lock released when dropped, or
/// when the process dies): two fetches of the same repository never write the same blob at once.
pub(super) struct BlobLock {
    _file: File,
}

impl BlobLock {
    /// Waits for the lock, polling so that the async runtime is not blocked.
    pub(super) async fn acquire(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening the lock {path:?}"))?;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("locking {path:?}"));
                }
            }
        }
    }
}

/// Whether the file at `path` is the blob the hub describes: its size, and its content hash —
/// SHA-256 for LFS files (a 64-digit ETag), the git blob SHA-1 for the others (40 digits). The
/// bytes are read back from disk, so what is checked is what later runs will read.
/// Without `size` (a snapshot's blob, named by its ETag) only the hash is checked.
pub(super) fn verify(
    path: &Path,
    etag: &str,
    size: Option<u64>,
) -> std::io::Result<Result<(), String>> {
    let len = std::fs::metadata(path)?.len();
    if let Some(size) = size.filter(|&s| s != len) {
        return Ok(Err(format!("{len} bytes where the hub reports {size}")));
    }
    let (name, actual) = if is_sha256(etag) {
        ("SHA-256", hash_file::<Sha256>(path, &[])?)
    } else if is_git_sha1(etag) {
        let prefix = format!("blob {len}\0");
        (
            "git SHA-1",
            hash_file::<sha1::Sha1>(path, prefix.as_bytes())?,
        )
    } else {
        return Ok(Ok(()));
    };
    Ok(if actual == etag {
        Ok(())
    } else {
        Err(format!(
            "its {name} is {actual} where the hub reports {etag}"
        ))
    })
}

/// The hex digest of `prefix` followed by the file's bytes.
fn hash_file<D: Digest + Default>(path: &Path, prefix: &[u8]) -> std::io::Result<String> {
    let mut hasher = D::default();
    hasher.update(prefix);
    let mut reader = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match reader.read(&mut buf)? {
            0 => break,
            n => hasher.update(&buf[..n]),
        }
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Git-stored files' ETag: the 40-digit SHA-1 of `blob {len}\0` and their bytes.
pub(super) fn is_git_sha1(etag: &str) -> bool {
    etag.len() == 40 && etag.chars().all(|c| c.is_ascii_hexdigit())
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
