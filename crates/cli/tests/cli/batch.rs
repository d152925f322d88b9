//! `ddim-edit batch` on the bundled toy model: one inversion per photo whatever the number of
//! its edits (counted in UNet calls), the same PNGs as `edit`, a kill -9 and rerun that ends as
//! an uninterrupted run does, shards that cover every job once, and bad lines that fail alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{TOY_EDIT, TOY_PROMPT, fixtures, run, stderr};

const STEPS: &str = "10";
/// The default start step (Prompt-to-Prompt over direct inversion): 0, so an inversion is 10 UNet
/// calls, as is each edit (one call per step, the source and edit branches in one batch).
const CALLS: u64 = 10;

/// The binary with `args`, offline, with no shard set by the environment unless `env` does.
fn batch(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ddim-edit"));
    c.arg("batch")
        .args(args)
        .args(["--model", "toy", "--steps", STEPS, "-q"])
        .env("HF_HUB_CACHE", "/nonexistent-hf-cache")
        .env("HF_HUB_OFFLINE", "1")
        .env(
            "XDG_DATA_HOME",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("data"),
        );
    for var in ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"] {
        c.env_remove(var);
    }
    c.envs(env.iter().copied());
    c
}

fn output(mut c: Command) -> Output {
    c.output().expect("runs")
}

/// The toy photo and three mirror images of it, as `p0.png` … `p3.png` in `dir`.
fn photos(dir: &Path) {
    let img = image::open(fixtures().join("images/toy.png"))
        .unwrap()
        .to_rgb8();
    let flips = [
        img.clone(),
        image::imageops::flip_horizontal(&img),
        image::imageops::flip_vertical(&img),
        image::imageops::rotate180(&img),
    ];
    for (i, f) in flips.iter().enumerate() {
        f.save(dir.join(format!("p{i}.png"))).unwrap();
    }
}

fn job(id: &str, image: &str, extra: Value) -> String {
    let mut line = serde_json::json!({"id": id, "image": image, "prompt": TOY_PROMPT});
    for (k, v) in extra.as_object().unwrap() {
        line[k] = v.clone();
    }
    line.to_string()
}

/// Eight jobs: each photo twice, the second time with another source prompt (so 8 inversions).
fn eight_jobs(dir: &Path) -> PathBuf {
    photos(dir);
    let mut lines = Vec::new();
    for i in 0..4 {
        let image = format!("p{i}.png");
        lines.push(job(
            &format!("j{i}"),
            &image,
            serde_json::json!({"edit_prompt": TOY_EDIT}),
        ));
        let other =
            serde_json::json!({"prompt": "an orange shape", "edit_prompt": "a green shape"});
        lines.push(job(&format!("k{i}"), &image, other));
    }
    let path = dir.join("jobs.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// The results lines of every results file in `dir`.
fn records(dir: &Path) -> Vec<Value> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("results") && name.ends_with(".jsonl") {
            let text = std::fs::read_to_string(&p).unwrap();
            all.extend(
                text.lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap()),
            );
        }
    }
    all
}

/// How many lines each id has.
fn id_counts(records: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in records {
        *counts
            .entry(r["id"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    counts
}

/// The PNGs of `dir`, by name.
fn pngs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// The eight jobs run once, uninterrupted: (its folder, its PNGs).
fn uninterrupted() -> &'static (tempfile::TempDir, BTreeMap<String, Vec<u8>>) {
    static RUN: OnceLock<(tempfile::TempDir, BTreeMap<String, Vec<u8>>)> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let jobs = eight_jobs(dir.path());
        let out = dir.path().join("out");
        let o = output(batch(
            &[jobs.to_str().unwrap(), "--out-dir", out.to_str().unwrap()],
            &[],
        ));
        assert!(o.status.success(), "{}", stderr(&o));
        let counts = id_counts(&records(&out));
        assert_eq!(counts.len(), 8, "{counts:?}");
        let pngs = pngs(&out);
        assert_eq!(pngs.len(), 8);
        (dir, pngs)
    })
}

/// Every one of the eight jobs has exactly one results line in `out`, and the PNGs are those of
/// the uninterrupted run.
fn assert_like_uninterrupted(out: &Path, expected: &BTreeMap<String, Vec<u8>>) {
    let counts = id_counts(&records(out));
    assert!(
        counts.len() == 8 && counts.values().all(|&n| n == 1),
        "{counts:?}"
    );
    assert!(
        pngs(out) == *expected,
        "the outputs differ from an uninterrupted run's"
    );
}

