//! Full-size architectures without weights: every parameter name and shape of our modules, built
//! from the published configs, equals the state dict of diffusers'/transformers' models built from
//! the same configs on the `meta` device (`tests/reference/gen_manifests.py`).

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::Device;
use sd_models::clip::{ClipTextConfig, ClipTextModel};
use sd_models::unet::{UNet2DConditionModel, UNetConfig};
use sd_models::vae::{AutoencoderKL, VaeConfig};
use sd_models::weights::manifest;
use test_support::fixtures;

const MODELS: [&str; 3] = ["sd-1-5", "sd-2-1-base", "sd-2-1"];

fn expected(model: &str, component: &str) -> BTreeMap<String, Vec<usize>> {
    let path = fixtures()
        .join("manifests")
        .join(model)
        .join(format!("{component}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn config(model: &str, component: &str) -> std::path::PathBuf {
    fixtures()
        .join("configs")
        .join(model)
        .join(component)
        .join("config.json")
}

fn assert_same(
    what: &str,
    ours: BTreeMap<String, Vec<usize>>,
    theirs: BTreeMap<String, Vec<usize>>,
) {
    let missing: Vec<_> = theirs
        .keys()
        .filter(|k| !ours.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<_> = ours
        .keys()
        .filter(|k| !theirs.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: missing {missing:?}, extra {extra:?}"
    );
    for (k, shape) in &theirs {
        assert_eq!(&ours[k], shape, "{what}: shape of {k}");
    }
    assert!(theirs.len() > 100, "{what}: only {} keys", theirs.len());
}

#[test]
fn full_size_manifests_match() {
    let device = Device::flex();
    for model in MODELS {
        let path = config(model, "unet");
        let unet = UNet2DConditionModel::new(
            &UNetConfig::from_file(&path).unwrap(),
            Path::new(&path),
            &device,
        )
        .unwrap();
        assert_same(
            &format!("{model} unet"),
            manifest(&unet),
            expected(model, "unet"),
        );

        let vae = AutoencoderKL::new(
            &VaeConfig::from_file(&config(model, "vae")).unwrap(),
            &device,
        );
        assert_same(
            &format!("{model} vae"),
            manifest(&vae),
            expected(model, "vae"),
        );

        let clip = ClipTextModel::new(
            &ClipTextConfig::from_file(&config(model, "text_encoder")).unwrap(),
            &device,
        );
        let ours = manifest(&clip)
            .into_iter()
            .map(|(k, v)| (format!("text_model.{k}"), v))
            .collect();
        assert_same(
            &format!("{model} text encoder"),
            ours,
            expected(model, "text_encoder"),
        );
    }
}

#[test]
fn presets_equal_published_configs() {
    let published = |m: &str| UNetConfig::from_file(&config(m, "unet")).unwrap();
    let strip = |mut c: UNetConfig| {
        // Presets leave sample-independent fields at diffusers' defaults; compare what defines the model.
        c.only_cross_attention = serde_json::Value::Null;
        c
    };
    assert_eq!(strip(UNetConfig::sd15()), strip(published("sd-1-5")));
    assert_eq!(
        strip(UNetConfig::sd21_base()),
        strip(published("sd-2-1-base"))
    );
    assert_eq!(strip(UNetConfig::sd21()), strip(published("sd-2-1")));
    let vae = |m: &str| VaeConfig::from_file(&config(m, "vae")).unwrap();
    assert_eq!(VaeConfig::sd(512), vae("sd-1-5"));
    assert_eq!(VaeConfig::sd(768), vae("sd-2-1-base"));
    assert_eq!(VaeConfig::sd(768), vae("sd-2-1"));
    let clip = |m: &str| ClipTextConfig::from_file(&config(m, "text_encoder")).unwrap();
    assert_eq!(ClipTextConfig::sd15(), clip("sd-1-5"));
    assert_eq!(ClipTextConfig::sd21(), clip("sd-2-1"));
    assert_eq!(ClipTextConfig::sd21(), clip("sd-2-1-base"));
}
