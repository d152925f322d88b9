//! The edits of one kind (colour, shape, background, or the caption kept) over the held-out
//! scenes, by each method, scored by pixel statistics (`metrics.rs`), and the report rows they
//! give.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use image::RgbImage;
use inversion::{EditOptions, P2pOptions, Pipeline};
use serde::Deserialize;
use serde_json::{Value, json};

use super::methods::{Inversions, Method, edit};
use super::metrics::{Palette, dilate, iou, nearest_background, psnr, render, shape_of};
use super::{Options, SMALL_RADIUS};

/// `scenes.json` of the held-out set.
#[derive(Deserialize)]
pub struct Heldout {
    pub size: usize,
    colours: BTreeMap<String, [f64; 3]>,
    shapes: Vec<String>,
    backgrounds: BTreeMap<String, [f64; 3]>,
    pub scenes: Vec<Scene>,
}

#[derive(Deserialize, Clone)]
pub struct Scene {
    pub image: String,
    mask: String,
    pub caption: String,
    background: String,
    shape: String,
    colour: String,
    cx: f64,
    cy: f64,
    pub r: f64,
}

impl Heldout {
    /// `{dir}/scenes.json`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("scenes.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path:?}"))?;
        serde_json::from_str(&text).context("parsing scenes.json")
    }
}

/// An edited image to write as an example.
pub struct Example {
    pub kind: String,
    pub index: usize,
    pub from: String,
    pub to: String,
    pub image: RgbImage,
}

/// Scores of one edit.
#[derive(Default, Clone, Copy)]
struct Score {
    success: f64,
    iou: f64,
    /// Over what the edit should keep: outside the shapes, or for background edits inside the
    /// shape (eroded by 2 px).
    psnr_outside: f64,
    /// Over the whole image (with edit "none": the method's reconstruction).
    psnr: f64,
    /// UNet passes of the edit (null-text's forward + backward count once each) and its seconds,
    /// as if it ran alone (its share of the scene's inversion counted in full).
    unet_calls: f64,
    seconds: f64,
}

/// The mean of the finite values.
pub fn mean(xs: &[f64]) -> f64 {
    let finite: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    finite.iter().sum::<f64>() / finite.len().max(1) as f64
}

/// What one edit kind adds to the report.
pub struct KindReport {
    /// One row per method.
    pub rows: Vec<Value>,
    /// Per-scene IoU wins of inversion against img2img, when both ran.
    pub comparison: Option<Value>,
    pub examples: Vec<Example>,
}

/// The edits of a run: the pipeline, the settings and the scenes.
pub struct Edits<'a> {
    pipeline: &'a Pipeline,
    o: &'a Options,
    heldout: &'a Heldout,
    scenes: &'a [Scene],
    options: EditOptions,
    colour_names: Vec<String>,
    background_names: Vec<String>,
    /// Which scenes have a small shape (radius ≤ [`SMALL_RADIUS`]).
    small: Vec<bool>,
    /// Each scene's inversion, shared by the edit kinds and methods that sample from it.
    inversions: Inversions,
}

