//! The command line: one clap `Args` struct per subcommand, handed as is to its command.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ddim-edit", version, about = "Edit photos with Stable Diffusion by DDIM inversion", long_about = None, args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Invert an image: write the DDIM trajectory of latents that regenerate it.
    Invert(InvertArgs),
    /// Sample an image: from a trajectory entry (--latents, --start-step) or from seeded noise.
    Sample(SampleArgs),
    /// Edit an image: invert with --prompt, then sample from --start-step with --edit-prompt.
    Edit(EditArgs),
    /// Download a model into the Hugging Face cache, where --model finds it offline.
    Fetch(crate::fetch::FetchCommand),
    /// Run the edits of a JSON Lines job file with one model load: resumable, and sharded with
    /// --shard or a Slurm array / Kubernetes Indexed Job.
    Batch(crate::batch::BatchArgs),
    /// A local web page to edit photos on: the model loaded once, the photo's inversion kept
    /// for edit after edit, live progress and previews (http://127.0.0.1:7860/).
    Serve(crate::serve::ServeArgs),
}

impl Command {
    /// `-q` and the count of `-v`.
    pub fn verbosity(&self) -> (bool, u8) {
        let common = match self {
            Command::Invert(a) => &a.common,
            Command::Sample(a) => &a.common,
            Command::Edit(a) => &a.common,
            Command::Batch(a) => &a.common,
            Command::Serve(a) => &a.common,
            Command::Fetch(a) => return (a.fetch.quiet, a.verbose),
        };
        (common.quiet, common.verbose)
    }
}

