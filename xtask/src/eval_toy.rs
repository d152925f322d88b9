//! `cargo xtask eval-toy`: what DDIM-inversion editing does, measured with the toy model on the
//! held-out scenes (`tests/fixtures/toy-heldout`, written by `tests/reference/train_toy.py`)
//! through the Rust pipeline.
//!
//! - Reconstruction: invert with the scene's caption, sample back from step 0 with the same
//!   caption; PSNR against the input, for several step counts at guidance 1 and 3.5.
//! - Colour edits ("a red circle …" → "a blue circle …") and shape edits ("… circle …" →
//!   "… square …"), and on request (`--edits none`) the caption kept unchanged, which measures
//!   what a method alone loses; each by three methods at equal settings (N, k, guidance):
//!   `inversion` (this project's edit), `img2img` (the clean latent noised to τ_k with fresh
//!   noise, then the same sampler), and `tutorial` (the diffusion course notebook's indexing: all
//!   inverse steps, then the latent one step less noisy than τ_k). Scored by pixel statistics
//!   (see `metrics.rs`): success (the edited attribute classified as the target), IoU of the
//!   shape's mask before/after (also over the small shapes alone, radius ≤ 12 px), PSNR outside
//!   the shape(s) (dilated by 2 px). Alongside: the IoU an exact edit would score (below 1 for
//!   shape edits: the new shape drawn with the old one's centre and radius), and in how many
//!   scenes inversion or img2img keeps the higher IoU.
//!
//! Prints tables and writes every number to `--json` (default `target/eval-toy.json`).

mod metrics;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use inversion::io::{gaussian, image_to_tensor, tensor_to_image, write_atomic};
use inversion::{EditOptions, LoadOptions, NoProgress, Pipeline};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::project_root;
use metrics::{Palette, dilate, iou, psnr, render, shape_of};

const HELP: &str = "\
usage: cargo xtask eval-toy [options]

  --model DIR        the toy model (default tests/fixtures/models/toy)
  --heldout DIR      held-out scenes (default tests/fixtures/toy-heldout)
  --count N          scenes used (default: all)
  --seed S           img2img's noise: scene i draws seed S·1000003 + i (default 0)
  --steps N          DDIM steps of the edits (default 50, as `ddim-edit edit`)
  --start-step K     start step of the edits (default 30 % of N, as `ddim-edit edit`)
  --guidance G       guidance of the edits (default 3.5, as `ddim-edit edit`)
  --inversion-guidance G
                     guidance of the inversion (default 1, as `ddim-edit edit`)
  --edits LIST       comma-separated edit kinds: colour,shape,none (default colour,shape;
                     none keeps the caption: what the method alone loses)
  --methods LIST     comma-separated: inversion,img2img,tutorial (default all three)
  --no-recon         skip the reconstruction table
  --examples N       write the first N edits of the first method as PNGs (default 4)
  --json PATH        where to write every number (default target/eval-toy.json)
  --dev              run in the current (dev) build instead of re-running in release";

#[derive(Deserialize)]
struct Heldout {
    size: usize,
    colours: BTreeMap<String, [f64; 3]>,
    shapes: Vec<String>,
    backgrounds: BTreeMap<String, [f64; 3]>,
    scenes: Vec<Scene>,
}

#[derive(Deserialize, Clone)]
struct Scene {
    image: String,
    mask: String,
    caption: String,
    background: String,
    shape: String,
    colour: String,
    cx: f64,
    cy: f64,
    r: f64,
}

/// Shapes up to this radius (px) are scored separately: the held-out set's smallest.
const SMALL_RADIUS: f64 = 12.0;

