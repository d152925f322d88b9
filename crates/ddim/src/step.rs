//! One DDIM update as coefficients: the pipeline applies them to tensors.

/// A DDIM step from x (at the source noise level) and the model output m:
///
/// ```text
/// x0   = clip(x0_from_sample·x + x0_from_output·m)      (clip only when `clip` is set)
/// eps  = eps_from_sample·x + eps_from_output·m
/// next = x0_weight·x0 + eps_weight·eps + noise_weight·z  (z ~ N(0, I), only when eta > 0)
/// ```
///
/// As in diffusers, clipping changes x0 only; eps is not re-derived from the clipped x0
/// (`use_clipped_model_output=False`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepCoefficients {
    pub x0_from_sample: f64,
    pub x0_from_output: f64,
    pub eps_from_sample: f64,
    pub eps_from_output: f64,
    pub x0_weight: f64,
    pub eps_weight: f64,
    pub noise_weight: f64,
    /// `Some(r)`: x0 is clamped to [−r, r] (`clip_sample`).
    pub clip: Option<f64>,
}

impl StepCoefficients {
    /// The step as `next = a·x + b·m (+ noise_weight·z)`, valid when `clip` is `None`.
    pub fn linear(&self) -> (f64, f64) {
        (
            self.x0_weight * self.x0_from_sample + self.eps_weight * self.eps_from_sample,
            self.x0_weight * self.x0_from_output + self.eps_weight * self.eps_from_output,
        )
    }

    /// The step applied to one value (the scalar reference of what a pipeline does per element).
    pub fn apply(&self, x: f64, m: f64, z: f64) -> f64 {
        let mut x0 = self.x0_from_sample * x + self.x0_from_output * m;
        if let Some(r) = self.clip {
            x0 = x0.clamp(-r, r);
        }
        let eps = self.eps_from_sample * x + self.eps_from_output * m;
        self.x0_weight * x0 + self.eps_weight * eps + self.noise_weight * z
    }
}
