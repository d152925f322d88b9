//! Single-file checkpoints: a whole Stable Diffusion 1.x / 2.x model in one `*.safetensors` file in
//! the original LDM layout (CompVis / Stability AI `v1-5-pruned.safetensors`,
//! `v2-1_512-ema-pruned.safetensors`, and most fine-tunes people share), read without a
//! conversion step. Mirrors diffusers' `from_single_file` (`loaders/single_file_utils.py`).
//!
//! The file's tensors are renamed to diffusers' keys (then loaded by [`crate::weights`] with its
//! own renames, so both layouts meet the same strict loader):
//!
//! | file prefix                          | component                      | map                               |
//! |--------------------------------------|--------------------------------|-----------------------------------|
//! | `model.diffusion_model.`             | UNet                           | [`unet`]: `input_blocks.{i}.{j}` → `down_blocks.{b}.{resnets,attentions}.{l}` … |
//! | `model_ema.diffusion_model…` (no dots) | UNet, when the EMA copy is complete and used | same, names as the non-EMA ones |
//! | `first_stage_model.`                 | VAE                            | [`vae`]: `encoder.down.{i}.block.{j}` → `encoder.down_blocks.{i}.resnets.{j}` … |
//! | `cond_stage_model.transformer.`      | CLIP text encoder (SD 1.x)     | prefix dropped (transformers' names) |
//! | `cond_stage_model.model.`            | OpenCLIP text tower (SD 2.x)   | [`text`]: `resblocks.{i}` → `encoder.layers.{i}`, q/k/v split from `in_proj_*` |
//!
//! Not read: LatentDiffusion's schedule buffers (`betas`, `alphas_cumprod`, …), `model_ema.decay`
//! / `num_updates`, OpenCLIP's `text_projection` / `logit_scale` and its 24th block
//! (`resblocks.23`, which SD 2.x does not use: it conditions on the penultimate layer, and
//! diffusers drops it by that name). Any other tensor is an error that names it.
//!
//! EMA: when the file holds more than 100 `model_ema.*` tensors (diffusers' test), the EMA UNet
//! weights are read unless the caller asks for the trained ones; diffusers reads the trained
//! ones unless `extract_ema=True` is given.
//!
//! `.ckpt` / `.pt` files are pickles, whose loading runs code: they are refused, by extension and
//! by content, with the command that converts them safely.

pub mod derive;
mod detect;
pub mod prepare;
pub mod text;
pub mod unet;
pub mod vae;

pub use prepare::{Component, Options, Prepared};

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};
use crate::weights::{TensorInfo, read_header};

/// The model family of a checkpoint, from its text encoder's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// CLIP ViT-L/14 text encoder (`cond_stage_model.transformer.`).
    Sd1,
    /// OpenCLIP ViT-H/14 text tower (`cond_stage_model.model.`).
    Sd2,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Sd1 => "Stable Diffusion 1.x",
            Family::Sd2 => "Stable Diffusion 2.x",
        }
    }

    /// The catalog model whose published configs a file of this family gets by default, as in
    /// diffusers' `from_single_file` (which takes SD 2.1, 768 px v-prediction, for SD 2.x).
    pub fn default_config(self) -> &'static str {
        match self {
            Family::Sd1 => "sd-1-5",
            Family::Sd2 => "sd-2-1",
        }
    }
}

/// The three models of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Unet,
    Vae,
    TextEncoder,
}

impl Part {
    pub fn name(self) -> &'static str {
        match self {
            Part::Unet => "unet",
            Part::Vae => "vae",
            Part::TextEncoder => "text_encoder",
        }
    }
}

/// How a diffusers tensor is made from a file tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Copy,
    /// Trailing size-1 dimensions dropped (LDM's 1×1-convolution attention → Linear).
    Squeeze,
    /// Part `index` of `of` equal parts along the first dimension (OpenCLIP's fused q/k/v).
    Chunk {
        index: usize,
        of: usize,
    },
}

