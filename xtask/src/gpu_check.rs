//! `cargo xtask gpu-check`: what a machine with a GPU shows in one command — the wgpu parity tests
//! (with `CI=1`, so a missing adapter fails instead of skipping), then the UNet, VAE decoder and a
//! whole edit on our wgpu backend beside PyTorch CUDA (`bench --torch --torch-device cuda`), in
//! f32 and f16, as one table on stdout.
//!
//! It re-runs itself from a release build with `--features wgpu`. Without an NVIDIA GPU
//! (`nvidia-smi` finds none) it stops, unless `--any-adapter` asks to run on whatever wgpu finds
//! (lavapipe, say) with PyTorch on the CPU: that checks the command, not the GPU.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::project_root;

/// `cargo xtask gpu-check` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// N×N latents of the benchmarks (64: 512 px images).
    #[arg(long, value_name = "N", default_value_t = 64)]
    latent: usize,
    /// Comma-separated `bench` components.
    #[arg(
        long = "component",
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "unet,vae-decode,edit"
    )]
    components: Vec<String>,
    /// Comma-separated compute dtypes of the text encoder and UNet (the VAE stays f32).
    #[arg(long = "dtype", value_name = "LIST", value_delimiter = ',', default_value = "f32,f16",
          value_parser = sd_models::device::DTYPES)]
    dtypes: Vec<String>,
    /// Timed iterations of every component (default: bench's).
    #[arg(long, value_name = "N")]
    iters: Option<usize>,
    /// Leave out the wgpu parity tests.
    #[arg(long)]
    no_tests: bool,
    /// Seconds after which a step is stopped and reported as timed out (a GPU backend whose
    /// device thread panicked leaves its caller waiting).
    #[arg(long, value_name = "S", default_value_t = 900)]
    step_timeout: u64,
    /// Run without an NVIDIA GPU: on any wgpu adapter, PyTorch on the CPU when it sees no CUDA.
    #[arg(long)]
    any_adapter: bool,
}

/// One step's outcome: what it was, how long it took, and what it found.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    pub seconds: f64,
    pub outcome: Result<String, String>,
}

/// Runs `cargo xtask gpu-check …`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if cfg!(debug_assertions) || !cfg!(feature = "wgpu") {
        return crate::rerun_in_release_with("gpu-check", &["wgpu"]);
    }
    let start = Instant::now();
    let gpu = nvidia_gpu();
    if gpu.is_none() && !args.any_adapter {
        bail!(
            "gpu-check: `nvidia-smi -L` finds no NVIDIA GPU on this machine; run it where one is \
             (or pass --any-adapter to check the command on whatever wgpu adapter there is)"
        );
    }
    let torch_device = torch_device()?;
    if torch_device == "cpu" && !args.any_adapter {
        bail!("gpu-check: PyTorch ($PYTHON) sees no CUDA GPU; install a CUDA build of torch");
    }
    let mut steps = Vec::new();
    if !args.no_tests {
        let limit = Duration::from_secs(args.step_timeout);
        steps.push(parity("sd-models", "models", "parity::", limit));
        steps.push(parity("inversion", "pipeline_parity", "on_wgpu", limit));
    }
    let mut records = Vec::new();
    for dtype in &args.dtypes {
        let (step, found) = bench(&args, dtype, &torch_device);
        steps.push(step);
        records.extend(found);
    }
    let header = format!(
        "gpu-check: GPU {}, PyTorch on {torch_device}, {}×{} latents, CPU {}, {:.0} s in all",
        gpu.as_deref().unwrap_or("none (--any-adapter)"),
        args.latent,
        args.latent,
        xtask::cpu(),
        start.elapsed().as_secs_f64()
    );
    println!("{}", table(&header, &steps, &records));
    if let Some(failed) = steps.iter().find(|s| s.outcome.is_err()) {
        bail!("gpu-check: {} failed", failed.name);
    }
    Ok(())
}

