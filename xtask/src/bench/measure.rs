//! The measurements on our side: random-weight presets run through `inversion::Pipeline`.
//!
//! One JSON line per component on stdout:
//! `{"impl": "burn", "component", "preset", "latent": [h, w], "image": [H, W], "batch", "backend",
//! "device", "dtype", "threads", "warmup", "iterations", "median_s", "min_s", "flop",
//! "gflop_per_s", "peak_rss_mib", "cpu" (model, threads, vector features), "simd" (the kernels'
//! instruction set), "bf16_autocast"}`, and for `edit` also `steps`, `start_step`, `unet_evals` (batch-2
//! UNet calls: 2(N−k)) and `tutorial_unet_evals` (the diffusion course notebook's N−2 inverse steps
//! plus N−k sampling steps). `flop` is the analytic count of [`super::flops`]; `peak_rss_mib` is
//! VmHWM after resetting it to the current RSS before the component, so it is that component's
//! peak on top of what the process already holds (all three models included).
//!
//! Model weights are lazily initialised: every model runs once at a small size before anything is
//! timed, so that no measurement includes drawing ~1.3 G random numbers.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::module::Module;
use burn::tensor::{DType, Device, Distribution, Tensor};
use ddim::{DdimSchedule, SchedulerConfig};
use inversion::{EditOptions, NoProgress, P2p, P2pOptions, Parts, Pipeline};
use sd_models::clip::{ClipTextConfig, ClipTextModel, ClipTokenizer};
use sd_models::unet::{UNet2DConditionModel, UNetConfig};
use sd_models::vae::{AutoencoderKL, VaeConfig};
use sd_models::weights::cast;
use serde_json::{Value, json};

use super::{Options, flops};
use crate::project_root;

/// A pipeline of random-weight models for `preset`, with the committed scheduler config and CLIP
/// vocabulary of the fixtures.
fn pipeline(
    preset: &str,
    dtype: DType,
    device: &Device,
) -> anyhow::Result<(Pipeline, ClipTextConfig)> {
    let root = project_root();
    let (unet_config, text_config, tokenizer) = match preset {
        "sd-1-5" => (UNetConfig::sd15(), ClipTextConfig::sd15(), "tiny-sd1"),
        _ => (UNetConfig::sd21_base(), ClipTextConfig::sd21(), "tiny-sd2"),
    };
    let vae_config = VaeConfig::sd(512);
    let dir = root.join("tests/fixtures/configs").join(preset);
    let scheduler = dir.join("scheduler/scheduler_config.json");
    let schedule = DdimSchedule::new(
        SchedulerConfig::from_file(&scheduler).with_context(|| format!("reading {scheduler:?}"))?,
    )?;
    let tokenizer_dir = root
        .join("tests/fixtures/models")
        .join(tokenizer)
        .join("tokenizer");
    let pipeline = Pipeline::from_parts(Parts {
        tokenizer: ClipTokenizer::from_dir(&tokenizer_dir)
            .with_context(|| format!("reading {tokenizer_dir:?}"))?,
        text_encoder: cast(ClipTextModel::new(&text_config, device), dtype),
        unet: cast(
            UNet2DConditionModel::new(&unet_config, Path::new(preset), device)?,
            dtype,
        ),
        unet_config,
        vae: AutoencoderKL::new(&vae_config, device),
        vae_config,
        schedule,
        device: device.clone(),
        dtype,
        dir,
    })?;
    Ok((pipeline, text_config))
}

/// Peak resident memory (VmHWM) in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The 1-minute load average: above 0 (our own threads aside) means other work shared the cores.
pub fn loadavg() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0); without it the peak is the process's.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Times `iters` calls of `f` after `warmup` untimed ones; `f` must return once its work is done
/// (it syncs the device). Returns the times in seconds and the peak memory.
pub fn time(
    warmup: usize,
    iters: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(Vec<f64>, Option<f64>)> {
    reset_peak();
    for _ in 0..warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64());
    }
    Ok((times, peak_rss_mib()))
}

