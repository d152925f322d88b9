//! `cargo xtask bench-batch`: jobs per minute of `ddim-edit batch` against a shell loop of
//! `ddim-edit edit` doing the same edits, in the same run on the same machine, with the toy model.
//! The job file has `--photos` photos (mirror images of the toy scene) with `--edits` edit
//! prompts each; the loop runs one `edit` process per (photo, edit prompt), as a script would,
//! reloading the model and re-inverting the photo every time. Prints one JSON line on stdout
//! and a table on stderr, both naming the CPU.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};

use crate::project_root;

/// `cargo xtask bench-batch` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ddim-edit binary (default: target/release/ddim-edit, built first).
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// Photos in the job file.
    #[arg(long, default_value_t = 4)]
    pub photos: usize,
    /// Edit prompts per photo.
    #[arg(long, default_value_t = 3)]
    pub edits: usize,
    /// DDIM steps of every edit.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
}

const PROMPT: &str = "an orange triangle on a textured background";
const EDITS: [&str; 4] = [
    "a blue triangle on a textured background",
    "a green triangle on a textured background",
    "an orange circle on a textured background",
    "a purple square on a textured background",
];

fn photos(dir: &Path, n: usize) -> Result<Vec<PathBuf>> {
    let img = image::open(project_root().join("tests/fixtures/images/toy.png"))?.to_rgb8();
    (0..n)
        .map(|i| {
            let mut p = img.clone();
            if i % 2 == 1 {
                p = image::imageops::flip_horizontal(&p);
            }
            if i % 4 >= 2 {
                p = image::imageops::flip_vertical(&p);
            }
            // Beyond four, a shifted copy: a different photo with the same scene.
            let shift = (i / 4) as i64;
            let (w, h) = p.dimensions();
            let shifted = image::RgbImage::from_fn(w, h, |x, y| {
                *p.get_pixel(((x as i64 + shift) % w as i64) as u32, y)
            });
            let path = dir.join(format!("photo{i}.png"));
            shifted.save(&path)?;
            Ok(path)
        })
        .collect()
}

fn run_ok(cmd: &mut Command) -> Result<()> {
    let o = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        o.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(())
}

/// `ddim-edit ARGS… -q --model toy --steps STEPS`.
fn toy(bin: &Path, args: &[&str], steps: &str) -> Command {
    let mut c = Command::new(bin);
    c.args(args)
        .args(["-q", "--model", "toy", "--steps", steps]);
    c
}

/// The binary to time: `--bin`, or a release build.
fn binary(a: &Args) -> Result<PathBuf> {
    if let Some(b) = &a.bin {
        return Ok(b.clone());
    }
    run_ok(
        Command::new(env!("CARGO"))
            .args(["build", "--release", "--bin", "ddim-edit"])
            .current_dir(project_root()),
    )?;
    Ok(project_root().join("target/release/ddim-edit"))
}

/// Seconds of one `batch` over the job file, and of the loop of `edit`s doing the same edits
/// (checked to give the same PNGs).
fn time_both(
    bin: &Path,
    tmp: &Path,
    photos: &[PathBuf],
    edits: &[&str],
    steps: &str,
) -> Result<(f64, f64)> {
    let lines: Vec<String> = photos
        .iter()
        .enumerate()
        .map(|(i, p)| serde_json::json!({"id": format!("p{i}"), "image": p, "prompt": PROMPT, "edit_prompts": edits}).to_string())
        .collect();
    let jobs = tmp.join("jobs.jsonl");
    std::fs::write(&jobs, lines.join("\n"))?;
    let batch = |out: &str, steps: &str| {
        let mut c = toy(bin, &["batch"], steps);
        c.arg(&jobs).arg("--out-dir").arg(tmp.join(out));
        c
    };
    // The toy unpacks on first use: do it before timing.
    run_ok(&mut batch("warm", "1"))?;
    let started = Instant::now();
    run_ok(&mut batch("batch", steps))?;
    let batch_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for (i, p) in photos.iter().enumerate() {
        for (n, e) in edits.iter().enumerate() {
            let out = tmp.join(format!("loop-p{i}-{n}.png"));
            let mut edit = toy(
                bin,
                &["edit", "--prompt", PROMPT, "--edit-prompt", e],
                steps,
            );
            run_ok(edit.arg("--image").arg(p).arg("--out").arg(&out))?;
            let same =
                std::fs::read(&out)? == std::fs::read(tmp.join(format!("batch/p{i}-{n}.png")))?;
            ensure!(same, "the loop's edit {i}-{n} differs from the batch's");
        }
    }
    Ok((batch_s, started.elapsed().as_secs_f64()))
}

pub fn run(a: &Args) -> Result<()> {
    ensure!(
        a.photos >= 1 && (1..=EDITS.len()).contains(&a.edits),
        "--photos ≥ 1, --edits 1 to {}",
        EDITS.len()
    );
    let bin = binary(a)?;
    let tmp = std::env::temp_dir().join(format!("ddim-edit-bench-batch-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let photos = photos(&tmp, a.photos)?;
    let timed = time_both(&bin, &tmp, &photos, &EDITS[..a.edits], &a.steps.to_string());
    let _ = std::fs::remove_dir_all(&tmp);
    let (batch_s, loop_s) = timed?;
    let edits_total = (a.photos * a.edits) as f64;
    let per_min = |s: f64| edits_total / s * 60.0;
    let cpu = xtask::cpu();
    let line = serde_json::json!({
        "bench": "batch", "cpu": cpu, "photos": a.photos, "edits_per_photo": a.edits, "steps": a.steps,
        "batch_s": batch_s, "loop_s": loop_s,
        "batch_edits_per_min": per_min(batch_s), "loop_edits_per_min": per_min(loop_s),
    });
    println!("{line}");
    eprintln!(
        "batch vs a shell loop of `edit`, toy model, {} photos × {} edits, {} steps — {cpu}",
        a.photos, a.edits, a.steps
    );
    eprintln!("| | seconds | edits/min |\n|---|---:|---:|");
    eprintln!(
        "| `ddim-edit batch` | {batch_s:.1} | {:.1} |",
        per_min(batch_s)
    );
    eprintln!(
        "| loop of `ddim-edit edit` | {loop_s:.1} | {:.1} |",
        per_min(loop_s)
    );
    eprintln!(
        "batch is {:.2}× the loop's throughput (same PNGs, byte for byte)",
        loop_s / batch_s
    );
    Ok(())
}
