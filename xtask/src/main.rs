//! `cargo xtask <task>`: developer tasks of the ddim-edit workspace. The only part of the project
//! that touches Python (`fixtures`, `bench --torch`); the network only through `model-source`.
//!
//! - `cargo xtask fetch …`    download models into the Hugging Face cache (see `fetch.rs`)
//! - `cargo xtask convert …`  rewrite a diffusers folder's weights in another dtype (see `convert.rs`)
//! - `cargo xtask bench …`    benchmarks, optionally against PyTorch (see `bench.rs`)
//! - `cargo xtask bench-batch` `ddim-edit batch` against a shell loop of `edit` (see `bench_batch.rs`)
//! - `cargo xtask eval-toy`   editing quality of the toy model (see `eval_toy.rs`)
//! - `cargo xtask fixtures`   regenerate `tests/fixtures` with the pinned Python environment
//! - `cargo xtask fuzz …`     run the libFuzzer targets of `fuzz/` for a bounded time (see `fuzz.rs`)
//! - `cargo xtask gpu-check`  wgpu parity and wgpu against PyTorch CUDA on a GPU machine (see `gpu_check.rs`)
//! - `cargo xtask slurm-test` a sharded `ddim-edit batch` as a job array of a real one-node Slurm (see `slurm.rs`)

mod bench;
mod bench_batch;
mod eval_toy;
mod fetch;
mod fuzz;
mod gpu_check;
mod slurm;

use xtask::convert;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};

/// The workspace root.
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

#[derive(Parser, Debug)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Developer tasks of ddim-edit"
)]
pub struct Cli {
    #[command(subcommand)]
    pub task: Task,
}

#[derive(Subcommand, Debug)]
pub enum Task {
    /// Download a model into the Hugging Face cache, where `ddim-edit --model` finds it offline.
    Fetch(fetch::Args),
    /// Copy a diffusers folder with its float weights in another dtype.
    Convert(convert::Args),
    /// Speed of the Stable Diffusion components and of an edit, optionally against PyTorch.
    Bench(bench::Args),
    /// Jobs per minute of `ddim-edit batch` against a shell loop of `ddim-edit edit`.
    BenchBatch(bench_batch::Args),
    /// Editing quality of the toy model on its held-out scenes.
    EvalToy(eval_toy::Args),
    /// Regenerate tests/fixtures with the pinned Python environment ($PYTHON, default
    /// .venv/bin/python).
    Fixtures,
    /// Run each libFuzzer target of fuzz/ for a bounded time (nightly and cargo-fuzz needed) and
    /// print its executions, coverage, corpus size and crashes.
    Fuzz(fuzz::Args),
    /// Start a one-node Slurm on loopback and run a sharded `ddim-edit batch` as a job array:
    /// every job must finish exactly once, with the PNGs of an unsharded run.
    SlurmTest(slurm::Args),
    /// On a machine with a GPU: the wgpu parity tests, then UNet, VAE decoder and edit on wgpu
    /// against PyTorch CUDA in f32 and f16, as one table.
    GpuCheck(gpu_check::Args),
}

/// The Python interpreter of the pinned environment: `PYTHON`, default `.venv/bin/python`.
pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| {
        project_root()
            .join(".venv/bin/python")
            .display()
            .to_string()
    })
}