struct Options {
    model: PathBuf,
    heldout: PathBuf,
    count: Option<usize>,
    seed: u64,
    steps: usize,
    start_step: usize,
    guidance: f64,
    inversion_guidance: f64,
    edits: Vec<String>,
    methods: Vec<Method>,
    recon: bool,
    examples: usize,
    json: PathBuf,
    dev: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Option<Options>> {
    let root = project_root();
    let mut o = Options {
        model: root.join("tests/fixtures/models/toy"),
        heldout: root.join("tests/fixtures/toy-heldout"),
        count: None,
        seed: 0,
        steps: 50,
        start_step: 0,
        guidance: inversion::DEFAULT_GUIDANCE,
        inversion_guidance: inversion::DEFAULT_INVERSION_GUIDANCE,
        edits: vec!["colour".into(), "shape".into()],
        methods: Method::ALL.to_vec(),
        recon: true,
        examples: 4,
        json: root.join("target/eval-toy.json"),
        dev: false,
    };
    let mut start_step = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{arg} needs a value"))
        };
        let bad = |v: &str| format!("{arg} {v:?}: expected a number");
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--dev" => o.dev = true,
            "--no-recon" => o.recon = false,
            "--edits" => {
                o.edits = list(&value()?);
                if let Some(bad) = o
                    .edits
                    .iter()
                    .find(|e| !["colour", "shape", "none"].contains(&e.as_str()))
                {
                    bail!("--edits: unknown edit kind {bad:?}; known: colour, shape, none");
                }
            }
            "--methods" => {
                o.methods = list(&value()?)
                    .iter()
                    .map(|m| Method::parse(m))
                    .collect::<anyhow::Result<_>>()?;
            }
            "--examples" => {
                let v = value()?;
                o.examples = v.parse().with_context(|| bad(&v))?;
            }
            "--inversion-guidance" => {
                let v = value()?;
                o.inversion_guidance = v.parse().with_context(|| bad(&v))?;
            }
            "--model" => o.model = value()?.into(),
            "--heldout" => o.heldout = value()?.into(),
            "--json" => o.json = value()?.into(),
            "--seed" => {
                let v = value()?;
                o.seed = v.parse().with_context(|| bad(&v))?;
            }
            "--count" => {
                let v = value()?;
                o.count = Some(v.parse().with_context(|| bad(&v))?);
            }
            "--steps" => {
                let v = value()?;
                o.steps = v.parse().with_context(|| bad(&v))?;
            }
            "--start-step" => {
                let v = value()?;
                start_step = Some(v.parse().with_context(|| bad(&v))?);
            }
            "--guidance" => {
                let v = value()?;
                o.guidance = v.parse().with_context(|| bad(&v))?;
            }
            other => bail!("unknown argument {other:?}\n{HELP}"),
        }
    }
    let k = start_step.unwrap_or_else(|| inversion::default_start_step(o.steps));
    if k + 1 >= o.steps {
        bail!(
            "--start-step {k} leaves no step to compare (it must be below --steps {} − 1)",
            o.steps
        );
    }
    o.start_step = k;
    Ok(Some(o))
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect()
}

/// The three ways of editing compared.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    Inversion,
    Img2Img,
    Tutorial,
}

impl Method {
    const ALL: [Method; 3] = [Method::Inversion, Method::Img2Img, Method::Tutorial];

    fn parse(name: &str) -> anyhow::Result<Method> {
        match name {
            "inversion" => Ok(Method::Inversion),
            "img2img" => Ok(Method::Img2Img),
            "tutorial" => Ok(Method::Tutorial),
            other => {
                bail!("--methods: unknown method {other:?}; known: inversion, img2img, tutorial")
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Method::Inversion => "inversion",
            Method::Img2Img => "img2img",
            Method::Tutorial => "tutorial (off by one)",
        }
    }
}

/// Edits `image` from `source` to `target` prompt with `method` at N, k, g.
fn edit(
    p: &Pipeline,
    method: Method,
    image: &RgbImage,
    source: &str,
    target: &str,
    o: &EditOptions,
    seed: u64,
) -> anyhow::Result<RgbImage> {
    let size = (image.width() as usize, image.height() as usize);
    let x = image_to_tensor(image, size, &p.device);
    let (n, k) = (o.steps, o.start_step);
    let start = match method {
        Method::Inversion => {
            let out = p.edit(x, source, target, o, &NoProgress)?;
            return Ok(tensor_to_image(out.image)?);
        }
        Method::Img2Img => {
            let x0 = p.encode(x)?;
            let t = p.schedule.timesteps(n)?[k] as usize;
            let a = p.schedule.alphas_cumprod()[t];
            let dims = x0.dims();
            let noise = gaussian(seed, dims.iter().product());
            let noise = Tensor::<4>::from_data(TensorData::new(noise, dims), &p.device);
            x0 * a.sqrt() + noise * (1.0 - a).sqrt()
        }
        Method::Tutorial => {
            let x0 = p.encode(x)?;
            let cond = p.conditioning(source, "", o.inversion_guidance)?;
            let trajectory = p.invert(x0, &cond, n, n, &NoProgress)?;
            trajectory.entry(n - 2 - k)
        }
    };
    let cond = p.conditioning(target, "", o.guidance)?;
    let latents = p.sample(start, &cond, n, k, &NoProgress)?;
    Ok(tensor_to_image(p.decode(latents)?)?)
}

/// Invert with the caption and sample back from step 0 with it.
fn reconstruct(
    p: &Pipeline,
    image: &RgbImage,
    caption: &str,
    steps: usize,
    guidance: f64,
) -> anyhow::Result<RgbImage> {
    let size = (image.width() as usize, image.height() as usize);
    let x0 = p.encode(image_to_tensor(image, size, &p.device))?;
    let cond = p.conditioning(caption, "", guidance)?;
    let trajectory = p.invert(x0, &cond, steps, steps, &NoProgress)?;
    let latents = p.sample(trajectory.entry(steps - 1), &cond, steps, 0, &NoProgress)?;
    Ok(tensor_to_image(p.decode(latents)?)?)
}

/// The next name after `current` in `names` (cyclically): the deterministic edit target.
fn next<'a>(names: &'a [String], current: &str) -> &'a str {
    let i = names.iter().position(|n| n == current).unwrap_or(0);
    &names[(i + 1) % names.len()]
}

