//! The subcommands: check the outputs can be written, read inputs, run the pipeline, write the
//! outputs (all or none).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use burn::tensor::Tensor;
use image::RgbImage;
use inversion::image::{decode_image, image_to_tensor, tensor_to_image};
use inversion::{
    EditOptions, Inversion, InversionError, LoadOptions, P2pOptions, Pipeline, PreviewDecoder,
    Trajectory, latents_bytes,
};

use crate::args::{Common, EditArgs, EditSettings, InvertArgs, SampleArgs};
use crate::method::Attention;
use crate::output::{Output, check_targets, png_bytes, write_all};
use crate::progress::Bars;

/// The library's argument errors, worded with the flags that set them.
pub(crate) fn flagged(e: InversionError) -> anyhow::Error {
    match e {
        InversionError::NoSteps => anyhow!("--steps must be at least 1"),
        InversionError::StartStep { start, steps } => anyhow!(
            "--start-step {start} must be smaller than --steps {steps} (steps 0..{} exist)",
            steps.saturating_sub(1)
        ),
        InversionError::TrajectorySteps { found, steps } => {
            anyhow!("--latents: the trajectory was made with {found} steps but --steps is {steps}")
        }
        InversionError::TrajectoryMismatch { message } => {
            anyhow!("--latents: the trajectory {message}")
        }
        e @ InversionError::Size { .. } => anyhow::Error::new(e).context("--size"),
        InversionError::Schedule(e) if e.bad_steps().is_some() => {
            let steps = e.bad_steps().unwrap_or_default();
            anyhow::Error::new(e).context(format!("--steps {steps}"))
        }
        other => other.into(),
    }
}

/// The largest image file or download read (a 512 px PNG is under 1 MiB).
const MAX_IMAGE_BYTES: u64 = 64 << 20;

/// Reads a regular file of at most `max` bytes: a device or FIFO (`/dev/zero`) is refused
/// rather than read until memory runs out.
fn read_regular_file(path: &Path, max: u64) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        bail!("not a regular file");
    }
    if meta.len() > max {
        bail!("{} bytes, more than the {max} accepted", meta.len());
    }
    Ok(std::fs::read(path)?)
}

/// Downloads an http(s) URL of at most [`MAX_IMAGE_BYTES`] (30 s time-out).
pub(crate) fn download(url: &str, name: &str) -> Result<Vec<u8>> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent();
    let mut resp = agent
        .get(url)
        .call()
        .with_context(|| format!("downloading {name} {url}"))?;
    resp.body_mut()
        .with_config()
        .limit(MAX_IMAGE_BYTES)
        .read_to_vec()
        .with_context(|| format!("downloading {name} {url}"))
}

/// Reads `--image` (or what `name` names): a file path or an http(s) URL.
pub(crate) fn read_image(source: &str, name: &str) -> Result<RgbImage> {
    let bytes = if source.starts_with("http://") || source.starts_with("https://") {
        download(source, name)?
    } else {
        read_regular_file(Path::new(source), MAX_IMAGE_BYTES)
            .with_context(|| format!("reading {name} {source:?}"))?
    };
    Ok(decode_image(&bytes, source)?)
}

pub(crate) fn load(common: &Common) -> Result<Pipeline> {
    if common.steps == 0 {
        return Err(flagged(InversionError::NoSteps));
    }
    let fetch_bars = model_source::Bars::new(common.quiet);
    let single = crate::single_file::is_checkpoint(Path::new(&common.model));
    let dir = match single {
        true => PathBuf::from(&common.model),
        false => {
            crate::single_file::no_single_file_flags(common)?;
            model_source::resolve_or_fetch(&common.model, common.variant.as_deref(), &fetch_bars)?
        }
    };
    let device = sd_models::device::select(&common.device)?;
    sd_models::cpu::Simd::from_env().map_err(anyhow::Error::msg)?;
    let start = Instant::now();
    let mut options = LoadOptions::new(device);
    options.dtype = sd_models::device::parse_dtype(&common.dtype)?;
    if options.dtype == burn::tensor::DType::BF16
        && options.device == burn::tensor::Device::flex()
        && !sd_models::cpu::bf16_autocast()
    {
        log::warn!(
            "--dtype bf16 on this CPU (no AVX512-BF16{}) casts the whole model to bf16, which \
             runs slower than f32; it only saves memory",
            match sd_models::cpu::Simd::from_env() {
                Ok(Some(cap)) => format!(", or {}={}", sd_models::cpu::SIMD_ENV, cap.name()),
                _ => String::new(),
            }
        );
    }
    options.variant = common.variant.clone();
    let pipeline = match single {
        true => crate::single_file::load(common, &options, &fetch_bars),
        false => Pipeline::load(&dir, &options).map_err(anyhow::Error::from),
    }
    .with_context(|| format!("loading model {:?}", common.model))?;
    // Before any compute: the schedule decides which step counts exist.
    pipeline
        .schedule()
        .timesteps(common.steps)
        .map_err(|e| flagged(e.into()))?;
    log::info!("loaded {dir:?} in {:.2} s", start.elapsed().as_secs_f64());
    Ok(pipeline)
}

