//! Parity of the editing methods with `tests/reference/gen_editing.py`: Prompt-to-Prompt (word
//! swap, refinement, re-weighting, local blend) through diffusers' UNet with attention processors,
//! and the negative-prompt and direct inversions, on the tiny SD1 model and the trained toy model.
//! Tolerance as the plain edits': final latents within 2e-3 of max |ref| (f32 rounding over 2N
//! UNet calls amplified by guidance 3.5).

use std::collections::HashMap;

use burn::tensor::Device;
use inversion::image::image_to_tensor;
use inversion::{EditOptions, Inversion, LoadOptions, NoProgress, P2pOptions, Pipeline};
use serde_json::Value;
use test_support::{fixtures, load_refs};

fn options(case: &Value) -> EditOptions {
    let n = case["steps"].as_u64().unwrap() as usize;
    let f = |k: &str| case[k].as_f64().unwrap();
    let words = |k: &str| -> Vec<String> {
        case[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_string())
            .collect()
    };
    let reweight = case["reweight"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_f64().unwrap()))
        .collect();
    let attention = (case["attention"] == "p2p").then(|| P2pOptions {
        cross_replace: f("cross_replace"),
        self_replace: f("self_replace"),
        reweight,
        blend_words: words("blend_words"),
        blend_auto: case["blend_auto"].as_bool().unwrap_or(false),
        feature_replace: case["feature_replace"].as_f64().unwrap_or(0.0),
    });
    EditOptions {
        start_step: case["start_step"].as_u64().unwrap() as usize,
        guidance: f("guidance"),
        inversion_guidance: 1.0,
        inversion: case["inversion"]
            .as_str()
            .unwrap()
            .parse::<Inversion>()
            .unwrap(),
        attention,
        ..EditOptions::plain(n)
    }
}

#[test]
fn editing_methods_match_the_reference() {
    let device = Device::flex();
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("refs/editing.json")).unwrap(),
    )
    .unwrap();
    let cases = spec["cases"].as_array().unwrap();
    assert!(cases.len() >= 4);
    let mut pipelines: HashMap<String, Pipeline> = HashMap::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let model = case["model"].as_str().unwrap();
        let p = pipelines.entry(model.to_string()).or_insert_with(|| {
            let dir = fixtures().join("models").join(model);
            Pipeline::load(&dir, &LoadOptions::new(device.clone())).unwrap()
        });
        let r = load_refs(case["ref"].as_str().unwrap());
        let size = case["size"].as_u64().unwrap() as usize;
        let png = image::open(fixtures().join(case["image"].as_str().unwrap()))
            .unwrap()
            .to_rgb8();
        let out = inversion::edit(
            p,
            image_to_tensor(&png, (size, size), &device),
            case["prompt"].as_str().unwrap(),
            case["edit_prompt"].as_str().unwrap(),
            &options(case),
            &NoProgress,
        )
        .unwrap();
        let err = test_support::rel_err(out.latents, &r["edited_latents"]);
        eprintln!("{name}: edited latents rel err {err:e}");
        assert!(err < 2e-3, "{name}: edited latents rel err {err:e}");
    }
}

/// Direct inversion adds the source's correction to the edit branch too: with the edit prompt equal
/// to the source, both branches stay equal and the edit ends exactly at the photo's latent x₀
/// (PnP Inversion's `add_target`). Plain DDIM inversion does not: its reconstruction drifts, which
/// the second assertion shows is measurable at this size. Bound 2e-3 of max |x₀|, the plain edits'
/// parity tolerance: in exact arithmetic the branches stay equal, in f32 the two rows of the batch
/// part by rounding that 2N guided UNet calls of the random tiny model amplify (measured 4.6e-4).
#[test]
fn direct_inversion_with_the_source_prompt_returns_the_photo() {
    let device = Device::flex();
    let dir = fixtures().join("models/tiny-sd1");
    let p = Pipeline::load(&dir, &LoadOptions::new(device.clone())).unwrap();
    let png = image::open(fixtures().join("images/sd1.png"))
        .unwrap()
        .to_rgb8();
    let prompt = "a red circle on a white background";
    let edit = |inversion: Inversion| {
        let o = EditOptions {
            start_step: 0,
            inversion_guidance: 1.0,
            inversion,
            attention: Some(P2pOptions::default()),
            ..EditOptions::plain(8)
        };
        let x = image_to_tensor(&png, (16, 16), &device);
        inversion::edit(&p, x, prompt, prompt, &o, &NoProgress).unwrap()
    };
    let values =
        |t: burn::tensor::Tensor<4>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    let rel = |ours: &[f32], x0: &[f32]| {
        let max = x0.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = ours
            .iter()
            .zip(x0)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        err / max
    };
    let out = edit(Inversion::Direct);
    let x0 = values(out.trajectory.origin.clone().unwrap());
    let err = rel(&values(out.latents), &x0);
    assert!(err < 2e-3, "direct: |edit - x0| rel err {err:e}");
    let drift = rel(&values(edit(Inversion::Ddim).latents), &x0);
    assert!(drift > 1e-2, "ddim: |edit - x0| rel err {drift:e}");
}
