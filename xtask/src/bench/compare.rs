//! `bench --torch`: the PyTorch side (`tests/reference/bench_torch.py`, run after ours so the two
//! never share the cores) and the table that compares them.

use std::fmt::Write as _;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use serde_json::Value;

use super::Options;
use crate::project_root;

/// Runs the PyTorch script with the same shapes, iterations and thread count; returns its records
/// (also echoed on stdout, so that stdout holds every measurement of the run).
pub fn run_torch(o: &Options) -> anyhow::Result<Vec<Value>> {
    let root = project_root();
    let python = crate::python();
    let mut cmd = Command::new(&python);
    cmd.current_dir(&root)
        .arg(root.join("tests/reference/bench_torch.py"))
        .args(["--latent", &o.latent.to_string()])
        .args(["--threads", &o.threads().to_string()])
        .args(["--preset", &o.preset])
        .args(["--component", &o.components.join(",")])
        .args(["--steps", &o.steps.to_string()])
        .args(["--start-step", &o.start_step.to_string()])
        .args(["--matmul", &o.matmul.to_string()])
        .args(["--dtype", &o.dtype])
        .args(["--device", &o.torch_device])
        .stdout(Stdio::piped());
    if let Some(n) = o.iters {
        cmd.args(["--iters", &n.to_string()]);
    }
    let out = cmd
        .spawn()
        .and_then(|child| child.wait_with_output())
        .with_context(|| {
            format!("running {python} (set PYTHON to the venv of tests/reference/requirements.txt)")
        })?;
    if !out.status.success() {
        bail!("bench_torch.py failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut records = Vec::new();
    for line in text.lines().filter(|l| l.starts_with('{')) {
        println!("{line}");
        records.push(
            serde_json::from_str(line)
                .with_context(|| format!("bench_torch.py printed {line:?}"))?,
        );
    }
    Ok(records)
}

fn num(r: &Value, key: &str) -> f64 {
    r.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// The record of `component`; an op variant (`op:conv3x3-320-im2col`, `op:attention-self-ours`)
/// matches PyTorch's op.
fn find<'a>(records: &'a [Value], component: &str) -> Option<&'a Value> {
    let base = component
        .trim_end_matches("-im2col")
        .trim_end_matches("-ours");
    records
        .iter()
        .find(|r| r.get("component").and_then(Value::as_str) == Some(component))
        .or_else(|| {
            records
                .iter()
                .find(|r| r.get("component").and_then(Value::as_str) == Some(base))
        })
}

/// A Markdown table: per component our and PyTorch's median time, the ratio, GFLOP/s, both as a
/// share of the machine's f32 matmul ceiling (the faster of the two sides' matmul in this run),
/// and peak memory.
pub fn table(ours: &[Value], theirs: &[Value]) -> String {
    let ceiling = [ours, theirs]
        .iter()
        .filter_map(|records| find(records, "matmul").map(|r| num(r, "gflop_per_s")))
        .filter(|g| g.is_finite())
        .reduce(f64::max);
    let pct = |g: f64| ceiling.map_or("–".into(), |c| format!("{:.0} %", 100.0 * g / c));
    let mut t = String::new();
    if let Some(r) = ours.first() {
        // "torch 2.15.0 on cuda: NVIDIA H200"; a CPU side is named by the CPU field.
        let backend = |records: &[Value]| {
            let first = records.first();
            let b = first.and_then(|r| r["backend"].as_str()).unwrap_or("–");
            match first.and_then(|r| r["device"].as_str()) {
                Some(d) if d != "cpu" => format!("{b} on {d}"),
                _ => b.to_string(),
            }
        };
        let _ = writeln!(
            t,
            "\n{} preset, {}×{} latents, {} threads, CPU {}; ours: {} {} (SIMD {}, VAE f32), PyTorch: {} {}\n",
            r["preset"].as_str().unwrap_or("?"),
            r["latent"][0],
            r["latent"][1],
            r["threads"],
            r["cpu"].as_str().unwrap_or("?"),
            backend(ours),
            r["dtype"].as_str().unwrap_or("?"),
            r["simd"].as_str().unwrap_or("?"),
            backend(theirs),
            match r["dtype"].as_str() {
                Some("f32") | None => "f32".to_string(),
                Some(d) => format!("autocast {d}"),
            },
        );
    }
    t.push_str("| component | ours (s) | PyTorch (s) | ours/PyTorch | ours GFLOP/s | PyTorch GFLOP/s | ours % of ceiling | PyTorch % of ceiling | ours peak MiB | PyTorch peak MiB |\n");
    t.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in ours {
        let component = r["component"].as_str().unwrap_or("?");
        let other = find(theirs, component);
        let (ot, og) = other.map_or((f64::NAN, f64::NAN), |o| {
            (num(o, "median_s"), num(o, "gflop_per_s"))
        });
        let (mt, mg) = (num(r, "median_s"), num(r, "gflop_per_s"));
        let name = match component {
            "edit" => format!(
                "edit (N={}, k={}: {} UNet calls; tutorial {})",
                r["steps"], r["start_step"], r["unet_evals"], r["tutorial_unet_evals"]
            ),
            "matmul" => format!("matmul {}³ (ceiling)", r["size"][0]),
            c => c.to_string(),
        };
        let _ = writeln!(
            t,
            "| {name} | {mt:.3} | {ot:.3} | {:.2} | {mg:.1} | {og:.1} | {} | {} | {:.0} | {:.0} |",
            mt / ot,
            pct(mg),
            pct(og),
            num(r, "peak_rss_mib"),
            other.map_or(f64::NAN, |o| num(o, "peak_rss_mib")),
        );
    }
    t
}
