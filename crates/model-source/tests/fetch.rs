//! The fetch engine against a stand-in hub on 127.0.0.1 serving the tiny SD1 fixture model
//! (`test_support::hub_server`): a full fetch into the Hugging Face cache layout, a transfer cut mid-file and
//! resumed with a Range request, a partial blob left by an earlier run, a corrupted download, a
//! missing file, the hub, token and cache read from the environment's variables, and an edit that
//! loads the fetched model by repo id once the server is gone.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use inversion::image::{decode_image, image_to_tensor};
use inversion::{EditOptions, LoadOptions, Pipeline};
use model_source::{
    Catalog, Hub, NoProgress, Progress, Request, cached_snapshot, fetch, list, repo_folder,
};
use test_support::hub_server::{
    COMMIT, Faults, HubServer, REPO, assert_snapshot, git_sha1_hex, read_tree, sha256_hex,
};

const UNET: &str = "unet/diffusion_pytorch_model.safetensors";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn model_dir() -> PathBuf {
    fixtures().join("models/tiny-sd1")
}

fn hub(server: &HubServer, cache: &Path) -> Hub {
    Hub {
        endpoint: server.endpoint.clone(),
        cache: cache.to_path_buf(),
        token: None,
    }
}

fn by_repo() -> Request {
    Request::repo(REPO)
}

/// Every fixture file is in the snapshot, as a relative symlink to a blob with the same bytes,
/// LFS blobs named by their SHA-256; nothing `.incomplete` is left.
fn assert_cached(cache: &Path) -> PathBuf {
    assert_cached_at(cache, "main")
}

/// The fixture model is complete in the cache at `revision`, and resolvable there offline.
fn assert_cached_at(cache: &Path, revision: &str) -> PathBuf {
    let snapshot = assert_snapshot(cache, &read_tree(&model_dir()), revision);
    assert_eq!(
        cached_snapshot(cache, REPO, revision),
        Some(snapshot.clone())
    );
    snapshot
}

/// The error of a fetch that must fail, with its causes, as the CLI prints it.
fn fetch_err(hub: &Hub, request: &Request) -> String {
    let err = format!("{:#}", fetch(hub, request, &NoProgress).unwrap_err());
    eprintln!("fetch error: {err}");
    err
}

fn gets_of(server: &HubServer, file: &str) -> Vec<String> {
    server
        .log()
        .into_iter()
        .filter(|l| l.starts_with(&format!("GET /cdn/{file}")))
        .collect()
}

#[test]
fn full_fetch_fills_the_hf_cache_and_a_second_fetch_downloads_nothing() {
    let server = HubServer::start(read_tree(&model_dir()), Faults::default());
    let cache = tempfile::tempdir().unwrap();
    let snapshot = fetch(&hub(&server, cache.path()), &by_repo(), &NoProgress).unwrap();
    assert_eq!(snapshot, assert_cached(cache.path()));

    let before = server.log().len();
    fetch(&hub(&server, cache.path()), &by_repo(), &NoProgress).unwrap();
    let again: Vec<String> = server.log()[before..].to_vec();
    assert!(
        again.iter().all(|l| l.contains("/api/models/")),
        "a cached model is not downloaded again: {again:?}"
    );
}

#[test]
fn a_named_model_pinned_to_a_commit_fetches_its_listed_files_and_shows_as_cached() {
    let files: Vec<String> = read_tree(&model_dir())
        .into_keys()
        .map(|f| format!("{f:?}"))
        .collect();
    let toml = format!(
        "[models.tiny]\nrepo = {REPO:?}\nrevision = {COMMIT:?}\ndescription = \"tiny SD1\"\nsize = \"7 MB\"\nfiles = [{}]\n",
        files.join(", ")
    );
    let catalog = Catalog::parse(&toml).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let line = |cache: &Path| list(cache, &catalog).lines().nth(1).unwrap().to_string();
    assert!(
        line(cache.path()).contains("not cached"),
        "{}",
        line(cache.path())
    );

    let server = HubServer::start(read_tree(&model_dir()), Faults::default());
    fetch(
        &hub(&server, cache.path()),
        &Request::named(&catalog, "tiny", None).unwrap(),
        &NoProgress,
    )
    .unwrap();
    assert_cached_at(cache.path(), COMMIT);
    let shown = line(cache.path());
    assert!(
        shown.starts_with("tiny")
            && shown.contains(" cached ")
            && !shown.contains("not")
            && shown.contains(REPO),
        "{shown}"
    );
    assert!(
        Request::named(&catalog, "tiny", Some("fp16")).is_err(),
        "no fp16 variant declared"
    );
}