fn median(times: &[f64]) -> f64 {
    let mut t = times.to_vec();
    t.sort_by(f64::total_cmp);
    let n = t.len();
    if n % 2 == 1 {
        t[n / 2]
    } else {
        (t[n / 2 - 1] + t[n / 2]) / 2.0
    }
}

/// One measurement as its JSON record (the format in the module header); `extra` adds fields.
#[allow(clippy::too_many_arguments)]
pub fn record(
    o: &Options,
    component: &str,
    batch: usize,
    flop: u64,
    warmup: usize,
    times: &[f64],
    peak: Option<f64>,
    extra: Value,
) -> Value {
    let (s, f) = (o.latent, 8);
    let median = median(times);
    let mut record = json!({
        "impl": "burn",
        "component": component,
        "preset": o.preset,
        "latent": [s, s],
        "image": [s * f, s * f],
        "batch": batch,
        "backend": format!("burn 0.22.1 {}", o.device.replace("cpu", "flex")),
        "device": o.device,
        "dtype": o.dtype,
        "threads": o.threads(),
        "warmup": warmup,
        "iterations": times.len(),
        "median_s": median,
        "min_s": times.iter().copied().fold(f64::INFINITY, f64::min),
        "flop": flop,
        "gflop_per_s": flop as f64 / median / 1e9,
        "peak_rss_mib": peak,
        "loadavg_1m": loadavg(),
        "cpu": xtask::cpu(),
        "simd": sd_models::cpu::Simd::get().name(),
        "bf16_autocast": sd_models::cpu::bf16_autocast(),
    });
    if let (Some(r), Some(e)) = (record.as_object_mut(), extra.as_object()) {
        r.extend(e.clone());
    }
    record
}

/// The models and inputs every component's measurement shares.
struct Bench<'a> {
    o: &'a Options,
    device: Device,
    p: Pipeline,
    text_config: ClipTextConfig,
    image: Tensor<4>,
    latents: Tensor<4>,
}

/// One component's measurement: warm-up runs, batch, analytic FLOP, extra JSON fields, and the
/// times with the peak memory.
type Measured = (usize, usize, u64, Value, (Vec<f64>, Option<f64>));

