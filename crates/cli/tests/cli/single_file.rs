//! `--model FILE.safetensors`: the tiny LDM checkpoints of `tests/reference/gen_single_file.py`
//! edit exactly as their diffusers folders; bad single files are clear errors with no output.

use super::{assert_edit_fails, fixtures, image, run, stderr};

fn checkpoint(name: &str) -> String {
    fixtures()
        .join(format!("models/single-file/{name}.safetensors"))
        .display()
        .to_string()
}

/// `edit` of `model` (6 steps from step 2), returning the PNG and the edited latents' bytes.
fn edit(model: &[&str], picture: &str, extra: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let (out, latents) = (dir.path().join("out.png"), dir.path().join("z.safetensors"));
    let (out_s, latents_s) = (out.display().to_string(), latents.display().to_string());
    let mut args = vec!["edit", "-q", "--model"];
    args.extend_from_slice(model);
    args.extend_from_slice(&[
        "--image",
        picture,
        "--prompt",
        "a red circle",
        "--edit-prompt",
        "a blue square",
        "--steps",
        "6",
        "--start-step",
        "2",
        "--out",
        &out_s,
        "--save-latents",
        &latents_s,
    ]);
    args.extend_from_slice(extra);
    let o = run(&args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    (
        std::fs::read(out).unwrap(),
        data_section(&std::fs::read(latents).unwrap()),
    )
}

/// A safetensors file's tensor bytes (its header's metadata names the model, which differs).
fn data_section(file: &[u8]) -> Vec<u8> {
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    file[8 + n..].to_vec()
}

/// The same latents and PNG, bit for bit, as the folder the file was written from; SD 1's
/// trained (non-EMA) weights, which the generator negated, give another image.
#[test]
fn single_files_edit_exactly_as_their_folders() {
    for (name, picture) in [
        ("tiny-sd1", image()),
        (
            "tiny-sd2",
            fixtures().join("images/sd2.png").display().to_string(),
        ),
    ] {
        let folder = fixtures().join("models").join(name).display().to_string();
        let want = edit(&[&folder], &picture, &[]);
        let file = checkpoint(name);
        let got = edit(&[&file, "--config", &folder], &picture, &[]);
        assert!(
            got.1 == want.1,
            "{name}: edited latents differ from the folder's"
        );
        assert!(got.0 == want.0, "{name}: PNG differs from the folder's");
        if name == "tiny-sd1" {
            let trained = edit(&[&file, "--config", &folder], &picture, &["--no-ema"]);
            assert!(trained.1 != want.1, "--no-ema reads the other UNet");
        }
    }
}

#[test]
fn bad_single_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = checkpoint("tiny-sd1");
    let folder = fixtures().join("models/tiny-sd1").display().to_string();

    let ckpt = dir.path().join("model.ckpt");
    std::fs::write(&ckpt, b"\x80\x02}q\x00.").unwrap();
    let ckpt = ckpt.display().to_string();
    assert_edit_fails(
        &ckpt,
        &image(),
        &[],
        "pickled PyTorch checkpoint (a .ckpt file)",
    );

    let bytes = std::fs::read(&file).unwrap();
    let truncated = dir.path().join("cut.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 1000]).unwrap();
    let truncated = truncated.display().to_string();
    assert_edit_fails(&truncated, &image(), &["--config", &folder], "truncated");

    // Without --config the tiny file gets SD 1.5's heads: the error says what to pass.
    assert_edit_fails(
        &file,
        &image(),
        &[],
        "pass --config with the diffusers folder",
    );
    assert_edit_fails(
        &file,
        &image(),
        &["--config", "sd-9"],
        "--config \"sd-9\" is neither a folder",
    );
    assert_edit_fails(
        &file,
        &image(),
        &["--variant", "fp16"],
        "--variant picks a diffusers folder's",
    );
    assert_edit_fails(
        &folder,
        &image(),
        &["--no-ema", "--config", &folder],
        "--config, --no-ema only apply to a single-file checkpoint",
    );
}
