//! `cargo xtask eval-toy`: what DDIM-inversion editing does, measured with the toy model on the
//! held-out scenes (`tests/fixtures/toy-heldout`, written by `tests/reference/train_toy.py`)
//! through the Rust pipeline.
//!
//! - Reconstruction: invert with the scene's caption, sample back from step 0 with the same
//!   caption; PSNR against the input, for several step counts at guidance 1 and 3.5.
//! - Colour edits ("a red circle …" → "a blue circle …") and shape edits ("… circle …" →
//!   "… square …"), and on request background edits ("… on a white background" → "… on a
//!   black background": the whole picture but the shape changes) and the caption kept unchanged
//!   (`--edits none`), which measures what a method alone loses; each by three methods at equal
//!   settings (N, k, guidance): `inversion` (the plain prompt swap), `img2img` (the clean latent
//!   noised to τ_k with fresh noise, then the same sampler), and `tutorial` (the diffusion course
//!   notebook's indexing: all inverse steps, then the latent one step less noisy than τ_k).
//!   Scored by pixel statistics (see `metrics.rs`): success (the edited attribute classified as
//!   the target), IoU of the shape's mask before/after (also over the small shapes alone, radius
//!   ≤ 12 px), PSNR outside the shape(s) (dilated by 2 px; for background edits, inside the
//!   shape, eroded by 2 px). Alongside: the IoU an exact edit would score (below 1 for shape
//!   edits: the new shape drawn with the old one's centre and radius), and in how many scenes
//!   inversion or img2img keeps the higher IoU.
//!
//! The methods that invert sample from one inversion of each scene (`methods::Inversions`, with
//! null-text's embeddings optimised once per scene); each edit still reports the seconds and UNet
//! passes of doing it alone, its inversion included.
//!
//! Prints tables and writes every number to `--json` (default `target/eval-toy.json`).

mod edits;
mod methods;
mod metrics;
mod report;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::tensor::Device;
use inversion::{LoadOptions, Pipeline};
use model_source::{write_atomic, write_atomic_with};
use serde_json::{Value, json};

use crate::project_root;
use edits::{Edits, Example, Heldout, Scene, load_png, mean};
use methods::{Method, reconstruct};
use metrics::psnr;

/// Shapes up to this radius (px) are scored separately: the held-out set's smallest.
const SMALL_RADIUS: f64 = 12.0;

/// `cargo xtask eval-toy` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The toy model (default tests/fixtures/models/toy).
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Held-out scenes (default tests/fixtures/toy-heldout).
    #[arg(long, value_name = "DIR")]
    heldout: Option<PathBuf>,
    /// Scenes used (default: all).
    #[arg(long, value_name = "N")]
    count: Option<usize>,
    /// img2img's noise: scene i draws seed S·1000003 + i.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// DDIM steps of the edits (as `ddim-edit edit`).
    #[arg(long, value_name = "N", default_value_t = 50)]
    steps: usize,
    /// Start step of the edits (default 30 % of N, as `ddim-edit edit --attention none`).
    #[arg(long, value_name = "K")]
    start_step: Option<usize>,
    /// Guidance of the edits (as `ddim-edit edit`).
    #[arg(long, value_name = "G", default_value_t = inversion::DEFAULT_GUIDANCE)]
    guidance: f64,
    /// Guidance of the inversion (as `ddim-edit edit`).
    #[arg(long, value_name = "G", default_value_t = inversion::DEFAULT_INVERSION_GUIDANCE)]
    inversion_guidance: f64,
    /// Fraction of the sampling steps whose cross-attention Prompt-to-Prompt replaces (as
    /// `ddim-edit edit --cross-replace`).
    #[arg(long, value_name = "F", default_value_t = inversion::algorithms::p2p::DEFAULT_CROSS_REPLACE)]
    cross_replace: f64,
    /// Fraction of the sampling steps whose self-attention Prompt-to-Prompt replaces (as
    /// `ddim-edit edit --self-replace`).
    #[arg(long, value_name = "F", default_value_t = inversion::algorithms::p2p::DEFAULT_SELF_REPLACE)]
    self_replace: f64,
    /// Comma-separated edit kinds: colour, shape, background, none (none keeps the caption: what
    /// the method alone loses).
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_values = ["colour", "shape"],
          value_parser = ["colour", "shape", "background", "none"])]
    edits: Vec<String>,
    /// Comma-separated methods.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_enum,
          default_values = ["inversion", "img2img", "tutorial"])]
    methods: Vec<Method>,
    /// Skip the reconstruction table.
    #[arg(long)]
    no_recon: bool,
    /// Write the first N edits of the first method as PNGs.
    #[arg(long, value_name = "N", default_value_t = 4)]
    examples: usize,
    /// Where to write every number (default target/eval-toy.json).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Run in the current (dev) build instead of re-running in release.
    #[arg(long)]
    dev: bool,
}

