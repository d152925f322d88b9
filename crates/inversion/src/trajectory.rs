//! The inversion trajectory and its safetensors file.
//!
//! File layout: `latents` f32 `[N, C, h, w]` in ascending timestep order (entry j is the latent
//! after inverse step j+1, at inverse timestep s_{j+1}), `timesteps` i64 `[N]`, and string metadata
//! (`model`, `prompt`, `steps`, `guidance`), and `x0` f32 `[1, C, h, w]`, the photo's latent the
//! path starts from (what direct inversion's last step lands on; absent in older files), and, after
//! a null-text edit, `null_text` f32 `[n, tokens, dim]` (the null embeddings of sampler steps
//! `null_text_start_step ..` optimised for guidance `null_text_guidance`, both metadata). Files
//! are written with sorted metadata keys, so the same run gives the same bytes.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::algorithms::null_text::NullEmbeddings;
use crate::error::{InversionError, Result};

/// Latents along the inverse DDIM path.
#[derive(Debug, Clone)]
pub struct Trajectory {
    /// `[N, C, h, w]`; may hold fewer than `steps` entries when an edit stopped early.
    pub latents: Tensor<4>,
    /// The inverse timesteps of the entries (ascending).
    pub timesteps: Vec<i64>,
    /// The schedule's number of steps N.
    pub steps: usize,
    pub metadata: BTreeMap<String, String>,
    /// The latent x₀ the inversion started from, `[1, C, h, w]`.
    pub origin: Option<Tensor<4>>,
    /// Null-text inversion's embeddings, when an edit optimised them along this path.
    pub nulls: Option<NullEmbeddings>,
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

