//! Prompt-to-Prompt's local blend: after each sampling step from ⌊[`BLEND_START`]·n⌋ on, the edit
//! branch keeps its latents inside a mask and takes the source branch's outside it, so that what
//! the mask leaves out stays the photo's.
//!
//! Two masks:
//! - from words ([`Blend`], P2P's): the blend words' cross-attention maps, summed over heads,
//!   layers and all steps so far at the finest resolution of at most [`MAX_CONTROLLED_TOKENS`]
//!   tokens, dilated by a 3×3 max filter, scaled to the latent size (nearest), divided by their
//!   maximum and cut at [`BLEND_THRESHOLD`]; the union of both prompts' masks;
//! - from the branches ([`DifferenceBlend`], DiffEdit's idea, Couairon et al., arXiv 2210.11427,
//!   read off the pass the edit already makes): |ε̂_edit − ε̂_source|, the guided predictions'
//!   difference averaged over channels and summed over the steps so far, divided by its maximum
//!   and cut at [`BLEND_THRESHOLD`] — where the edited prompt changes the prediction. It needs no
//!   word that marks the region, and an edit prompt equal to the source gives an empty mask.
//!
//! [`MAX_CONTROLLED_TOKENS`]: super::p2p::MAX_CONTROLLED_TOKENS
//! [`BLEND_START`]: super::p2p::BLEND_START

use std::collections::BTreeMap;

use burn::tensor::{Tensor, TensorData};
use sd_models::unet::AttentionSite;

use super::p2p::BLEND_THRESHOLD;
use crate::error::{InversionError, Result};
use crate::words::PromptTokens;

/// The word blend's word masks and the maps summed so far.
pub struct Blend {
    /// `[2, 1, 1, tokens]`: 1 at the blend words' tokens of the source (row 0) and edit prompt.
    words: Tensor<4>,
    /// Query tokens → (`[2, tokens]` maps summed over heads, layers and steps).
    maps: BTreeMap<usize, ([usize; 2], Tensor<2>)>,
    start: usize,
}

impl Blend {
    pub fn new(words: Tensor<4>, start: usize) -> Self {
        Self {
            words,
            maps: BTreeMap::new(),
            start,
        }
    }

    /// Adds the conditional rows' cross-attention `[2, heads, q, tokens]` at `site` to the maps.
    pub fn observe(&mut self, site: &AttentionSite, cond: Tensor<4>) {
        let [_, _, q, _] = cond.dims();
        let m = (cond * self.words.clone())
            .sum_dim(3)
            .sum_dim(1)
            .reshape([2, q]);
        let entry = self
            .maps
            .entry(q)
            .or_insert_with(|| ([site.height, site.width], m.zeros_like()));
        entry.1 = entry.1.clone() + m;
    }

    /// `x` `[2, C, h, w]` (source, edit) blended after sampling step `step`.
    pub fn apply(&self, x: Tensor<4>, step: usize) -> Tensor<4> {
        if step < self.start {
            return x;
        }
        let Some((_, ([bh, bw], maps))) = self.maps.last_key_value() else {
            return x;
        };
        let [_, _, h, w] = x.dims();
        let maps: Vec<f32> = maps.clone().into_data().try_to_vec().unwrap_or_default();
        let q = bh * bw;
        let (Some(src), Some(dst)) = (maps.get(..q), maps.get(q..2 * q)) else {
            return x;
        };
        let (ms, me) = (mask(src, [*bh, *bw], [h, w]), mask(dst, [*bh, *bw], [h, w]));
        let union: Vec<bool> = ms.iter().zip(&me).map(|(a, b)| *a || *b).collect();
        keep_outside(x, &union)
    }
}

/// The blend from the branches' difference: the summed |ε̂_edit − ε̂_source| `[1, 1, h, w]`.
pub struct DifferenceBlend {
    sum: Option<Tensor<4>>,
    start: usize,
}

impl DifferenceBlend {
    pub fn new(start: usize) -> Self {
        Self { sum: None, start }
    }