/// The settings of a run, defaults filled in.
struct Options {
    model: PathBuf,
    heldout: PathBuf,
    count: Option<usize>,
    seed: u64,
    steps: usize,
    start_step: usize,
    guidance: f64,
    inversion_guidance: f64,
    cross_replace: f64,
    self_replace: f64,
    edits: Vec<String>,
    methods: Vec<Method>,
    recon: bool,
    examples: usize,
    json: PathBuf,
    dev: bool,
}

impl TryFrom<Args> for Options {
    type Error = anyhow::Error;

    fn try_from(a: Args) -> anyhow::Result<Self> {
        let root = project_root();
        let k = a
            .start_step
            .unwrap_or_else(|| inversion::plain_start_step(a.steps));
        if k + 1 >= a.steps {
            bail!(
                "--start-step {k} leaves no step to compare (it must be below --steps {} − 1)",
                a.steps
            );
        }
        Ok(Options {
            model: a
                .model
                .unwrap_or_else(|| root.join("tests/fixtures/models/toy")),
            heldout: a
                .heldout
                .unwrap_or_else(|| root.join("tests/fixtures/toy-heldout")),
            count: a.count,
            seed: a.seed,
            steps: a.steps,
            start_step: k,
            guidance: a.guidance,
            inversion_guidance: a.inversion_guidance,
            cross_replace: a.cross_replace,
            self_replace: a.self_replace,
            edits: a.edits,
            methods: a.methods,
            recon: !a.no_recon,
            examples: a.examples,
            json: a.json.unwrap_or_else(|| root.join("target/eval-toy.json")),
            dev: a.dev,
        })
    }
}

/// Runs `cargo xtask eval-toy …`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let o = Options::try_from(args)?;
    if cfg!(debug_assertions) && !o.dev {
        return crate::rerun_in_release("eval-toy");
    }
    let heldout = Heldout::load(&o.heldout)?;
    let mut scenes = heldout.scenes.clone();
    if let Some(n) = o.count {
        scenes.truncate(n);
    }
    let p = Pipeline::load(&o.model, &LoadOptions::new(Device::flex()))
        .with_context(|| format!("loading {:?}", o.model))?;
    let start = Instant::now();
    let recon = reconstruction(&p, &o, &scenes, start)?;
    let (mut rows, mut examples, mut comparisons) = (Vec::new(), Vec::new(), Vec::new());
    let edits = Edits::new(&p, &o, &heldout, &scenes);
    for kind in &o.edits {
        let r = edits.run(kind)?;
        rows.extend(r.rows);
        comparisons.extend(r.comparison);
        examples.extend(r.examples);
        eprintln!(
            "eval-toy: {kind} edits done ({:.0} s)",
            start.elapsed().as_secs_f64()
        );
    }
    let report = json!({
        "model": o.model, "scenes": scenes.len(), "reconstruction": recon, "edits": rows,
        "inversion_vs_img2img": comparisons,
        "seconds": start.elapsed().as_secs_f64(),
    });
    println!("{}", report::table(&report));
    write(&o, &report, examples)
}