/// The first NVIDIA GPU's `name, memory, driver` from `nvidia-smi`, if there is one.
fn nvidia_gpu() -> Option<String> {
    let out = Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total,driver_version",
            "--format=csv,noheader",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// `cuda` when $PYTHON's torch sees a CUDA GPU, else `cpu`.
fn torch_device() -> anyhow::Result<String> {
    let python = crate::python();
    let out = Command::new(&python)
        .args(["-c", "import torch; print(torch.cuda.is_available())"])
        .output()
        .with_context(|| format!("running {python} (set PYTHON to a venv with torch)"))?;
    if !out.status.success() {
        bail!(
            "{python} cannot import torch: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(match String::from_utf8_lossy(&out.stdout).trim() {
        "True" => "cuda".into(),
        _ => "cpu".into(),
    })
}

/// Runs one wgpu parity test binary of `package` (the dev profile, as CI does) with `CI=1`.
fn parity(package: &str, test: &str, filter: &str, limit: Duration) -> Step {
    let started = Instant::now();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(project_root())
        .env("CI", "1")
        // The workspace's feature set, as CI builds it: `-p` alone would resolve Burn's
        // features anew and rebuild it.
        .args(["test", "--workspace", "--features", "wgpu", "--test", test])
        .args(["--", filter]);
    let outcome = match run_until(cmd, limit) {
        Err(e) => Err(format!("cargo test: {e}")),
        Ok((status, stdout)) => match (status.success(), test_counts(&stdout)) {
            (true, Some((passed, 0))) if passed > 0 => Ok(format!("{passed} passed")),
            (true, _) => Err("no test ran".to_string()),
            (false, Some((passed, failed))) => Err(format!("{failed} failed, {passed} passed")),
            (false, None) => Err(format!("cargo test failed ({status})")),
        },
    };
    Step {
        name: format!("wgpu parity: {package} {test} {filter}"),
        seconds: started.elapsed().as_secs_f64(),
        outcome,
    }
}

/// Runs `cmd` (stderr shown as it comes) for at most `limit`: its exit status and stdout, or why
/// not (it could not start, or was killed at the limit).
fn run_until(
    mut cmd: Command,
    limit: Duration,
) -> Result<(std::process::ExitStatus, String), String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut pipe = child.stdout.take().ok_or("no stdout pipe")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "timed out after {} s (--step-timeout)",
                    limit.as_secs()
                ));
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    Ok((status, reader.join().unwrap_or_default()))
}

/// Passed and failed tests summed over libtest's `test result:` lines.
pub fn test_counts(output: &str) -> Option<(usize, usize)> {
    let mut total = None;
    for line in output.lines().filter(|l| l.starts_with("test result:")) {
        let count = |word: &str| {
            line.split(';')
                .find_map(|part| part.trim().strip_suffix(word))
                .and_then(|n| n.trim().rsplit(' ').next()?.parse::<usize>().ok())
                .unwrap_or(0)
        };
        let (p, f) = total.unwrap_or((0, 0));
        total = Some((p + count(" passed"), f + count(" failed")));
    }
    total
}

/// `bench --device wgpu --torch` in `dtype`: the step and the JSON records of both sides.
fn bench(args: &Args, dtype: &str, torch_device: &str) -> (Step, Vec<Value>) {
    let started = Instant::now();
    let exe = std::env::current_exe().unwrap_or_else(|_| "xtask".into());
    let mut cmd = Command::new(exe);
    cmd.current_dir(project_root())
        .args(["bench", "--dev", "--device", "wgpu", "--torch"])
        .args(["--torch-device", torch_device, "--dtype", dtype])
        .args(["--latent", &args.latent.to_string()])
        .args(["--component", &args.components.join(",")]);
    if let Some(n) = args.iters {
        cmd.args(["--iters", &n.to_string()]);
    }
    let (outcome, records) = match run_until(cmd, Duration::from_secs(args.step_timeout)) {
        Err(e) => (Err(format!("bench: {e}")), Vec::new()),
        Ok((status, stdout)) => {
            // Each record tagged with the run's dtype: both sides' VAE records say f32.
            let records: Vec<Value> = stdout
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .map(|mut r| {
                    r["run_dtype"] = dtype.into();
                    r
                })
                .collect();
            match status.success() {
                true => (Ok(format!("{} measurements", records.len())), records),
                false => (Err(format!("bench failed ({status})")), records),
            }
        }
    };
    let step = Step {
        name: format!("bench {dtype}"),
        seconds: started.elapsed().as_secs_f64(),
        outcome,
    };
    (step, records)
}

