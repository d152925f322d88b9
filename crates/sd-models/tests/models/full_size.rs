//! A full-size Stable Diffusion 2.1-base UNet (865 M parameters, random weights from the preset)
//! runs one forward pass at 64×64 latents. Slow (minutes on 2 cores, ~4 GB):
//! `cargo test --release -p sd-models --test models full_size -- --ignored`.

use std::path::Path;

use burn::tensor::{Device, Distribution, Tensor};
use sd_models::unet::{UNet2DConditionModel, UNetConfig};

#[test]
#[ignore = "full-size model: run with --ignored"]
fn sd21_base_unet_forward_at_64x64() {
    let device = Device::flex();
    let config = UNetConfig::sd21_base();
    let unet =
        UNet2DConditionModel::new(&config, Path::new("preset sd-2-1-base"), &device).unwrap();
    let sample = Tensor::<4>::random([1, 4, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    let context = Tensor::<3>::random([1, 77, 1024], Distribution::Normal(0.0, 1.0), &device);
    let out = unet.forward(sample, &[981.0], context).unwrap();
    assert_eq!(out.dims(), [1, 4, 64, 64]);
    let total: f32 = out.abs().sum().into_scalar::<f32>();
    assert!(total.is_finite() && total > 0.0, "output magnitude {total}");
}
