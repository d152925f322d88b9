//! Null-text inversion (Mokady et al., arXiv 2211.09794): per sampler step, the unconditional
//! text states are optimised so that guided sampling with the source prompt retraces the
//! unguided inversion path (the pivot), as the paper's code runs its Algorithm 1:
//!
//! - from start step k, x = the latent at τ_k and u = the negative prompt's states, carried from
//!   step to step; for sampler step i (timestep τ_i) the target is the inversion latent at
//!   τ_{i+1} (x₀ after the last step);
//! - Adam on u (β 0.9 / 0.999, ε 1e-8, learning rate 1e-2·(1 − i/100), fresh moments each step),
//!   at most `inner_steps` iterations of: ε = ε_u + g(ε_c − ε_u) with ε_c = UNet(x, τ_i, c_src)
//!   held fixed, loss = mean((DDIM step(x, ε) − target)²), backward, Adam step; stopping once the
//!   loss (before that Adam step) is below ε_stop + i·2e-5;
//! - the optimised u is step i's null embedding, and x moves on by the guided step with it.
//!
//! The gradient flows through the whole UNet: it runs on Burn's autodiff device
//! (`Device::autodiff`), where the CPU backend's fused kernels fall back to Burn's own ops (they
//! apply only on the plain `flex` device), so any backend works. Each iteration is one UNet
//! forward and one backward pass. `tests/reference/gen_null_text.py` is the reference.

use burn::module::Module;
use burn::tensor::{DType, Tensor};
use sd_models::unet::UNet2DConditionModel;

use super::apply_step;
use crate::error::{InversionError, Result};
use crate::pipeline::{Conditioning, Pipeline, check_finite};
use crate::progress::{Phase, Progress};
use crate::trajectory::Trajectory;

/// How the null embeddings are optimised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NullTextOptions {
    /// Adam iterations per step at most (the paper: 10).
    pub inner_steps: usize,
    /// Early stop below `epsilon + i·2e-5` (the paper: 1e-5).
    pub epsilon: f64,
}

impl Default for NullTextOptions {
    fn default() -> Self {
        Self {
            inner_steps: 10,
            epsilon: 1e-5,
        }
    }
}

/// The optimised null embeddings of sampler steps `start_step..steps`.
#[derive(Debug, Clone)]
pub struct NullEmbeddings {
    /// `[steps − start_step, tokens, dim]`: row r is sampler step start_step + r's.
    pub states: Tensor<3>,
    /// The first sampler step they belong to.
    pub start_step: usize,
    /// The guidance scale they were optimised for (sampling must use the same).
    pub guidance: f64,
    /// Each step's last loss.
    pub losses: Vec<f64>,
    /// Adam iterations each step ran (one UNet forward + backward each).
    pub iterations: Vec<usize>,
}

impl NullEmbeddings {
    /// The null embedding of sampler step `step`, `[1, tokens, dim]`.
    pub fn at(&self, step: usize) -> Option<Tensor<3>> {
        let [n, tokens, dim] = self.states.dims();
        let r = step.checked_sub(self.start_step).filter(|&r| r < n)?;
        Some(self.states.clone().slice([r..r + 1, 0..tokens, 0..dim]))
    }

    /// UNet forward + backward passes the optimisation took.
    pub fn passes(&self) -> usize {
        self.iterations.iter().sum()
    }
}

/// PyTorch's Adam (betas 0.9 / 0.999, eps 1e-8, no weight decay), for one tensor.
struct Adam {
    lr: f64,
    m: Tensor<3>,
    v: Tensor<3>,
    t: i32,
}

impl Adam {
    const B1: f64 = 0.9;
    const B2: f64 = 0.999;
    const EPS: f64 = 1e-8;

    fn new(lr: f64, like: &Tensor<3>) -> Self {
        Self {
            lr,
            m: like.zeros_like(),
            v: like.zeros_like(),
            t: 0,
        }
    }

    /// θ − lr/(1−β₁ᵗ) · m / (√v / √(1−β₂ᵗ) + ε).
    fn step(&mut self, theta: Tensor<3>, grad: Tensor<3>) -> Tensor<3> {
        self.t += 1;
        self.m = self.m.clone() * Self::B1 + grad.clone() * (1.0 - Self::B1);
        self.v = self.v.clone() * Self::B2 + grad.clone() * grad * (1.0 - Self::B2);
        let bc1 = 1.0 - Self::B1.powi(self.t);
        let bc2 = 1.0 - Self::B2.powi(self.t);
        let denom = self.v.clone().sqrt() / bc2.sqrt() + Self::EPS;
        theta - self.m.clone() / denom * (self.lr / bc1)
    }
}

fn no_origin() -> InversionError {
    InversionError::EditOption {
        flag: "--inversion",
        message: "null-text needs the photo's latent x0, which this trajectory file does not hold: invert the photo again".into(),
    }
}

