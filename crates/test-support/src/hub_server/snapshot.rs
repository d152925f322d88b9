//! What a complete fetch of the stand-in hub's repository leaves in the Hugging Face cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{COMMIT, REPO, sha256_hex};

/// The cache folder of [`REPO`] (`models--test-org--tiny-sd1`).
pub fn repo_dir(cache: &Path) -> PathBuf {
    cache.join(format!("models--{}", REPO.replace('/', "--")))
}

/// Asserts that `files` are complete in the Hugging Face cache at `revision` and returns the
/// snapshot folder: a branch has a `refs/` entry naming [`COMMIT`] (a pinned commit none), every
/// file is a relative symlink to a blob with the same bytes, LFS blobs (`*.safetensors`) are named
/// by their SHA-256, and nothing `.incomplete` is left.
pub fn assert_snapshot(cache: &Path, files: &BTreeMap<String, Vec<u8>>, revision: &str) -> PathBuf {
    let repo_dir = repo_dir(cache);
    let reference = std::fs::read_to_string(repo_dir.join("refs").join(revision));
    if revision == COMMIT {
        assert!(reference.is_err(), "no refs/ entry for a commit");
    } else {
        assert_eq!(reference.unwrap(), COMMIT);
    }
    let snapshot = repo_dir.join("snapshots").join(COMMIT);
    for (file, bytes) in files {
        let pointer = snapshot.join(file);
        let target = std::fs::read_link(&pointer).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(target.is_relative(), "{file} → {target:?}");
        assert_eq!(&std::fs::read(&pointer).unwrap(), bytes, "{file}");
        if file.ends_with(".safetensors") {
            assert!(
                repo_dir.join("blobs").join(sha256_hex(bytes)).is_file(),
                "{file} blob"
            );
        }
    }
    let leftovers: Vec<_> = std::fs::read_dir(repo_dir.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".incomplete"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    snapshot
}