/// `--size`, or the model's native size.
pub(crate) fn size(common: &Common, pipeline: &Pipeline) -> Result<(usize, usize)> {
    let size = common.size.unwrap_or_else(|| pipeline.native_size());
    pipeline.check_size(size.0, size.1).map_err(flagged)?;
    if !common.no_size_limit {
        pipeline.check_size_limit(size.0, size.1).map_err(|e| {
            anyhow::Error::new(e).context("--size (pass --no-size-limit to run it anyway)")
        })?;
    }
    Ok(size)
}

/// The metadata of the safetensors files a command writes.
pub(crate) fn metadata(common: &Common, prompt: &str, guidance: f64) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("model".to_string(), common.model.clone()),
        ("prompt".to_string(), prompt.to_string()),
        ("steps".to_string(), common.steps.to_string()),
        ("guidance".to_string(), guidance.to_string()),
    ])
}

/// Writes the outputs, prints their paths on stdout and the phase times on stderr.
fn finish(common: &Common, bars: &Bars, started: Instant, outputs: Vec<Output<'_>>) -> Result<()> {
    let paths: Vec<&Path> = outputs.iter().map(|o| o.path).collect();
    write_all(outputs)?;
    for p in paths {
        println!("{}", p.display());
    }
    if !common.quiet {
        eprintln!(
            "done in {:.2} s ({})",
            started.elapsed().as_secs_f64(),
            bars.summary()
        );
    }
    Ok(())
}

/// Flag and path of each optional output that was asked for, after the required ones.
fn targets<'a>(
    required: &[(&'static str, &'a Path)],
    optional: &[(&'static str, Option<&'a Path>)],
) -> Vec<(&'static str, &'a Path)> {
    let mut all = required.to_vec();
    all.extend(optional.iter().filter_map(|(f, p)| p.map(|p| (*f, p))));
    all
}

pub fn invert(a: &InvertArgs) -> Result<()> {
    let (common, started) = (&a.common, Instant::now());
    check_targets(&[("--out", &a.out)])?;
    let bars = Bars::new(common.quiet);
    let img = read_image(&a.image, "--image")?;
    let pipeline = load(common)?;
    let size = size(common, &pipeline)?;
    let x0 = pipeline.encode(image_to_tensor(&img, size, pipeline.device()), &bars)?;
    let guidance = common
        .guidance
        .unwrap_or(inversion::DEFAULT_INVERSION_GUIDANCE);
    let cond = pipeline.conditioning(&a.prompt, "", guidance)?;
    let mut trajectory = inversion::invert(&pipeline, x0, &cond, common.steps, common.steps, &bars)
        .map_err(flagged)?;
    trajectory.metadata = metadata(common, &a.prompt, guidance);
    let out = Output {
        flag: "--out",
        path: &a.out,
        bytes: trajectory.to_bytes()?,
    };
    finish(common, &bars, started, vec![out])
}

pub fn sample(a: &SampleArgs) -> Result<()> {
    let (common, started) = (&a.common, Instant::now());
    check_targets(&targets(
        &[("--out", &a.out)],
        &[("--save-latents", a.save_latents.as_deref())],
    ))?;
    let method = match a.method.method(Attention::None)? {
        (Inversion::Ddim, None) => None,
        m if a.latents.is_none() => bail!(
            "--inversion {} / --attention {} edit a trajectory: give --latents (from `invert` or `edit --save-trajectory`)",
            m.0,
            if m.1.is_some() { "p2p" } else { "none" }
        ),
        m => Some(m),
    };
    let bars = Bars::new(common.quiet);
    let pipeline = load(common)?;
    let mut trajectory = None;
    let (start, k) = match &a.latents {
        Some(path) => {
            let t = trajectory.insert(Trajectory::load(path, pipeline.device())?);
            let trajectory = &*t;
            if let Some(made_by) = trajectory.metadata.get("model")
                && made_by != &common.model
            {
                log::warn!(
                    "--latents {path:?} was made with --model {made_by:?}, not {:?}: its latents fit this model's shape, but the edit is only meaningful with the model that inverted it",
                    common.model
                );
            }
            let k = a.start_step.unwrap_or(0);
            if common.size.is_some() {
                log::warn!("--size is ignored with --latents: the size comes from the trajectory");
            }
            let start = inversion::start_latents(&pipeline, trajectory, common.steps, k);
            (start.map_err(flagged)?, k)
        }
        None => (pipeline.noise_latents(a.seed, size(common, &pipeline)?), 0),
    };
    let guidance = common.guidance.unwrap_or(inversion::DEFAULT_GUIDANCE);
    let result = match (&trajectory, method) {
        (Some(t), Some(m)) => sample_method(a, &pipeline, t, k, m, guidance, &bars)?,
        _ => {
            let cond = pipeline.conditioning(&a.prompt, &a.negative_prompt, guidance)?;
            inversion::sample(&pipeline, start, &cond, common.steps, k, &bars).map_err(flagged)?
        }
    };
    let preview = preview_decoder(a.preview_decoder.as_deref(), &pipeline)?;
    let image = tensor_to_image(decode(&pipeline, preview.as_ref(), result.clone(), &bars)?)?;
    let mut outputs = vec![Output {
        flag: "--out",
        path: &a.out,
        bytes: png_bytes(&image)?,
    }];
    if let Some(path) = &a.save_latents {
        let bytes = latents_bytes(&result, &metadata(common, &a.prompt, guidance))?;
        outputs.push(Output {
            flag: "--save-latents",
            path,
            bytes,
        });
    }
    finish(common, &bars, started, outputs)
}

