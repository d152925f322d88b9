//! `cargo xtask <task>`: developer tasks of the ddim-edit workspace. The only part of the project
//! that touches the network (`fetch`) or Python (`fixtures`, `bench --torch`).
//!
//! - `cargo xtask fetch …`    download models into the Hugging Face cache (see `fetch.rs`)
//! - `cargo xtask convert …`  rewrite a diffusers folder's weights in another dtype (see `convert.rs`)
//! - `cargo xtask bench …`    benchmarks, optionally against PyTorch (see `bench.rs`)
//! - `cargo xtask eval-toy`   editing quality of the toy model (see `eval_toy.rs`)
//! - `cargo xtask fixtures`   regenerate `tests/fixtures` with the pinned Python environment

mod bench;
mod eval_toy;

use xtask::{convert, fetch};

use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// The workspace root.
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Regenerates every fixture with the pinned Python environment given by `PYTHON` (default
/// `.venv/bin/python`, set up per `tests/reference/README.md`).
fn fixtures() -> anyhow::Result<()> {
    let root = project_root();
    let python = std::env::var("PYTHON")
        .unwrap_or_else(|_| root.join(".venv/bin/python").display().to_string());
    // gen_tiny_models.py rewrites tests/fixtures/refs, so gen_pipeline.py must run after it.
    for script in [
        "gen_scheduler.py",
        "gen_manifests.py",
        "gen_tiny_models.py",
        "gen_pipeline.py",
    ] {
        let status = Command::new(&python)
            .arg(root.join("tests/reference").join(script))
            .current_dir(&root)
            .status()
            .map_err(|e| anyhow::anyhow!("running {python}: {e}"))?;
        anyhow::ensure!(status.success(), "{script} failed ({status})");
    }
    Ok(())
}

/// Re-runs `cargo xtask TASK ARGS` from a release build with the same backend features: numbers
/// need optimised code, and `cargo xtask` builds the dev profile.
pub fn rerun_in_release(task: &str, args: &[String]) -> anyhow::Result<()> {
    eprintln!(
        "{task}: dev build; re-running as `cargo run --release -p xtask -- {task}` (pass --dev to skip)"
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(project_root())
        .args(["run", "--quiet", "--release", "-p", "xtask"]);
    let features: Vec<&str> = [
        ("wgpu", cfg!(feature = "wgpu")),
        ("cuda", cfg!(feature = "cuda")),
    ]
    .iter()
    .filter_map(|&(name, on)| on.then_some(name))
    .collect();
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    let status = cmd
        .args(["--", task])
        .args(args)
        .status()
        .map_err(|e| anyhow::anyhow!("running cargo: {e}"))?;
    anyhow::ensure!(status.success(), "release {task} failed ({status})");
    Ok(())
}

const USAGE: &str =
    "usage: cargo xtask <fetch|convert|bench|eval-toy|fixtures> [args…] (each takes --help)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or(&[]).to_vec();
    let result = match args.first().map(String::as_str) {
        Some("fetch") => fetch::run(&rest),
        Some("convert") => convert::run(&rest),
        Some("bench") => bench::run(&rest),
        Some("eval-toy") => eval_toy::run(&rest),
        Some("fixtures") => fixtures(),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