fn field<'a>(r: &'a Value, key: &str) -> &'a str {
    r.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The report: `header`, the steps, and per component and run dtype (`run_dtype`, which [`bench`]
/// adds) our wgpu time beside PyTorch's.
pub fn table(header: &str, steps: &[Step], records: &[Value]) -> String {
    let mut t = format!("\n{header}\n\n| step | seconds | result |\n|---|---:|---|\n");
    for s in steps {
        let result = match &s.outcome {
            Ok(m) => format!("ok: {m}"),
            Err(m) => format!("FAILED: {m}"),
        };
        t += &format!("| {} | {:.1} | {result} |\n", s.name, s.seconds);
    }
    t +=
        "\n| component | dtype | ours wgpu (s) | PyTorch (s) | ours/PyTorch | PyTorch peak MiB |\n";
    t += "|---|---|---:|---:|---:|---:|\n";
    let median = |r: &Value| r.get("median_s").and_then(Value::as_f64);
    for ours in records.iter().filter(|r| field(r, "impl") == "burn") {
        let (component, dtype) = (field(ours, "component"), field(ours, "run_dtype"));
        let theirs = records.iter().find(|r| {
            field(r, "impl") == "torch"
                && field(r, "component") == component
                && field(r, "run_dtype") == dtype
        });
        let (Some(a), b) = (median(ours), theirs.and_then(median)) else {
            continue;
        };
        let peak = theirs
            .and_then(|r| r.get("peak_rss_mib")?.as_f64())
            .map_or("–".into(), |m| format!("{m:.0}"));
        let (b_text, ratio) = b.map_or(("–".into(), "–".into()), |b| {
            (format!("{b:.3}"), format!("{:.2}", a / b))
        });
        t += &format!("| {component} | {dtype} | {a:.3} | {b_text} | {ratio} | {peak} |\n");
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_counts_sum_every_binary() {
        let out = "running 5 tests\n\
            test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 17 filtered out; finished in 3.1s\n\
            test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s\n";
        assert_eq!(test_counts(out), Some((7, 1)));
        assert_eq!(test_counts("error: could not compile"), None);
    }

    #[test]
    fn the_table_pairs_each_component_and_dtype() {
        let rec = |imp: &str, c: &str, d: &str, s: f64| json!({"impl": imp, "component": c, "run_dtype": d, "median_s": s, "peak_rss_mib": 812.0});
        let records = [
            rec("burn", "unet", "f16", 0.25),
            rec("torch", "unet", "f32", 9.0),
            rec("torch", "unet", "f16", 0.1),
            rec("burn", "vae-decode", "f16", 0.6),
            rec("torch", "vae-decode", "f32", 0.2),
            rec("torch", "vae-decode", "f16", 0.3),
            rec("burn", "edit", "f32", 4.0),
        ];
        let steps = [Step {
            name: "bench f16".into(),
            seconds: 12.04,
            outcome: Err("bench failed (exit status: 1)".into()),
        }];
        let t = table("head", &steps, &records);
        assert!(
            t.contains("| bench f16 | 12.0 | FAILED: bench failed (exit status: 1) |"),
            "{t}"
        );
        assert!(
            t.contains("| unet | f16 | 0.250 | 0.100 | 2.50 | 812 |"),
            "{t}"
        );
        assert!(
            t.contains("| vae-decode | f16 | 0.600 | 0.300 | 2.00 | 812 |"),
            "{t}"
        );
        assert!(t.contains("| edit | f32 | 4.000 | – | – | – |"), "{t}");
    }
}