/// One tensor of a component: its diffusers key, made from the file's `source` tensor by `op`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub source: String,
    pub key: String,
    pub op: Op,
}

/// The tensors of each component, in diffusers' names.
#[derive(Debug, Clone)]
pub struct Plan {
    pub unet: Vec<Entry>,
    pub vae: Vec<Entry>,
    pub text_encoder: Vec<Entry>,
    /// Whether the UNet entries read the EMA copy.
    pub ema: bool,
}

impl Plan {
    pub fn part(&self, part: Part) -> &[Entry] {
        match part {
            Part::Unet => &self.unet,
            Part::Vae => &self.vae,
            Part::TextEncoder => &self.text_encoder,
        }
    }
}

pub(crate) const UNET: &str = "model.diffusion_model.";
pub(crate) const EMA: &str = "model_ema.";
pub(crate) const VAE: &str = "first_stage_model.";
pub(crate) const CLIP: &str = "cond_stage_model.transformer.";
pub(crate) const OPEN_CLIP: &str = "cond_stage_model.model.";

/// Tensors LatentDiffusion saves that are not weights of the three models.
const NOT_WEIGHTS: &[&str] = &[
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "logvar",
    "scale_factor",
];

/// diffusers' threshold for "the file has an EMA copy".
const EMA_MIN_TENSORS: usize = 100;

/// An opened single-file checkpoint: its header, checked, and its family.
#[derive(Debug)]
pub struct SingleFile {
    path: PathBuf,
    header: BTreeMap<String, TensorInfo>,
    /// Where the data section starts in the file.
    data_start: u64,
    family: Family,
}

