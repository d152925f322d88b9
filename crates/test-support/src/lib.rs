//! What the parity tests of `sd-models` and `inversion` share: where the fixtures are, reference
//! tensors read from the safetensors files `tests/reference/*.py` write, the error metric the
//! tolerances are stated in, and the wgpu device probe; and the stand-in Hugging Face hub the
//! fetch tests of `model-source` and the CLI download from ([`hub_server`]).

pub mod hub_server;

use std::collections::HashMap;
use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

/// `tests/fixtures/` at the workspace root.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A fixture model folder: `tests/fixtures/models/<name>`.
pub fn model_dir(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

/// A reference tensor: its shape and values (one of the three lists, by the file's dtype).
pub struct RefTensor {
    pub shape: Vec<usize>,
    pub f32: Vec<f32>,
    pub i64: Vec<i64>,
    pub u8: Vec<u8>,
}

impl RefTensor {
    pub fn float<const D: usize>(&self, device: &Device) -> Tensor<D> {
        Tensor::from_data(
            TensorData::new(self.f32.clone(), self.shape.clone()),
            device,
        )
    }

    pub fn int<const D: usize>(&self, device: &Device) -> Tensor<D, Int> {
        Tensor::from_data(
            TensorData::new(self.i64.clone(), self.shape.clone()),
            device,
        )
    }
}

/// The tensors of a reference file (f32, i64 or u8), by name; `path` is relative to
/// [`fixtures()`]. Panics with the path on a missing or malformed file.
pub fn load_refs(path: &str) -> HashMap<String, RefTensor> {
    let path = fixtures().join(path);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let st = SafeTensors::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("{path:?}: not a safetensors file: {e}"));
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let data = v.data();
            let mut r = RefTensor {
                shape: v.shape().to_vec(),
                f32: vec![],
                i64: vec![],
                u8: vec![],
            };
            match v.dtype() {
                Dtype::F32 => r.f32 = le_values(data, f32::from_le_bytes),
                Dtype::I64 => r.i64 = le_values(data, i64::from_le_bytes),
                Dtype::U8 => r.u8 = data.to_vec(),
                d => panic!("{path:?}: unexpected dtype {d:?} for {k}"),
            }
            (k, r)
        })
        .collect()
}

fn le_values<T, const N: usize>(data: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N)
        .map(|c| from(c.try_into().expect("chunks of N bytes")))
        .collect()
}

/// max |ours − reference| / max |reference|: the metric the parity tolerances are stated in.
/// Panics on a shape mismatch or a non-finite output.
pub fn rel_err<const D: usize>(ours: Tensor<D>, reference: &RefTensor) -> f32 {
    assert_eq!(ours.dims().to_vec(), reference.shape, "shape");
    let ours: Vec<f32> = ours
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 values");
    let max_ref = reference.f32.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_err = ours
        .iter()
        .zip(&reference.f32)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(ours.iter().all(|v| v.is_finite()), "non-finite output");
    max_err / max_ref
}

/// The largest difference, in levels of 255, between an RGB image and a u8 reference of shape
/// `[height, width, 3]`.
pub fn max_level_diff(ours: &image::RgbImage, reference: &RefTensor) -> u8 {
    assert_eq!(
        vec![ours.height() as usize, ours.width() as usize, 3],
        reference.shape,
        "image shape"
    );
    ours.as_raw()
        .iter()
        .zip(&reference.u8)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .expect("a non-empty image")
}

/// The wgpu device if an adapter answers (CI installs Mesa's lavapipe). Without one the wgpu half
/// of a test is skipped with a note — except under CI (`CI` set), where that is a failure.
#[cfg(feature = "wgpu")]
pub fn wgpu_device() -> Option<Device> {
    let device = Device::wgpu(Default::default());
    match sd_models::device::probe(&device) {
        Ok(()) => Some(device),
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI: the wgpu backend has no usable adapter (is mesa-vulkan-drivers installed?): {e}"
            );
            eprintln!("note: no usable wgpu adapter ({e}); skipping the wgpu half of this test");
            None
        }
    }
}
