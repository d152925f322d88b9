//! The inversion trajectory and its safetensors file.
//!
//! File layout: `latents` f32 `[N, C, h, w]` in ascending timestep order (entry j is the latent
//! after inverse step j+1, at inverse timestep s_{j+1}), `timesteps` i64 `[N]`, and string metadata
//! (`model`, `prompt`, `steps`, `guidance`).

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::{InversionError, Result};
use crate::io::write_atomic;

/// Latents along the inverse DDIM path.
#[derive(Debug, Clone)]
pub struct Trajectory {
    /// `[N, C, h, w]`; may hold fewer than `steps` entries when an edit stopped early.
    pub latents: Tensor<4>,
    /// The inverse timesteps of the entries (ascending).
    pub timesteps: Vec<i64>,
    /// The schedule's number of steps N.
    pub steps: usize,
    pub metadata: HashMap<String, String>,
}

impl Trajectory {
    /// Entry `i` as `[1, C, h, w]`.
    pub fn entry(&self, i: usize) -> Tensor<4> {
        let [_, c, h, w] = self.latents.dims();
        self.latents.clone().slice([i..i + 1, 0..c, 0..h, 0..w])
    }

    pub fn len(&self) -> usize {
        self.timesteps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timesteps.is_empty()
    }

    /// Writes the trajectory atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
    }

    /// The trajectory as safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let shape = self.latents.dims().to_vec();
        let latents: Vec<f32> = self
            .latents
            .clone()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| InversionError::Argument(format!("{e:?}")))?;
        safetensors_bytes(
            &[
                ("latents", Dtype::F32, shape, f32_bytes(&latents)),
                (
                    "timesteps",
                    Dtype::I64,
                    vec![self.timesteps.len()],
                    self.timesteps
                        .iter()
                        .flat_map(|t| t.to_le_bytes())
                        .collect(),
                ),
            ],
            &self.metadata,
        )
    }

    /// Reads a trajectory file; `steps` comes from its metadata (or its length).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bad = |message: String| InversionError::Trajectory {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let lat = st
            .tensor("latents")
            .map_err(|_| bad("has no `latents` tensor".into()))?;
        if lat.dtype() != Dtype::F32 || lat.shape().len() != 4 {
            return Err(bad(format!(
                "`latents` must be f32 [N, C, h, w], found {:?} {:?}",
                lat.dtype(),
                lat.shape()
            )));
        }
        let ts = st
            .tensor("timesteps")
            .map_err(|_| bad("has no `timesteps` tensor".into()))?;
        if ts.dtype() != Dtype::I64 || ts.shape() != [lat.shape()[0]] {
            return Err(bad(format!(
                "`timesteps` must be i64 [{}], found {:?} {:?}",
                lat.shape()[0],
                ts.dtype(),
                ts.shape()
            )));
        }
        let values: Vec<f32> = lat
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let timesteps: Vec<i64> = ts
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let metadata = meta.metadata().clone().unwrap_or_default();
        let steps = match metadata.get("steps") {
            Some(s) => s
                .parse()
                .map_err(|_| bad(format!("metadata steps {s:?} is not a number")))?,
            None => timesteps.len(),
        };
        Ok(Self {
            latents: Tensor::from_data(TensorData::new(values, lat.shape().to_vec()), device),
            timesteps,
            steps,
            metadata,
        })
    }
}

pub(crate) fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Serialises named tensors with string metadata.
pub(crate) fn safetensors_bytes(
    tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)],
    metadata: &HashMap<String, String>,
) -> Result<Vec<u8>> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            TensorView::new(*dtype, shape.clone(), data)
                .map(|v| (name.to_string(), v))
                .map_err(|e| InversionError::Argument(format!("tensor {name}: {e}")))
        })
        .collect::<Result<_>>()?;
    let meta = (!metadata.is_empty()).then(|| metadata.clone());
    safetensors::serialize(views, meta)
        .map_err(|e| InversionError::Argument(format!("safetensors: {e}")))
}

/// `latents` `[1, C, h, w]` as safetensors bytes with one tensor `latents`.
pub fn latents_bytes(latents: &Tensor<4>, metadata: &HashMap<String, String>) -> Result<Vec<u8>> {
    let shape = latents.dims().to_vec();
    let values: Vec<f32> = latents
        .clone()
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| InversionError::Argument(format!("{e:?}")))?;
    safetensors_bytes(
        &[("latents", Dtype::F32, shape, f32_bytes(&values))],
        metadata,
    )
}