#[test]
fn a_photo_is_inverted_once_for_all_its_edits_and_each_edit_equals_edit() {
    let dir = tempfile::tempdir().unwrap();
    photos(dir.path());
    let (blue, green) = (TOY_EDIT, "a green triangle on a textured background");
    let lines = [
        job(
            "a",
            "p0.png",
            serde_json::json!({"edit_prompts": [blue, green, "an orange circle on a textured background"]}),
        ),
        job("b", "p1.png", serde_json::json!({"edit_prompt": blue})),
        // The photo of `a` again, from a later start step: it samples from a's inversion.
        job(
            "c",
            "p0.png",
            serde_json::json!({"edit_prompt": "a purple triangle on a textured background", "start_step": 5}),
        ),
    ];
    let jobs = dir.path().join("jobs.jsonl");
    std::fs::write(&jobs, lines.join("\n")).unwrap();
    let out = dir.path().join("out");
    let o = output(batch(
        &[jobs.to_str().unwrap(), "--out-dir", out.to_str().unwrap()],
        &[],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let calls: BTreeMap<String, u64> = records(&out)
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["unet_calls"].as_u64().unwrap(),
            )
        })
        .collect();
    // a: the inversion (10) and three edits (3 × 10); c: 5 sampling steps from step 5, no
    // inversion; b: its own photo's inversion and one edit. Per edit it would be 10 + 10 each.
    let expected = [("a", 4 * CALLS), ("b", 2 * CALLS), ("c", 5)];
    assert_eq!(calls, expected.map(|(id, n)| (id.to_string(), n)).into());
    let edit = |photo: &str, prompt: &str, extra: &[&str]| {
        let target = dir.path().join(format!("edit-{}.png", extra.len()));
        let image = dir.path().join(photo);
        let mut args = vec![
            "edit", "-q", "--model", "toy", "--steps", STEPS, "--prompt", TOY_PROMPT,
        ];
        args.extend(["--image", image.to_str().unwrap(), "--edit-prompt", prompt]);
        args.extend(["--out", target.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let o = run(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read(target).unwrap()
    };
    let png = |name: &str| std::fs::read(out.join(name)).unwrap();
    assert!(
        edit("p0.png", green, &[]) == png("a-1.png"),
        "a-1.png differs from `edit`"
    );
    let purple = "a purple triangle on a textured background";
    assert!(
        edit("p0.png", purple, &["--start-step", "5"]) == png("c.png"),
        "c.png differs from `edit`"
    );
}

#[test]
fn a_killed_batch_reruns_to_the_uninterrupted_outputs_with_one_line_per_job() {
    let (_, expected) = uninterrupted();
    let dir = tempfile::tempdir().unwrap();
    let jobs = eight_jobs(dir.path());
    let out = dir.path().join("out");
    let args = [jobs.to_str().unwrap(), "--out-dir", out.to_str().unwrap()];
    let mut child = batch(&args, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let results = out.join("results.jsonl");
    while std::fs::read_to_string(&results).map_or(0, |t| t.lines().count()) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no results within 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done = records(&out).len();
    assert!(
        done < 8,
        "the batch finished before it was killed; the test needs longer jobs"
    );
    // A line cut off by a crash in the middle of its write is dropped on rerun.
    let mut text = std::fs::read_to_string(&results).unwrap();
    text.push_str(r#"{"id":"j3","line":7,"sta"#);
    std::fs::write(&results, text).unwrap();

    let o = output(batch(&args, &[]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_like_uninterrupted(&out, expected);
}

#[test]
fn two_shards_from_the_flag_and_from_slurm_cover_every_job_once() {
    let (_, expected) = uninterrupted();
    let dir = tempfile::tempdir().unwrap();
    let jobs = eight_jobs(dir.path());
    let out = dir.path().join("out");
    let args = [jobs.to_str().unwrap(), "--out-dir", out.to_str().unwrap()];
    let o = output(batch(&[&args[..], &["--shard", "0/2"]].concat(), &[]));
    assert!(o.status.success(), "{}", stderr(&o));
    let slurm = [
        ("SLURM_ARRAY_TASK_ID", "1"),
        ("SLURM_ARRAY_TASK_COUNT", "2"),
    ];
    let o = output(batch(&args, &slurm));
    assert!(o.status.success(), "{}", stderr(&o));
    let shard = |i: usize| {
        let text = std::fs::read_to_string(out.join(format!("results-{i}-of-2.jsonl"))).unwrap();
        text.lines().count()
    };
    assert!(
        shard(0) > 0 && shard(1) > 0 && shard(0) + shard(1) == 8,
        "{} + {}",
        shard(0),
        shard(1)
    );
    assert_like_uninterrupted(&out, expected);
}

#[test]
fn bad_job_lines_fail_alone_and_stay_failed_on_rerun() {
    let dir = tempfile::tempdir().unwrap();
    photos(dir.path());
    std::fs::write(
        dir.path().join("broken.png"),
        b"\x89PNG\r\n\x1a\n not really",
    )
    .unwrap();
    let edit = serde_json::json!({"edit_prompt": TOY_EDIT});
    let lines = [
        job("good", "p0.png", edit.clone()),
        job("corrupt", "broken.png", edit.clone()),
        job("good", "p1.png", edit.clone()),
        job("../escape", "p0.png", edit.clone()),
    ];
    let jobs = dir.path().join("jobs.jsonl");
    std::fs::write(&jobs, lines.join("\n")).unwrap();
    let out = dir.path().join("out");
    let args = [jobs.to_str().unwrap(), "--out-dir", out.to_str().unwrap()];
    let check = |o: &Output| {
        assert_eq!(o.status.code(), Some(2), "{}", stderr(o));
        let by_line: BTreeMap<u64, Value> = records(&out)
            .into_iter()
            .map(|r| (r["line"].as_u64().unwrap(), r))
            .collect();
        assert_eq!(by_line.len(), 4, "{by_line:?}");
        assert_eq!(by_line[&1]["status"], "ok");
        let error = |line: u64| {
            assert_eq!(by_line[&line]["status"], "failed");
            by_line[&line]["error"].as_str().unwrap().to_string()
        };
        assert!(error(2).contains("broken.png"), "{}", error(2));
        assert!(
            error(3).contains("duplicate id \"good\": line 1 has it"),
            "{}",
            error(3)
        );
        assert!(error(4).contains("may hold only letters"), "{}", error(4));
        assert_eq!(pngs(&out).into_keys().collect::<Vec<_>>(), ["good.png"]);
    };
    check(&output(batch(&args, &[])));
    // A rerun finds everything recorded; a retry runs the failed lines again, and each line
    // still has one record.
    check(&output(batch(&args, &[])));
    check(&output(batch(
        &[&args[..], &["--retry-failed"]].concat(),
        &[],
    )));
    assert!(dir.path().join("escape.png").symlink_metadata().is_err());
}
