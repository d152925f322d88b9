//! `--model toy` of an installed binary: the toy model is bundled in the binary and unpacked into
//! the user's data folder, so a copy of the binary run elsewhere, with nothing of the source tree
//! in its environment, edits exactly as the test binary does in the tree.

use std::path::Path;
use std::process::Command;

use super::{TOY_EDIT, TOY_PROMPT, fixtures, run, stderr};

#[test]
fn a_copied_binary_edits_with_the_bundled_toy_like_the_test_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let [bin, work, home] = ["bin", "work", "home"].map(|d| tmp.path().join(d));
    for d in [&bin, &work, &home] {
        std::fs::create_dir_all(d).unwrap();
    }
    let exe = bin.join("ddim-edit");
    std::fs::copy(env!("CARGO_BIN_EXE_ddim-edit"), &exe).unwrap();
    std::fs::copy(fixtures().join("images/toy.png"), work.join("in.png")).unwrap();
    let args = |image: &str, out: &str| {
        [
            "edit",
            "-q",
            "--model",
            "toy",
            "--image",
            image,
            "--prompt",
            TOY_PROMPT,
            "--edit-prompt",
            TOY_EDIT,
            "--steps",
            "10",
            "--out",
            out,
        ]
        .map(String::from)
    };
    // The copy: another folder, a bare environment with another HOME.
    let o = Command::new(&exe)
        .args(args("in.png", "out.png"))
        .current_dir(&work)
        .env_clear()
        .env("HOME", &home)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let data = home.join(".local/share/ddim-edit");
    let unpacked: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        unpacked.len() == 1 && unpacked[0].join("unet/config.json").is_file(),
        "{unpacked:?}"
    );

    // The test binary from the source tree (its own data folder, see `run`).
    let ours = tmp.path().join("ours.png");
    let input = fixtures().join("images/toy.png");
    let a = args(&input.display().to_string(), &ours.display().to_string());
    let o = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(work.join("out.png")).unwrap(),
        std::fs::read(&ours).unwrap(),
        "the copied binary's PNG differs"
    );

    // Used again, the unpacked copy is checked: a damaged file is restored, and the edit is the same.
    let weights = unpacked[0].join("unet/diffusion_pytorch_model.safetensors");
    std::fs::write(&weights, b"damaged").unwrap();
    let again = Command::new(&exe)
        .args(args("in.png", "again.png"))
        .current_dir(&work)
        .env_clear()
        .env("HOME", &home)
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(
        std::fs::read(work.join("again.png")).unwrap(),
        std::fs::read(&ours).unwrap()
    );
    assert!(Path::new(&weights).metadata().unwrap().len() > 1000);
}
