//! [`Conditioning`]: the text states a guided UNet evaluation reads, and null-text inversion's
//! per-step unconditional states.

use std::borrow::Cow;

use burn::tensor::Tensor;

use crate::algorithms::null_text::NullEmbeddings;
use crate::error::{InversionError, Result};

/// Text conditioning for classifier-free guidance: the prompt's states and, when the guidance scale
/// is not 1, the negative prompt's, batched as `[uncond, cond]` like diffusers.
#[derive(Debug, Clone)]
pub struct Conditioning {
    /// `[1 or 2, tokens, dim]`
    pub context: Tensor<3>,
    pub guidance: f64,
    /// Null-text inversion's per-step unconditional states, in place of the context's own.
    pub nulls: Option<NullEmbeddings>,
}

impl Conditioning {
    pub fn new(context: Tensor<3>, guidance: f64) -> Self {
        Self {
            context,
            guidance,
            nulls: None,
        }
    }

    pub fn batch(&self) -> usize {
        self.context.dims()[0]
    }

    /// The conditioning of sampler step `step`: with null embeddings, that step's in every
    /// unconditional row (the first half of a guided batch).
    pub fn at_step(&self, step: usize) -> Result<Cow<'_, Conditioning>> {
        let Some(nulls) = &self.nulls else {
            return Ok(Cow::Borrowed(self));
        };
        let unfit = |message: String| InversionError::EditOption {
            flag: "--inversion",
            message,
        };
        if self.guidance == 1.0 || nulls.guidance != self.guidance {
            return Err(unfit(format!(
                "null-text: the null embeddings were optimised for guidance {}, sampling uses {}",
                nulls.guidance, self.guidance
            )));
        }
        let u = nulls.at(step).ok_or_else(|| {
            unfit(format!(
                "null-text: no null embedding for sampler step {step} (they start at step {})",
                nulls.start_step
            ))
        })?;
        let [n, tokens, dim] = self.context.dims();
        let half = n / 2;
        let rows = Tensor::cat(vec![u; half], 0);
        let context = self
            .context
            .clone()
            .slice_assign([0..half, 0..tokens, 0..dim], rows);
        Ok(Cow::Owned(Conditioning {
            context,
            guidance: self.guidance,
            nulls: None,
        }))
    }
}
