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
//!   the rest, from step ⌊[`BLEND_START`]·n⌋ on.

use std::collections::BTreeMap;

use burn::tensor::{Int, Tensor, TensorData};
use sd_models::unet::{AttentionControl, AttentionKind, AttentionSite};

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

/// Settings of a Prompt-to-Prompt edit.
#[derive(Debug, Clone, PartialEq)]
pub struct P2pOptions {
    pub cross_replace: f64,
    pub self_replace: f64,
    /// Words of the edited prompt and the factors their cross-attention is scaled by.
    pub reweight: Vec<(String, f64)>,
    /// Words of either prompt whose attention marks the region that may change.
    pub blend_words: Vec<String>,
}

impl Default for P2pOptions {
    fn default() -> Self {
        Self {
            cross_replace: DEFAULT_CROSS_REPLACE,
            self_replace: DEFAULT_SELF_REPLACE,
            reweight: Vec::new(),
            blend_words: Vec::new(),
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
}

/// The local blend's word masks and the maps summed so far.
struct Blend {
    /// `[2, 1, 1, tokens]`: 1 at the blend words' tokens of the source (row 0) and edit prompt.
    words: Tensor<4>,
    /// Query tokens → (`[2, tokens]` maps summed over heads, layers and steps).
    maps: BTreeMap<usize, ([usize; 2], Tensor<2>)>,
    start: usize,
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
        let blend = if o.blend_words.is_empty() {
            None
        } else {
            let words = blend_words(&src, &dst, &o.blend_words, max)?;
            Some(Blend {
                words: Tensor::from_data(TensorData::new(words, [2, 1, 1, max]), device),
                maps: BTreeMap::new(),
                start: (BLEND_START * steps as f64) as usize,
            })
        };
        Ok(Self {
            step: 0,
            cross_steps: (cross * steps as f64) as usize,
            self_steps: (selfr * steps as f64) as usize,
            source: Tensor::from_data(TensorData::new(source_ids, [max]), device),
            weight,
            equalizer,
            blend,
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

    /// After a sampling step: `x` `[2, C, h, w]` (source, edit) with the edit row blended into the
    /// source's outside the mask, once the blend has started.
    pub fn blend(&self, x: Tensor<4>) -> Tensor<4> {
        let Some(blend) = &self.blend else { return x };
        if self.step < blend.start {
            return x;
        }
        let Some((_, ([bh, bw], maps))) = blend.maps.last_key_value() else {
            return x;
        };
        let [_, c, h, w] = x.dims();
        let maps: Vec<f32> = maps.clone().into_data().try_to_vec().unwrap_or_default();
        let q = bh * bw;
        let (src, dst) = (maps.get(..q), maps.get(q..2 * q));
        let (Some(src), Some(dst)) = (src, dst) else {
            return x;
        };
        let (ms, me) = (mask(src, [*bh, *bw], [h, w]), mask(dst, [*bh, *bw], [h, w]));
        let union: Vec<f32> = ms
            .iter()
            .zip(&me)
            .map(|(a, b)| f32::from(*a || *b))
            .collect();
        let m = Tensor::<4>::from_data(TensorData::new(union, [1, 1, h, w]), &x.device());
        let base = x.clone().slice([0..1, 0..c, 0..h, 0..w]);
        let edit = x.clone().slice([1..2, 0..c, 0..h, 0..w]);
        let blended = base.clone() + m * (edit - base);
        x.slice_assign([1..2, 0..c, 0..h, 0..w], blended)
    }
}

/// The normalised, dilated, thresholded mask of one `[bh, bw]` map at latent size `[h, w]`.
fn mask(map: &[f32], [bh, bw]: [usize; 2], [h, w]: [usize; 2]) -> Vec<bool> {
    let mut pooled = vec![f32::NEG_INFINITY; bh * bw];
    for y in 0..bh {
        for x in 0..bw {
            for yy in y.saturating_sub(1)..(y + 2).min(bh) {
                for xx in x.saturating_sub(1)..(x + 2).min(bw) {
                    pooled[y * bw + x] = pooled[y * bw + x].max(map[yy * bw + xx]);
                }
            }
        }
    }
    let up: Vec<f32> = (0..h * w)
        .map(|i| pooled[(i / w) * bh / h * bw + (i % w) * bw / w])
        .collect();
    let max = up.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    up.iter()
        .map(|v| max > 0.0 && v / max > BLEND_THRESHOLD)
        .collect()
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

/// `[2·max]` word masks of the blend words for the source and edited prompt.
fn blend_words(
    src: &PromptTokens,
    dst: &PromptTokens,
    words: &[String],
    max: usize,
) -> Result<Vec<f32>> {
    let mut out = vec![0.0f32; 2 * max];
    for word in words {
        let (a, b) = (src.positions(word), dst.positions(word));
        if a.is_empty() && b.is_empty() {
            return Err(InversionError::EditOption {
                flag: "--blend-words",
                message: format!("{word:?} is in neither the source nor the edited prompt"),
            });
        }
        a.into_iter().for_each(|i| out[i] = 1.0);
        b.into_iter().for_each(|i| out[max + i] = 1.0);
    }
    Ok(out)
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
            let cond = probs.clone().slice([s..b, 0..h, 0..q, 0..k]);
            let m = (cond * blend.words.clone())
                .sum_dim(3)
                .sum_dim(1)
                .reshape([2, q]);
            let entry = blend
                .maps
                .entry(q)
                .or_insert_with(|| ([site.height, site.width], m.zeros_like()));
            entry.1 = entry.1.clone() + m;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Worked by hand: one peak in a 4×4 map dilates to the 2×2 corner, which the nearest 2×
    /// resize makes the 4×4 corner of the 8×8 latent; 0.1 of the maximum is under the threshold.
    #[test]
    fn the_blend_mask_is_the_dilated_peak_at_latent_size() {
        let mut map = vec![0.1f32; 16];
        map[0] = 1.0;
        let m = mask(&map, [4, 4], [8, 8]);
        for y in 0..8 {
            for x in 0..8 {
                assert_eq!(m[y * 8 + x], y < 4 && x < 4, "({y}, {x})");
            }
        }
        // No attention at all gives no mask rather than NaN.
        assert!(mask(&[0.0; 4], [2, 2], [4, 4]).iter().all(|v| !v));
    }

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
