//! `ddim-edit`: edit photos with Stable Diffusion by DDIM inversion.
//!
//! The binary parses flags, loads a pipeline, shows progress and writes files; all model math lives
//! in the `inversion` and `sd-models` crates.

mod commands;
mod progress;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ddim-edit", version, about = "Edit photos with Stable Diffusion by DDIM inversion", long_about = None, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Flags every subcommand takes.
#[derive(Args, Clone)]
pub struct Common {
    /// A diffusers-layout folder, a Hugging Face repo id in the local cache, or a name from weights.toml.
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
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Image size WxH (default: the model's native size; --image inputs are resized to it).
    #[arg(long, value_parser = commands::parse_size)]
    pub size: Option<(usize, usize)>,
    /// No progress bars or summary.
    #[arg(short, long)]
    pub quiet: bool,
    /// More log output (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Subcommand)]
enum Command {
    /// Invert an image: write the DDIM trajectory of latents that regenerate it.
    Invert {
        #[command(flatten)]
        common: Common,
        /// Input image: a path (PNG, JPEG, WebP) or an http(s) URL.
        #[arg(long)]
        image: String,
        /// A prompt describing the image.
        #[arg(long)]
        prompt: String,
        /// Trajectory file to write (safetensors).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sample an image: from a trajectory entry (--latents, --start-step) or from seeded noise.
    Sample {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value = "")]
        negative_prompt: String,
        /// Trajectory written by `invert` or `edit --save-trajectory`.
        #[arg(long, requires = "start_step")]
        latents: Option<PathBuf>,
        /// Sampler step to start from (with --latents).
        #[arg(long, requires = "latents")]
        start_step: Option<usize>,
        /// Seed of the starting noise (without --latents).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output PNG.
        #[arg(long)]
        out: PathBuf,
        /// Also write the final latents (safetensors, `latents` [1, C, h, w]).
        #[arg(long)]
        save_latents: Option<PathBuf>,
    },
    /// Edit an image: invert with --prompt, then sample from --start-step with --edit-prompt.
    Edit {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        image: String,
        /// A prompt describing the input image.
        #[arg(long)]
        prompt: String,
        /// The prompt describing the wanted result.
        #[arg(long)]
        edit_prompt: String,
        #[arg(long, default_value = "")]
        negative_prompt: String,
        /// How many sampler steps to skip: higher keeps more of the input (0 = full regeneration).
        /// Default: 30 % of --steps (15 of 50), as the course notebook's edit().
        #[arg(long)]
        start_step: Option<usize>,
        /// Guidance of the inversion. 1 (unguided) keeps the layout best; 3.5 with --guidance 3.5
        /// is the course notebook's edit.
        #[arg(long, default_value_t = inversion::DEFAULT_INVERSION_GUIDANCE)]
        inversion_guidance: f64,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        save_latents: Option<PathBuf>,
        /// Also write the inverse trajectory that the edit computed.
        #[arg(long)]
        save_trajectory: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let common = match &cli.command {
        Command::Invert { common, .. }
        | Command::Sample { common, .. }
        | Command::Edit { common, .. } => common,
    };
    let level = match (common.quiet, common.verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let result = match cli.command {
        Command::Invert {
            common,
            image,
            prompt,
            out,
        } => commands::invert(&common, &image, &prompt, &out),
        Command::Sample {
            common,
            prompt,
            negative_prompt,
            latents,
            start_step,
            seed,
            out,
            save_latents,
        } => commands::sample(
            &common,
            &prompt,
            &negative_prompt,
            latents.as_deref(),
            start_step,
            seed,
            &out,
            save_latents.as_deref(),
        ),
        Command::Edit {
            common,
            image,
            prompt,
            edit_prompt,
            negative_prompt,
            start_step,
            inversion_guidance,
            out,
            save_latents,
            save_trajectory,
        } => commands::edit(
            &common,
            commands::EditArgs {
                image: &image,
                prompt: &prompt,
                edit_prompt: &edit_prompt,
                negative_prompt: &negative_prompt,
                start_step,
                inversion_guidance,
                out: &out,
                save_latents: save_latents.as_deref(),
                save_trajectory: save_trajectory.as_deref(),
            },
        ),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
