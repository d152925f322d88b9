//! `--device`: the Burn backends compiled into this binary, chosen at run time.

use anyhow::{Result, bail};
use burn::tensor::Device;

/// Names accepted by `--device`, in the order `--help` lists them.
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

/// The device for a `--device` value, after a one-operation probe: a GPU backend without an
/// adapter or driver is an error here rather than a panic inside the first model call.
pub fn select(name: &str) -> Result<Device> {
    let device = match name {
        "cpu" | "flex" => return Ok(Device::flex()),
        "wgpu" => wgpu()?,
        "cuda" => cuda()?,
        other => bail!(
            "unknown --device {other:?}: this build offers {}",
            BUILT_IN.join(", ")
        ),
    };
    if let Err(e) = sd_models::device::probe(&device) {
        bail!("--device {name}: the backend cannot run on this machine: {e}");
    }
    Ok(device)
}

#[cfg(feature = "wgpu")]
fn wgpu() -> Result<Device> {
    Ok(Device::wgpu(Default::default()))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu() -> Result<Device> {
    bail!(
        "--device wgpu: this ddim-edit was built without the wgpu backend (rebuild with `cargo build --release --features wgpu`); built in: {}",
        BUILT_IN.join(", ")
    )
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<Device> {
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
        bail!("--device cuda: no CUDA driver (libcuda.so.1) found on this machine");
    }
    Ok(Device::cuda(0))
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<Device> {
    bail!(
        "--device cuda: this ddim-edit was built without the cuda backend (rebuild with `cargo build --release --features cuda`); built in: {}",
        BUILT_IN.join(", ")
    )
}