/// Every method's scores on the scenes, the IoU an exact edit would score, and the examples.
type Scored = (BTreeMap<&'static str, Vec<Score>>, Vec<f64>, Vec<Example>);

impl<'a> Edits<'a> {
    pub fn new(
        pipeline: &'a Pipeline,
        o: &'a Options,
        heldout: &'a Heldout,
        scenes: &'a [Scene],
    ) -> Self {
        Self {
            pipeline,
            o,
            heldout,
            scenes,
            options: EditOptions {
                steps: o.steps,
                start_step: o.start_step,
                guidance: o.guidance,
                inversion_guidance: o.inversion_guidance,
                negative_prompt: String::new(),
                // The fractions of the p2p methods; each sets its own blend words.
                attention: Some(P2pOptions {
                    cross_replace: o.cross_replace,
                    self_replace: o.self_replace,
                    ..P2pOptions::default()
                }),
                ..EditOptions::plain(o.steps)
            },
            colour_names: heldout.colours.keys().cloned().collect(),
            background_names: heldout.backgrounds.keys().cloned().collect(),
            small: scenes.iter().map(|s| s.r <= SMALL_RADIUS).collect(),
            inversions: Inversions::default(),
        }
    }

    /// Edits every scene by `kind` with every method.
    pub fn run(&self, kind: &str) -> anyhow::Result<KindReport> {
        let (scores, exact, examples) = self.score(kind)?;
        let rows = self
            .o
            .methods
            .iter()
            .map(|&m| self.row(kind, m, &scores[m.name()], &exact))
            .collect();
        Ok(KindReport {
            rows,
            comparison: comparison(kind, &scores),
            examples,
        })
    }

    fn palette(&self, background: &str) -> anyhow::Result<Palette> {
        let h = self.heldout;
        Ok(Palette {
            names: self.colour_names.clone(),
            colours: self.colour_names.iter().map(|c| h.colours[c]).collect(),
            background: *h
                .backgrounds
                .get(background)
                .with_context(|| format!("scenes.json has no background {background:?}"))?,
        })
    }

    /// The edited attribute's old and new value in scene `s`: a colour, a shape, a background,
    /// or the colour kept (`none`).
    fn swap<'s>(&'s self, kind: &str, s: &'s Scene) -> (&'s str, &'s str) {
        match kind {
            "colour" => (s.colour.as_str(), next(&self.colour_names, &s.colour)),
            "shape" => (s.shape.as_str(), next(&self.heldout.shapes, &s.shape)),
            "background" => (
                s.background.as_str(),
                next(&self.background_names, &s.background),
            ),
            _ => (s.colour.as_str(), s.colour.as_str()),
        }
    }

    fn score(&self, kind: &str) -> anyhow::Result<Scored> {
        let (o, size) = (self.o, self.heldout.size);
        let (mut scores, mut exact, mut examples) = (BTreeMap::new(), Vec::new(), Vec::new());
        for (i, s) in self.scenes.iter().enumerate() {
            let img = load_png(&o.heldout.join(&s.image))?;
            let mask: Vec<bool> = load_png(&o.heldout.join(&s.mask))?
                .pixels()
                .map(|p| p.0[0] > 127)
                .collect();
            let (from, to) = self.swap(kind, s);
            let target = s
                .caption
                .replacen(&format!(" {from} "), &format!(" {to} "), 1);
            let target = fix_article(&target);
            // The mask IoU an exact edit would score: 1 for colour, less when the shape changes.
            exact.push(match kind {
                "shape" => iou(&mask, &render(to, s.cx, s.cy, s.r, size)),
                _ => 1.0,
            });
            // Shape pixels are told from the background the edited picture should have.
            let pal = self.palette(if kind == "background" {
                to
            } else {
                &s.background
            })?;
            for &method in &o.methods {
                let seed = o.seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
                let (out, cost) = edit(
                    self.pipeline,
                    &self.inversions,
                    method,
                    i,
                    &img,
                    &s.caption,
                    &target,
                    &self.options,
                    seed,
                )?;
                let score = Score {
                    unet_calls: cost.unet_calls,
                    seconds: cost.seconds,
                    ..self.score_one(kind, to, &pal, &img, &mask, &out)
                };
                scores
                    .entry(method.name())
                    .or_insert_with(Vec::new)
                    .push(score);
                if i < o.examples && method == o.methods[0] {
                    examples.push(Example {
                        kind: kind.to_string(),
                        index: i,
                        from: s.caption.clone(),
                        to: target.clone(),
                        image: out,
                    });
                }
            }
        }
        Ok((scores, exact, examples))
    }

    /// Success, mask IoU and PSNR outside the shapes of one edited image `out` of `img`.
    fn score_one(
        &self,
        kind: &str,
        to: &str,
        pal: &Palette,
        img: &RgbImage,
        mask: &[bool],
        out: &RgbImage,
    ) -> Score {
        let size = self.heldout.size;
        let fg = pal.foreground(out);
        let union: Vec<bool> = mask.iter().zip(&fg).map(|(a, b)| *a || *b).collect();
        let outside: Vec<bool> = dilate(&union, size, 2).iter().map(|m| !m).collect();
        let success = match kind {
            "colour" | "none" => pal.colour(out, 10) == Some(to),
            "background" => {
                nearest_background(out, &outside, &self.heldout.backgrounds) == Some(to)
            }
            _ => shape_of(&fg, size, &self.heldout.shapes) == Some(to),
        };
        let kept = if kind == "background" {
            let not_mask: Vec<bool> = mask.iter().map(|m| !m).collect();
            dilate(&not_mask, size, 2).iter().map(|m| !m).collect()
        } else {
            outside
        };
        Score {
            success: f64::from(u8::from(success)),
            iou: iou(mask, &fg),
            psnr_outside: psnr(img, out, Some(&kept)),
            psnr: psnr(img, out, None),
            unet_calls: 0.0,
            seconds: 0.0,
        }
    }

    /// The report row of `method`'s edits of `kind`.
    fn row(&self, kind: &str, method: Method, v: &[Score], exact: &[f64]) -> Value {
        let (o, options) = (self.o, &self.options);
        let pick = |f: fn(&Score) -> f64| mean(&v.iter().map(f).collect::<Vec<_>>());
        let small_iou: Vec<f64> = v
            .iter()
            .zip(&self.small)
            .filter(|(_, s)| **s)
            .map(|(v, _)| v.iou)
            .collect();
        json!({
            "edit": kind, "method": method.name(), "scenes": v.len(),
            "steps": o.steps, "start_step": options.start_step, "guidance": o.guidance, "seed": o.seed,
            "inversion_guidance": options.inversion_guidance,
            "cross_replace": o.cross_replace, "self_replace": o.self_replace,
            // The round trip edits nothing: no success to score but the unchanged caption's.
            "success": (method != Method::Vae || kind == "none").then(|| pick(|s| s.success)),
            "mask_iou": pick(|s| s.iou),
            "mask_iou_small": (!small_iou.is_empty()).then(|| mean(&small_iou)), "small_scenes": small_iou.len(),
            "exact_edit_mask_iou": mean(exact),
            "psnr_outside_db": pick(|s| s.psnr_outside),
            "psnr_db": pick(|s| s.psnr),
            "unet_calls": pick(|s| s.unet_calls), "seconds": pick(|s| s.seconds),
            "per_scene": v.iter().map(|s| json!([s.success, s.iou, s.psnr_outside])).collect::<Vec<_>>(),
        })
    }
}

