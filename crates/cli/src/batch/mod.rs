//! `ddim-edit batch`: the edits of a JSON Lines job file ([`jobs`]) with one model load. Jobs
//! that share a photo, its prompt and the inversion's settings are inverted once, as deep as the
//! earliest start step among them needs, and every edit of the group samples from that one
//! trajectory — the same latents `edit` would compute, so the same PNGs. Each job's PNGs are
//! written atomically, then its line is appended to the results file ([`results`]); a rerun
//! skips what is done. `--shard I/N`, or a Slurm array task or Kubernetes Indexed Job, takes a
//! deterministic part of the file ([`shard`]).

mod jobs;
mod line;
mod results;
mod shard;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::ProgressBar;
use inversion::image::{image_to_tensor, tensor_to_image};
use inversion::{InversionKey, NoProgress, Pipeline, PreviewDecoder, Trajectory};

use crate::args::{Common, EditSettings};
use crate::commands::{decode, edit_options, flagged, load, preview_decoder, read_image, size};
use crate::output::png_bytes;
use jobs::{Entry, Job};
use results::{Record, Results, Status};
use shard::Shard;

/// The exit status when the batch ran but some of its jobs failed.
pub const SOME_FAILED: u8 = 2;

#[derive(Args)]
pub struct BatchArgs {
    /// The job file: JSON Lines, one job per line: `id`, `image` (a path relative to this file,
    /// or an http(s) URL), `prompt`, `edit_prompt` or `edit_prompts` (a list), and any option of
    /// `edit` by its flag's name with `_` for `-` (`steps`, `start_step`, `guidance`, …).
    pub jobs: PathBuf,
    /// Output folder (created if missing): `<id>.png` (`<id>-<n>.png` for `edit_prompts`) and
    /// `results.jsonl` (`results-I-of-N.jsonl` for shard I of N).
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Run shard I of N (0-based) of the jobs. Default: SLURM_ARRAY_TASK_ID of
    /// SLURM_ARRAY_TASK_COUNT, or JOB_COMPLETION_INDEX of DDIM_EDIT_SHARDS, or all jobs.
    #[arg(long, value_parser = shard::parse)]
    pub shard: Option<Shard>,
    /// Run again the jobs that an earlier run recorded as failed (by default a rerun skips them
    /// like the finished ones).
    #[arg(long)]
    pub retry_failed: bool,
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub settings: EditSettings,
}

/// The shard: `--shard`, else the engine's environment, else all jobs.
fn shard(a: &BatchArgs) -> Result<Shard> {
    if let Some(s) = a.shard {
        return Ok(s);
    }
    match shard::from_env(|name| std::env::var(name).ok()).map_err(anyhow::Error::msg)? {
        Some((s, source)) => {
            log::info!("shard {s} from {source}");
            Ok(s)
        }
        None => Ok(Shard::ALL),
    }
}

