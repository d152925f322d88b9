//! The editing-method flags (`--attention`, `--inversion` and Prompt-to-Prompt's options): bad
//! combinations are clear errors before any compute, and "invert once, edit many" gives the same
//! picture as one `edit`.

use super::{assert_edit_fails, image, model, run, run_tiny, stderr};

#[test]
fn editing_options_that_do_not_fit_are_clear_errors() {
    let (m, img) = (model(), image());
    let p2p = ["--attention", "p2p"];
    let with = |extra: &[&'static str]| [&p2p[..], extra].concat();
    assert_edit_fails(
        &m,
        &img,
        &with(&["--reweight", "purple=2"]),
        "--reweight purple=2: \"purple\" is not a word of the edited prompt",
    );
    assert_edit_fails(
        &m,
        &img,
        &with(&["--cross-replace", "1.5"]),
        "--cross-replace <CROSS_REPLACE>': expected a fraction of the steps in [0, 1], got \"1.5\"",
    );
    assert_edit_fails(
        &m,
        &img,
        &with(&["--blend-words", "dog"]),
        "--blend-words \"dog\" is in neither the source nor the edited prompt",
    );
    assert_edit_fails(
        &m,
        &img,
        &with(&["--edit-prompt", "one big green star"]),
        "--edit-prompt shares no word with the source prompt, so its tokens cannot be aligned",
    );
    assert_edit_fails(
        &m,
        &img,
        &["--inversion", "direct", "--attention", "none"],
        "direct corrects the source branch, which only an attention-controlled edit reads",
    );
    assert_edit_fails(
        &m,
        &img,
        &["--attention", "none", "--reweight", "blue=2"],
        "--reweight needs --attention p2p",
    );
    // Prompt-to-Prompt is the default: a pair it cannot align says how to edit without it.
    assert_edit_fails(
        &m,
        &img,
        &["--edit-prompt", "one big green star"],
        "cannot be aligned for a refinement (a word swap needs prompts of the same token count; --attention none edits by a plain prompt swap)",
    );
    assert_edit_fails(
        &m,
        &img,
        &["--inversion", "exact"],
        "unknown inversion \"exact\"",
    );
    assert_edit_fails(
        &m,
        &img,
        &["--inversion", "null-text", "--guidance", "1"],
        "null-text optimises the unconditional branch of guided sampling: use a --guidance other than 1",
    );
    assert_edit_fails(
        &m,
        &img,
        &["--inversion", "null-text", "--inversion-guidance", "2"],
        "null-text retraces an unguided inversion (its pivot)",
    );
}

/// `edit --inversion null-text --save-trajectory` keeps the null embeddings in the file: `sample
/// --latents` from the same start step reuses them (no null-text phase) and gives the same PNG,
/// with Prompt-to-Prompt too; from another start step, or `invert`'s file, it optimises anew.
#[test]
fn null_text_embeddings_travel_in_the_trajectory_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let (m, traj) = (model(), path("t.safetensors"));
    for method in [
        &["--inversion", "null-text", "--attention", "none"][..],
        &["--inversion", "null-text", "--attention", "p2p"],
    ] {
        let edit = [
            &[
                "--edit-prompt",
                "a blue square",
                "--start-step",
                "1",
                "--save-trajectory",
                &traj,
            ][..],
            method,
        ]
        .concat();
        let o = run_tiny("edit", 5, &path("edit.png"), &edit);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("UNet forward + backward passes"),
            "{}",
            stderr(&o)
        );
        let sample = |start: &str, latents: &str, out: &str| {
            let args = [
                &[
                    "sample",
                    "--model",
                    &m,
                    "--prompt",
                    "a blue square",
                    "--latents",
                    latents,
                ][..],
                &["--start-step", start, "--steps", "5", "--out", out],
                method,
            ]
            .concat();
            run(&args)
        };
        let o = sample("1", &traj, &path("sample.png"));
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            !stderr(&o).contains("null-text"),
            "reused, not optimised: {}",
            stderr(&o)
        );
        assert_eq!(
            std::fs::read(path("edit.png")).unwrap(),
            std::fs::read(path("sample.png")).unwrap(),
            "{method:?}: sample --latents differs from edit"
        );
        let o = sample("2", &traj, &path("later.png"));
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("null-text"),
            "optimised for step 2: {}",
            stderr(&o)
        );
    }
    let o = run_tiny("invert", 5, &path("inv.safetensors"), &["-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let args = [
        "sample",
        "--model",
        &m,
        "--prompt",
        "a blue square",
        "--latents",
        &path("inv.safetensors"),
        "--start-step",
        "1",
        "--steps",
        "5",
        "--out",
        &path("inv.png"),
        "--inversion",
        "null-text",
    ];
    let o = run(&args);
    assert!(
        o.status.success() && stderr(&o).contains("null-text"),
        "{}",
        stderr(&o)
    );
}

/// `invert` once, then `sample --latents` with Prompt-to-Prompt and direct inversion: the same
/// PNG as `edit` with the same settings, byte for byte.
#[test]
fn invert_once_then_edit_with_a_method_equals_edit() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let method = [
        "--attention",
        "p2p",
        "--inversion",
        "direct",
        "--blend-words",
        "square",
        "--self-replace",
        "0.5",
    ];
    let edit = [
        &["-q", "--edit-prompt", "a blue square", "--start-step", "1"][..],
        &method,
    ]
    .concat();
    let o = run_tiny("edit", 5, &path("edit.png"), &edit);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_tiny("invert", 5, &path("t.safetensors"), &["-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (m, traj, out) = (model(), path("t.safetensors"), path("sample.png"));
    let sample = [
        "sample",
        "-q",
        "--model",
        &m,
        "--prompt",
        "a blue square",
        "--latents",
        &traj,
        "--start-step",
        "1",
        "--steps",
        "5",
        "--out",
        &out,
    ];
    let o = run(&[&sample[..], &method].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(path("edit.png")).unwrap(),
        std::fs::read(&out).unwrap(),
        "sample --latents with the method differs from edit"
    );
    // Negative-prompt inversion reverses an unguided inversion only.
    let guided = path("guided.safetensors");
    let o = run_tiny("invert", 5, &guided, &["-q", "--guidance", "3.5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut args = sample.to_vec();
    args[7] = &guided;
    args.extend(["--inversion", "negative-prompt"]);
    let o = run(&args);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("was inverted at guidance 3.5: invert with --guidance 1"),
        "{}",
        stderr(&o)
    );
    // Without a trajectory there is nothing to edit.
    let o = run(&[
        "sample",
        "--model",
        &m,
        "--prompt",
        "x",
        "--attention",
        "p2p",
        "--out",
        &out,
    ]);
    assert!(stderr(&o).contains("give --latents"), "{}", stderr(&o));
}