impl Bench<'_> {
    fn sync(&self) -> anyhow::Result<()> {
        self.device
            .sync()
            .map_err(|e| anyhow::anyhow!("device error: {e:?}"))
    }

    /// Latent side s and image side s·f.
    fn sides(&self) -> (usize, usize) {
        (self.o.latent, self.o.latent * self.p.vae_factor())
    }

    fn measure(&self, component: &str) -> anyhow::Result<Measured> {
        let iters = self.o.iterations(component);
        let (p, (s, big)) = (&self.p, self.sides());
        let none = json!({});
        Ok(match component {
            "matmul" => return self.matmul(iters),
            "text-encoder" => {
                let run = || {
                    p.text_states("a photo of a cat on the grass")?;
                    self.sync()
                };
                let flop = flops::text_encoder(&self.text_config, 1, 77);
                (2, 1, flop, json!({"tokens": 77}), time(2, iters, run)?)
            }
            "vae-encode" => {
                let run = || {
                    p.encode(self.image.clone(), &NoProgress)?;
                    self.sync()
                };
                let flop = flops::vae_encode(p.vae_config(), big, big);
                (1, 1, flop, none, time(1, iters, run)?)
            }
            "vae-decode" => {
                let run = || {
                    p.decode(self.latents.clone(), &NoProgress)?;
                    self.sync()
                };
                let flop = flops::vae_decode(p.vae_config(), s, s);
                (1, 1, flop, none, time(1, iters, run)?)
            }
            "unet" => return self.unet(iters),
            "unet-p2p" => return self.unet_p2p(iters),
            "null-text-pass" => return self.null_text_pass(iters),
            "edit" => return self.edit(iters),
            other => bail!("unknown component {other:?}"),
        })
    }

    fn matmul(&self, iters: usize) -> anyhow::Result<Measured> {
        let n = self.o.matmul;
        let a = Tensor::<2>::random([n, n], Distribution::Normal(0.0, 1.0), &self.device);
        let b = Tensor::<2>::random([n, n], Distribution::Normal(0.0, 1.0), &self.device);
        let run = || {
            let _ = a.clone().matmul(b.clone());
            self.sync()
        };
        let extra = json!({"size": [n, n, n]});
        Ok((1, 1, flops::matmul(n), extra, time(1, iters, run)?))
    }

    fn unet(&self, iters: usize) -> anyhow::Result<Measured> {
        let (p, (s, _)) = (&self.p, self.sides());
        let x = Tensor::<4>::random([2, 4, s, s], Distribution::Normal(0.0, 1.0), &self.device)
            .cast(p.dtype());
        let dim = p.unet_config().cross_attention_dims()[0];
        let context =
            Tensor::<3>::random([2, 77, dim], Distribution::Normal(0.0, 1.0), &self.device)
                .cast(p.dtype());
        let run = || {
            p.unet().forward(x.clone(), &[500.0], context.clone())?;
            self.sync()
        };
        let flop = flops::unet(p.unet_config(), 2, s, s, 77);
        Ok((1, 2, flop, json!({}), time(1, iters, run)?))
    }

    /// A Prompt-to-Prompt sampling step: batch 4 ([u, u, c_src, c_edit]) with the control at its
    /// first step (cross- and self-attention replaced), against the same batch without control,
    /// timed alternately in the same run; the record's `plain_median_s` is the latter.
    fn unet_p2p(&self, iters: usize) -> anyhow::Result<Measured> {
        let (p, (s, _)) = (&self.p, self.sides());
        let x = Tensor::<4>::random([4, 4, s, s], Distribution::Normal(0.0, 1.0), &self.device)
            .cast(p.dtype());
        let dim = p.unet_config().cross_attention_dims()[0];
        let context =
            Tensor::<3>::random([4, 77, dim], Distribution::Normal(0.0, 1.0), &self.device)
                .cast(p.dtype());
        let (source, target) = ("a puppy on the grass", "a cat on the grass");
        let options = P2pOptions {
            blend_words: vec!["cat".into()],
            ..P2pOptions::default()
        };
        let mut control = P2p::new(p, source, target, &options, 50)?;
        let controlled = || {
            p.unet()
                .forward_with(x.clone(), &[500.0], context.clone(), Some(&mut control))?;
            self.sync()
        };
        let plain = || {
            p.unet().forward(x.clone(), &[500.0], context.clone())?;
            self.sync()
        };
        let (plain_times, _) = time(1, iters, plain)?;
        let measured = time(1, iters, controlled)?;
        let flop = flops::unet(p.unet_config(), 4, s, s, 77);
        let extra = json!({"plain_median_s": median(&plain_times)});
        Ok((1, 4, flop, extra, measured))
    }

    /// One null-text Adam iteration's model work: a batch-1 UNet forward on the autodiff device and
    /// the backward pass to the text states (the CPU kernels defer to Burn's ops there), against a
    /// plain batch-1 forward in the same run (`plain_median_s`). FLOP: 3× the forward's (the
    /// backward computes gradients of activations and of the inputs of every product).
    fn null_text_pass(&self, iters: usize) -> anyhow::Result<Measured> {
        let (p, (s, _)) = (&self.p, self.sides());
        let x = Tensor::<4>::random([1, 4, s, s], Distribution::Normal(0.0, 1.0), &self.device)
            .cast(p.dtype());
        let dim = p.unet_config().cross_attention_dims()[0];
        let context =
            Tensor::<3>::random([1, 77, dim], Distribution::Normal(0.0, 1.0), &self.device)
                .cast(p.dtype());
        let unet = p
            .unet()
            .clone()
            .to_device(&self.device.clone().autodiff())
            .no_grad();
        let pass = || {
            let leaf = context.clone().autodiff().require_grad();
            let out = unet.forward(x.clone().autodiff(), &[500.0], leaf.clone())?;
            let grads = (out.clone() * out).mean().backward();
            anyhow::ensure!(
                leaf.grad(&grads).is_some(),
                "no gradient for the text states"
            );
            self.sync()
        };
        let plain = || {
            p.unet().forward(x.clone(), &[500.0], context.clone())?;
            self.sync()
        };
        let (plain_times, _) = time(1, iters, plain)?;
        let measured = time(1, iters, pass)?;
        let flop = 3 * flops::unet(p.unet_config(), 1, s, s, 77);
        let extra = json!({"plain_median_s": median(&plain_times)});
        Ok((1, 1, flop, extra, measured))
    }

    fn edit(&self, iters: usize) -> anyhow::Result<Measured> {
        let (p, (s, big)) = (&self.p, self.sides());
        let (n, k) = (self.o.steps, self.o.start_step);
        let options = EditOptions {
            steps: n,
            start_step: k,
            guidance: 3.5,
            inversion_guidance: 3.5,
            negative_prompt: String::new(),
            ..EditOptions::plain(n)
        };
        let run = || {
            let (source, target) = ("a puppy on the grass", "a cat on the grass");
            inversion::edit(p, self.image.clone(), source, target, &options, &NoProgress)?;
            self.sync()
        };
        let evals = 2 * (n - k);
        let extra = json!({"steps": n, "start_step": k, "guidance": 3.5, "unet_evals": evals,
                           "tutorial_unet_evals": 2 * n - 2 - k});
        let flop = flops::vae_encode(p.vae_config(), big, big)
            + flops::vae_decode(p.vae_config(), s, s)
            + 4 * flops::text_encoder(&self.text_config, 1, 77)
            + evals as u64 * flops::unet(p.unet_config(), 2, s, s, 77);
        Ok((0, 1, flop, extra, time(0, iters, run)?))
    }
}

