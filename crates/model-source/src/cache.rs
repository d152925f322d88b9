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

/// Whether `s` is a git commit hash as the hub writes them: 40 lowercase hex digits. Only such a
/// string becomes the `snapshots/{commit}` folder name.
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `revision` can name a file under `refs/`: a branch or tag name made of `/`-separated
/// components, none empty, `.` or `..`, without backslashes or NUL (so `refs/pr/1` is fine and
/// `../../x` is not).
pub fn is_safe_revision(revision: &str) -> bool {
    !revision.is_empty()
        && revision.len() <= 256
        && !revision.contains(['\\', '\0'])
        && revision
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The snapshot folder of `repo` at `revision` (a branch/tag name or a commit) holding a
/// `model_index.json`, if it is in the cache. A revision or a `refs/` file that is not a safe
/// name or a commit hash is never used as a path.
pub fn cached_snapshot(cache: &Path, repo: &str, revision: &str) -> Option<PathBuf> {
    if !is_safe_revision(revision) {
        return None;
    }
    let root = repo_folder(cache, repo);
    let commit = match std::fs::read_to_string(root.join("refs").join(revision)) {
        Ok(s) => s.trim().to_string(),
        Err(_) => revision.to_string(),
    };
    if !is_commit_hash(&commit) {
        return None;
    }
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
        let snap = repo.join(format!("snapshots/{COMMIT}"));
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), format!("{COMMIT}\n")).unwrap();
        assert_eq!(cached_snapshot(cache.path(), "org/name", "main"), None);
        std::fs::write(snap.join("model_index.json"), "{}").unwrap();
        assert_eq!(
            cached_snapshot(cache.path(), "org/name", "main"),
            Some(snap.clone())
        );
        assert_eq!(
            cached_snapshot(cache.path(), "org/name", COMMIT),
            Some(snap)
        );
        assert_eq!(cached_snapshot(cache.path(), "org/name", "v2"), None);
    }

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    /// Neither a revision nor the content of a `refs/` file becomes a path outside the cache.
    #[test]
    fn revisions_and_refs_that_are_not_names_or_commits_are_never_paths() {
        let cache = tempfile::tempdir().unwrap();
        let outside = cache.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("model_index.json"), "{}").unwrap();
        let repo = repo_folder(cache.path(), "org/name");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots")).unwrap();
        // A ref whose content climbs out of `snapshots/` to a folder that holds a model_index.json.
        std::fs::write(repo.join("refs/main"), "../../outside").unwrap();
        assert_eq!(cached_snapshot(cache.path(), "org/name", "main"), None);
        // A revision that climbs out of `refs/`, or is itself a path.
        std::fs::write(cache.path().join("evil"), COMMIT).unwrap();
        for rev in ["../../evil", "/etc/passwd", "a//b", "a\\..\\b", ".", ""] {
            assert!(!is_safe_revision(rev), "{rev:?}");
            assert_eq!(
                cached_snapshot(cache.path(), "org/name", rev),
                None,
                "{rev:?}"
            );
        }
        for rev in ["main", "refs/pr/1", "v1.0", COMMIT] {
            assert!(is_safe_revision(rev), "{rev:?}");
        }
        assert!(is_commit_hash(COMMIT));
        for bad in [
            "abc",
            "../0123456789abcdef0123456789abcdef012345",
            &COMMIT.to_uppercase(),
        ] {
            assert!(!is_commit_hash(bad), "{bad:?}");
        }
    }
}