/// Reconstruction PSNR vs steps, at guidance 1 and 3.5 (none with `--no-recon`).
fn reconstruction(
    p: &Pipeline,
    o: &Options,
    scenes: &[Scene],
    start: Instant,
) -> anyhow::Result<Vec<Value>> {
    let mut recon = Vec::new();
    let recon_steps: &[usize] = if o.recon { &[10, 25, 50] } else { &[] };
    for &steps in recon_steps {
        for guidance in [1.0, 3.5] {
            let mut values = Vec::new();
            for s in scenes {
                let img = load_png(&o.heldout.join(&s.image))?;
                let out = reconstruct(p, &img, &s.caption, steps, guidance)?;
                values.push(psnr(&img, &out, None));
            }
            let worst = values.iter().copied().fold(f64::INFINITY, f64::min);
            recon.push(json!({"steps": steps, "guidance": guidance,
                              "psnr_db": mean(&values), "min_psnr_db": worst}));
            eprintln!(
                "eval-toy: reconstruction N={steps} g={guidance}: {:.2} dB ({:.0} s)",
                mean(&values),
                start.elapsed().as_secs_f64()
            );
        }
    }
    Ok(recon)
}

/// Writes the report to `--json` and the examples as PNGs beside it.
fn write(o: &Options, report: &Value, examples: Vec<Example>) -> anyhow::Result<()> {
    if let Some(dir) = o.json.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {dir:?}"))?;
    }
    write_atomic(
        &o.json,
        (serde_json::to_string_pretty(report)? + "\n").as_bytes(),
    )?;
    let example_dir = o.json.with_extension("examples");
    std::fs::create_dir_all(&example_dir)?;
    for e in examples {
        let path = example_dir.join(format!("{}-{}.png", e.kind, e.index));
        write_atomic_with(&path, |tmp| {
            e.image
                .save_with_format(tmp, image::ImageFormat::Png)
                .map_err(std::io::Error::other)
        })?;
        eprintln!("eval-toy: {path:?}: {:?} → {:?}", e.from, e.to);
    }
    eprintln!("eval-toy: wrote {:?}", o.json);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> anyhow::Result<Options> {
        let cli = crate::Cli::try_parse_from(["xtask", "eval-toy"].iter().chain(args))?;
        match cli.task {
            crate::Task::EvalToy(a) => Options::try_from(a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_follow_ddim_edit() {
        let o = parse(&[]).unwrap();
        assert_eq!((o.steps, o.start_step), (50, 15));
        assert_eq!((o.guidance, o.inversion_guidance, o.seed), (3.5, 1.0, 0));
        assert_eq!(o.edits, ["colour", "shape"]);
        assert_eq!(
            o.methods,
            [Method::Inversion, Method::Img2Img, Method::Tutorial]
        );
        assert!(o.recon && !o.dev);
        let o = parse(&["--steps", "20", "--edits", "none", "--seed", "2"]).unwrap();
        assert_eq!(
            (o.start_step, o.edits.as_slice(), o.seed),
            (6, &["none".to_string()][..], 2)
        );
        let o = parse(&[
            "--edits",
            "colour,shape,none",
            "--methods",
            "img2img,inversion",
        ])
        .unwrap();
        assert_eq!(o.edits, ["colour", "shape", "none"]);
        assert_eq!(o.methods, [Method::Img2Img, Method::Inversion]);
    }

    #[test]
    fn bad_arguments_are_clear_errors() {
        let e = parse(&["--edits", "size"]).err().unwrap().to_string();
        assert!(
            e.contains("'size'") && e.contains("colour, shape, background, none"),
            "{e}"
        );
        let e = parse(&["--methods", "sdedit"]).err().unwrap().to_string();
        assert!(e.contains("'sdedit'") && e.contains("img2img"), "{e}");
        let e = parse(&["--steps", "x"]).err().unwrap().to_string();
        assert!(e.contains("'x'") && e.contains("--steps"), "{e}");
        let e = parse(&["--steps", "1"]).err().unwrap().to_string();
        assert!(e.contains("--start-step 0 leaves no step"), "{e}");
    }
}
