//! Finding models in the local Hugging Face cache (the layout `huggingface_hub` and `hf-hub` write:
//! `models--{org}--{name}/refs/{revision}` → commit, `snapshots/{commit}/…`). No network access.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The hub cache: `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hub_cache() -> Option<PathBuf> {
    hub_cache_from(&|k| std::env::var_os(k))
}

/// [`hub_cache`] with the environment variables read through `var`.
pub fn hub_cache_from(var: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    if let Some(p) = var("HF_HUB_CACHE") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = var("HF_HOME") {
        return Some(PathBuf::from(p).join("hub"));
    }
    var("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

/// The cache folder of a model repository.
pub fn repo_folder(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("models--{}", repo.replace('/', "--")))
}

/// The snapshot folder of `repo` at `revision` (a branch/tag name or a commit) holding a
/// `model_index.json`, if it is in the cache.
pub fn cached_snapshot(cache: &Path, repo: &str, revision: &str) -> Option<PathBuf> {
    let root = repo_folder(cache, repo);
    let commit = std::fs::read_to_string(root.join("refs").join(revision))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| revision.to_string());
    let snap = root.join("snapshots").join(commit);
    snap.join("model_index.json").is_file().then_some(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_follows_huggingface_hub_precedence() {
        let vars = |set: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                set.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let all = vars(&[("HF_HUB_CACHE", "/c"), ("HF_HOME", "/h"), ("HOME", "/u")]);
        assert_eq!(hub_cache_from(&all), Some(PathBuf::from("/c")));
        let home = vars(&[("HF_HOME", "/h"), ("HOME", "/u")]);
        assert_eq!(hub_cache_from(&home), Some(PathBuf::from("/h/hub")));
        let user = vars(&[("HOME", "/u")]);
        assert_eq!(
            hub_cache_from(&user),
            Some(PathBuf::from("/u/.cache/huggingface/hub"))
        );
        assert_eq!(hub_cache_from(&vars(&[])), None);
    }

    #[test]
    fn a_snapshot_is_found_by_branch_or_commit() {
        let cache = tempfile::tempdir().unwrap();
        let repo = repo_folder(cache.path(), "org/name");
        assert!(repo.ends_with("models--org--name"));
        let snap = repo.join("snapshots/abc");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc\n").unwrap();
        assert_eq!(cached_snapshot(cache.path(), "org/name", "main"), None);
        std::fs::write(snap.join("model_index.json"), "{}").unwrap();
        assert_eq!(
            cached_snapshot(cache.path(), "org/name", "main"),
            Some(snap.clone())
        );
        assert_eq!(cached_snapshot(cache.path(), "org/name", "abc"), Some(snap));
        assert_eq!(cached_snapshot(cache.path(), "org/name", "v2"), None);
    }
}