#[test]
fn a_transfer_cut_mid_file_is_resumed_with_a_range_request() {
    let unet_len = std::fs::metadata(model_dir().join(UNET)).unwrap().len();
    let faults = Faults {
        cut: Some(UNET.into()),
        ..Faults::default()
    };
    let server = HubServer::start(read_tree(&model_dir()), faults);
    let cache = tempfile::tempdir().unwrap();
    fetch(&hub(&server, cache.path()), &by_repo(), &NoProgress).unwrap();
    assert_cached(cache.path());
    assert_eq!(
        gets_of(&server, UNET),
        [
            format!("GET /cdn/{UNET}"),
            format!("GET /cdn/{UNET} bytes={}-{}", unet_len / 2, unet_len - 1)
        ],
        "the first GET is cut after half the file, the second continues from there"
    );
}

#[test]
fn a_partial_blob_left_by_an_earlier_run_is_continued() {
    let bytes = std::fs::read(model_dir().join(UNET)).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let blobs = repo_folder(cache.path(), REPO).join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let third = bytes.len() / 3;
    std::fs::write(
        blobs.join(format!("{}.incomplete", sha256_hex(&bytes))),
        &bytes[..third],
    )
    .unwrap();

    let server = HubServer::start(read_tree(&model_dir()), Faults::default());
    fetch(&hub(&server, cache.path()), &by_repo(), &NoProgress).unwrap();
    assert_cached(cache.path());
    assert_eq!(
        gets_of(&server, UNET),
        [format!("GET /cdn/{UNET} bytes={third}-{}", bytes.len() - 1)]
    );
}

#[test]
fn a_corrupted_download_fails_naming_the_file_and_leaves_no_blob() {
    const VAE: &str = "vae/diffusion_pytorch_model.safetensors";
    let faults = Faults {
        corrupt: Some(VAE.into()),
        ..Faults::default()
    };
    let server = HubServer::start(read_tree(&model_dir()), faults);
    let cache = tempfile::tempdir().unwrap();
    let err = fetch_err(&hub(&server, cache.path()), &by_repo());
    assert!(err.contains(VAE) && err.contains("SHA-256"), "{err}");

    let repo_dir = repo_folder(cache.path(), REPO);
    let sha = sha256_hex(&std::fs::read(model_dir().join(VAE)).unwrap());
    assert!(!repo_dir.join("blobs").join(&sha).exists());
    assert!(
        !repo_dir
            .join("blobs")
            .join(format!("{sha}.incomplete"))
            .exists()
    );
    let pointer = repo_dir.join("snapshots").join(COMMIT).join(VAE);
    assert!(std::fs::symlink_metadata(pointer).is_err());
    assert!(
        cached_snapshot(cache.path(), REPO, "main").is_none(),
        "an incomplete model is not resolvable"
    );
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let faults = Faults {
        missing: Some("unet/config.json".into()),
        ..Faults::default()
    };
    let server = HubServer::start(read_tree(&model_dir()), faults);
    let cache = tempfile::tempdir().unwrap();
    let err = fetch_err(&hub(&server, cache.path()), &by_repo());
    assert!(
        err.contains("unet/config.json") && err.contains("not found"),
        "{err}"
    );

    // A file list (as weights.toml gives) naming a file the repository does not have.
    let mut request = by_repo();
    request.files = Some(vec![
        "model_index.json".into(),
        "unet/model.fp16.safetensors".into(),
    ]);
    let err = fetch_err(&hub(&server, cache.path()), &request);
    assert!(err.contains("unet/model.fp16.safetensors"), "{err}");

    request.revision = "v9".into();
    let err = fetch_err(&hub(&server, cache.path()), &request);
    assert!(err.contains("v9") && err.contains(REPO), "{err}");
}

