//! The subcommands: parse inputs, run the pipeline, write outputs (all or none).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use image::RgbImage;
use inversion::io::{decode_image, image_to_tensor, png_bytes, tensor_to_image};
use inversion::{EditOptions, LoadOptions, Pipeline, Progress, Trajectory, latents_bytes};
use model_source::write_atomic;

use crate::Common;
use crate::progress::Bars;

/// `--size 512x768` → (512, 768).
pub fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("expected WIDTHxHEIGHT (e.g. 512x512), got {s:?}"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| format!("{v:?} in --size {s:?} is not a whole number"))
    };
    Ok((parse(w)?, parse(h)?))
}

/// Reads `--image`: a file path or an http(s) URL (30 s time-out).
fn read_image(source: &str) -> Result<RgbImage> {
    let bytes = if source.starts_with("http://") || source.starts_with("https://") {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        let mut resp = agent
            .get(source)
            .call()
            .with_context(|| format!("downloading --image {source}"))?;
        resp.body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .with_context(|| format!("downloading --image {source}"))?
    } else {
        std::fs::read(source).with_context(|| format!("reading --image {source:?}"))?
    };
    Ok(decode_image(&bytes, source)?)
}

fn load(common: &Common) -> Result<Pipeline> {
    if common.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let dir = model_source::resolve(&common.model)?;
    let device = sd_models::device::select(&common.device)?;
    let start = Instant::now();
    let mut options = LoadOptions::new(device);
    options.dtype = sd_models::device::parse_dtype(&common.dtype)?;
    options.variant = common.variant.clone();
    let pipeline = Pipeline::load(&dir, &options)
        .with_context(|| format!("loading model {:?}", common.model))?;
    log::info!("loaded {dir:?} in {:.2} s", start.elapsed().as_secs_f64());
    Ok(pipeline)
}

fn size(common: &Common, pipeline: &Pipeline) -> Result<(usize, usize)> {
    let size = common.size.unwrap_or_else(|| pipeline.native_size());
    pipeline.check_size(size.0, size.1).context("--size")?;
    Ok(size)
}

fn metadata(common: &Common, prompt: &str, guidance: f64) -> HashMap<String, String> {
    HashMap::from([
        ("model".to_string(), common.model.clone()),
        ("prompt".to_string(), prompt.to_string()),
        ("steps".to_string(), common.steps.to_string()),
        ("guidance".to_string(), guidance.to_string()),
    ])
}

/// Writes every output or none: each goes to a temporary file that is renamed into place; if any
/// write fails, the ones already written are removed.
fn write_all(outputs: Vec<(&Path, Vec<u8>)>) -> Result<()> {
    let mut done: Vec<&Path> = Vec::new();
    for (path, bytes) in outputs {
        if let Err(e) = write_atomic(path, &bytes) {
            for p in done {
                let _ = std::fs::remove_file(p);
            }
            return Err(e.into());
        }
        done.push(path);
    }
    Ok(())
}

fn report(common: &Common, bars: &Bars, started: Instant, outputs: &[&Path]) {
    for p in outputs {
        println!("{}", p.display());
    }
    if !common.quiet {
        eprintln!(
            "done in {:.2} s ({})",
            started.elapsed().as_secs_f64(),
            bars.summary()
        );
    }
}

