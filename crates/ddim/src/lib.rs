//! DDIM noise schedules and step coefficients, forward and inverse, in f64.
//!
//! Denoising Diffusion Implicit Models (Song, Meng & Ermon, arXiv 2010.02502) sample a diffusion model
//! deterministically; run backwards, the same update maps an image's latent to the noise that would
//! have produced it ("DDIM inversion"). This crate mirrors diffusers' `DDIMScheduler` and
//! `DDIMInverseScheduler`: it builds the training schedule ᾱ_t from a `scheduler_config.json`, picks the
//! inference timesteps, and hands out the coefficients of each step. It has no tensor dependency:
//! a pipeline applies `next = a·x + b·model_output` to its own tensors.
//!
//! ```
//! use ddim::{DdimSchedule, SchedulerConfig, PredictionType};
//! let schedule = DdimSchedule::new(SchedulerConfig::stable_diffusion(PredictionType::Epsilon)).unwrap();
//! let ts = schedule.timesteps(50).unwrap();
//! assert_eq!((ts[0], ts[49]), (981, 1));
//! let (a, b) = schedule.step(ts[0], 50, 0.0).unwrap().linear();
//! assert!(a > 1.0 && b < 0.0);
//! ```

mod config;
mod error;
mod schedule;
mod step;

pub use config::{BetaSchedule, PredictionType, SchedulerConfig, TimestepSpacing};
pub use error::{DdimError, Result};
pub use schedule::DdimSchedule;
pub use step::StepCoefficients;