/// Flags every subcommand takes.
#[derive(Args, Clone)]
pub struct Common {
    /// A diffusers-layout folder, a Hugging Face repo id or a name from weights.toml (downloaded
    /// into the Hugging Face cache first if it is not there, unless HF_HUB_OFFLINE is set), `toy`,
    /// or a single-file SD 1.x / 2.x checkpoint (`*.safetensors` in the original LDM layout).
    #[arg(long, default_value = model_source::DEFAULT_MODEL)]
    pub model: String,
    #[arg(long, default_value = "cpu", help = sd_models::device::HELP)]
    pub device: String,
    /// Compute precision of the text encoder and UNet: f32, f16 or bf16 (the VAE always runs in
    /// f32, since SD VAEs overflow in f16).
    #[arg(long, default_value = "f32", value_parser = sd_models::device::DTYPES)]
    pub dtype: String,
    /// Weight files to read: e.g. `fp16` for `*.fp16.safetensors` (default: the plain files, or the
    /// only variant present).
    #[arg(long)]
    pub variant: Option<String>,
    /// Number of DDIM steps N.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale (1 disables the unconditional branch). Default: 3.5 for
    /// sampling; for `invert` it is the inversion's guidance, default 1.
    #[arg(long, value_parser = parse_guidance)]
    pub guidance: Option<f64>,
    /// Image size WxH (default: the model's native size; --image inputs are resized to it).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<(usize, usize)>,
    /// For a single-file checkpoint (--model FILE.safetensors): a diffusers folder, a cached model or
    /// a preset (sd-1-5, sd-2-1-base, sd-2-1) whose scheduler, tokenizer and configs to use.
    /// Default: the file's family's published configs, sd-1-5 or sd-2-1, read against its shapes.
    #[arg(long)]
    pub config: Option<String>,
    /// For a single-file checkpoint: what its UNet predicts, over the config's scheduler.
    #[arg(long, value_parser = ["epsilon", "v_prediction"])]
    pub prediction_type: Option<String>,
    /// For a single-file checkpoint with an EMA copy: read the trained weights instead of the EMA
    /// ones (diffusers' default without extract_ema=True).
    #[arg(long)]
    pub no_ema: bool,
    /// Allow --size beyond 4× the model's native size on a side (slow, and memory-hungry).
    #[arg(long)]
    pub no_size_limit: bool,
    /// No progress bars or summary.
    #[arg(short, long)]
    pub quiet: bool,
    /// More log output (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Args)]
pub struct InvertArgs {
    #[command(flatten)]
    pub common: Common,
    /// Input image: a path (PNG, JPEG, WebP) or an http(s) URL.
    #[arg(long)]
    pub image: String,
    /// A prompt describing the image.
    #[arg(long)]
    pub prompt: String,
    /// Trajectory file to write (safetensors: `latents` [N, C, h, w], `timesteps` [N]).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct SampleArgs {
    #[command(flatten)]
    pub common: Common,
    /// The prompt describing the image to sample.
    #[arg(long)]
    pub prompt: String,
    /// What the image should not look like (the unconditional branch of guidance).
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    /// Trajectory written by `invert` or `edit --save-trajectory`.
    #[arg(long, requires = "start_step")]
    pub latents: Option<PathBuf>,
    /// Sampler step to start from (with --latents).
    #[arg(long, requires = "latents")]
    pub start_step: Option<usize>,
    /// Seed of the starting noise (without --latents).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output PNG.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the final latents (safetensors, `latents` [1, C, h, w]).
    #[arg(long)]
    pub save_latents: Option<PathBuf>,
    /// The prompt the trajectory inverted (for --attention/--inversion edits of --latents).
    /// Default: the trajectory's own `prompt`.
    #[arg(long, requires = "latents")]
    pub source_prompt: Option<String>,
    #[command(flatten)]
    pub method: crate::method::MethodArgs,
    /// Decode with this TAESD folder (diffusers' `AutoencoderTiny`, e.g. madebyollin/taesd for SD
    /// 1.x/2.x) instead of the VAE: many times faster, a little softer; for quick looks.
    #[arg(long, value_name = "DIR")]
    pub preview_decoder: Option<PathBuf>,
}

#[derive(Args)]
pub struct EditArgs {
    #[command(flatten)]
    pub common: Common,
    /// Input image: a path (PNG, JPEG, WebP) or an http(s) URL.
    #[arg(long)]
    pub image: String,
    /// A prompt describing the input image.
    #[arg(long)]
    pub prompt: String,
    /// The prompt describing the wanted result.
    #[arg(long)]
    pub edit_prompt: String,
    /// Output PNG.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the final latents (safetensors, `latents` [1, C, h, w]).
    #[arg(long)]
    pub save_latents: Option<PathBuf>,
    /// Also write the inverse trajectory that the edit computed (for `sample --latents`).
    #[arg(long)]
    pub save_trajectory: Option<PathBuf>,
    #[command(flatten)]
    pub settings: EditSettings,
}

/// The settings of an edit besides the prompts, which `edit` and `batch` (as the jobs' defaults)
/// both take.
#[derive(Args, Clone)]
pub struct EditSettings {
    /// What the result should not look like (the unconditional branch of guidance).
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    /// How many sampler steps to skip: higher keeps more of the input. Default: 0 with
    /// --attention p2p (every step sampled; the source branch holds the layout), 30 % of --steps
    /// (15 of 50) with --attention none, as the course notebook's edit().
    #[arg(long)]
    pub start_step: Option<usize>,
    /// Guidance of the inversion. 1 (unguided) keeps the layout best; 3.5 with --guidance 3.5
    /// is the course notebook's edit.
    #[arg(long, default_value_t = inversion::DEFAULT_INVERSION_GUIDANCE, value_parser = parse_guidance)]
    pub inversion_guidance: f64,
    #[command(flatten)]
    pub method: crate::method::MethodArgs,
    /// Decode with this TAESD folder (diffusers' `AutoencoderTiny`, e.g. madebyollin/taesd for SD
    /// 1.x/2.x) instead of the VAE: many times faster, a little softer; for quick looks.
    #[arg(long, value_name = "DIR")]
    pub preview_decoder: Option<PathBuf>,
}

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

/// A guidance scale: a finite number.
pub fn parse_guidance(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(g) if g.is_finite() => Ok(g),
        _ => Err(format!("expected a finite number, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// `--help` explains every flag of every command.
    #[test]
    fn every_flag_has_help_text() {
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                assert!(
                    arg.get_help()
                        .is_some_and(|h| !h.to_string().trim().is_empty()),
                    "`{} --{id}` has no help text",
                    sub.get_name()
                );
            }
        }
    }

    #[test]
    fn sizes_and_guidance_are_parsed_strictly() {
        assert_eq!(parse_size("512x768"), Ok((512, 768)));
        assert_eq!(parse_size("64X32"), Ok((64, 32)));
        assert!(parse_size("512").unwrap_err().contains("WIDTHxHEIGHT"));
        assert!(
            parse_size("5.5x4")
                .unwrap_err()
                .contains("not a whole number")
        );
        assert_eq!(parse_guidance("3.5"), Ok(3.5));
        for bad in ["nan", "inf", "-inf", "x"] {
            assert!(parse_guidance(bad).is_err(), "{bad}");
        }
    }
}
