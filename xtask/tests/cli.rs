//! The `xtask` binary's command line: `fetch` reads the hub endpoint and cache from the
//! environment (the loopback-hub tests of the engine itself are in `crates/model-source/tests`),
//! and bad arguments are clear errors.

use std::process::Command;

/// Runs `xtask args…` with the Hugging Face cache at `cache` and the hub at `endpoint`; returns
/// success, stdout and stderr.
fn xtask(args: &[&str], cache: &std::path::Path, endpoint: &str) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HUB_CACHE", cache)
        .env_remove("HF_TOKEN")
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

#[test]
fn fetch_reads_the_cache_and_endpoint_from_the_environment() {
    let cache = tempfile::tempdir().unwrap();
    // Nothing listens on the discard port: the fetch fails naming the endpoint it was given.
    let endpoint = "http://127.0.0.1:9";
    let (ok, stdout, _) = xtask(&["fetch", "--list"], cache.path(), endpoint);
    assert!(
        ok && stdout.contains(&cache.path().display().to_string())
            && stdout.contains("sd-2-1-base")
            && stdout.contains("not cached"),
        "{stdout}"
    );
    let (ok, _, stderr) = xtask(
        &["fetch", "-q", "--repo", "org/name"],
        cache.path(),
        endpoint,
    );
    assert!(!ok && stderr.contains("127.0.0.1:9"), "{stderr}");
}

#[test]
fn bad_arguments_are_clear_errors() {
    let cache = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| xtask(args, cache.path(), "http://127.0.0.1:9");
    let (ok, _, stderr) = run(&["fetch", "--repo", "org/name", "--bogus"]);
    assert!(
        !ok && stderr.contains("--bogus") && stderr.contains("Usage"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(&["fetch", "sd-9"]);
    assert!(!ok && stderr.contains("sd-2-1-base"), "{stderr}");
    let (ok, _, stderr) = run(&["fetch", "sd-2-1-base", "--variant", "bf16"]);
    assert!(!ok && stderr.contains("no \"bf16\" variant"), "{stderr}");
    let out = cache.path().join("out");
    let out = out.to_str().unwrap();
    let (ok, _, stderr) = run(&[
        "convert",
        "--model",
        "org/missing",
        "--dtype",
        "f16",
        "--out",
        out,
    ]);
    assert!(
        !ok && stderr.contains("ddim-edit fetch --repo org/missing"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(&["frobnicate"]);
    assert!(
        !ok && stderr.contains("frobnicate") && stderr.contains("Usage"),
        "{stderr}"
    );
}