fn load_png(path: &Path) -> anyhow::Result<RgbImage> {
    Ok(image::open(path)
        .with_context(|| format!("reading {path:?}"))?
        .to_rgb8())
}

/// Scores of one edit.
#[derive(Default, Clone, Copy)]
struct Score {
    success: f64,
    iou: f64,
    psnr_outside: f64,
}

fn mean(xs: &[f64]) -> f64 {
    let finite: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    finite.iter().sum::<f64>() / finite.len().max(1) as f64
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let Some(o) = parse(args)? else {
        println!("{HELP}");
        return Ok(());
    };
    if cfg!(debug_assertions) && !o.dev {
        return crate::rerun_in_release("eval-toy", args);
    }
    let text = std::fs::read_to_string(o.heldout.join("scenes.json"))
        .with_context(|| format!("reading {:?}", o.heldout.join("scenes.json")))?;
    let heldout: Heldout = serde_json::from_str(&text).context("parsing scenes.json")?;
    let mut scenes = heldout.scenes.clone();
    if let Some(n) = o.count {
        scenes.truncate(n);
    }
    let p = Pipeline::load(&o.model, &LoadOptions::new(Device::flex()))
        .with_context(|| format!("loading {:?}", o.model))?;
    let colour_names: Vec<String> = heldout.colours.keys().cloned().collect();
    let palette = |background: &str| -> anyhow::Result<Palette> {
        Ok(Palette {
            names: colour_names.clone(),
            colours: colour_names.iter().map(|c| heldout.colours[c]).collect(),
            background: *heldout
                .backgrounds
                .get(background)
                .with_context(|| format!("scenes.json has no background {background:?}"))?,
        })
    };
    let size = heldout.size;
    let start = std::time::Instant::now();

    // Reconstruction PSNR vs steps, guidance 1 and 3.5.
    let mut recon = Vec::new();
    let recon_steps: &[usize] = if o.recon { &[10, 25, 50] } else { &[] };
    for &steps in recon_steps {
        for guidance in [1.0, 3.5] {
            let mut values = Vec::new();
            for s in &scenes {
                let img = load_png(&o.heldout.join(&s.image))?;
                let out = reconstruct(&p, &img, &s.caption, steps, guidance)?;
                values.push(psnr(&img, &out, None));
            }
            recon.push(json!({"steps": steps, "guidance": guidance,
                              "psnr_db": mean(&values), "min_psnr_db": values.iter().copied().fold(f64::INFINITY, f64::min)}));
            eprintln!(
                "eval-toy: reconstruction N={steps} g={guidance}: {:.2} dB ({:.0} s)",
                mean(&values),
                start.elapsed().as_secs_f64()
            );
        }
    }

    // Edits.
    let options = EditOptions {
        steps: o.steps,
        start_step: o.start_step,
        guidance: o.guidance,
        inversion_guidance: o.inversion_guidance,
        negative_prompt: String::new(),
    };
    let mut edits = Vec::new();
    let mut examples = Vec::new();
    let mut comparisons = Vec::new();
    let small: Vec<bool> = scenes.iter().map(|s| s.r <= SMALL_RADIUS).collect();
    for kind in o.edits.iter().map(String::as_str) {
        let mut scores: BTreeMap<&str, Vec<Score>> = BTreeMap::new();
        // The mask IoU an exact edit would score: 1 for colour, less when the shape changes.
        let mut exact = Vec::new();
        for (i, s) in scenes.iter().enumerate() {
            let img = load_png(&o.heldout.join(&s.image))?;
            let mask: Vec<bool> = load_png(&o.heldout.join(&s.mask))?
                .pixels()
                .map(|p| p.0[0] > 127)
                .collect();
            let (from, to) = match kind {
                "colour" => (s.colour.as_str(), next(&colour_names, &s.colour)),
                "shape" => (s.shape.as_str(), next(&heldout.shapes, &s.shape)),
                _ => (s.colour.as_str(), s.colour.as_str()),
            };
            let target = s
                .caption
                .replacen(&format!(" {from} "), &format!(" {to} "), 1);
            let target = fix_article(&target);
            exact.push(match kind {
                "shape" => iou(&mask, &render(to, s.cx, s.cy, s.r, size)),
                _ => 1.0,
            });
            let pal = palette(&s.background)?;
            for &method in &o.methods {
                let seed = o.seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
                let out = edit(&p, method, &img, &s.caption, &target, &options, seed)?;
                let fg = pal.foreground(&out);
                let success = match kind {
                    "colour" | "none" => pal.colour(&out, 10) == Some(to),
                    _ => shape_of(&fg, size, &heldout.shapes) == Some(to),
                };
                let union: Vec<bool> = mask.iter().zip(&fg).map(|(a, b)| *a || *b).collect();
                let outside: Vec<bool> = dilate(&union, size, 2).iter().map(|m| !m).collect();
                scores.entry(method.name()).or_default().push(Score {
                    success: f64::from(u8::from(success)),
                    iou: iou(&mask, &fg),
                    psnr_outside: psnr(&img, &out, Some(&outside)),
                });
                if i < o.examples && method == o.methods[0] {
                    examples.push((kind, i, s.caption.clone(), target.clone(), out));
                }
            }
        }
        for &method in &o.methods {
            let v = &scores[method.name()];
            let pick = |f: fn(&Score) -> f64| mean(&v.iter().map(f).collect::<Vec<_>>());
            let small_iou: Vec<f64> = v
                .iter()
                .zip(&small)
                .filter(|(_, s)| **s)
                .map(|(v, _)| v.iou)
                .collect();
            edits.push(json!({
                "edit": kind, "method": method.name(), "scenes": v.len(),
                "steps": o.steps, "start_step": options.start_step, "guidance": o.guidance, "seed": o.seed,
                "inversion_guidance": options.inversion_guidance,
                "success": pick(|s| s.success), "mask_iou": pick(|s| s.iou),
                "mask_iou_small": (!small_iou.is_empty()).then(|| mean(&small_iou)), "small_scenes": small_iou.len(),
                "exact_edit_mask_iou": mean(&exact),
                "psnr_outside_db": pick(|s| s.psnr_outside),
                "per_scene": v.iter().map(|s| json!([s.success, s.iou, s.psnr_outside])).collect::<Vec<_>>(),
            }));
        }
        if let (Some(inv), Some(i2i)) = (
            scores.get(Method::Inversion.name()),
            scores.get(Method::Img2Img.name()),
        ) {
            let ahead =
                |a: &[Score], b: &[Score]| a.iter().zip(b).filter(|(a, b)| a.iou > b.iou).count();
            comparisons.push(json!({
                "edit": kind, "scenes": inv.len(),
                "inversion_ahead_on_iou": ahead(inv, i2i), "img2img_ahead_on_iou": ahead(i2i, inv),
            }));
        }
        eprintln!(
            "eval-toy: {kind} edits done ({:.0} s)",
            start.elapsed().as_secs_f64()
        );
    }

    let report = json!({
        "model": o.model, "scenes": scenes.len(), "reconstruction": recon, "edits": edits,
        "inversion_vs_img2img": comparisons,
        "seconds": start.elapsed().as_secs_f64(),
    });
    println!("{}", table(&report));
    if let Some(dir) = o.json.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {dir:?}"))?;
    }
    write_atomic(
        &o.json,
        (serde_json::to_string_pretty(&report)? + "\n").as_bytes(),
    )?;
    let example_dir = o.json.with_extension("examples");
    std::fs::create_dir_all(&example_dir)?;
    for (kind, i, from, to, img) in examples {
        let path = example_dir.join(format!("{kind}-{i}.png"));
        write_atomic(&path, &inversion::io::png_bytes(&img)?)?;
        eprintln!("eval-toy: {path:?}: {from:?} → {to:?}");
    }
    eprintln!("eval-toy: wrote {:?}", o.json);
    Ok(())
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

