//! Prompt-to-Prompt (Hertz et al., arXiv 2208.01626): the edited prompt's branch is sampled beside
//! the source prompt's and takes the source's attention, so the layout and the things the prompts
//! share stay where they were.
//!
//! The control acts on the conditional half of the UNet batch (rows `[source, edit]`), as the
//! paper's code does; the unconditional rows are left alone. Per sampling step `i` of `n`:
//! - cross-attention: for `i < ⌊cross_replace·n⌋` the edit row takes the source's maps, token by
//!   token (word swap: same position; refinement: the aligned source position, its own map for
//!   inserted tokens), then scaled by the re-weighting factors of its words;
//! - self-attention: for `i < ⌊self_replace·n⌋` the edit row takes the source's maps at the layers
//!   of at most [`MAX_CONTROLLED_TOKENS`] query tokens (P2P's 16×16 at SD's 64×64 latents);
//! - local blend: the cross-attention maps of the blend words, summed over heads, layers and all
//!   steps so far at the finest resolution of at most [`MAX_CONTROLLED_TOKENS`] tokens, dilated by a
//!   3×3 max filter, scaled to the latent size (nearest), divided by their maximum and cut at
//!   [`BLEND_THRESHOLD`]; the union of both prompts' masks keeps the edit, the source latents fill
//!   the rest, from step ⌊[`BLEND_START`]·n⌋ on;
//! - or the local blend from the branches' difference ([`P2pOptions::blend_auto`], DiffEdit's
//!   idea, Couairon et al., arXiv 2210.11427, without its extra passes): see [`super::blend`];
//! - feature injection (Plug-and-Play, Tumanyan et al., arXiv 2211.12572): for
//!   `i < ⌊feature_replace·n⌋` the edit's rows (unconditional and conditional) take the source's
//!   output of the resnet at [`FEATURE_SITE`], which holds the layout while the text still sets
//!   the appearance — for edits of colour or material, not of shape.

use burn::tensor::{Int, Tensor, TensorData};
use sd_models::unet::{AttentionControl, AttentionKind, AttentionSite, ResnetSite};

use super::blend::{Blend, DifferenceBlend, blend_words};

use crate::error::{InversionError, Result};
use crate::pipeline::Pipeline;
use crate::words::{Alignment, PromptTokens};

/// Fraction of the sampling steps whose cross-attention is replaced when none is given (P2P's 0.8).
pub const DEFAULT_CROSS_REPLACE: f64 = 0.8;
/// Fraction of the sampling steps whose self-attention is replaced when none is given (P2P's 0.4).
pub const DEFAULT_SELF_REPLACE: f64 = 0.4;
/// Layers of at most this many query tokens have their self-attention replaced and give the
/// blend maps: 16×16, P2P's resolution for Stable Diffusion at 512 px.
pub const MAX_CONTROLLED_TOKENS: usize = 256;
/// The normalised attention a latent pixel needs to belong to the blend mask (P2P's 0.3).
pub const BLEND_THRESHOLD: f32 = 0.3;
/// Fraction of the sampling steps after which the blend starts (P2P's 0.2).
pub const BLEND_START: f64 = 0.2;
/// Fraction of the steps whose features `--feature-replace` injects in Plug-and-Play (its τ_f).
pub const PNP_FEATURE_REPLACE: f64 = 0.8;
/// The resnet whose features `feature_replace` injects: `up_blocks[1].resnets[1]`, Plug-and-Play's
/// (its "layer 4", 16×16 of SD's 64×64 latents).
pub const FEATURE_SITE: ResnetSite = ResnetSite {
    block: 1,
    resnet: 1,
};

/// Settings of a Prompt-to-Prompt edit.
#[derive(Debug, Clone, PartialEq)]
pub struct P2pOptions {
    pub cross_replace: f64,
    pub self_replace: f64,
    /// Words of the edited prompt and the factors their cross-attention is scaled by.
    pub reweight: Vec<(String, f64)>,
    /// Words of either prompt whose attention marks the region that may change.
    pub blend_words: Vec<String>,
    /// The region that may change from where the branches' predictions differ, not from words.
    pub blend_auto: bool,
    /// Fraction of the sampling steps whose edit rows take the source's features (0: none).
    pub feature_replace: f64,
}

