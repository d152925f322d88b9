//! Single-file checkpoints: the LDM → diffusers map against the tiny checkpoints of
//! `tests/reference/gen_single_file.py` (which diffusers' `from_single_file` reads back as the
//! fixture folders) and against the published SD 1.5 / 2.1 files' key/shape manifests (which
//! diffusers' converters map to the diffusers manifests); the architecture read off the shapes;
//! and every kind of bad file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use safetensors::tensor::TensorView;
use sd_models::ModelError;
use sd_models::single_file::{Options, Part, Prepared, SingleFile};
use sd_models::weights::TensorInfo;
use serde_json::Value;

const PARTS: [Part; 3] = [Part::Unet, Part::Vae, Part::TextEncoder];

fn fixtures() -> PathBuf {
    test_support::fixtures()
}

fn checkpoint(name: &str) -> PathBuf {
    fixtures().join(format!("models/single-file/{name}.safetensors"))
}

fn weight_file(dir: &Path, part: Part) -> PathBuf {
    let stem = match part {
        Part::TextEncoder => "model",
        _ => "diffusion_pytorch_model",
    };
    dir.join(part.name()).join(format!("{stem}.safetensors"))
}

/// The folder's tensors by diffusers key (legacy VAE attention names as diffusers renames them,
/// `text_model.` on every text key, the `position_ids` buffer left out) as (dtype, shape, bytes).
fn folder_tensors(bytes: &[u8]) -> BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(k, _)| !k.ends_with("position_ids"))
        .map(|(k, v)| {
            let k = k
                .replace(".query.", ".to_q.")
                .replace(".key.", ".to_k.")
                .replace(".value.", ".to_v.")
                .replace(".proj_attn.", ".to_out.0.");
            (
                k,
                (
                    format!("{:?}", v.dtype()),
                    v.shape().to_vec(),
                    v.data().to_vec(),
                ),
            )
        })
        .collect()
}

fn negated(bytes: &[u8]) -> Vec<u8> {
    bytes
        .chunks_exact(4)
        .flat_map(|c| (-f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes())
        .collect()
}

/// Every tensor of each component equals the folder's, bit for bit; the SD 1 file's trained
/// (non-EMA) UNet is the folder's negated, as the generator wrote it, and is read only on request.
#[test]
fn tiny_checkpoints_give_the_folders_tensors() {
    for (name, ema) in [("tiny-sd1", true), ("tiny-sd1", false), ("tiny-sd2", true)] {
        let folder = fixtures().join("models").join(name);
        let options = Options { ema, derive: false };
        let prepared = Prepared::new(&checkpoint(name), &folder, options).unwrap();
        assert_eq!(prepared.ema, ema && name == "tiny-sd1", "{name}");
        for part in PARTS {
            let got = folder_tensors(&prepared.weights(part).unwrap());
            let want = folder_tensors(&std::fs::read(weight_file(&folder, part)).unwrap());
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>(),
                "{name} {part:?}"
            );
            for (key, (dtype, shape, data)) in &want {
                let flip = part == Part::Unet && name == "tiny-sd1" && !ema;
                let want = if flip { negated(data) } else { data.clone() };
                let g = &got[key];
                assert_eq!((&g.0, &g.1), (dtype, shape), "{name} {key}");
                assert!(g.2 == want, "{name} {key}: values differ (ema {ema})");
            }
        }
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A header-only checkpoint of a `{key: shape}` manifest (f32 tensors laid end to end).
fn from_manifest(path: &Path) -> SingleFile {
    let mut offset = 0u64;
    let header: BTreeMap<String, TensorInfo> = read_json(path)
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let shape: Vec<usize> = serde_json::from_value(v.clone()).unwrap();
            let bytes = 4 * shape.iter().product::<usize>() as u64;
            offset += bytes;
            let info = TensorInfo {
                dtype: "F32".into(),
                shape,
                data_offsets: (offset - bytes, offset),
            };
            (k.clone(), info)
        })
        .collect();
    SingleFile::from_header(path, header, 0).unwrap()
}