/// `sample --latents` with an editing method: the sampling half of `edit`, from a trajectory.
fn sample_method(
    a: &SampleArgs,
    p: &Pipeline,
    t: &Trajectory,
    k: usize,
    (inversion, attention): (Inversion, Option<P2pOptions>),
    guidance: f64,
    bars: &Bars,
) -> Result<Tensor<4>> {
    let source = match (&a.source_prompt, t.metadata.get("prompt")) {
        (Some(s), _) | (None, Some(s)) => s.clone(),
        (None, None) => {
            bail!(
                "--latents holds no `prompt`: give --source-prompt, the prompt it was inverted with"
            )
        }
    };
    if matches!(inversion, Inversion::NegativePrompt | Inversion::NullText)
        && let Some(g) = t.metadata.get("guidance")
        && g != "1"
    {
        bail!(
            "--inversion {inversion} reverses an unguided inversion, but --latents was inverted at guidance {g}: invert with --guidance 1"
        );
    }
    let options = EditOptions {
        steps: a.common.steps,
        start_step: k,
        guidance,
        inversion_guidance: 1.0,
        negative_prompt: a.negative_prompt.clone(),
        inversion,
        attention,
    };
    inversion::edit_from(p, t, &source, &a.prompt, &options, bars).map_err(flagged)
}

/// The `--preview-decoder` folder, loaded and checked against the model, before any compute.
pub(crate) fn preview_decoder(dir: Option<&Path>, p: &Pipeline) -> Result<Option<PreviewDecoder>> {
    dir.map(|d| PreviewDecoder::load(d, p).with_context(|| format!("--preview-decoder {d:?}")))
        .transpose()
}

/// Decodes latents with the preview decoder when there is one, else the VAE.
pub(crate) fn decode(
    p: &Pipeline,
    preview: Option<&PreviewDecoder>,
    latents: Tensor<4>,
    progress: &dyn inversion::Progress,
) -> Result<Tensor<4>> {
    Ok(match preview {
        Some(d) => d.decode(latents, progress)?,
        None => p.decode(latents, progress)?,
    })
}

/// The options of an edit from its flags, checked as far as they can be without the model.
pub(crate) fn edit_options(common: &Common, s: &EditSettings) -> Result<EditOptions> {
    let (inversion, attention) = s.method.method(Attention::P2p)?;
    let start_step = s
        .start_step
        .unwrap_or_else(|| inversion::default_start_step(common.steps, attention.is_some()));
    inversion::check_start(common.steps, start_step).map_err(flagged)?;
    Ok(EditOptions {
        steps: common.steps,
        start_step,
        guidance: common.guidance.unwrap_or(inversion::DEFAULT_GUIDANCE),
        inversion_guidance: s.inversion_guidance,
        negative_prompt: s.negative_prompt.clone(),
        inversion,
        attention,
    })
}

pub fn edit(a: &EditArgs) -> Result<()> {
    let (common, started) = (&a.common, Instant::now());
    let options = edit_options(common, &a.settings)?;
    check_targets(&targets(
        &[("--out", &a.out)],
        &[
            ("--save-latents", a.save_latents.as_deref()),
            ("--save-trajectory", a.save_trajectory.as_deref()),
        ],
    ))?;
    let bars = Bars::new(common.quiet);
    let img = read_image(&a.image, "--image")?;
    let pipeline = load(common)?;
    let size = size(common, &pipeline)?;
    inversion::check_method(&pipeline, &a.prompt, &a.edit_prompt, &options).map_err(flagged)?;
    let preview = preview_decoder(a.settings.preview_decoder.as_deref(), &pipeline)?;
    let x = image_to_tensor(&img, size, pipeline.device());
    let (trajectory, latents) =
        inversion::edit_latents(&pipeline, x, &a.prompt, &a.edit_prompt, &options, &bars)
            .map_err(flagged)?;
    let image = decode(&pipeline, preview.as_ref(), latents.clone(), &bars)?;
    let mut outputs = vec![Output {
        flag: "--out",
        path: &a.out,
        bytes: png_bytes(&tensor_to_image(image)?)?,
    }];
    if let Some(path) = &a.save_latents {
        let meta = metadata(common, &a.edit_prompt, options.guidance);
        outputs.push(Output {
            flag: "--save-latents",
            path,
            bytes: latents_bytes(&latents, &meta)?,
        });
    }
    if let Some(path) = &a.save_trajectory {
        let mut t = trajectory;
        t.metadata = metadata(common, &a.prompt, options.inversion_guidance);
        outputs.push(Output {
            flag: "--save-trajectory",
            path,
            bytes: t.to_bytes()?,
        });
    }
    finish(common, &bars, started, outputs)
}
