//! A checkpoint made ready to load or write: each component's diffusers tensors and config.
//!
//! The configs come from a diffusers folder (`{unet,vae,text_encoder}/config.json`): the folder
//! the user names with `--config`, used as it is, or the family's published configs, whose
//! shape-given fields are then read off the file ([`super::derive`]).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Entry, Part, SingleFile, derive};
use crate::error::{ModelError, Result};

/// How to read a checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Read the UNet's EMA copy where the file has one.
    pub ema: bool,
    /// Overwrite the configs' shape-given fields with the file's (off for a `--config` folder).
    pub derive: bool,
}

/// One component: its tensors (diffusers names) and its config.
#[derive(Debug, Clone)]
pub struct Component {
    pub part: Part,
    pub entries: Vec<Entry>,
    pub config: Value,
}

/// A checkpoint with the three components planned.
#[derive(Debug)]
pub struct Prepared {
    pub file: SingleFile,
    pub unet: Component,
    pub vae: Component,
    pub text_encoder: Component,
    /// Whether the UNet is read from the EMA copy.
    pub ema: bool,
}

/// The largest config file read (published ones are about 2 kB).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads `dir/{part}/config.json` as a JSON object.
pub fn read_config(dir: &Path, part: Part) -> Result<(PathBuf, Value)> {
    let path = dir.join(part.name()).join("config.json");
    let meta = std::fs::metadata(&path).map_err(|_| ModelError::MissingFile {
        path: path.clone(),
        what: format!("{} config", part.name()),
    })?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ModelError::config(
            &path,
            format!("{} bytes, over the limit of {MAX_CONFIG_BYTES}", meta.len()),
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| ModelError::config(&path, e.to_string()))?;
    if !value.is_object() {
        return Err(ModelError::config(&path, "not a JSON object"));
    }
    Ok((path, value))
}

impl Prepared {
    /// Opens `file` and plans its components with the configs of `config_dir`.
    pub fn new(file: &Path, config_dir: &Path, options: Options) -> Result<Self> {
        let file = SingleFile::open(file)?;
        Self::from_file(file, config_dir, options)
    }

    /// [`Prepared::new`] of an opened checkpoint.
    pub fn from_file(file: SingleFile, config_dir: &Path, options: Options) -> Result<Self> {
        let plan = file.plan(options.ema)?;
        let component = |part: Part| -> Result<Component> {
            let entries = plan.part(part).to_vec();
            let (_, mut config) = read_config(config_dir, part)?;
            if options.derive {
                derive::derive(part, file.family(), &file.shapes(&entries)?, &mut config);
            }
            Ok(Component {
                part,
                entries,
                config,
            })
        };
        Ok(Self {
            unet: component(Part::Unet)?,
            vae: component(Part::Vae)?,
            text_encoder: component(Part::TextEncoder)?,
            ema: plan.ema,
            file,
        })
    }

    /// The component's weights as a safetensors file in memory.
    pub fn weights(&self, part: Part) -> Result<Vec<u8>> {
        self.file.weights(&self.component(part).entries)
    }

    pub fn component(&self, part: Part) -> &Component {
        match part {
            Part::Unet => &self.unet,
            Part::Vae => &self.vae,
            Part::TextEncoder => &self.text_encoder,
        }
    }

    /// How errors name a component: `file.safetensors [unet]`.
    pub fn name(&self, part: Part) -> PathBuf {
        PathBuf::from(format!("{} [{}]", self.file.path().display(), part.name()))
    }
}
