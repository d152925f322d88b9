//! `cargo xtask <task>`: developer tasks of the ddim-edit workspace.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// The workspace root.
fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Regenerates every fixture with the pinned Python environment given by `PYTHON` (default
/// `.venv/bin/python`, set up per `tests/reference/README.md`).
fn fixtures() -> Result<(), String> {
    let root = project_root();
    let python = std::env::var("PYTHON")
        .unwrap_or_else(|_| root.join(".venv/bin/python").display().to_string());
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
            .map_err(|e| format!("running {python}: {e}"))?;
        if !status.success() {
            return Err(format!("{script} failed ({status})"));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    let result = match task.as_deref() {
        Some("fixtures") => fixtures(),
        _ => {
            eprintln!(
                "usage: cargo xtask fixtures   # regenerate tests/fixtures with the pinned Python environment"
            );
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
