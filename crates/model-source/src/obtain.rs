//! `--model` as diffusers' `from_pretrained` reads it: resolved in the local cache
//! ([`crate::resolve`]), and a Hugging Face repo id or catalog name that is not there yet is
//! downloaded first with the fetch engine ([`crate::fetch()`]) — unless `HF_HUB_OFFLINE` is set,
//! in which case the error names the command that fetches it.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Result;

use crate::cache::hub_cache_from;
use crate::catalog::Catalog;
use crate::error::Error;
use crate::fetch::{Hub, Request, fetch};
use crate::progress::Progress;
use crate::resolve::resolve_in;

/// Whether `HF_HUB_OFFLINE` forbids downloads: `1`, `on`, `yes` or `true` (any case), as
/// `huggingface_hub` reads it.
pub fn is_offline(var: &dyn Fn(&str) -> Option<OsString>) -> bool {
    var("HF_HUB_OFFLINE")
        .and_then(|v| v.into_string().ok())
        .is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "on" | "yes" | "true"
            )
        })
}

/// The folder of `--model model`, fetched first (weights of `variant`) if it is a repo id or
/// catalog name the cache lacks, reporting to `progress`; the environment as [`Hub::from_env`]
/// reads it.
pub fn resolve_or_fetch(
    model: &str,
    variant: Option<&str>,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    resolve_or_fetch_with(model, variant, &|k| std::env::var_os(k), progress)
}

/// [`resolve_or_fetch`] with the environment variables read through `var`.
pub fn resolve_or_fetch_with(
    model: &str,
    variant: Option<&str>,
    var: &dyn Fn(&str) -> Option<OsString>,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    match resolve_in(model, hub_cache_from(var)) {
        Err(Error::NotCached {
            model,
            repo,
            cache,
            fetch,
            note,
        }) if is_offline(var) => Err(Error::NotCached {
            note: format!("{note} (HF_HUB_OFFLINE is set, so --model does not download it itself)"),
            model,
            repo,
            cache,
            fetch,
        }
        .into()),
        Err(Error::NotCached { .. }) => {
            let catalog = Catalog::builtin()?;
            let request = Request::for_model(&catalog, model, variant)?;
            let hub = Hub::from_vars(var)?;
            progress.note(&format!(
                "--model {model}: not in the Hugging Face cache at {}; fetching {}@{} from {}",
                hub.cache.display(),
                request.repo,
                request.revision,
                hub.endpoint
            ));
            fetch(&hub, &request, progress)
        }
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;

    fn vars(set: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<OsString> {
        move |k| set.iter().find(|(n, _)| *n == k).map(|(_, v)| v.into())
    }

    #[test]
    fn hf_hub_offline_reads_as_huggingface_hub_reads_it() {
        for on in ["1", "ON", "yes", "True"] {
            let var = move |k: &str| (k == "HF_HUB_OFFLINE").then(|| OsString::from(on));
            assert!(is_offline(&var), "{on}");
        }
        for off in ["0", "", "false", "no"] {
            let var = move |k: &str| (k == "HF_HUB_OFFLINE").then(|| OsString::from(off));
            assert!(!is_offline(&var), "{off:?}");
        }
        assert!(!is_offline(&|_| None));
    }

    /// Offline, a model the cache lacks is an error naming the exact fetch command, and nothing
    /// is written to the cache.
    #[test]
    fn offline_a_missing_model_names_its_fetch_command() {
        let cache = tempfile::tempdir().unwrap();
        let var = vars(vec![
            ("HF_HUB_CACHE", cache.path().display().to_string()),
            ("HF_HUB_OFFLINE", "1".into()),
            ("HF_ENDPOINT", "http://127.0.0.1:9".into()),
        ]);
        for (model, command) in [
            ("org/name", "`ddim-edit fetch --repo org/name`"),
            ("sd-2-1-base", "`ddim-edit fetch sd-2-1-base`"),
            (
                "stabilityai/stable-diffusion-2-1",
                "`ddim-edit fetch sd-2-1`",
            ),
        ] {
            let e = resolve_or_fetch_with(model, None, &var, &NoProgress).unwrap_err();
            let e = format!("{e:#}");
            assert!(e.contains(command) && e.contains("HF_HUB_OFFLINE"), "{e}");
        }
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
        // Folders and unknown names are what they were, offline or not.
        let e = resolve_or_fetch_with("no-such-model", None, &var, &NoProgress).unwrap_err();
        assert!(e.to_string().contains("neither a folder"), "{e}");
    }
}