/// Reads the job file (a regular file of bounded size).
fn read_jobs(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading the job file {path:?}"))?;
    if !meta.is_file() || meta.len() > jobs::MAX_JOB_FILE_BYTES {
        bail!(
            "the job file {path:?} must be a regular file of at most {} MiB",
            jobs::MAX_JOB_FILE_BYTES >> 20
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading the job file {path:?}"))?;
    String::from_utf8(bytes).with_context(|| format!("the job file {path:?} is not UTF-8"))
}

/// What one run did, for the summary and the exit status.
#[derive(Default)]
struct Tally {
    ok: usize,
    failed: usize,
    skipped: usize,
    skipped_failed: usize,
}

pub fn run(a: &BatchArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let shard = shard(a)?;
    let text = read_jobs(&a.jobs)?;
    let job_dir = match a.jobs.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let entries: Vec<Entry> = jobs::parse(&text, &job_dir, (&a.common, &a.settings))
        .into_iter()
        .filter(|e| shard.owns(&e.shard_key()))
        .collect();
    std::fs::create_dir_all(&a.out_dir)
        .with_context(|| format!("--out-dir {:?}: creating it", a.out_dir))?;
    let mut results = Results::open(&a.out_dir, shard, a.retry_failed)?;
    let mut tally = Tally::default();
    let mut to_run = Vec::new();
    for e in &entries {
        match results.finished(e).map(|r| r.status) {
            Some(Status::Ok) => tally.skipped += 1,
            Some(Status::Failed) => tally.skipped_failed += 1,
            None => to_run.push(e),
        }
    }
    results.drop_redone(&to_run)?;
    let bar = job_bar(a.common.quiet, to_run.len());
    let mut runner = Runner {
        results: &mut results,
        bar: &bar,
        out_dir: &a.out_dir,
        tally: &mut tally,
    };
    let (jobs, invalid): (Vec<&Entry>, Vec<&Entry>) =
        to_run.iter().partition(|e| matches!(e, Entry::Job(_)));
    for e in invalid {
        if let Entry::Invalid {
            line, id, error, ..
        } = e
        {
            runner.failed(*line, id.clone(), error.clone(), 0.0, 0)?;
        }
    }
    let mut calls = 0;
    if !jobs.is_empty() {
        let pipeline = load(&a.common)?;
        let preview = preview_decoder(a.settings.preview_decoder.as_deref(), &pipeline)?;
        let jobs: Vec<&Job> = jobs
            .iter()
            .filter_map(|e| match e {
                Entry::Job(j) => Some(&**j),
                Entry::Invalid { .. } => None,
            })
            .collect();
        runner.run_all(&pipeline, preview.as_ref(), &jobs)?;
        calls = pipeline.unet_calls();
    }
    bar.finish_and_clear();
    println!("{}", runner.results.path().display());
    if !a.common.quiet {
        let minutes = started.elapsed().as_secs_f64() / 60.0;
        eprintln!(
            "batch {shard}: {} jobs: {} done, {} failed, {} finished before ({} of them failed) in {:.1} s ({:.1} jobs/min, {calls} UNet calls)",
            entries.len(),
            tally.ok,
            tally.failed,
            tally.skipped + tally.skipped_failed,
            tally.skipped_failed,
            minutes * 60.0,
            tally.ok as f64 / minutes.max(1e-9),
        );
    }
    Ok(if tally.failed + tally.skipped_failed > 0 {
        ExitCode::from(SOME_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

fn job_bar(quiet: bool, len: usize) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    crate::progress::bar("jobs", len)
}

/// Runs jobs and records them.
struct Runner<'a> {
    results: &'a mut Results,
    bar: &'a ProgressBar,
    out_dir: &'a Path,
    tally: &'a mut Tally,
}

impl Runner<'_> {
    fn failed(
        &mut self,
        line: usize,
        id: Option<String>,
        error: String,
        seconds: f64,
        calls: u64,
    ) -> Result<()> {
        self.bar.println(format!(
            "job {} (line {line}) failed: {error}",
            id.as_deref().unwrap_or("without an id")
        ));
        self.tally.failed += 1;
        self.bar.inc(1);
        self.results.append(Record {
            id,
            line,
            status: Status::Failed,
            outputs: Vec::new(),
            seconds,
            unet_calls: calls,
            error: Some(error),
        })
    }

    /// Checks every job against the model, then runs the groups that share an inversion in the
    /// order of their first job.
    fn run_all(
        &mut self,
        p: &Pipeline,
        preview: Option<&PreviewDecoder>,
        jobs: &[&Job],
    ) -> Result<()> {
        let mut groups: Vec<(InversionKey, Vec<(&Job, inversion::EditOptions)>)> = Vec::new();
        for &job in jobs {
            let options = match check(p, job) {
                Ok(o) => o,
                Err(e) => {
                    self.failed(job.line, Some(job.id.clone()), format!("{e:#}"), 0.0, 0)?;
                    continue;
                }
            };
            let key = InversionKey::new(&job.image, &job.prompt, &options, job.common.size);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, members)) => members.push((job, options)),
                None => groups.push((key, vec![(job, options)])),
            }
        }
        for (_, members) in &groups {
            self.run_group(p, preview, members)?;
        }
        Ok(())
    }

    /// Inverts the group's photo once and runs each of its jobs from that trajectory.
    fn run_group(
        &mut self,
        p: &Pipeline,
        preview: Option<&PreviewDecoder>,
        members: &[(&Job, inversion::EditOptions)],
    ) -> Result<()> {
        let (mut since, mut calls) = (Instant::now(), p.unet_calls());
        let deepest = members.iter().map(|(_, o)| o.start_step).min().unwrap_or(0);
        let trajectory = invert_once(p, members[0].0, &members[0].1, deepest);
        for (job, options) in members {
            self.bar.set_message(job.id.clone());
            let outcome = match &trajectory {
                Ok(t) => run_job(p, preview, job, options, t, self.out_dir),
                Err(e) => Err(anyhow::anyhow!("{e:#}")),
            };
            let (seconds, used) = (since.elapsed().as_secs_f64(), p.unet_calls() - calls);
            match outcome {
                Ok(()) => {
                    self.tally.ok += 1;
                    self.bar.inc(1);
                    self.results.append(Record {
                        id: Some(job.id.clone()),
                        line: job.line,
                        status: Status::Ok,
                        outputs: job.outputs.clone(),
                        seconds,
                        unet_calls: used,
                        error: None,
                    })?;
                }
                Err(e) => self.failed(
                    job.line,
                    Some(job.id.clone()),
                    format!("{e:#}"),
                    seconds,
                    used,
                )?,
            }
            (since, calls) = (Instant::now(), p.unet_calls());
        }
        Ok(())
    }
}

