//! `cargo xtask bench`: speed of the Stable Diffusion components and of a whole edit, optionally
//! side by side with diffusers/PyTorch on the same machine (`--torch`).
//!
//! Every measurement is one JSON line on stdout (format in [`measure`]); `--torch` then runs
//! `tests/reference/bench_torch.py` with the same shapes and thread count and prints a comparison
//! table (ours/PyTorch, GFLOP/s, % of the measured matmul ceiling) on stderr, so that stdout stays
//! machine-readable. Models are the full-size presets with random weights: no files are needed
//! besides the committed scheduler config and CLIP vocabulary under `tests/fixtures`.
//!
//! Numbers need release code, and `cargo xtask` builds the dev profile (optimised, but with debug
//! assertions and overflow checks everywhere), so a dev build re-runs itself as
//! `cargo run --release -p xtask -- bench …` unless `--dev` is given.

mod compare;
mod flops;
mod measure;
mod ops;

use anyhow::bail;

/// The components measured by default, in the order they run.
pub const COMPONENTS: [&str; 6] = [
    "matmul",
    "text-encoder",
    "vae-encode",
    "vae-decode",
    "unet",
    "edit",
];

/// Measured only when asked for: the UNet's ops one by one (see `ops.rs`), and a UNet step of a
/// Prompt-to-Prompt edit (both branches, attention control on every layer it touches) beside the
/// same batch without control.
pub const EXTRA_COMPONENTS: [&str; 3] = ["ops", "unet-p2p", "null-text-pass"];

/// `cargo xtask bench` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// 64×64 latents (512 px images) instead of 32×32 (256 px).
    #[arg(long)]
    full: bool,
    /// N×N latents (overrides --full).
    #[arg(long, value_name = "N", value_parser = positive)]
    latent: Option<usize>,
    /// Timed iterations of every component (default: unet 3, text-encoder 5, vae 2, edit 1; one
    /// warm-up each, none for edit).
    #[arg(long, value_name = "N", value_parser = positive)]
    iters: Option<usize>,
    /// Comma-separated: matmul,text-encoder,vae-encode,vae-decode,unet,edit (default: all of
    /// these), and ops (the UNet's ops one by one).
    #[arg(long = "component", value_name = "LIST", value_delimiter = ',', value_parser = component)]
    components: Vec<String>,
    /// The full-size architecture, with random weights.
    #[arg(long, value_name = "NAME", default_value = "sd-2-1-base", value_parser = ["sd-2-1-base", "sd-1-5"])]
    preset: String,
    #[arg(long, value_name = "NAME", default_value = "cpu", help = sd_models::device::HELP)]
    device: String,
    /// The text encoder's and UNet's compute dtype (the VAE stays f32, as in `ddim-edit
    /// --dtype`).
    #[arg(long, value_name = "NAME", default_value = "f32", value_parser = sd_models::device::DTYPES)]
    dtype: String,
    /// edit: DDIM steps.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = positive)]
    steps: usize,
    /// edit: start step (below --steps).
    #[arg(long, value_name = "K", default_value_t = 2)]
    start_step: usize,
    /// Size of the f32 matmul that measures the ceiling.
    #[arg(long, value_name = "N", default_value_t = 2048, value_parser = positive)]
    matmul: usize,
    /// Also run tests/reference/bench_torch.py (interpreter: $PYTHON, default .venv/bin/python)
    /// and print the ours/PyTorch table on stderr.
    #[arg(long)]
    torch: bool,
    /// --torch: where PyTorch runs (cuda: the first CUDA GPU, synchronised after every timed
    /// call; autocast on that device).
    #[arg(long, value_name = "NAME", default_value = "cpu", value_parser = ["cpu", "cuda"])]
    torch_device: String,
    /// Measure in the current (dev) build instead of re-running in release.
    #[arg(long)]
    dev: bool,
}