impl SingleFile {
    /// Opens `path`: refuses pickles, reads and checks the header (a truncated file is an error
    /// here), and tells the family, or names the unsupported kind of checkpoint it is.
    pub fn open(path: &Path) -> Result<Self> {
        detect::refuse_pickle(path)?;
        let header = read_header(path)?;
        let mut len = [0u8; 8];
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut len))
            .map_err(|e| ModelError::io(path, e))?;
        Self::from_header(path, header, 8 + u64::from_le_bytes(len))
    }

    /// A checkpoint of these tensors (`data_start`: where the data section starts), without
    /// reading the file: for checking the layout of published checkpoints from their shapes.
    pub fn from_header(
        path: &Path,
        header: BTreeMap<String, TensorInfo>,
        data_start: u64,
    ) -> Result<Self> {
        let family = detect::family(path, &header)?;
        Ok(Self {
            path: path.to_path_buf(),
            header,
            data_start,
            family,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn header(&self) -> &BTreeMap<String, TensorInfo> {
        &self.header
    }

    /// Whether the file carries an EMA copy of the UNet (more than 100 `model_ema.*` tensors).
    pub fn has_ema(&self) -> bool {
        self.header.keys().filter(|k| k.starts_with(EMA)).count() > EMA_MIN_TENSORS
    }

    /// The diffusers tensors of every component; `ema`: read the UNet's EMA copy where the file
    /// has one. Every tensor of the file must be used or be one of the known non-weights.
    pub fn plan(&self, ema: bool) -> Result<Plan> {
        let ema = ema && self.has_ema();
        let unet = unet::entries(self, ema)?;
        let vae = vae::entries(self)?;
        let text_encoder = match self.family {
            Family::Sd1 => text::clip_entries(self),
            Family::Sd2 => text::open_clip_entries(self)?,
        };
        let used: std::collections::BTreeSet<&str> = [&unet, &vae, &text_encoder]
            .into_iter()
            .flatten()
            .map(|e| e.source.as_str())
            .collect();
        let stray = self.header.keys().find(|k| {
            let known = used.contains(k.as_str())
                || NOT_WEIGHTS.contains(&k.as_str())
                || k.starts_with(EMA)
                || (ema && k.starts_with(UNET))
                || text::unused_open_clip(k);
            !known
        });
        if let Some(key) = stray {
            return Err(self.error(format!(
                "unexpected tensor {key:?}: not a weight of a {} UNet, VAE or text encoder",
                self.family.name()
            )));
        }
        Ok(Plan {
            unet,
            vae,
            text_encoder,
            ema,
        })
    }

    /// The shape of every entry's tensor, by diffusers key.
    pub fn shapes(&self, entries: &[Entry]) -> Result<derive::Shapes> {
        entries
            .iter()
            .map(|e| Ok((e.key.clone(), self.resolve(e)?.1)))
            .collect()
    }

    /// The shape of a file tensor, if the file has it.
    pub(crate) fn shape(&self, key: &str) -> Option<&[usize]> {
        self.header.get(key).map(|t| t.shape.as_slice())
    }

    /// The file's keys under `prefix`, without it.
    pub(crate) fn keys_under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> {
        self.header
            .range(prefix.to_string()..)
            .map(|(k, _)| k.as_str())
            .take_while(move |k| k.starts_with(prefix))
            .map(move |k| &k[prefix.len()..])
    }

    pub(crate) fn error(&self, message: impl Into<String>) -> ModelError {
        ModelError::single_file(&self.path, message)
    }

    /// The shape and byte range in the data section of `entry`'s tensor.
    fn resolve(&self, entry: &Entry) -> Result<(String, Vec<usize>, (u64, u64))> {
        let info = self
            .header
            .get(&entry.source)
            .ok_or_else(|| self.error(format!("lacks tensor {:?}", entry.source)))?;
        let (start, end) = info.data_offsets;
        let bad = |what: &str| {
            self.error(format!(
                "tensor {:?} has shape {:?}: {what}",
                entry.source, info.shape
            ))
        };
        let (shape, range) = match entry.op {
            Op::Copy => (info.shape.clone(), (start, end)),
            Op::Squeeze => {
                if info.shape.len() < 2 || info.shape[2..].iter().any(|&d| d != 1) {
                    return Err(bad("expected [out, in] or [out, in, 1, 1]"));
                }
                (info.shape[..2].to_vec(), (start, end))
            }
            Op::Chunk { index, of } => {
                let Some(&rows) = info.shape.first().filter(|&&r| r > 0 && r % of == 0) else {
                    return Err(bad(&format!(
                        "expected a first dimension divisible by {of}"
                    )));
                };
                let part = (end - start) / of as u64;
                let mut shape = info.shape.clone();
                shape[0] = rows / of;
                let begin = start + part * index as u64;
                (shape, (begin, begin + part))
            }
        };
        Ok((info.dtype.clone(), shape, range))
    }

    /// The component's tensors as a safetensors file in memory, read from the checkpoint.
    pub fn weights(&self, entries: &[Entry]) -> Result<Vec<u8>> {
        let mut tensors = Vec::with_capacity(entries.len());
        let mut header = serde_json::Map::new();
        let mut offset = 0u64;
        for entry in entries {
            let (dtype, shape, range) = self.resolve(entry)?;
            let len = range.1 - range.0;
            header.insert(
                entry.key.clone(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len]}),
            );
            offset += len;
            tensors.push(range);
        }
        header.insert(
            "__metadata__".into(),
            serde_json::json!({"format": "pt", "converted_from": "ldm"}),
        );
        let mut json = serde_json::to_vec(&header).expect("a JSON map serializes");
        json.resize(json.len().next_multiple_of(8), b' ');
        // Bounded: every range lies inside the file (checked with the header).
        let mut out = Vec::with_capacity(8 + json.len() + offset as usize);
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        let mut file =
            std::fs::File::open(&self.path).map_err(|e| ModelError::io(&self.path, e))?;
        for (start, end) in tensors {
            let at = out.len();
            out.resize(at + (end - start) as usize, 0);
            file.seek(SeekFrom::Start(self.data_start + start))
                .and_then(|_| file.read_exact(&mut out[at..]))
                .map_err(|e| ModelError::io(&self.path, e))?;
        }
        Ok(out)
    }
}
