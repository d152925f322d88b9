//! `--preview-decoder`: the result decoded by a TAESD folder instead of the VAE (the decoder's
//! parity with diffusers is `sd-models`' `tiny_autoencoder_matches_diffusers`), and folders that
//! do not fit the model refused before any compute.

use burn::tensor::Device;
use inversion::image::tensor_to_image;
use sd_models::vae::AutoencoderTiny;

use super::{fixtures, run, run_tiny_edit, stderr};

fn taesd() -> String {
    fixtures().join("models/tiny-taesd").display().to_string()
}

#[test]
fn the_preview_decoder_decodes_the_edited_latents() {
    let dir = tempfile::tempdir().unwrap();
    let [out, vae_out, latents] = ["taesd.png", "vae.png", "latents.safetensors"]
        .map(|f| dir.path().join(f).display().to_string());
    let o = run_tiny_edit(
        &out,
        &[
            "-q",
            "--preview-decoder",
            &taesd(),
            "--save-latents",
            &latents,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_tiny_edit(&vae_out, &["-q"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let device = Device::flex();
    let (decoder, _) =
        AutoencoderTiny::load(&fixtures().join("models/tiny-taesd"), None, &device).unwrap();
    let saved = test_support::load_refs(&latents);
    let expected =
        tensor_to_image(decoder.decode(saved["latents"].float(&device)).unwrap()).unwrap();
    let ours = image::open(&out).unwrap().to_rgb8();
    assert!(
        ours == expected,
        "the PNG is not TAESD's decode of the edited latents"
    );
    assert!(
        ours != image::open(&vae_out).unwrap().to_rgb8(),
        "the VAE decoded it"
    );
}

#[test]
fn preview_decoders_that_do_not_fit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.png").display().to_string();
    // An AutoencoderKL folder.
    let vae = fixtures().join("models/tiny-sd1/vae").display().to_string();
    let o = run_tiny_edit(&out, &["--preview-decoder", &vae]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--preview-decoder") && stderr(&o).contains("not an AutoencoderTiny"),
        "{}",
        stderr(&o)
    );
    // The toy model's latents are at 1/4 of the image size; tiny-taesd's at 1/2.
    let image = fixtures().join("images/toy.png").display().to_string();
    let o = run(&[
        "edit",
        "--model",
        "toy",
        "--image",
        &image,
        "--prompt",
        "a",
        "--edit-prompt",
        "b",
        "--steps",
        "2",
        "--out",
        &out,
        "--preview-decoder",
        &taesd(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("the preview decoder takes 4 latent channels at 1/2"),
        "{}",
        stderr(&o)
    );
    assert!(!std::path::Path::new(&out).exists());
}