/// A hub (or mirror) answering a commit that is a path is refused before anything is written, and
/// so is a revision that is one.
#[test]
fn a_hostile_commit_or_revision_never_becomes_a_path() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    for commit in ["../../../escaped", "../snapshots-elsewhere", "0123"] {
        let faults = Faults {
            commit: Some(commit.into()),
            ..Faults::default()
        };
        let server = HubServer::start(read_tree(&model_dir()), faults);
        let err = fetch_err(&hub(&server, &cache), &by_repo());
        assert!(err.contains("not a 40-digit hex commit hash"), "{err}");
    }
    let server = HubServer::start(read_tree(&model_dir()), Faults::default());
    let mut request = by_repo();
    request.revision = "../../../escaped".into();
    let err = fetch_err(&hub(&server, &cache), &request);
    assert!(err.contains("is not a branch, tag or commit name"), "{err}");
    // Nothing was written outside the cache, and no snapshot inside it.
    let outside: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
    assert_eq!(outside.len(), 1, "files written beside the cache");
    let snapshots = repo_folder(&cache, REPO).join("snapshots");
    assert!(
        !snapshots.exists() || std::fs::read_dir(&snapshots).unwrap().count() == 0,
        "a snapshot was written"
    );
}

/// Two fetches of one repository into one cache at the same time (two terminals, two batch
/// workers) both succeed, and the cache they leave verifies: every blob written once, whole.
#[test]
fn concurrent_fetches_of_one_repository_both_succeed_and_leave_a_sound_cache() {
    let server = HubServer::start(read_tree(&model_dir()), Faults::default());
    let cache = tempfile::tempdir().unwrap();
    let hub = hub(&server, cache.path());
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| fetch(&hub, &by_repo(), &NoProgress)))
            .collect();
        for run in runs {
            run.join().unwrap().unwrap();
        }
    });
    assert_cached(cache.path());
    let blobs = repo_folder(cache.path(), REPO).join("blobs");
    for (file, bytes) in read_tree(&model_dir()) {
        let etag = if file.ends_with(".safetensors") {
            sha256_hex(&bytes)
        } else {
            git_sha1_hex(&bytes)
        };
        assert_eq!(std::fs::read(blobs.join(&etag)).unwrap(), bytes, "{file}");
    }
}

