//! Devices and compute dtypes by name, for every front end (`ddim-edit --device/--dtype`,
//! `cargo xtask bench`): the Burn backends compiled in (this crate's `wgpu`/`cuda` features),
//! chosen at run time, and a probe, since a GPU backend without a driver or adapter panics on its
//! first operation: callers probe once and turn that into an error.

use burn::tensor::{DType, Device, Tensor};

/// Names accepted by [`select`], in the order `--help` lists them.
pub const BUILT_IN: &[&str] = &[
    "cpu",
    #[cfg(feature = "wgpu")]
    "wgpu",
    #[cfg(feature = "cuda")]
    "cuda",
];

/// Help text of `--device`.
pub const HELP: &str = if cfg!(all(feature = "wgpu", feature = "cuda")) {
    "Backend to run on: cpu (flex), wgpu or cuda [built in: cpu, wgpu, cuda]"
} else if cfg!(feature = "wgpu") {
    "Backend to run on: cpu (flex) or wgpu [built in: cpu, wgpu; cuda needs --features cuda]"
} else if cfg!(feature = "cuda") {
    "Backend to run on: cpu (flex) or cuda [built in: cpu, cuda; wgpu needs --features wgpu]"
} else {
    "Backend to run on [built in: cpu; wgpu and cuda need building with --features wgpu / cuda]"
};

/// Names accepted by [`parse_dtype`]: the compute dtypes of the text encoder and UNet.
pub const DTYPES: [&str; 3] = ["f32", "f16", "bf16"];

/// Why a device or dtype name gives nothing to compute with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown --device {name:?}: this build offers {}", BUILT_IN.join(", "))]
    Unknown { name: String },
    #[error(
        "--device {name}: this ddim-edit was built without the {name} backend (rebuild with \
         `cargo build --release --features {name}`); built in: {}",
        BUILT_IN.join(", ")
    )]
    NotBuilt { name: &'static str },
    #[error("--device cuda: no CUDA driver (libcuda.so.1) found on this machine")]
    NoCudaDriver,
    #[error("--device {name}: the backend cannot run on this machine: {message}")]
    Probe { name: String, message: String },
    #[error("unknown --dtype {name:?}: use {}", DTYPES.join(", "))]
    UnknownDtype { name: String },
}

/// The device for a `--device` value, after a one-operation probe: a GPU backend without an
/// adapter or driver is an error here rather than a panic inside the first model call.
pub fn select(name: &str) -> Result<Device, DeviceError> {
    let device = match name {
        "cpu" | "flex" => return Ok(Device::flex()),
        "wgpu" => wgpu()?,
        "cuda" => cuda()?,
        other => {
            return Err(DeviceError::Unknown {
                name: other.to_string(),
            });
        }
    };
    probe(&device).map_err(|message| DeviceError::Probe {
        name: name.to_string(),
        message,
    })?;
    Ok(device)
}

#[cfg(feature = "wgpu")]
fn wgpu() -> Result<Device, DeviceError> {
    Ok(Device::wgpu(Default::default()))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu() -> Result<Device, DeviceError> {
    Err(DeviceError::NotBuilt { name: "wgpu" })
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<Device, DeviceError> {
    // Burn's CUDA runtime panics when the driver library is missing: look for it first.
    let found = ["libcuda.so.1", "libcuda.so"].iter().any(|lib| {
        [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib64",
            "/usr/local/nvidia/lib64",
            "/usr/lib/wsl/lib",
        ]
        .iter()
        .any(|dir| std::path::Path::new(dir).join(lib).exists())
    });
    if !found {
        return Err(DeviceError::NoCudaDriver);
    }
    Ok(Device::cuda(0))
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<Device, DeviceError> {
    Err(DeviceError::NotBuilt { name: "cuda" })
}

/// The compute dtype of a `--dtype` value: `f32`, `f16` or `bf16`.
pub fn parse_dtype(name: &str) -> Result<DType, DeviceError> {
    match name {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        other => Err(DeviceError::UnknownDtype {
            name: other.to_string(),
        }),
    }
}

/// Runs one small computation on `device`. `Err` carries the backend's message when it cannot
/// (no adapter, no driver, a failed kernel) or computes a wrong result.
pub fn probe(device: &Device) -> Result<(), String> {
    let d = device.clone();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(move || {
        (Tensor::<1>::ones([4], &d) * 2.0)
            .sum()
            .into_scalar::<f32>()
    });
    std::panic::set_hook(hook);
    match result {
        Ok(8.0) => Ok(()),
        Ok(v) => Err(format!("a test computation gave {v} instead of 8")),
        Err(payload) => Err(payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the backend panicked".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_backend_passes_the_probe() {
        assert_eq!(probe(&Device::flex()), Ok(()));
    }

    #[test]
    fn names_select_devices_and_dtypes_or_say_what_is_built_in() {
        assert!(select("cpu").is_ok() && select("flex").is_ok());
        let e = select("tpu").unwrap_err().to_string();
        assert!(e.contains("\"tpu\"") && e.contains("cpu"), "{e}");
        if !cfg!(feature = "cuda") {
            let e = select("cuda").unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
        for name in DTYPES {
            assert!(parse_dtype(name).is_ok(), "{name}");
        }
        assert_eq!(parse_dtype("bf16"), Ok(DType::BF16));
        let e = parse_dtype("f8").unwrap_err().to_string();
        assert!(e.contains("f32, f16, bf16"), "{e}");
    }
}
