//! The DDIM schedule: training noise levels ᾱ_t, inference timesteps, and per-step coefficients.
//!
//! Mirrors diffusers' `DDIMScheduler` (forward, denoising) and `DDIMInverseScheduler` (inversion),
//! after Song et al., "Denoising Diffusion Implicit Models" (arXiv 2010.02502), eq. 12. Everything is
//! computed in f64; diffusers keeps ᾱ in f32, so its values differ from ours by float32 rounding only
//! (checked in the tests against both).

use crate::config::{BetaSchedule, PredictionType, SchedulerConfig, TimestepSpacing};
use crate::error::{DdimError, Result};
use crate::step::StepCoefficients;

/// A training noise schedule plus the sampling rules of DDIM.
#[derive(Debug, Clone)]
pub struct DdimSchedule {
    config: SchedulerConfig,
    alphas_cumprod: Vec<f64>,
    /// ᾱ used past the end of the schedule: the sampler's final ᾱ and the inverse sampler's first ᾱ.
    boundary_alpha_cumprod: f64,
}

impl DdimSchedule {
    /// Builds the schedule described by `config`.
    pub fn new(config: SchedulerConfig) -> Result<Self> {
        if config.steps_offset >= config.num_train_timesteps {
            // No `leading` schedule fits, and the offset would overflow timestep arithmetic.
            return Err(DdimError::Invalid(format!(
                "steps_offset {} must be smaller than num_train_timesteps {}",
                config.steps_offset, config.num_train_timesteps
            )));
        }
        let betas = betas(&config)?;
        let mut acc = 1.0;
        let alphas_cumprod: Vec<f64> = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        let boundary_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(Self {
            config,
            alphas_cumprod,
            boundary_alpha_cumprod,
        })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// ᾱ_t for t in `0..num_train_timesteps`.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// The final ᾱ of the sampler (`final_alpha_cumprod`), which is also the initial ᾱ of the inverse
    /// sampler (`initial_alpha_cumprod`): 1 with `set_alpha_to_one`, else ᾱ_0.
    pub fn boundary_alpha_cumprod(&self) -> f64 {
        self.boundary_alpha_cumprod
    }

    /// The distance diffusers steps back from a timestep: `num_train_timesteps // steps`, whatever the
    /// spacing (for `trailing`/`linspace` this need not be the gap to the next listed timestep; diffusers
    /// behaves so and we follow it).
    fn step_ratio(&self, steps: usize) -> i64 {
        (self.config.num_train_timesteps / steps) as i64
    }

    fn check_steps(&self, steps: usize) -> Result<()> {
        if steps == 0 || steps > self.config.num_train_timesteps {
            return Err(DdimError::Steps {
                steps,
                max_steps: self.max_steps(),
                num_train_timesteps: self.config.num_train_timesteps,
            });
        }
        Ok(())
    }

    /// The largest number of steps whose timesteps all lie in the trained range: at most
    /// `num_train_timesteps`, and less where `steps_offset` pushes the last `leading` timestep past
    /// the end (Stable Diffusion's offset of 1 on 1000 training steps makes it 999). Zero only for an
    /// offset no schedule fits, which [`SchedulerConfig`]'s parser refuses.
    pub fn max_steps(&self) -> usize {
        let n = self.config.num_train_timesteps;
        (1..=n)
            .rev()
            .find(|&steps| match self.config.timestep_spacing {
                // The largest leading timestep, (steps − 1)·(n // steps) + offset, decides it; the
                // smallest is the offset itself.
                TimestepSpacing::Leading => {
                    (steps - 1) * (n / steps) + self.config.steps_offset < n
                }
                _ => self
                    .first_out_of_range(&self.raw_timesteps(steps))
                    .is_none(),
            })
            .unwrap_or(0)
    }

    /// The sampler's timesteps for `steps` steps as diffusers computes them, not yet checked.
    fn raw_timesteps(&self, steps: usize) -> Vec<i64> {
        let n_train = self.config.num_train_timesteps;
        let offset = self.config.steps_offset;
        match self.config.timestep_spacing {
            TimestepSpacing::Leading => {
                let ratio = (n_train / steps) as i64;
                (0..steps as i64)
                    .rev()
                    .map(|i| i * ratio + offset as i64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                // np.round(np.arange(n_train, 0, -n_train / steps)).astype(int64) - 1
                let ratio = n_train as f64 / steps as f64;
                numpy_arange(n_train as f64, 0.0, -ratio)
                    .into_iter()
                    .map(|v| v.round_ties_even() as i64 - 1)
                    .collect()
            }
            TimestepSpacing::Linspace => {
                // np.linspace(0, n_train - 1, steps).round()[::-1]
                let mut v: Vec<i64> = numpy_linspace(0.0, (n_train - 1) as f64, steps)
                    .into_iter()
                    .map(|v| v.round_ties_even() as i64)
                    .collect();
                v.reverse();
                v
            }
        }
    }

    fn first_out_of_range(&self, timesteps: &[i64]) -> Option<i64> {
        let n_train = self.config.num_train_timesteps as i64;
        timesteps.iter().copied().find(|&t| t < 0 || t >= n_train)
    }

    /// The sampler's timesteps τ_0 > τ_1 > … (diffusers `DDIMScheduler.set_timesteps`).
    pub fn timesteps(&self, steps: usize) -> Result<Vec<i64>> {
        self.check_steps(steps)?;
        let ts = self.raw_timesteps(steps);
        if let Some(t) = self.first_out_of_range(&ts) {
            return Err(DdimError::TimestepOutOfRange {
                steps,
                spacing: self.config.timestep_spacing.name(),
                offset: self.config.steps_offset,
                timestep: t,
                num_train_timesteps: self.config.num_train_timesteps,
                max_steps: self.max_steps(),
            });
        }
        Ok(ts)
    }

    /// The inverse sampler's timesteps s_1 < s_2 < … < s_N: the sampler's, ascending
    /// (diffusers `DDIMInverseScheduler.set_timesteps` for `leading` and `trailing`; diffusers has no
    /// inverse `linspace`, and we take the same reversal for it).
    pub fn inverse_timesteps(&self, steps: usize) -> Result<Vec<i64>> {
        let mut ts = self.timesteps(steps)?;
        ts.reverse();
        Ok(ts)
    }

    fn alpha_at(&self, t: i64) -> f64 {
        if t >= 0 {
            self.alphas_cumprod[t as usize]
        } else {
            self.boundary_alpha_cumprod
        }
    }

    /// Coefficients of one sampler step (`DDIMScheduler.step`) at timestep `t` of a `steps`-step
    /// schedule: maps x_t to x_{t−Δ}, Δ = num_train_timesteps // steps. `eta` > 0 adds noise
    /// (stochastic DDIM); the caller supplies the standard normal noise.
    pub fn step(&self, t: i64, steps: usize, eta: f64) -> Result<StepCoefficients> {
        self.check_steps(steps)?;
        self.check_timestep(t)?;
        if eta.is_nan() || eta < 0.0 {
            return Err(DdimError::Invalid(format!("eta must be >= 0, found {eta}")));
        }
        let a_t = self.alpha_at(t);
        let a_prev = self.alpha_at(t - self.step_ratio(steps));
        let variance = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev);
        let std_dev = eta * variance.sqrt();
        Ok(self.coefficients(a_t, a_prev, std_dev))
    }

    /// Coefficients of one inverse step (`DDIMInverseScheduler.step`) with target timestep `t`: maps
    /// x_{t−Δ} to x_t, the model being evaluated at `t` on x_{t−Δ}.
    pub fn inverse_step(&self, t: i64, steps: usize) -> Result<StepCoefficients> {
        self.check_steps(steps)?;
        self.check_timestep(t)?;
        let source = (t - self.step_ratio(steps)).min(self.config.num_train_timesteps as i64 - 1);
        Ok(self.coefficients(self.alpha_at(source), self.alpha_at(t), 0.0))
    }

    fn check_timestep(&self, t: i64) -> Result<()> {
        if t < 0 || t >= self.config.num_train_timesteps as i64 {
            return Err(DdimError::Invalid(format!(
                "timestep {t} outside the trained range 0..{}",
                self.config.num_train_timesteps
            )));
        }
        Ok(())
    }

    /// The DDIM update from noise level ᾱ_from to ᾱ_to, for this config's prediction type.
    fn coefficients(&self, a_from: f64, a_to: f64, std_dev: f64) -> StepCoefficients {
        let (sa, sb) = (a_from.sqrt(), (1.0 - a_from).sqrt());
        // x0 = c·x + d·m ; eps = e·x + f·m
        let (x0_from_sample, x0_from_output, eps_from_sample, eps_from_output) =
            match self.config.prediction_type {
                PredictionType::Epsilon => (1.0 / sa, -sb / sa, 0.0, 1.0),
                PredictionType::Sample => (0.0, 1.0, 1.0 / sb, -sa / sb),
                PredictionType::VPrediction => (sa, -sb, sb, sa),
            };
        StepCoefficients {
            x0_from_sample,
            x0_from_output,
            eps_from_sample,
            eps_from_output,
            x0_weight: a_to.sqrt(),
            eps_weight: (1.0 - a_to - std_dev * std_dev).sqrt(),
            noise_weight: std_dev,
            clip: self
                .config
                .clip_sample
                .then_some(self.config.clip_sample_range),
        }
    }
}

fn betas(config: &SchedulerConfig) -> Result<Vec<f64>> {
    let n = config.num_train_timesteps;
    let (s, e) = (config.beta_start, config.beta_end);
    let lin = |a: f64, b: f64| -> Vec<f64> {
        if n == 1 {
            return vec![a];
        }
        (0..n)
            .map(|i| a + (b - a) * i as f64 / (n - 1) as f64)
            .collect()
    };
    let betas = match &config.beta_schedule {
        BetaSchedule::Linear => lin(s, e),
        BetaSchedule::ScaledLinear => lin(s.sqrt(), e.sqrt()).iter().map(|b| b * b).collect(),
        BetaSchedule::SquaredCosCapV2 => {
            let alpha_bar = |t: f64| {
                ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                    .cos()
                    .powi(2)
            };
            (0..n)
                .map(|i| {
                    let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                    (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
                })
                .collect()
        }
        BetaSchedule::Trained(b) => b.clone(),
    };
    if let Some(b) = betas.iter().find(|b| !(0.0..1.0).contains(*b)) {
        return Err(DdimError::Invalid(format!(
            "beta_start/beta_end give a beta of {b}, outside [0, 1)"
        )));
    }
    Ok(betas)
}

/// `numpy.arange(start, stop, step)` for floats: length ⌈(stop − start)/step⌉, values start + i·step.
fn numpy_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil().max(0.0) as usize;
    (0..len).map(|i| start + i as f64 * step).collect()
}

/// `numpy.linspace(start, stop, num)` with its endpoint rule (the last value is exactly `stop`).
fn numpy_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_arange_matches_numpy_length_rule() {
        // np.arange(1000, 0, -1000/7) has 7 elements: 1000, 857.14…, …, 142.857…
        let v = numpy_arange(1000.0, 0.0, -1000.0 / 7.0);
        assert_eq!(v.len(), 7);
        assert_eq!(v[0], 1000.0);
    }

