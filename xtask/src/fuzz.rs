//! `cargo xtask fuzz`: run each libFuzzer target of `fuzz/` for a bounded time and report what
//! it did. Needs the nightly toolchain and `cargo install cargo-fuzz --locked` (see
//! `fuzz/README.md`).
//!
//! ```text
//! cargo xtask fuzz                               # every target, 60 s each
//! cargo xtask fuzz --seconds 300 config trajectory
//! ```
//!
//! Targets build with optimisation, debug assertions (so integer overflow panics) and no
//! sanitizer: the parsers are safe Rust, and AddressSanitizer would halve the executions. New
//! inputs go to `fuzz/target/corpus/<target>`, beside the committed `fuzz/corpus/<target>`;
//! crashes to `fuzz/artifacts/<target>`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::project_root;

/// `cargo xtask fuzz` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds each target runs.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Targets to run (default: every one in fuzz/fuzz_targets).
    pub targets: Vec<String>,
}

/// What one libFuzzer run reported.
#[derive(Debug, Default)]
struct Figures {
    executions: u64,
    cov: u64,
    ft: u64,
    corpus: u64,
    crashes: usize,
}

/// The flags every `cargo fuzz` call of this task passes (build and run must agree).
const BUILD_FLAGS: [&str; 4] = ["--release", "--debug-assertions", "--sanitizer", "none"];

pub fn run(args: Args) -> Result<()> {
    let root = project_root();
    let fuzz = root.join("fuzz");
    let targets = if args.targets.is_empty() {
        all_targets(&fuzz)?
    } else {
        args.targets.clone()
    };
    let status = cargo_fuzz(&fuzz, "build")
        .status()
        .context("running `cargo +nightly fuzz` (install it: cargo install cargo-fuzz --locked)")?;
    if !status.success() {
        bail!("`cargo +nightly fuzz build` failed ({status})");
    }
    let mut table = Vec::new();
    for target in &targets {
        eprintln!("fuzz: {target} for {} s", args.seconds);
        table.push((target, run_target(&fuzz, target, args.seconds)?));
    }
    println!(
        "{:<20} {:>12} {:>8} {:>8} {:>8} {:>8}",
        "target", "executions", "cov", "ft", "corpus", "crashes"
    );
    for (target, f) in &table {
        println!(
            "{target:<20} {:>12} {:>8} {:>8} {:>8} {:>8}",
            f.executions, f.cov, f.ft, f.corpus, f.crashes
        );
    }
    let crashed: Vec<&str> = table
        .iter()
        .filter(|(_, f)| f.crashes > 0)
        .map(|(t, _)| t.as_str())
        .collect();
    if !crashed.is_empty() {
        bail!(
            "crashes in {} (inputs in fuzz/artifacts/)",
            crashed.join(", ")
        );
    }
    Ok(())
}

/// `cargo +nightly fuzz SUBCOMMAND` with this task's build flags, building into `fuzz/target`
/// whatever target directory the workspace uses.
fn cargo_fuzz(fuzz: &Path, subcommand: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(fuzz)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .args(["+nightly", "fuzz", subcommand])
        .args(BUILD_FLAGS);
    cmd
}

/// The target names: the files of `fuzz/fuzz_targets`.
fn all_targets(fuzz: &Path) -> Result<Vec<String>> {
    let dir = fuzz.join("fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {dir:?}"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".rs").map(str::to_string))
        .collect();
    names.sort();
    Ok(names)
}

/// Runs one target for `seconds` and reads its figures from libFuzzer's output.
fn run_target(fuzz: &Path, target: &str, seconds: u64) -> Result<Figures> {
    let found = fuzz.join("target/corpus").join(target);
    let seeds = fuzz.join("corpus").join(target);
    let artifacts = fuzz.join("artifacts").join(target);
    std::fs::create_dir_all(&found).with_context(|| format!("creating {found:?}"))?;
    let before = count_files(&artifacts);
    let output = cargo_fuzz(fuzz, "run")
        .arg(target)
        .arg(&found)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        // A hang or a runaway allocation is a finding too.
        .args(["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"])
        .output()
        .with_context(|| format!("running fuzz target {target}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    let mut figures = parse_log(&log);
    figures.crashes = count_files(&artifacts).saturating_sub(before);
    if !output.status.success() && figures.crashes == 0 {
        eprintln!("{log}");
        bail!("fuzz target {target} failed ({})", output.status);
    }
    Ok(figures)
}

/// The last `cov:`/`ft:`/`corp:` status line and the executions of libFuzzer's final stats.
fn parse_log(log: &str) -> Figures {
    let mut f = Figures::default();
    let field = |line: &str, key: &str| -> Option<u64> {
        let rest = line.split(key).nth(1)?.trim_start();
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    for line in log.lines() {
        if line.contains(" cov: ") {
            f.cov = field(line, " cov: ").unwrap_or(f.cov);
            f.ft = field(line, " ft: ").unwrap_or(f.ft);
            f.corpus = field(line, " corp: ").unwrap_or(f.corpus);
        }
        if let Some(n) = field(line, "stat::number_of_executed_units:") {
            f.executions = n;
        }
    }
    f
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}
