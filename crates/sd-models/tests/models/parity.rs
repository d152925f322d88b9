//! Component parity with diffusers/transformers on the tiny fixture models and the toy model.
//!
//! Fixtures: `tests/fixtures/models/{tiny-*,toy}` and `tests/fixtures/refs/*`, written by
//! `tests/reference/gen_tiny_models.py`, `gen_toy_refs.py` and `gen_taesd.py` (outputs of the models reloaded by
//! diffusers/transformers in float32). Metric: max |ours − ref| / max |ref|. Tolerance 1e-4: float32 arithmetic summed in a
//! different order (Burn's kernels vs PyTorch's) over a few dozen layers; observed errors are logged.

use burn::tensor::{DType, Device};
use sd_models::clip::ClipTextModel;
use sd_models::unet::UNet2DConditionModel;
use sd_models::vae::{AutoencoderKL, AutoencoderTiny};
use test_support::{load_refs, model_dir, rel_err};

const TOL: f32 = 1e-4;
/// The tiny random models, and the trained toy model (`--model toy`: plain first down block,
/// attention only at the two lower resolutions, VAE without mid-block attention).
const MODELS: [&str; 4] = ["tiny-sd1", "tiny-sd2", "tiny-sd2-v", "toy"];

/// The CPU backend always; wgpu too when built with `--features wgpu` (CI: Mesa lavapipe).
fn devices() -> Vec<(&'static str, Device)> {
    #[allow(unused_mut)]
    let mut d = vec![("cpu", Device::flex())];
    #[cfg(feature = "wgpu")]
    if let Some(wgpu) = test_support::wgpu_device() {
        d.push(("wgpu", wgpu));
    }
    d
}

#[test]
fn text_encoder_matches_transformers() {
    for (backend, device) in devices() {
        for name in MODELS {
            let model = ClipTextModel::load(
                &model_dir(name).join("text_encoder"),
                None,
                DType::F32,
                &device,
            )
            .unwrap_or_else(|e| panic!("{backend} {name}: {e}"));
            let refs = load_refs(&format!("refs/{name}-text.safetensors"));
            let ids = refs["input_ids"].int::<2>(&device);
            let out = model.forward(ids).unwrap();
            let err = rel_err(out, &refs["last_hidden_state"]);
            eprintln!("{backend} {name} text encoder: rel err {err:e}");
            assert!(err < TOL, "{backend} {name} text encoder: rel err {err:e}");
        }
    }
}

/// Runs the 3 reference cases of every UNet with weights and inputs in `dtype` on `device`.
fn check_unet(backend: &str, device: &Device, dtype: DType, tol: f32) {
    for name in MODELS {
        let (unet, _) =
            UNet2DConditionModel::load(&model_dir(name).join("unet"), None, dtype, device)
                .unwrap_or_else(|e| panic!("{backend} {dtype:?} {name}: {e}"));
        let refs = load_refs(&format!("refs/{name}-unet.safetensors"));
        for case in 0..3 {
            let r = |k: &str| &refs[&format!("case{case}_{k}")];
            let ts: Vec<f64> = r("timestep").i64.iter().map(|&t| t as f64).collect();
            let out = unet
                .forward(
                    r("sample").float::<4>(device).cast(dtype),
                    &ts,
                    r("encoder_hidden_states").float::<3>(device).cast(dtype),
                )
                .unwrap();
            // Autocast computes the products in bf16 and returns f32 activations.
            let want = match sd_models::autocast::applies(dtype, Some(device)) {
                true => DType::F32,
                false => dtype,
            };
            assert_eq!(out.dtype(), want, "{name}: computed in {dtype:?}");
            let err = rel_err(out.cast(DType::F32), r("out"));
            eprintln!("{backend} {dtype:?} {name} unet case {case}: rel err {err:e}");
            assert!(
                err < tol,
                "{backend} {dtype:?} {name} unet case {case}: rel err {err:e} (tolerance {tol:e})"
            );
        }
    }
}

