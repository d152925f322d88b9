//! Helpers shared by the parity tests: fixture paths, reference tensors, the error metric.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

pub fn model_dir(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

/// A reference tensor: shape and values (f32 or i64 widened to f64 for ids).
pub struct RefTensor {
    pub shape: Vec<usize>,
    pub f32: Vec<f32>,
    pub i64: Vec<i64>,
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

pub fn load_refs(name: &str) -> HashMap<String, RefTensor> {
    let path = fixtures().join("refs").join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let st = SafeTensors::deserialize(&bytes).expect("valid reference file");
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let data = v.data();
            let (f, i) = match v.dtype() {
                Dtype::F32 => (
                    data.chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                    vec![],
                ),
                Dtype::I64 => (
                    vec![],
                    data.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
                d => panic!("unexpected dtype {d:?} for {k}"),
            };
            (
                k,
                RefTensor {
                    shape: v.shape().to_vec(),
                    f32: f,
                    i64: i,
                },
            )
        })
        .collect()
}

/// max |ours − reference| / max |reference|: the metric the parity tolerances are stated in.
pub fn rel_err<const D: usize>(ours: Tensor<D>, reference: &RefTensor) -> f32 {
    assert_eq!(ours.dims().to_vec(), reference.shape, "shape");
    let ours: Vec<f32> = ours
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap();
    let max_ref = reference.f32.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_err = ours
        .iter()
        .zip(&reference.f32)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(ours.iter().all(|v| v.is_finite()), "non-finite output");
    max_err / max_ref
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