impl Default for P2pOptions {
    fn default() -> Self {
        Self {
            cross_replace: DEFAULT_CROSS_REPLACE,
            self_replace: DEFAULT_SELF_REPLACE,
            reweight: Vec::new(),
            blend_words: Vec::new(),
            blend_auto: false,
            feature_replace: 0.0,
        }
    }
}

/// The attention control of one Prompt-to-Prompt edit over `steps` sampling steps.
pub struct P2p {
    step: usize,
    cross_steps: usize,
    self_steps: usize,
    /// Source position per edit token, and the weight of the source's map (0 for inserted tokens).
    source: Tensor<1, Int>,
    weight: Option<Tensor<4>>,
    /// Per-token factors of the edit row, `[1, 1, 1, tokens]`.
    equalizer: Option<Tensor<4>>,
    blend: Option<Blend>,
    difference: Option<DifferenceBlend>,
    feature_steps: usize,
}

fn fraction(flag: &'static str, value: f64) -> Result<f64> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(InversionError::EditOption {
            flag,
            message: format!("{value} must be a fraction of the steps in [0, 1]"),
        })
    }
}

impl P2p {
    /// Checks `o` against the two prompts and builds the control for `steps` sampling steps.
    pub fn new(
        p: &Pipeline,
        source: &str,
        target: &str,
        o: &P2pOptions,
        steps: usize,
    ) -> Result<Self> {
        let cross = fraction("--cross-replace", o.cross_replace)?;
        let selfr = fraction("--self-replace", o.self_replace)?;
        let features = fraction("--feature-replace", o.feature_replace)?;
        if o.blend_auto && !o.blend_words.is_empty() {
            return Err(InversionError::EditOption {
                flag: "--blend-auto",
                message:
                    "takes its mask from the branches, not from --blend-words: give one of the two"
                        .into(),
            });
        }
        let tok = p.tokenizer();
        let max = tok.max_length();
        let (src, dst) = (
            PromptTokens::new(tok, source)?,
            PromptTokens::new(tok, target)?,
        );
        let refine = src.ids.len() != dst.ids.len();
        let alignment = if refine {
            Alignment::refinement(&src.ids, &dst.ids, max)?
        } else {
            Alignment::identity(max)
        };
        let device = p.device();
        let row = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [max]), device);
        let weight = refine.then(|| row(alignment.weight.clone()).reshape([1, 1, 1, max]));
        let source_ids: Vec<i64> = alignment.source.iter().map(|&i| i as i64).collect();
        let equalizer = equalizer(&dst, &o.reweight, max)?.map(|e| row(e).reshape([1, 1, 1, max]));
        let start = (BLEND_START * steps as f64) as usize;
        let blend = if o.blend_words.is_empty() {
            None
        } else {
            let words = blend_words(&src, &dst, &o.blend_words, max)?;
            Some(Blend::new(
                Tensor::from_data(TensorData::new(words, [2, 1, 1, max]), device),
                start,
            ))
        };
        Ok(Self {
            step: 0,
            cross_steps: (cross * steps as f64) as usize,
            self_steps: (selfr * steps as f64) as usize,
            source: Tensor::from_data(TensorData::new(source_ids, [max]), device),
            weight,
            equalizer,
            blend,
            difference: o.blend_auto.then(|| DifferenceBlend::new(start)),
            feature_steps: (features * steps as f64) as usize,
        })
    }

    /// Sets the sampling step (0-based) the next UNet pass belongs to.
    pub fn set_step(&mut self, step: usize) {
        self.step = step;
    }

    /// The edit row's cross-attention after taking the source's: `base` and `edit` `[1, h, q, k]`.
    fn replace_cross(&self, base: Tensor<4>, edit: Tensor<4>) -> Tensor<4> {
        let mapped = match &self.weight {
            None => base,
            Some(w) => {
                let taken = base.select(3, self.source.clone());
                taken * w.clone() + edit * (w.clone().neg() + 1.0)
            }
        };
        match &self.equalizer {
            Some(e) => mapped * e.clone(),
            None => mapped,
        }
    }

    /// Before a sampling step: the branches' guided predictions `[2, C, h, w]` (source, edit),
    /// which the blend from their difference sums.
    pub fn observe(&mut self, prediction: &Tensor<4>) {
        if let Some(d) = &mut self.difference {
            d.observe(prediction);
        }
    }

    /// After a sampling step: `x` `[2, C, h, w]` (source, edit) with the edit row blended into the
    /// source's outside the mask, once the blend has started.
    pub fn blend(&self, x: Tensor<4>) -> Tensor<4> {
        match (&self.blend, &self.difference) {
            (Some(b), _) => b.apply(x, self.step),
            (None, Some(d)) => d.apply(x, self.step),
            (None, None) => x,
        }
    }
}