/// The published SD 1.5 and 2.1 single files (as manifests) map to exactly the diffusers
/// models' keys and shapes, and the configs read off their shapes are the published ones, also
/// when derived from the other family's config.
#[test]
fn published_checkpoints_map_to_the_diffusers_manifests_and_configs() {
    for (model, other) in [("sd-1-5", "sd-2-1"), ("sd-2-1", "sd-1-5")] {
        let sf = from_manifest(&fixtures().join(format!("manifests/{model}/single-file.json")));
        let plan = sf.plan(true).unwrap();
        assert!(!plan.ema);
        for part in PARTS {
            let mut shapes = sf.shapes(plan.part(part)).unwrap();
            // A buffer, not a parameter: the manifests leave it out, the loader ignores it.
            shapes.remove("text_model.embeddings.position_ids");
            let manifest = fixtures().join(format!("manifests/{model}/{}.json", part.name()));
            let want: BTreeMap<String, Vec<usize>> =
                serde_json::from_value(read_json(&manifest)).unwrap();
            let differ: Vec<_> = shapes
                .iter()
                .filter(|(k, v)| want.get(*k) != Some(v))
                .map(|(k, _)| k)
                .chain(want.keys().filter(|k| !shapes.contains_key(*k)))
                .collect();
            assert!(differ.is_empty(), "{model} {part:?}: {differ:?}");

            let published =
                read_json(&fixtures().join(format!("configs/{model}/{}/config.json", part.name())));
            for base in [model, other] {
                let path = fixtures().join(format!("configs/{base}/{}/config.json", part.name()));
                let mut config = read_json(&path);
                sd_models::single_file::derive::derive(part, sf.family(), &shapes, &mut config);
                for field in derived_fields(part) {
                    assert_eq!(
                        normal(field, &config[field]),
                        normal(field, &published[field]),
                        "{model} from {base}: {field}"
                    );
                }
            }
        }
    }
}

/// A config value as diffusers reads it: an absent `use_linear_projection` is false.
fn normal(field: &str, value: &Value) -> Value {
    match (field, value) {
        ("use_linear_projection", Value::Null) => Value::Bool(false),
        _ => value.clone(),
    }
}

/// The fields [`sd_models::single_file::derive`] reads off the shapes.
fn derived_fields(part: Part) -> &'static [&'static str] {
    match part {
        Part::Unet => &[
            "in_channels",
            "out_channels",
            "block_out_channels",
            "layers_per_block",
            "down_block_types",
            "up_block_types",
            "cross_attention_dim",
            "use_linear_projection",
            "attention_head_dim",
        ],
        Part::Vae => &[
            "block_out_channels",
            "layers_per_block",
            "down_block_types",
            "up_block_types",
            "in_channels",
            "out_channels",
            "latent_channels",
        ],
        Part::TextEncoder => &[
            "vocab_size",
            "hidden_size",
            "max_position_embeddings",
            "num_hidden_layers",
            "intermediate_size",
            "num_attention_heads",
        ],
    }
}

/// The tiny checkpoints' shapes, derived from the published configs, give the tiny folders'
/// architecture (head counts aside, which shapes do not tell and the SD rules would get wrong).
#[test]
fn tiny_architectures_are_read_off_the_shapes() {
    for (name, preset) in [("tiny-sd1", "sd-1-5"), ("tiny-sd2", "sd-2-1")] {
        let configs = fixtures().join(format!("configs/{preset}"));
        let options = Options {
            ema: true,
            derive: true,
        };
        let prepared = Prepared::new(&checkpoint(name), &configs, options).unwrap();
        for part in PARTS {
            let folder =
                read_json(&fixtures().join(format!("models/{name}/{}/config.json", part.name())));
            let got = &prepared.component(part).config;
            for field in derived_fields(part) {
                if matches!(*field, "attention_head_dim" | "num_attention_heads") {
                    continue;
                }
                assert_eq!(got[field], folder[field], "{name} {part:?} {field}");
            }
        }
    }
}

/// `tiny-sd1.safetensors` rewritten: `edit` maps the tensors (name, view), or drops one (`None`).
fn rewritten(
    dir: &Path,
    file: &str,
    edit: impl for<'b> Fn(&str, TensorView<'b>) -> Option<(String, TensorView<'b>)>,
) -> PathBuf {
    let bytes = std::fs::read(checkpoint("tiny-sd1")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, TensorView)> = st
        .tensors()
        .into_iter()
        .filter_map(|(k, v)| edit(&k, v))
        .collect();
    let path = dir.join(file);
    safetensors::serialize_to_file(tensors, None, &path).unwrap();
    path
}

