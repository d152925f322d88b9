//! Whether a Burn device can compute: a GPU backend without a driver or adapter panics on its first
//! operation, so callers probe once and turn that into an error.

use burn::tensor::{Device, Tensor};

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
}