    /// The trajectory as safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let shape = self.latents.dims().to_vec();
        let latents = f32_bytes(&self.latents, "the trajectory's latents")?;
        let mut tensors = vec![
            ("latents", Dtype::F32, shape, latents),
            (
                "timesteps",
                Dtype::I64,
                vec![self.timesteps.len()],
                self.timesteps
                    .iter()
                    .flat_map(|t| t.to_le_bytes())
                    .collect(),
            ),
        ];
        if let Some(x0) = &self.origin {
            tensors.push(("x0", Dtype::F32, x0.dims().to_vec(), f32_bytes(x0, "x0")?));
        }
        let mut metadata = self.metadata.clone();
        if let Some(n) = &self.nulls {
            let bytes = f32_bytes(&n.states, "the null embeddings")?;
            tensors.push(("null_text", Dtype::F32, n.states.dims().to_vec(), bytes));
            metadata.insert("null_text_start_step".into(), n.start_step.to_string());
            metadata.insert("null_text_guidance".into(), n.guidance.to_string());
        }
        safetensors_bytes(&tensors, &metadata)
    }

    /// Reads a trajectory file; `steps` comes from its metadata (or its length).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bad = |message: String| InversionError::Trajectory {
            path: path.to_path_buf(),
            message,
        };
        let bytes = read_file(path, MAX_FILE_BYTES).map_err(bad)?;
        Self::from_bytes(&bytes, path, device)
    }

    /// [`load`](Self::load) of a file's bytes; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path, device: &Device) -> Result<Self> {
        let bad = |message: String| InversionError::Trajectory {
            path: path.to_path_buf(),
            message,
        };
        let (_, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let st = SafeTensors::deserialize(bytes)
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
        if let Some(d) = lat.shape().iter().position(|&d| d == 0) {
            return Err(bad(format!(
                "`latents` {:?} has an empty dimension {d}",
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
        let values = f32_values(lat.data());
        let timesteps: Vec<i64> = ts
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let metadata: BTreeMap<String, String> = meta
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let steps = match metadata.get("steps") {
            Some(s) => s
                .parse()
                .map_err(|_| bad(format!("metadata steps {s:?} is not a number")))?,
            None => timesteps.len(),
        };
        let origin = match st.tensor("x0") {
            Err(_) => None,
            Ok(x0) => Some(origin(&x0, lat.shape(), device).map_err(bad)?),
        };
        let nulls = match st.tensor("null_text") {
            Err(_) => None,
            Ok(t) => Some(nulls(&t, &metadata, steps, device).map_err(bad)?),
        };
        Ok(Self {
            latents: Tensor::from_data(TensorData::new(values, lat.shape().to_vec()), device),
            timesteps,
            steps,
            metadata,
            origin,
            nulls,
        })
    }
}

/// The `null_text` tensor of a file of `steps` steps, with its metadata.
fn nulls(
    t: &safetensors::tensor::TensorView<'_>,
    metadata: &BTreeMap<String, String>,
    steps: usize,
    device: &Device,
) -> std::result::Result<NullEmbeddings, String> {
    let field = |key: &str| {
        metadata
            .get(key)
            .ok_or_else(|| format!("has `null_text` but no metadata {key}"))
    };
    let start_step: usize = field("null_text_start_step")?
        .parse()
        .map_err(|_| "metadata null_text_start_step is not a number".to_string())?;
    let guidance: f64 = field("null_text_guidance")?
        .parse()
        .ok()
        .filter(|g: &f64| g.is_finite())
        .ok_or_else(|| "metadata null_text_guidance is not a finite number".to_string())?;
    let shape = t.shape();
    let fits = t.dtype() == Dtype::F32
        && shape.len() == 3
        && shape.iter().all(|&d| d > 0)
        && start_step.checked_add(shape[0]) == Some(steps);
    if !fits {
        return Err(format!(
            "`null_text` must be f32 [steps − null_text_start_step = {}, tokens, dim], found {:?} {shape:?}",
            steps.saturating_sub(start_step),
            t.dtype()
        ));
    }
    let states = Tensor::from_data(
        TensorData::new(f32_values(t.data()), shape.to_vec()),
        device,
    );
    Ok(NullEmbeddings {
        states,
        start_step,
        guidance,
        losses: Vec::new(),
        iterations: Vec::new(),
    })
}

/// The `x0` tensor of a file whose latents have `shape` `[N, C, h, w]`.
fn origin(
    x0: &safetensors::tensor::TensorView<'_>,
    shape: &[usize],
    device: &Device,
) -> std::result::Result<Tensor<4>, String> {
    let (c, h, w) = (shape[1], shape[2], shape[3]);
    if x0.dtype() != Dtype::F32 || x0.shape() != [1, c, h, w] {
        return Err(format!(
            "`x0` must be f32 [1, {c}, {h}, {w}] like the latents, found {:?} {:?}",
            x0.dtype(),
            x0.shape()
        ));
    }
    let v = f32_values(x0.data());
    Ok(Tensor::from_data(TensorData::new(v, [1, c, h, w]), device))
}

/// Little-endian f32 values of a tensor's bytes.
fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The largest trajectory file read: 1000 steps of 4 × 128 × 128 latents is 256 MiB.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Reads a regular file of at most `max` bytes (a device or FIFO such as `/dev/zero` would be
/// read until memory runs out).
pub(crate) fn read_file(path: &Path, max: u64) -> std::result::Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    if meta.len() > max {
        return Err(format!(
            "is {} bytes, more than the {max} a trajectory can be",
            meta.len()
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::io::Read::read_to_end(
        &mut std::io::Read::take(
            std::fs::File::open(path).map_err(|e| e.to_string())?,
            max + 1,
        ),
        &mut bytes,
    )
    .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        return Err(format!("grew past {max} bytes while being read"));
    }
    Ok(bytes)
}

/// The little-endian bytes of an f32 tensor.
fn f32_bytes<const D: usize>(x: &Tensor<D>, what: &'static str) -> Result<Vec<u8>> {
    let values: Vec<f32> = x
        .clone()
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| InversionError::Serialize {
            what,
            message: format!("{e:?}"),
        })?;
    Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// Serialises named tensors with string metadata in the safetensors format: an 8-byte header
/// length, the JSON header (keys sorted, padded with spaces to a multiple of 8) and the data.
/// Written here rather than by `safetensors::serialize`, whose header lists the metadata in hash
/// order, so that identical inputs give identical files.
fn safetensors_bytes(
    tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::json!(metadata));
    }
    let mut offset = 0;
    for (name, dtype, shape, data) in tensors {
        let expected = shape.iter().product::<usize>() * dtype.bitsize() / 8;
        if data.len() != expected {
            return Err(InversionError::Serialize {
                what: "a tensor",
                message: format!("{name}: {} bytes for shape {shape:?}", data.len()),
            });
        }
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": format!("{dtype:?}"), "shape": shape,
                               "data_offsets": [offset, offset + data.len()]}),
        );
        offset += data.len();
    }
    // The keys come in a fixed order (sorted metadata, then the tensors as given).
    let mut json = serde_json::Value::Object(header).to_string().into_bytes();
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for (_, _, _, data) in tensors {
        out.extend_from_slice(data);
    }
    Ok(out)
}

/// `latents` `[1, C, h, w]` as safetensors bytes with one tensor `latents`.
pub fn latents_bytes(latents: &Tensor<4>, metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let shape = latents.dims().to_vec();
    safetensors_bytes(
        &[(
            "latents",
            Dtype::F32,
            shape,
            f32_bytes(latents, "the latents")?,
        )],
        metadata,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_byte_identical_for_identical_inputs_and_read_back() {
        let device = Device::flex();
        let values: Vec<f32> = (0..2 * 4 * 2 * 3).map(|i| i as f32 * 0.25 - 3.0).collect();
        let latents =
            Tensor::<4>::from_data(TensorData::new(values.clone(), [2, 4, 2, 3]), &device);
        let metadata: BTreeMap<String, String> = (0..12)
            .map(|i| (format!("key{i}"), format!("value {i}")))
            .collect();
        let t = Trajectory {
            nulls: None,
            latents,
            timesteps: vec![1, 21],
            steps: 50,
            metadata: metadata.clone(),
            origin: None,
        };
        let bytes = t.to_bytes().unwrap();
        for _ in 0..4 {
            assert_eq!(t.to_bytes().unwrap(), bytes);
        }
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(header_len % 8, 0, "header padded to 8 bytes");
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let back: Vec<f32> = st
            .tensor("latents")
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(back, values);
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let read: BTreeMap<String, String> = meta.metadata().clone().unwrap().into_iter().collect();
        assert_eq!(read, metadata);
    }
}