    /// Adds the channel mean of |edit − source| of the guided predictions `[2, C, h, w]`.
    pub fn observe(&mut self, prediction: &Tensor<4>) {
        let [_, c, h, w] = prediction.dims();
        let row = |i: usize| prediction.clone().slice([i..i + 1, 0..c, 0..h, 0..w]);
        let d = (row(1) - row(0)).abs().mean_dim(1);
        self.sum = Some(match self.sum.take() {
            Some(sum) => sum + d,
            None => d,
        });
    }

    /// `x` `[2, C, h, w]` (source, edit) blended after sampling step `step`.
    pub fn apply(&self, x: Tensor<4>, step: usize) -> Tensor<4> {
        let Some(sum) = self.sum.as_ref().filter(|_| step >= self.start) else {
            return x;
        };
        let d: Vec<f32> = sum.clone().into_data().try_to_vec().unwrap_or_default();
        keep_outside(x, &threshold(&d))
    }
}

/// `map / max(map) > BLEND_THRESHOLD` per entry (nothing for an all-zero map).
fn threshold(map: &[f32]) -> Vec<bool> {
    let max = map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    map.iter()
        .map(|v| max > 0.0 && v / max > BLEND_THRESHOLD)
        .collect()
}

/// `x` `[2, C, h, w]` with the edit row (1) replaced by the source row (0) where `mask` (`h·w`,
/// row-major) is false.
fn keep_outside(x: Tensor<4>, mask: &[bool]) -> Tensor<4> {
    let [_, c, h, w] = x.dims();
    let m: Vec<f32> = mask.iter().map(|&v| f32::from(u8::from(v))).collect();
    let m = Tensor::<4>::from_data(TensorData::new(m, [1, 1, h, w]), &x.device());
    let base = x.clone().slice([0..1, 0..c, 0..h, 0..w]);
    let edit = x.clone().slice([1..2, 0..c, 0..h, 0..w]);
    let blended = base.clone() + m * (edit - base);
    x.slice_assign([1..2, 0..c, 0..h, 0..w], blended)
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
    threshold(&up)
}

/// `[2·max]` word masks of the blend words for the source and edited prompt.
pub fn blend_words(
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

    /// Worked by hand: prediction differences 0, 0.2, 0.4 and 1 (channel means of ±values) are
    /// 0, 0.2, 0.4 and 1 of their maximum; the blend keeps the edit where they pass 0.3, and an
    /// edit equal to the source keeps nothing of it.
    #[test]
    fn the_difference_mask_keeps_the_edit_where_the_predictions_differ() {
        let device = burn::tensor::Device::flex();
        let source = vec![0.0f32; 8];
        // Two channels of a 2×2 latent: channel means of |edit − source| = [0, 0.2, 0.4, 1].
        let edit = vec![0.0, 0.2, -0.4, 1.0, 0.0, -0.2, 0.4, -1.0];
        let pred = Tensor::<4>::from_data(
            TensorData::new([source.clone(), edit].concat(), [2, 2, 2, 2]),
            &device,
        );
        let mut d = DifferenceBlend::new(1);
        d.observe(&pred);
        let x = Tensor::<4>::from_data(
            TensorData::new([vec![5.0f32; 8], vec![9.0f32; 8]].concat(), [2, 2, 2, 2]),
            &device,
        );
        // Before its start step the blend leaves the edit alone.
        let early: Vec<f32> = d.apply(x.clone(), 0).into_data().try_to_vec().unwrap();
        assert_eq!(&early[8..], &[9.0; 8]);
        let out: Vec<f32> = d.apply(x.clone(), 1).into_data().try_to_vec().unwrap();
        assert_eq!(&out[..8], &[5.0; 8], "the source row is untouched");
        assert_eq!(&out[8..], &[5.0, 5.0, 9.0, 9.0, 5.0, 5.0, 9.0, 9.0]);
        let mut same = DifferenceBlend::new(0);
        same.observe(&Tensor::<4>::from_data(
            TensorData::new([source.clone(), source].concat(), [2, 2, 2, 2]),
            &device,
        ));
        let out: Vec<f32> = same.apply(x, 0).into_data().try_to_vec().unwrap();
        assert_eq!(&out[8..], &[5.0; 8]);
    }
}
