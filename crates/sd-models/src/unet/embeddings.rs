//! Timestep embeddings: diffusers' `Timesteps` (sinusoidal, computed on the host in f64) and
//! `TimestepEmbedding` (a two-layer MLP).

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor, TensorData};

use crate::cpu::linear_forward;
use crate::layers::linear;

/// `get_timestep_embedding` of diffusers: `dim` features per timestep, half sines, half cosines,
/// frequencies exp(−ln(10⁴)·i/(dim/2 − shift)); `flip_sin_to_cos` puts the cosines first.
pub fn sinusoidal(timesteps: &[f64], dim: usize, flip_sin_to_cos: bool, shift: f64) -> Vec<f32> {
    let half = dim / 2;
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args: Vec<f64> = (0..half)
            .map(|i| t * (-(10000f64.ln()) * i as f64 / (half as f64 - shift)).exp())
            .collect();
        let (sin, cos): (Vec<f64>, Vec<f64>) = args.iter().map(|a| (a.sin(), a.cos())).unzip();
        let (first, second) = if flip_sin_to_cos {
            (cos, sin)
        } else {
            (sin, cos)
        };
        out.extend(first.iter().chain(second.iter()).map(|&v| v as f32));
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    out
}

/// `TimestepEmbedding`: linear → SiLU → linear.
#[derive(Module, Debug)]
pub struct TimestepEmbedding {
    pub linear_1: Linear,
    pub linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn new(cin: usize, dim: usize, device: &Device) -> Self {
        Self {
            linear_1: linear(cin, dim, true, device),
            linear_2: linear(dim, dim, true, device),
        }
    }

    /// # Shapes
    /// - x: `[batch, cin]` → `[batch, dim]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        linear_forward(&self.linear_2, silu(linear_forward(&self.linear_1, x)))
    }
}

/// The sinusoidal features of `timesteps` as a `[batch, dim]` tensor.
pub fn timestep_features(
    timesteps: &[f64],
    dim: usize,
    flip_sin_to_cos: bool,
    shift: f64,
    device: &Device,
) -> Tensor<2> {
    let data = sinusoidal(timesteps, dim, flip_sin_to_cos, shift);
    Tensor::from_data(TensorData::new(data, [timesteps.len(), dim]), device)
}
