//! `cargo xtask bench`: speed of the Stable Diffusion components and of a whole edit, optionally
//! side by side with diffusers/PyTorch on the same machine (`--torch`).
//!
//! Every measurement is one JSON line on stdout (format in [`measure`]); `--torch` then runs
//! `tests/reference/bench_torch.py` with the same shapes and thread count and prints a comparison
//! table (ours/PyTorch, GFLOP/s, % of the measured matmul ceiling) on stderr, so that stdout stays
//! machine-readable. Models are the full-size presets with random weights: no files are needed
//! besides the committed scheduler config and CLIP vocabulary under `tests/fixtures`.
//!
//! Numbers need optimised code, and `cargo xtask` builds the dev profile (our crates at
//! opt-level 0, dependencies at 3, debug assertions on everywhere), so a dev build re-runs itself
//! as `cargo run --release -p xtask -- bench …` unless `--dev` is given.

mod compare;
mod flops;
mod measure;
mod ops;

use anyhow::{Context, bail};

const HELP: &str = "\
usage: cargo xtask bench [options]

  --full                 64×64 latents (512 px images) instead of 32×32 (256 px)
  --latent N             N×N latents (overrides --full)
  --iters N              timed iterations of every component (default: unet 3, text-encoder 5,
                         vae 2, edit 1; one warm-up each, none for edit)
  --component LIST       comma-separated: matmul,text-encoder,vae-encode,vae-decode,unet,edit
                         (default: all of these), and ops (the UNet's ops one by one)
  --preset NAME          sd-2-1-base (default) or sd-1-5
  --device NAME          cpu (Burn flex; default), or wgpu / cuda when built with that feature
  --dtype NAME           f32 (default), f16 or bf16: the text encoder's and UNet's compute dtype
                         (the VAE stays f32, as in `ddim-edit --dtype`)
  --steps N              edit: DDIM steps (default 10)
  --start-step K         edit: start step (default 2)
  --matmul N             size of the f32 matmul that measures the ceiling (default 2048)
  --torch                also run tests/reference/bench_torch.py (interpreter: $PYTHON, default
                         .venv/bin/python) and print the ours/PyTorch table on stderr
  --dev                  measure in the current (dev) build instead of re-running in release";

/// The components measured by default, in the order they run.
pub const COMPONENTS: [&str; 6] = [
    "matmul",
    "text-encoder",
    "vae-encode",
    "vae-decode",
    "unet",
    "edit",
];

/// Measured only when asked for: the UNet's ops one by one (see `ops.rs`).
pub const EXTRA_COMPONENTS: [&str; 1] = ["ops"];

/// Parsed `bench` arguments.
#[derive(Debug, Clone)]
pub struct Options {
    pub latent: usize,
    pub iters: Option<usize>,
    pub components: Vec<String>,
    pub preset: String,
    pub device: String,
    pub dtype: String,
    pub steps: usize,
    pub start_step: usize,
    pub matmul: usize,
    pub torch: bool,
    pub dev: bool,
}

impl Options {
    /// The compute dtype of `--dtype`.
    pub fn dtype(&self) -> burn::tensor::DType {
        match self.dtype.as_str() {
            "f16" => burn::tensor::DType::F16,
            "bf16" => burn::tensor::DType::BF16,
            _ => burn::tensor::DType::F32,
        }
    }

    fn parse(args: &[String]) -> anyhow::Result<Option<Self>> {
        let mut o = Options {
            latent: 32,
            iters: None,
            components: COMPONENTS.iter().map(|c| c.to_string()).collect(),
            preset: "sd-2-1-base".into(),
            device: "cpu".into(),
            dtype: "f32".into(),
            steps: 10,
            start_step: 2,
            matmul: 2048,
            torch: false,
            dev: false,
        };
        let mut full = false;
        let mut latent = None;
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .with_context(|| format!("{name} needs a value"))
            };
            let number = |name: &str, v: String| -> anyhow::Result<usize> {
                v.parse()
                    .ok()
                    .filter(|&n: &usize| n > 0)
                    .with_context(|| format!("{name} {v:?}: expected a positive integer"))
            };
            match arg.as_str() {
                "-h" | "--help" => return Ok(None),
                "--full" => full = true,
                "--torch" => o.torch = true,
                "--dev" => o.dev = true,
                "--latent" => latent = Some(number(arg, value(arg)?)?),
                "--iters" => o.iters = Some(number(arg, value(arg)?)?),
                "--steps" => o.steps = number(arg, value(arg)?)?,
                "--start-step" => o.start_step = value(arg)?.parse().context("--start-step")?,
                "--matmul" => o.matmul = number(arg, value(arg)?)?,
                "--preset" => o.preset = value(arg)?,
                "--device" => o.device = value(arg)?,
                "--dtype" => o.dtype = value(arg)?,
                "--component" => {
                    o.components = value(arg)?
                        .split(',')
                        .map(|c| c.trim().to_string())
                        .filter(|c| !c.is_empty())
                        .collect();
                }
                other => bail!("unknown argument {other:?}\n{HELP}"),
            }
        }
        o.latent = latent.unwrap_or(if full { 64 } else { 32 });
        if let Some(bad) = o
            .components
            .iter()
            .find(|c| !COMPONENTS.contains(&c.as_str()) && !EXTRA_COMPONENTS.contains(&c.as_str()))
        {
            bail!(
                "unknown component {bad:?}; known: {}, {}",
                COMPONENTS.join(", "),
                EXTRA_COMPONENTS.join(", ")
            );
        }
        if !["f32", "f16", "bf16"].contains(&o.dtype.as_str()) {
            bail!("unknown --dtype {:?}; known: f32, f16, bf16", o.dtype);
        }
        if !["sd-2-1-base", "sd-1-5"].contains(&o.preset.as_str()) {
            bail!("unknown preset {:?}; known: sd-2-1-base, sd-1-5", o.preset);
        }
        if o.start_step >= o.steps {
            bail!(
                "--start-step {} must be below --steps {}",
                o.start_step,
                o.steps
            );
        }
        Ok(Some(o))
    }

    /// The number of threads both sides compute with: Burn's rayon pool is one thread per core
    /// unless `RAYON_NUM_THREADS` says otherwise, and PyTorch is pinned to the same number.
    pub fn threads(&self) -> usize {
        std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Timed iterations of `component` (after its warm-up).
    pub fn iterations(&self, component: &str) -> usize {
        self.iters.unwrap_or(match component {
            "unet" | "matmul" => 3,
            "ops" => 5,
            "text-encoder" => 5,
            "edit" => 1,
            _ => 2,
        })
    }
}

/// Runs `cargo xtask bench …`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let Some(options) = Options::parse(args)? else {
        println!("{HELP}");
        return Ok(());
    };
    if cfg!(debug_assertions) && !options.dev {
        return crate::rerun_in_release("bench", args);
    }
    if let Some(load) = measure::loadavg().filter(|&l| l > 0.5) {
        eprintln!(
            "bench: load average is {load:.2} before starting: other work on this machine will slow the numbers down"
        );
    }
    let ours = measure::run(&options)?;
    if options.torch {
        let theirs = compare::run_torch(&options)?;
        eprintln!("{}", compare::table(&ours, &theirs));
    }
    Ok(())
}