    fn schedule(spacing: TimestepSpacing, offset: usize) -> DdimSchedule {
        DdimSchedule::new(SchedulerConfig {
            timestep_spacing: spacing,
            steps_offset: offset,
            ..SchedulerConfig::stable_diffusion(PredictionType::Epsilon)
        })
        .unwrap()
    }

    /// Stable Diffusion's offset of 1 leaves room for 999 of its 1000 training timesteps, and
    /// the error for 1000 says so.
    #[test]
    fn the_largest_step_count_is_named_in_the_error() {
        let sd = schedule(TimestepSpacing::Leading, 1);
        assert_eq!(sd.max_steps(), 999);
        assert_eq!(sd.timesteps(999).unwrap()[0], 999);
        let err = sd.timesteps(1000).unwrap_err();
        assert!(
            matches!(
                err,
                DdimError::TimestepOutOfRange {
                    steps: 1000,
                    max_steps: 999,
                    timestep: 1000,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("the most steps this schedule takes is 999"),
            "{err}"
        );
        assert_eq!(err.bad_steps(), Some(1000));
        let err = sd.timesteps(1001).unwrap_err();
        assert!(
            matches!(
                err,
                DdimError::Steps {
                    steps: 1001,
                    max_steps: 999,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("between 1 and 999"), "{err}");
        // Without an offset, or with spacings that ignore it, every training timestep fits.
        assert_eq!(schedule(TimestepSpacing::Leading, 0).max_steps(), 1000);
        assert_eq!(schedule(TimestepSpacing::Trailing, 1).max_steps(), 1000);
        assert_eq!(schedule(TimestepSpacing::Linspace, 1).max_steps(), 1000);
        // Offset 2: 1000 and 999 steps reach timestep 1000; 998 steps end at 997 + 2 = 999.
        let two = schedule(TimestepSpacing::Leading, 2);
        assert_eq!(two.max_steps(), 998);
        assert!(two.timesteps(998).is_ok() && two.timesteps(999).is_err());
        // The largest offset that fits leaves a single step.
        assert_eq!(schedule(TimestepSpacing::Leading, 999).max_steps(), 1);
        let err = DdimSchedule::new(SchedulerConfig {
            steps_offset: 1000,
            ..SchedulerConfig::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("steps_offset 1000"), "{err}");
    }
}