/// The Markdown tables of a report.
fn table(report: &Value) -> String {
    let mut t = String::new();
    let recon = report["reconstruction"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !recon.is_empty() {
        let _ = writeln!(
            t,
            "\nReconstruction (invert → sample with the caption), {} held-out scenes\n",
            report["scenes"]
        );
        t.push_str("| steps | guidance | PSNR (dB) | worst (dB) |\n|---:|---:|---:|---:|\n");
    }
    for r in &recon {
        let _ = writeln!(
            t,
            "| {} | {} | {:.2} | {:.2} |",
            r["steps"],
            r["guidance"],
            r["psnr_db"].as_f64().unwrap_or(f64::NAN),
            r["min_psnr_db"].as_f64().unwrap_or(f64::NAN)
        );
    }
    let first = &report["edits"][0];
    let _ = writeln!(
        t,
        "\nEdits at N = {}, k = {}, guidance {} (inversion {})\n",
        first["steps"], first["start_step"], first["guidance"], first["inversion_guidance"]
    );
    let _ = writeln!(
        t,
        "| edit | method | success | mask IoU | IoU, r ≤ {SMALL_RADIUS} px | PSNR outside (dB) |\n|---|---|---:|---:|---:|---:|"
    );
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    for r in report["edits"].as_array().into_iter().flatten() {
        let _ = writeln!(
            t,
            "| {} | {} | {:.0} % | {:.3} | {} | {:.2} |",
            r["edit"].as_str().unwrap_or("?"),
            r["method"].as_str().unwrap_or("?"),
            100.0 * num(&r["success"]),
            num(&r["mask_iou"]),
            r["mask_iou_small"]
                .as_f64()
                .map_or("–".to_string(), |v| format!("{v:.3}")),
            num(&r["psnr_outside_db"])
        );
    }
    t.push('\n');
    let mut kinds = Vec::new();
    for r in report["edits"].as_array().into_iter().flatten() {
        let kind = r["edit"].as_str().unwrap_or("?");
        if !kinds.contains(&kind) {
            kinds.push(kind);
            let _ = writeln!(
                t,
                "{kind}: an exact edit scores mask IoU {:.3}",
                num(&r["exact_edit_mask_iou"])
            );
        }
    }
    for c in report["inversion_vs_img2img"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            t,
            "{}: higher mask IoU by inversion in {} scenes, by img2img in {} (of {})",
            c["edit"].as_str().unwrap_or("?"),
            c["inversion_ahead_on_iou"],
            c["img2img_ahead_on_iou"],
            c["scenes"]
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_ddim_edit() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let o = parse(&[]).unwrap().unwrap();
        assert_eq!((o.steps, o.start_step), (50, 15));
        assert_eq!((o.guidance, o.inversion_guidance, o.seed), (3.5, 1.0, 0));
        let o = parse(&args(&["--steps", "20", "--edits", "none", "--seed", "2"]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (o.start_step, o.edits.as_slice(), o.seed),
            (6, &["none".to_string()][..], 2)
        );
        let e = parse(&args(&["--edits", "size"]))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unknown edit kind \"size\""), "{e}");
        let e = parse(&args(&["--steps", "1"])).err().unwrap().to_string();
        assert!(e.contains("--start-step 0 leaves no step"), "{e}");
    }

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