#[test]
fn unet_matches_diffusers() {
    for (backend, device) in devices() {
        check_unet(backend, &device, DType::F32, TOL);
    }
}

#[test]
fn vae_matches_diffusers() {
    for (backend, device) in devices() {
        for name in MODELS {
            let (vae, _) =
                AutoencoderKL::load(&model_dir(name).join("vae"), None, DType::F32, &device)
                    .unwrap_or_else(|e| panic!("{backend} {name}: {e}"));
            let refs = load_refs(&format!("refs/{name}-vae.safetensors"));
            let post = vae.encode(refs["image"].float(&device)).unwrap();
            let checks = [
                (
                    "posterior mean",
                    rel_err(post.mean, &refs["posterior_mean"]),
                ),
                (
                    "posterior logvar",
                    rel_err(post.logvar, &refs["posterior_logvar"]),
                ),
                (
                    "square posterior mean",
                    rel_err(
                        vae.encode(refs["image_sq"].float(&device)).unwrap().mean,
                        &refs["posterior_mean_sq"],
                    ),
                ),
                (
                    "decode",
                    rel_err(
                        vae.decode(refs["latents"].float(&device)).unwrap(),
                        &refs["decoded"],
                    ),
                ),
            ];
            for (what, err) in checks {
                eprintln!("{backend} {name} vae {what}: rel err {err:e}");
                assert!(err < TOL, "{backend} {name} vae {what}: rel err {err:e}");
            }
        }
    }
}

/// The reduced-precision path (`--dtype f16|bf16`): weights and activations in f16/bf16 on the CPU
/// backend, against the same float32 diffusers reference. Tolerances follow from the formats' unit
/// roundoff (f16 2⁻¹¹ ≈ 4.9e-4, bf16 2⁻⁸ ≈ 3.9e-3) grown over the UNet's ~20 rounded layers —
/// about ten units each: 5e-3 for f16, 4e-2 for bf16; observed errors are logged.
///
/// On a CPU with AVX512-BF16, bf16 runs as autocast (bf16 products, f32 elsewhere); the test then
/// runs itself again with `DDIM_EDIT_SIMD=avx2`, which gives the whole-model bf16 path that other
/// CPUs take, so both are checked wherever the first can run.
#[test]
fn unet_in_reduced_precision_stays_close_to_diffusers() {
    for (dtype, tol) in [(DType::F16, 5e-3), (DType::BF16, 4e-2)] {
        check_unet("cpu", &Device::flex(), dtype, tol);
    }
    if sd_models::cpu::bf16_autocast() {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "parity::unet_in_reduced_precision_stays_close_to_diffusers",
            ])
            .args(["--nocapture", "--test-threads", "1"])
            .env(sd_models::cpu::SIMD_ENV, "avx2")
            .status()
            .unwrap();
        assert!(
            status.success(),
            "whole-model bf16 (DDIM_EDIT_SIMD=avx2): {status}"
        );
    }
}

/// TAESD (`AutoencoderTiny`) on `tests/fixtures/models/tiny-taesd`, written by
/// `tests/reference/gen_taesd.py`: encode and decode against diffusers, at the same tolerance.
#[test]
fn tiny_autoencoder_matches_diffusers() {
    for (backend, device) in devices() {
        let (taesd, config) = AutoencoderTiny::load(&model_dir("tiny-taesd"), None, &device)
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(config.downsample_factor(), 2);
        let refs = load_refs("refs/taesd.safetensors");
        let checks = [
            (
                "encode",
                rel_err(
                    taesd.encode(refs["image"].float(&device)).unwrap(),
                    &refs["encoded"],
                ),
            ),
            (
                "decode",
                rel_err(
                    taesd.decode(refs["latents"].float(&device)).unwrap(),
                    &refs["decoded"],
                ),
            ),
        ];
        for (what, err) in checks {
            eprintln!("{backend} taesd {what}: rel err {err:e}");
            assert!(err < TOL, "{backend} taesd {what}: rel err {err:e}");
        }
    }
}