/// One sampler step's fixed inputs of the loss, on the autodiff device.
struct Step<'a> {
    x: &'a Tensor<4>,
    t: i64,
    coefficients: &'a ddim::StepCoefficients,
    /// The conditional output, held fixed.
    eps_c: &'a Tensor<4>,
    /// The inversion latent the guided step must land on.
    target: &'a Tensor<4>,
    guidance: f64,
}

impl Step<'_> {
    /// mean((DDIM step(x, ε_u + g(ε_c − ε_u)) − target)²) at null embedding `u`, and its gradient
    /// with respect to `u`: one UNet forward and backward pass.
    fn loss_and_gradient(
        &self,
        p: &Pipeline,
        unet: &UNet2DConditionModel,
        u: &Tensor<3>,
    ) -> Result<(f64, Tensor<3>)> {
        let leaf = u.clone().autodiff().require_grad();
        let eps_u = unet
            .forward(
                self.x.clone().cast(p.dtype()),
                &[self.t as f64],
                leaf.clone().cast(p.dtype()),
            )?
            .cast(DType::F32);
        let eps = eps_u.clone() + (self.eps_c.clone() - eps_u) * self.guidance;
        let diff = apply_step(self.coefficients, self.x.clone(), eps) - self.target.clone();
        let mse = (diff.clone() * diff).mean();
        let grads = mse.backward();
        let loss = mse.inner().into_scalar::<f32>() as f64;
        let grad = leaf
            .grad(&grads)
            .ok_or_else(|| InversionError::EditOption {
                flag: "--inversion",
                message: "null-text: the backend returned no gradient for the null embedding"
                    .into(),
            })?;
        Ok((loss, grad))
    }
}

/// Optimises the null embeddings for sampling from `start_step` with `source` at `guidance`,
/// along `trajectory` (an unguided inversion with `source`, holding x₀), starting from the
/// states of `negative`.
#[allow(clippy::too_many_arguments)]
pub fn optimize_null_text(
    p: &Pipeline,
    trajectory: &Trajectory,
    source: &str,
    negative: &str,
    guidance: f64,
    start_step: usize,
    options: NullTextOptions,
    progress: &dyn Progress,
) -> Result<NullEmbeddings> {
    let steps = trajectory.steps;
    super::check_start(steps, start_step)?;
    let origin = trajectory.origin.as_ref().ok_or_else(no_origin)?;
    let timesteps = p.schedule().timesteps(steps)?;
    let c_src = p.text_states(source)?;
    let cond_only = Conditioning::new(c_src.clone(), 1.0);
    let autodiff = p.device().clone().autodiff();
    let unet = p.unet().clone().to_device(&autodiff).no_grad();
    let mut x = super::invert::start_latents(p, trajectory, steps, start_step)?;
    let mut u = p.text_states(negative)?;
    let (mut rows, mut losses, mut iterations) = (Vec::new(), Vec::new(), Vec::new());
    // At most this many passes; each is reported as a step (an early stop leaves the rest).
    progress.start(Phase::NullText, (steps - start_step) * options.inner_steps);
    for (i, &t) in timesteps.iter().enumerate().skip(start_step) {
        let coefficients = p.schedule().step(t, steps, 0.0)?;
        // The inversion latent at τ_{i+1}, or x₀ after the last step.
        let target = match i + 1 < steps {
            true => trajectory.entry(steps - 2 - i),
            false => origin.clone(),
        };
        let eps_c = p.guided_output(&x, t, &cond_only)?;
        let (x_ad, target, eps_c) = (x.clone().autodiff(), target.autodiff(), eps_c.autodiff());
        let mut adam = Adam::new(1e-2 * (1.0 - i as f64 / 100.0), &u);
        let (mut loss, mut done) = (f64::NAN, 0);
        while done < options.inner_steps {
            let step = Step {
                x: &x_ad,
                t,
                coefficients: &coefficients,
                eps_c: &eps_c,
                target: &target,
                guidance,
            };
            let (value, grad) = step.loss_and_gradient(p, &unet, &u)?;
            loss = value;
            p.count_unet_call();
            u = adam.step(u, grad);
            done += 1;
            progress.step(Phase::NullText);
            if !loss.is_finite() {
                check_finite(&u.clone().unsqueeze(), "null-text optimisation", DType::F32)?;
            }
            if loss < options.epsilon + i as f64 * 2e-5 {
                break;
            }
        }
        if progress.cancelled() {
            return Err(InversionError::Cancelled);
        }
        rows.push(u.clone());
        losses.push(loss);
        iterations.push(done);
        let cond = Conditioning::new(Tensor::cat(vec![u.clone(), c_src.clone()], 0), guidance);
        x = apply_step(&coefficients, x.clone(), p.guided_output(&x, t, &cond)?);
    }
    progress.finish(Phase::NullText);
    let states = Tensor::cat(rows, 0);
    check_finite(
        &states.clone().unsqueeze(),
        "null-text optimisation",
        DType::F32,
    )?;
    Ok(NullEmbeddings {
        states,
        start_step,
        guidance,
        losses,
        iterations,
    })
}