fn open_error(path: &Path) -> String {
    let e = SingleFile::open(path)
        .and_then(|sf| sf.plan(true).map(|_| ()))
        .unwrap_err();
    e.to_string()
}

#[test]
fn bad_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let check = |path: &Path, wants: &[&str]| {
        let message = open_error(path);
        for want in wants {
            assert!(
                message.contains(want),
                "{path:?}: {message:?} lacks {want:?}"
            );
        }
    };

    // Truncated: the header names a range past the end.
    let bytes = std::fs::read(checkpoint("tiny-sd1")).unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    check(&truncated, &["truncated", "truncated.safetensors"]);

    // A whole block missing, and one tensor missing.
    let no_block = rewritten(dir.path(), "no-block.safetensors", |k, v| {
        (!k.starts_with("model.diffusion_model.input_blocks.4.")).then(|| (k.to_string(), v))
    });
    check(
        &no_block,
        &["model.diffusion_model.input_blocks.4 is missing"],
    );
    let no_ema = rewritten(dir.path(), "ema.safetensors", |k, v| {
        (k != "model_ema.diffusion_modelout2weight").then(|| (k.to_string(), v))
    });
    check(
        &no_ema,
        &[
            "EMA weights are incomplete",
            "model.diffusion_model.out.2.weight",
            "--no-ema",
        ],
    );

    // A stray tensor, and a tensor the UNet map does not know.
    let stray = rewritten(dir.path(), "stray.safetensors", |k, v| {
        Some((k.replace("alphas_cumprod_prev", "lora_scale"), v))
    });
    check(&stray, &["unexpected tensor \"lora_scale\""]);
    let odd = rewritten(dir.path(), "odd.safetensors", |k, v| {
        Some((k.replace("middle_block.2.", "middle_block.3."), v))
    });
    check(
        &odd,
        &["unexpected UNet tensor \"model.diffusion_model.middle_block.3."],
    );

    // Other kinds of checkpoint, named.
    let sdxl = rewritten(dir.path(), "sdxl.safetensors", |k, v| {
        Some((
            k.replace(
                "cond_stage_model.transformer.",
                "conditioner.embedders.1.model.",
            ),
            v,
        ))
    });
    check(
        &sdxl,
        &["an SDXL base checkpoint, which is not supported yet"],
    );
    let conv_in = "model.diffusion_model.input_blocks.0.0.weight";
    let shape = SafeTensors::deserialize(&bytes)
        .unwrap()
        .tensor(conv_in)
        .unwrap()
        .shape()
        .to_vec();
    let nine: &'static [u8] = Vec::leak(vec![0u8; 4 * shape[0] * 9 * shape[2] * shape[3]]);
    let inpaint = rewritten(dir.path(), "inpaint.safetensors", |k, v| {
        if k == conv_in {
            let view = TensorView::new(v.dtype(), vec![shape[0], 9, shape[2], shape[3]], nine);
            return Some((k.to_string(), view.unwrap()));
        }
        Some((k.to_string(), v))
    });
    check(
        &inpaint,
        &["an inpainting checkpoint, which is not supported yet"],
    );
    let unet_only = fixtures().join("models/tiny-sd1/unet/diffusion_pytorch_model.safetensors");
    check(
        &unet_only,
        &["diffusers component", "pass the model's folder"],
    );

    // Pickles, by name and by content.
    let ckpt = dir.path().join("model.ckpt");
    std::fs::write(&ckpt, b"anything").unwrap();
    let zipped = dir.path().join("zipped.safetensors");
    std::fs::write(&zipped, b"PK\x03\x04rest of a torch.save archive").unwrap();
    for (path, kind) in [(&ckpt, "a .ckpt file"), (&zipped, "a zip archive")] {
        let e = SingleFile::open(path).unwrap_err();
        assert!(matches!(e, ModelError::PickledCheckpoint { .. }), "{e}");
        let message = e.to_string();
        for want in [
            kind,
            "runs whatever code",
            "weights_only=True",
            ".safetensors",
        ] {
            assert!(message.contains(want), "{message:?} lacks {want:?}");
        }
    }
}
