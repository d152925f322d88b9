//! Progress reporting: the caller passes an observer; library code never prints.

/// The phases of a pipeline run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Encode,
    Inversion,
    Sampling,
    Decode,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Encode => "encode",
            Phase::Inversion => "inversion",
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
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