/// In how many scenes inversion or img2img keeps the higher IoU, when both ran.
fn comparison(kind: &str, scores: &BTreeMap<&'static str, Vec<Score>>) -> Option<Value> {
    let inv = scores.get(Method::Inversion.name())?;
    let i2i = scores.get(Method::Img2Img.name())?;
    let ahead = |a: &[Score], b: &[Score]| a.iter().zip(b).filter(|(a, b)| a.iou > b.iou).count();
    Some(json!({
        "edit": kind, "scenes": inv.len(),
        "inversion_ahead_on_iou": ahead(inv, i2i), "img2img_ahead_on_iou": ahead(i2i, inv),
    }))
}

/// The next name after `current` in `names` (cyclically): the deterministic edit target.
fn next<'a>(names: &'a [String], current: &str) -> &'a str {
    let i = names.iter().position(|n| n == current).unwrap_or(0);
    &names[(i + 1) % names.len()]
}

pub fn load_png(path: &Path) -> anyhow::Result<RgbImage> {
    Ok(image::open(path)
        .with_context(|| format!("reading {path:?}"))?
        .to_rgb8())
}

/// "a orange" → "an orange" after a word swap (and back).
fn fix_article(caption: &str) -> String {
    let words: Vec<&str> = caption.split(' ').collect();
    let mut out = Vec::with_capacity(words.len());
    for (i, w) in words.iter().enumerate() {
        let next_vowel = words
            .get(i + 1)
            .and_then(|n| n.chars().next())
            .is_some_and(|c| "aeiou".contains(c));
        out.push(match *w {
            "a" | "an" if next_vowel => "an",
            "a" | "an" => "a",
            other => other,
        });
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn articles_follow_the_swapped_word() {
        assert_eq!(
            fix_article("a orange circle on a white background"),
            "an orange circle on a white background"
        );
        assert_eq!(
            fix_article("an red star on a gray background"),
            "a red star on a gray background"
        );
    }
}
