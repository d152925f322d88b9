//! Progress reporting: the caller passes an observer; library code never prints. The observer
//! also sees the current latents after every step (for live previews) and can ask the run to stop.

use burn::tensor::Tensor;

/// The phases of a pipeline run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Encode,
    Inversion,
    /// Null-text optimisation: one step per Adam iteration (a UNet forward and backward pass).
    NullText,
    Sampling,
    Decode,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Encode => "encode",
            Phase::Inversion => "inversion",
            Phase::NullText => "null-text",
            Phase::Sampling => "sampling",
            Phase::Decode => "decode",
        }
    }
}

/// Receives progress events. All methods default to doing nothing.
pub trait Progress {
    /// A phase begins with `total` steps.
    fn start(&self, _phase: Phase, _total: usize) {}
    /// One step of the current phase is done.
    fn step(&self, _phase: Phase) {}
    /// The phase is done.
    fn finish(&self, _phase: Phase) {}
    /// The latents after a step of inversion or sampling, `[batch, C, h, w]` (batch 2 when the
    /// source and edit branches are sampled together). Reading them costs a device sync, so an
    /// observer that shows them should do so only now and then.
    fn latents(&self, _phase: Phase, _x: &Tensor<4>) {}
    /// Whether the run should stop: asked after every step, which then fails with
    /// [`InversionError::Cancelled`](crate::InversionError::Cancelled).
    fn cancelled(&self) -> bool {
        false
    }
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