pub fn invert(common: &Common, image: &str, prompt: &str, out: &Path) -> Result<()> {
    let started = Instant::now();
    let bars = Bars::new(common.quiet);
    let img = read_image(image)?;
    let pipeline = load(common)?;
    let size = size(common, &pipeline)?;
    let x = image_to_tensor(&img, size, &pipeline.device);
    bars.start(inversion::Phase::Encode, 1);
    let x0 = pipeline.encode(x)?;
    bars.finish(inversion::Phase::Encode);
    let guidance = common
        .guidance
        .unwrap_or(inversion::DEFAULT_INVERSION_GUIDANCE);
    let cond = pipeline.conditioning(prompt, "", guidance)?;
    let mut trajectory = pipeline.invert(x0, &cond, common.steps, common.steps, &bars)?;
    trajectory.metadata = metadata(common, prompt, guidance);
    write_all(vec![(out, trajectory.to_bytes()?)])?;
    report(common, &bars, started, &[out]);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn sample(
    common: &Common,
    prompt: &str,
    negative: &str,
    latents: Option<&Path>,
    start_step: Option<usize>,
    seed: u64,
    out: &Path,
    save_latents: Option<&Path>,
) -> Result<()> {
    let started = Instant::now();
    let bars = Bars::new(common.quiet);
    let pipeline = load(common)?;
    let (start, k) = match latents {
        Some(path) => {
            let trajectory = Trajectory::load(path, &pipeline.device)?;
            let k = start_step.unwrap_or(0);
            if common.size.is_some() {
                log::warn!("--size is ignored with --latents: the size comes from the trajectory");
            }
            (pipeline.start_latents(&trajectory, common.steps, k)?, k)
        }
        None => (pipeline.noise_latents(seed, size(common, &pipeline)?), 0),
    };
    let guidance = common.guidance.unwrap_or(inversion::DEFAULT_GUIDANCE);
    let cond = pipeline.conditioning(prompt, negative, guidance)?;
    let result = pipeline.sample(start, &cond, common.steps, k, &bars)?;
    let image = tensor_to_image(pipeline.decode_with_progress(result.clone(), &bars)?)?;
    let mut outputs = vec![(out, png_bytes(&image)?)];
    if let Some(p) = save_latents {
        outputs.push((
            p,
            latents_bytes(&result, &metadata(common, prompt, guidance))?,
        ));
    }
    let paths: Vec<&Path> = outputs.iter().map(|(p, _)| *p).collect();
    write_all(outputs)?;
    report(common, &bars, started, &paths);
    Ok(())
}

pub struct EditArgs<'a> {
    pub image: &'a str,
    pub prompt: &'a str,
    pub edit_prompt: &'a str,
    pub negative_prompt: &'a str,
    pub start_step: Option<usize>,
    pub inversion_guidance: f64,
    pub out: &'a Path,
    pub save_latents: Option<&'a Path>,
    pub save_trajectory: Option<&'a Path>,
}

pub fn edit(common: &Common, a: EditArgs<'_>) -> Result<()> {
    let started = Instant::now();
    let start_step = a
        .start_step
        .unwrap_or_else(|| inversion::default_start_step(common.steps));
    inversion::check_start(common.steps, start_step)?;
    let bars = Bars::new(common.quiet);
    let img = read_image(a.image)?;
    let pipeline = load(common)?;
    let size = size(common, &pipeline)?;
    let options = EditOptions {
        steps: common.steps,
        start_step,
        guidance: common.guidance.unwrap_or(inversion::DEFAULT_GUIDANCE),
        inversion_guidance: a.inversion_guidance,
        negative_prompt: a.negative_prompt.to_string(),
    };
    let x = image_to_tensor(&img, size, &pipeline.device);
    let result = pipeline.edit(x, a.prompt, a.edit_prompt, &options, &bars)?;
    let image = tensor_to_image(result.image)?;
    let mut outputs = vec![(a.out, png_bytes(&image)?)];
    if let Some(p) = a.save_latents {
        outputs.push((
            p,
            latents_bytes(
                &result.latents,
                &metadata(common, a.edit_prompt, options.guidance),
            )?,
        ));
    }
    if let Some(p) = a.save_trajectory {
        let mut t = result.trajectory;
        t.metadata = metadata(common, a.prompt, options.inversion_guidance);
        outputs.push((p, t.to_bytes()?));
    }
    let paths: Vec<&Path> = outputs.iter().map(|(p, _)| *p).collect();
    write_all(outputs)?;
    report(common, &bars, started, &paths);
    Ok(())
}
