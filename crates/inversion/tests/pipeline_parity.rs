//! End-to-end parity with diffusers on the tiny fixture models (SD1, SD2 non-square with the
//! single-batch inversion path, SD2 v-prediction with trailing spacing, and text-to-image).
//!
//! References: `tests/reference/gen_pipeline.py` (diffusers' `DDIMInverseScheduler` +
//! `DDIMScheduler` with the same algorithm). Tolerances, as max |ours − ref| / max |ref|:
//! x₀ 1e-4 (one VAE pass, f32); trajectory and final latents 2e-3 (f32 rounding compounds over
//! up to 2N guided UNet calls, amplified by guidance 3.5); decoded PNG within 3 levels of 255.
//!
//! Also in this binary: `fuzz_corpus`, the fuzz corpus replayed without libFuzzer.

mod fuzz_corpus;
mod null_text;

use burn::tensor::{Device, Tensor};
use inversion::image::{image_to_tensor, tensor_to_image};
use inversion::{EditOptions, LoadOptions, NoProgress, Pipeline};
use serde_json::Value;
use test_support::{RefTensor, fixtures, load_refs, max_level_diff};

/// [`test_support::rel_err`], logged under `what`.
fn rel_err(ours: &Tensor<4>, r: &RefTensor, what: &str) -> f32 {
    let err = test_support::rel_err(ours.clone(), r);
    eprintln!("{what}: rel err {err:e}");
    err
}

/// Every case on the CPU backend.
#[test]
fn edit_and_generate_match_diffusers() {
    run_cases("cpu", &Device::flex(), &[]);
}

/// With `--features wgpu`, wgpu (CI: Mesa lavapipe) on the SD2 non-square edit, beside the CPU
/// test (shader compiles take one core). Generation runs the same sampling and its SD1 UNet is
/// in the models' wgpu parity; each further case costs CI minutes of shader compiles from cold
/// caches.
#[cfg(feature = "wgpu")]
#[test]
fn edit_matches_diffusers_on_wgpu() {
    if let Some(wgpu) = test_support::wgpu_device() {
        run_cases("wgpu", &wgpu, &["sd2"]);
    }
}

fn run_cases(backend: &str, device: &Device, subset: &[&str]) {
    let device = device.clone();
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("refs/pipeline.json")).unwrap(),
    )
    .unwrap();
    let cases = spec["cases"].as_array().unwrap();
    assert!(cases.len() >= 4);
    for case in cases {
        let case_name = case["name"].as_str().unwrap();
        if !subset.is_empty() && !subset.contains(&case_name) {
            continue;
        }
        let name = &format!("{backend} {case_name}");
        let s = |k: &str| case[k].as_str().unwrap_or("").to_string();
        let n = case["steps"].as_u64().unwrap() as usize;
        let k = case["start_step"].as_u64().unwrap() as usize;
        let g = case["guidance"].as_f64().unwrap();
        let size = (
            case["width"].as_u64().unwrap() as usize,
            case["height"].as_u64().unwrap() as usize,
        );
        let r = load_refs(case["ref"].as_str().unwrap());
        let p = Pipeline::load(
            &fixtures().join("models").join(s("model")),
            &LoadOptions::new(device.clone()),
        )
        .unwrap();
        p.check_size(size.0, size.1).unwrap();
        let sampler: Vec<i64> = p.schedule().timesteps(n).unwrap();
        assert_eq!(
            sampler, r["sampler_timesteps"].i64,
            "{name}: sampler timesteps"
        );

        if case["kind"] == "generate" {
            let cond = p
                .conditioning(&s("prompt"), &s("negative_prompt"), g)
                .unwrap();
            let out = inversion::sample(
                &p,
                r["initial_latents"].float(&device),
                &cond,
                n,
                0,
                &NoProgress,
            )
            .unwrap();
            assert!(rel_err(&out, &r["generated_latents"], &format!("{name} latents")) < 2e-3);
            let img = tensor_to_image(p.decode(out, &NoProgress).unwrap()).unwrap();
            assert!(
                max_level_diff(&img, &r["generated_image"]) <= 3,
                "{name}: image"
            );
            continue;
        }

        let png = image::open(fixtures().join(s("image"))).unwrap().to_rgb8();
        let x0 = p
            .encode(image_to_tensor(&png, size, &device), &NoProgress)
            .unwrap();
        assert!(rel_err(&x0, &r["x0"], &format!("{name} x0")) < 1e-4);
        let g_inv = case["inversion_guidance"].as_f64().unwrap();
        let inv_cond = p
            .conditioning(&s("prompt"), &s("negative_prompt"), g_inv)
            .unwrap();
        let traj = inversion::invert(&p, x0, &inv_cond, n, n, &NoProgress).unwrap();
        assert_eq!(
            traj.timesteps, r["timesteps"].i64,
            "{name}: inverse timesteps"
        );
        assert!(
            rel_err(
                &traj.latents,
                &r["trajectory"],
                &format!("{name} trajectory")
            ) < 2e-3
        );

        // The edit entry point computes only the N−k inverse steps it needs.
        let options = EditOptions {
            steps: n,
            start_step: k,
            guidance: g,
            inversion_guidance: g_inv,
            negative_prompt: s("negative_prompt"),
            ..EditOptions::plain(n)
        };
        let edit = inversion::edit(
            &p,
            image_to_tensor(&png, size, &device),
            &s("prompt"),
            &s("edit_prompt"),
            &options,
            &NoProgress,
        )
        .unwrap();
        assert_eq!(
            edit.trajectory.len(),
            n - k,
            "{name}: inverse steps computed"
        );
        assert!(
            rel_err(
                &edit.latents,
                &r["edited_latents"],
                &format!("{name} edited latents")
            ) < 2e-3
        );
        let img = tensor_to_image(edit.image).unwrap();
        let diff = max_level_diff(&img, &r["edited_image"]);
        eprintln!("{name}: edited PNG max diff {diff} levels");
        assert!(diff <= 3, "{name}: edited image differs by {diff} levels");

        // Reconstruction: sampling back with the source prompt from the same entry.
        let cond = p
            .conditioning(&s("prompt"), &s("negative_prompt"), g)
            .unwrap();
        let recon = inversion::sample(&p, traj.entry(n - 1 - k), &cond, n, k, &NoProgress).unwrap();
        assert!(
            rel_err(
                &recon,
                &r["recon_latents"],
                &format!("{name} recon latents")
            ) < 2e-3
        );
    }
}

mod continued;
mod methods;