/// Regenerates every fixture with the pinned Python environment given by `PYTHON` (default
/// `.venv/bin/python`, set up per `tests/reference/README.md`).
fn fixtures() -> anyhow::Result<()> {
    let root = project_root();
    let python = python();
    // gen_tiny_models.py rewrites tests/fixtures/refs, so the scripts after it must run after it.
    for script in [
        "gen_scheduler.py",
        "gen_manifests.py",
        "gen_tiny_models.py",
        "gen_pipeline.py",
        "gen_toy_refs.py",
        "gen_editing.py",
        "gen_taesd.py",
        "gen_null_text.py",
        "gen_single_file.py",
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

/// Re-runs this `cargo xtask TASK …` command line from a release build with the same backend
/// features: numbers need optimised code, and `cargo xtask` builds the dev profile.
pub fn rerun_in_release(task: &str) -> anyhow::Result<()> {
    rerun_in_release_with(task, &[])
}

/// [`rerun_in_release`] with the features `extra` turned on besides those of this build.
pub fn rerun_in_release_with(task: &str, extra: &[&str]) -> anyhow::Result<()> {
    eprintln!(
        "{task}: dev build; re-running as `cargo run --release -p xtask -- {task}` (pass --dev to skip)"
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(project_root())
        .args(["run", "--quiet", "--release", "-p", "xtask"]);
    let mut features: Vec<&str> = [
        ("wgpu", cfg!(feature = "wgpu")),
        ("cuda", cfg!(feature = "cuda")),
    ]
    .iter()
    .filter_map(|&(name, on)| on.then_some(name))
    .collect();
    for name in extra {
        if !features.contains(name) {
            features.push(name);
        }
    }
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    // The task's own arguments, as given: everything after the task name.
    let status = cmd
        .args(["--", task])
        .args(std::env::args_os().skip(2))
        .status()
        .map_err(|e| anyhow::anyhow!("running cargo: {e}"))?;
    anyhow::ensure!(status.success(), "release {task} failed ({status})");
    Ok(())
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Fetch(args) => fetch::run(args),
        Task::Convert(args) => convert::run(args),
        Task::Bench(args) => bench::run(args),
        Task::BenchBatch(args) => bench_batch::run(&args),
        Task::EvalToy(args) => eval_toy::run(args),
        Task::Fixtures => fixtures(),
        Task::Fuzz(args) => fuzz::run(args),
        Task::SlurmTest(args) => slurm::run(&args),
        Task::GpuCheck(args) => gpu_check::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_flag_has_help() {
        Cli::command().debug_assert();
        let cli = Cli::command();
        for task in cli.get_subcommands() {
            for arg in task.get_arguments() {
                assert!(
                    arg.get_help().is_some(),
                    "{} --{} has no help",
                    task.get_name(),
                    arg.get_id()
                );
            }
        }
    }

    #[test]
    fn fetch_takes_a_name_a_repo_or_list() {
        let fetch = |args: &[&str]| {
            let argv = ["xtask", "fetch"].iter().chain(args);
            match Cli::try_parse_from(argv).map(|c| c.task) {
                Ok(Task::Fetch(a)) => Ok(a),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.to_string()),
            }
        };
        let a = fetch(&["sd-2-1-base", "--variant", "fp16"]).unwrap();
        assert_eq!(
            (a.name.as_deref(), a.variant.as_deref()),
            (Some("sd-2-1-base"), Some("fp16"))
        );
        let a = fetch(&["--repo", "org/name", "--revision", "v1", "-q"]).unwrap();
        assert_eq!(a.repo.as_deref(), Some("org/name"));
        assert!(a.quiet && a.revision.as_deref() == Some("v1"));
        assert!(fetch(&["--list"]).unwrap().list);
        let e = fetch(&[]).unwrap_err();
        assert!(e.contains("NAME"), "{e}");
        let e = fetch(&["sd-2-1-base", "--repo", "org/name"]).unwrap_err();
        assert!(e.contains("--repo"), "{e}");
        let e = fetch(&["--repo", "org/name", "--bogus"]).unwrap_err();
        assert!(e.contains("--bogus") && e.contains("Usage"), "{e}");
    }

    #[test]
    fn convert_needs_model_dtype_and_out() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["xtask", "convert"].iter().chain(args)).map_err(|e| e.to_string())
        };
        let cli = parse(&["--model", "toy", "--dtype", "fp16", "--out", "x"]).unwrap();
        let Task::Convert(a) = cli.task else {
            panic!("not convert")
        };
        assert_eq!(a.dtype, Some(safetensors::Dtype::F16));
        let e = parse(&["--model", "toy", "--dtype", "int8", "--out", "x"]).unwrap_err();
        assert!(e.contains("f16, bf16 or f32"), "{e}");
        let e = parse(&["--model", "toy"]).unwrap_err();
        assert!(e.contains("--dtype") && e.contains("--out"), "{e}");
        // A single file needs no --dtype; --config is for single files only.
        let cli = parse(&["--from-single-file", "m.safetensors", "--out", "x"]).unwrap();
        let Task::Convert(a) = cli.task else {
            panic!("not convert")
        };
        assert_eq!(
            (a.dtype, a.from_single_file),
            (None, Some("m.safetensors".into()))
        );
        let cli = parse(&[
            "--model", "toy", "--dtype", "f16", "--config", "sd-1-5", "--out", "x",
        ]);
        let Task::Convert(a) = cli.unwrap().task else {
            panic!("not convert")
        };
        let e = a.check().unwrap_err().to_string();
        assert!(
            e.contains("--config only applies with --from-single-file"),
            "{e}"
        );
        let e = parse(&[
            "--model",
            "toy",
            "--from-single-file",
            "m.safetensors",
            "--out",
            "x",
        ]);
        assert!(e.unwrap_err().contains("cannot be used with"));
    }
}
