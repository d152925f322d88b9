//! `ddim-edit`: edit photos with Stable Diffusion by DDIM inversion.
//!
//! The binary parses flags, loads a pipeline (fetching its model first where needed), shows
//! progress and writes files; all model math lives in the `inversion` and `sd-models` crates, and
//! where models come from in `model-source`.

mod args;
mod batch;
mod commands;
mod fetch;
mod method;
mod output;
mod progress;
mod serve;
mod single_file;

use clap::Parser;

use args::{Cli, Command};

fn main() -> std::process::ExitCode {
    sd_models::cpu::reuse_freed_memory();
    let cli = Cli::parse();
    let level = match cli.command.verbosity() {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let done = std::process::ExitCode::SUCCESS;
    let result = match &cli.command {
        Command::Invert(a) => commands::invert(a).map(|()| done),
        Command::Sample(a) => commands::sample(a).map(|()| done),
        Command::Edit(a) => commands::edit(a).map(|()| done),
        Command::Fetch(a) => fetch::run(a).map(|()| done),
        Command::Batch(a) => batch::run(a),
        Command::Serve(a) => serve::run(a).map(|()| done),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