/// A cached blob damaged after the fact (disk error, an editor, a bad copy) is found by the next
/// fetch, which downloads it again instead of trusting it forever.
#[test]
fn a_damaged_cached_blob_is_verified_and_fetched_again() {
    let server = HubServer::start(read_tree(&model_dir()), Faults::default());
    let cache = tempfile::tempdir().unwrap();
    let hub = hub(&server, cache.path());
    fetch(&hub, &by_repo(), &NoProgress).unwrap();
    let blobs = repo_folder(cache.path(), REPO).join("blobs");
    let config = std::fs::read(model_dir().join("unet/config.json")).unwrap();
    let weights =
        std::fs::read(model_dir().join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    // A config stored twice over, and weights with the right length but one flipped byte.
    let config_blob = blobs.join(git_sha1_hex(&config));
    std::fs::write(&config_blob, [config.clone(), config.clone()].concat()).unwrap();
    let weights_blob = blobs.join(sha256_hex(&weights));
    let mut bad = weights.clone();
    bad[weights.len() / 2] ^= 0xff;
    std::fs::write(&weights_blob, bad).unwrap();
    fetch(&hub, &by_repo(), &NoProgress).unwrap();
    assert_eq!(std::fs::read(&config_blob).unwrap(), config);
    assert_eq!(std::fs::read(&weights_blob).unwrap(), weights);
    assert_cached(cache.path());
}

/// The notes a fetch reports.
#[derive(Default)]
struct Notes(std::sync::Mutex<Vec<String>>);

impl Progress for Notes {
    fn note(&self, text: &str) {
        self.0.lock().unwrap().push(text.to_string());
    }
}

#[test]
fn the_hub_endpoint_token_and_cache_come_from_the_environment_variables() {
    let server = HubServer::start(read_tree(&model_dir()), Faults::default());
    let cache = tempfile::tempdir().unwrap();
    let vars = [
        ("HF_ENDPOINT", format!("{}/", server.endpoint)),
        ("HF_HUB_CACHE", cache.path().display().to_string()),
        ("HF_HOME", "/nonexistent-hf-home".to_string()),
        ("HF_TOKEN", "hf_test_token".to_string()),
    ];
    let var = |k: &str| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| std::ffi::OsString::from(v))
    };
    let hub = Hub::from_vars(var).unwrap();
    assert_eq!(hub.endpoint, server.endpoint, "no trailing slash");
    let notes = Notes::default();
    let snapshot = fetch(&hub, &by_repo(), &notes).unwrap();
    let notes = notes.0.into_inner().unwrap();
    eprintln!("{notes:?}");
    assert!(
        notes.last().unwrap().contains("12 files, 12 downloaded"),
        "{notes:?}"
    );
    assert_eq!(snapshot, assert_cached(cache.path()));
    let auth = server.authorizations();
    assert!(
        !auth.is_empty() && auth.iter().all(|a| a == "Bearer hf_test_token"),
        "{auth:?}"
    );

    let implicit_off = |k: &str| match k {
        "HF_HUB_DISABLE_IMPLICIT_TOKEN" => Some("1".into()),
        k => var(k),
    };
    assert_eq!(Hub::from_vars(implicit_off).unwrap().token, None);
    let nothing = Hub::from_vars(|_| None).unwrap_err().to_string();
    assert!(nothing.contains("HF_HUB_CACHE"), "{nothing}");

    let catalog = Catalog::builtin().unwrap();
    let table = list(cache.path(), &catalog);
    assert!(
        table.contains("sd-2-1-base") && table.contains("not cached"),
        "{table}"
    );
    let e = Request::named(&catalog, "sd-9", None).unwrap_err();
    assert!(e.to_string().contains("sd-2-1-base"), "{e}");
}

/// The edit of the parity fixture (16×16, 4 steps from step 1) as flat latents and image.
fn edit(dir: &Path) -> (Vec<f32>, Vec<f32>) {
    let device = Device::flex();
    let pipeline = Pipeline::load(dir, &LoadOptions::new(device.clone())).unwrap();
    let png = decode_image(
        &std::fs::read(fixtures().join("images/sd1.png")).unwrap(),
        "sd1.png",
    )
    .unwrap();
    let options = EditOptions {
        steps: 4,
        start_step: 1,
        guidance: 3.5,
        inversion_guidance: 3.5,
        negative_prompt: String::new(),
        ..EditOptions::plain(4)
    };
    let out = inversion::edit(
        &pipeline,
        image_to_tensor(&png, (16, 16), &device),
        "a red circle on a white background",
        "a blue square on a white background",
        &options,
        &inversion::NoProgress,
    )
    .unwrap();
    let flat =
        |t: burn::tensor::Tensor<4>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    (flat(out.latents), flat(out.image))
}

#[test]
fn the_fetched_model_edits_offline_like_the_fixture_folder() {
    let server = HubServer::start(read_tree(&model_dir()), Faults::default());
    let cache = tempfile::tempdir().unwrap();
    fetch(&hub(&server, cache.path()), &by_repo(), &NoProgress).unwrap();
    server.stop();

    let dir = cached_snapshot(cache.path(), REPO, "main").expect("resolved by repo id");
    let fetched = edit(&dir);
    assert_eq!(fetched, edit(&model_dir()));
    assert!(fetched.0.iter().all(|v| v.is_finite()));
}