/// A job's edit options, checked against the model before any compute.
fn check(p: &Pipeline, job: &Job) -> Result<inversion::EditOptions> {
    let options = edit_options(&job.common, &job.settings)?;
    p.schedule()
        .timesteps(job.common.steps)
        .map_err(|e| flagged(e.into()))?;
    size(&job.common, p)?;
    for target in &job.edit_prompts {
        inversion::check_method(p, &job.prompt, target, &options).map_err(flagged)?;
    }
    Ok(options)
}

/// Encode the job's photo and invert it down to the entry of start step `deepest`.
fn invert_once(
    p: &Pipeline,
    job: &Job,
    o: &inversion::EditOptions,
    deepest: usize,
) -> Result<Trajectory> {
    let img = read_image(&job.image, "`image`")?;
    let x = image_to_tensor(&img, size(&job.common, p)?, p.device());
    let x0 = p.encode(x, &NoProgress)?;
    let cond = p.conditioning(&job.prompt, &o.negative_prompt, o.inversion_guidance)?;
    let count = o.steps - deepest;
    inversion::invert(p, x0, &cond, o.steps, count, &NoProgress).map_err(flagged)
}

/// Samples and decodes each edit prompt of `job`, then writes its PNGs (all or none).
fn run_job(
    p: &Pipeline,
    preview: Option<&PreviewDecoder>,
    job: &Job,
    o: &inversion::EditOptions,
    t: &Trajectory,
    out_dir: &Path,
) -> Result<()> {
    let mut pngs = Vec::with_capacity(job.edit_prompts.len());
    for target in &job.edit_prompts {
        let latents =
            inversion::edit_from(p, t, &job.prompt, target, o, &NoProgress).map_err(flagged)?;
        let image = decode(p, preview, latents, &NoProgress)?;
        pngs.push(png_bytes(&tensor_to_image(image)?)?);
    }
    let paths: Vec<PathBuf> = job.outputs.iter().map(|o| out_dir.join(o)).collect();
    let files: Vec<(&Path, &[u8])> = paths
        .iter()
        .map(PathBuf::as_path)
        .zip(pngs.iter().map(Vec::as_slice))
        .collect();
    model_source::write_all_atomic(&files)?;
    Ok(())
}