/// Per-token factors of the edited prompt, or `None` without re-weighting.
fn equalizer(
    dst: &PromptTokens,
    reweight: &[(String, f64)],
    max: usize,
) -> Result<Option<Vec<f32>>> {
    if reweight.is_empty() {
        return Ok(None);
    }
    let mut e = vec![1.0f32; max];
    for (word, factor) in reweight {
        let at = dst.positions(word);
        if at.is_empty() || !factor.is_finite() {
            return Err(InversionError::EditOption {
                flag: "--reweight",
                message: if at.is_empty() {
                    format!("{word}={factor}: {word:?} is not a word of the edited prompt")
                } else {
                    format!("{word}={factor}: the factor must be a finite number")
                },
            });
        }
        at.into_iter().for_each(|i| e[i] = *factor as f32);
    }
    Ok(Some(e))
}

impl AttentionControl for P2p {
    fn wants(&self, site: &AttentionSite) -> bool {
        let small = site.tokens() <= MAX_CONTROLLED_TOKENS;
        match site.kind {
            AttentionKind::CrossAttention => {
                self.step < self.cross_steps || (self.blend.is_some() && small)
            }
            AttentionKind::SelfAttention => self.step < self.self_steps && small,
        }
    }

    fn control(&mut self, site: &AttentionSite, probs: Tensor<4>) -> Tensor<4> {
        let [b, h, q, k] = probs.dims();
        if b < 2 {
            return probs;
        }
        // The conditional rows [source, edit] are the last two.
        let (s, e) = (b - 2, b - 1);
        let row = |i: usize| probs.clone().slice([i..i + 1, 0..h, 0..q, 0..k]);
        let cross = site.kind == AttentionKind::CrossAttention;
        if cross
            && site.tokens() <= MAX_CONTROLLED_TOKENS
            && let Some(blend) = &mut self.blend
        {
            blend.observe(site, probs.clone().slice([s..b, 0..h, 0..q, 0..k]));
        }
        let new = if cross && self.step < self.cross_steps {
            self.replace_cross(row(s), row(e))
        } else if !cross && self.step < self.self_steps {
            row(s)
        } else {
            return probs;
        };
        probs.slice_assign([e..e + 1, 0..h, 0..q, 0..k], new)
    }

    fn features(&mut self, site: ResnetSite, features: Tensor<4>) -> Tensor<4> {
        if site != FEATURE_SITE || self.step >= self.feature_steps {
            return features;
        }
        // Rows [source, edit] at guidance 1, else [u_source, u_edit, source, edit].
        let [b, c, h, w] = features.dims();
        (0..b / 2).fold(features.clone(), |out, pair| {
            let source = features
                .clone()
                .slice([2 * pair..2 * pair + 1, 0..c, 0..h, 0..w]);
            out.slice_assign([2 * pair + 1..2 * pair + 2, 0..c, 0..h, 0..w], source)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_outside_the_unit_interval_are_refused() {
        assert!(fraction("--cross-replace", 1.0).is_ok());
        let e = fraction("--cross-replace", 1.5).unwrap_err().to_string();
        assert!(
            e.starts_with("--cross-replace 1.5 must be a fraction"),
            "{e}"
        );
        assert!(fraction("--self-replace", f64::NAN).is_err());
    }
}