/// A positive integer.
fn positive(v: &str) -> Result<usize, String> {
    v.parse()
        .ok()
        .filter(|&n: &usize| n > 0)
        .ok_or_else(|| format!("{v:?}: expected a positive integer"))
}

/// A name of [`COMPONENTS`] or [`EXTRA_COMPONENTS`].
fn component(v: &str) -> Result<String, String> {
    let v = v.trim();
    if COMPONENTS.contains(&v) || EXTRA_COMPONENTS.contains(&v) {
        return Ok(v.to_string());
    }
    Err(format!(
        "unknown component {v:?}; known: {}, {}",
        COMPONENTS.join(", "),
        EXTRA_COMPONENTS.join(", ")
    ))
}

/// What to measure, as the measurements read it.
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
    pub torch_device: String,
    pub dev: bool,
}

impl TryFrom<Args> for Options {
    type Error = anyhow::Error;

    fn try_from(a: Args) -> anyhow::Result<Self> {
        if a.start_step >= a.steps {
            bail!(
                "--start-step {} must be below --steps {}",
                a.start_step,
                a.steps
            );
        }
        let components = if a.components.is_empty() {
            COMPONENTS.iter().map(|c| c.to_string()).collect()
        } else {
            a.components
        };
        Ok(Options {
            latent: a.latent.unwrap_or(if a.full { 64 } else { 32 }),
            iters: a.iters,
            components,
            preset: a.preset,
            device: a.device,
            dtype: a.dtype,
            steps: a.steps,
            start_step: a.start_step,
            matmul: a.matmul,
            torch: a.torch,
            torch_device: a.torch_device,
            dev: a.dev,
        })
    }
}

impl Options {
    /// The compute dtype of `--dtype` (checked when parsed: f32 otherwise).
    pub fn dtype(&self) -> burn::tensor::DType {
        sd_models::device::parse_dtype(&self.dtype).unwrap_or(burn::tensor::DType::F32)
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
            "unet" | "unet-p2p" | "matmul" => 3,
            "null-text-pass" => 2,
            "ops" => 5,
            "text-encoder" => 5,
            "edit" => 1,
            _ => 2,
        })
    }
}

/// Runs `cargo xtask bench …`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let options = Options::try_from(args)?;
    if cfg!(debug_assertions) && !options.dev {
        return crate::rerun_in_release("bench");
    }
    // As `ddim-edit` does, so that the numbers are those of the binary people run.
    sd_models::cpu::reuse_freed_memory();
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> anyhow::Result<Options> {
        let cli = crate::Cli::try_parse_from(["xtask", "bench"].iter().chain(args))?;
        match cli.task {
            crate::Task::Bench(a) => Options::try_from(a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_and_argument_errors() {
        let o = parse(&[]).unwrap();
        assert_eq!(
            (o.latent, o.steps, o.start_step, o.matmul),
            (32, 10, 2, 2048)
        );
        assert_eq!(o.components, COMPONENTS);
        assert_eq!(o.dtype(), burn::tensor::DType::F32);
        let o = parse(&["--full", "--component", "unet,ops", "--dtype", "bf16"]).unwrap();
        assert_eq!(
            (o.latent, o.components.as_slice()),
            (64, &["unet".to_string(), "ops".into()][..])
        );
        assert_eq!(o.dtype(), burn::tensor::DType::BF16);
        assert_eq!(parse(&["--full", "--latent", "16"]).unwrap().latent, 16);
        let e = parse(&["--component", "clip"]).unwrap_err().to_string();
        assert!(e.contains("unknown component \"clip\""), "{e}");
        let e = parse(&["--dtype", "f8"]).unwrap_err().to_string();
        assert!(e.contains("f8") && e.contains("bf16"), "{e}");
        let e = parse(&["--iters", "0"]).unwrap_err().to_string();
        assert!(e.contains("positive integer"), "{e}");
        let e = parse(&["--steps", "2"]).unwrap_err().to_string();
        assert!(e.contains("--start-step 2 must be below --steps 2"), "{e}");
    }
}