/// Runs every requested component, printing and returning one record per component.
pub fn run(o: &Options) -> anyhow::Result<Vec<Value>> {
    let device = sd_models::device::select(&o.device)?;
    let (p, text_config) = pipeline(&o.preset, o.dtype(), &device)?;
    let (s, f) = (o.latent, p.vae_factor());
    // Materialise the lazy weights at a small size (see the module header).
    let small = Tensor::<4>::random(
        [1, 3, 8 * f, 8 * f],
        Distribution::Uniform(-1.0, 1.0),
        &device,
    );
    let warm_cond = p.conditioning("", "", 3.5)?;
    let _ = p.guided_output(&p.encode(small, &NoProgress)?, 1, &warm_cond)?;
    let _ = p.decode(Tensor::<4>::zeros([1, 4, 8, 8], &device), &NoProgress)?;
    let bench = Bench {
        image: Tensor::<4>::random(
            [1, 3, s * f, s * f],
            Distribution::Uniform(-1.0, 1.0),
            &device,
        ),
        latents: Tensor::<4>::random([1, 4, s, s], Distribution::Normal(0.0, 1.0), &device),
        o,
        device,
        p,
        text_config,
    };
    bench.sync()?;
    // A marker for profilers to attach after (see BENCHMARKS.md).
    eprintln!("bench: models ready (pid {})", std::process::id());
    let mut records = Vec::new();
    for component in &o.components {
        if component == "ops" {
            records.extend(super::ops::run(o, &bench.device)?);
            continue;
        }
        let (warmup, batch, flop, extra, (times, peak)) = bench.measure(component)?;
        let record = record(o, component, batch, flop, warmup, &times, peak, extra);
        println!("{record}");
        records.push(record);
    }
    Ok(records)
}
