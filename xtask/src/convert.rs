//! `cargo xtask convert --model M --dtype f16|bf16|f32 --out DIR2`: a copy of a diffusers
//! folder (`M` as `ddim-edit --model` takes it: a folder, a cached repo id or model name, `toy`) with every `*.safetensors` weight file rewritten in another floating-point dtype — the
//! same layout and file names, so `ddim-edit --model DIR2` loads it like the original (halving
//! the disk and load time of an f32 download with `f16`).
//!
//! F32, F16, BF16 and F64 tensors are cast (through f32, rounding to nearest even); every other
//! dtype — integers such as CLIP's int64 `position_ids`, booleans, FP8 — is copied as it is, and so
//! is the `__metadata__` header. Configs and tokenizer files are copied; pickled or other-framework
//! weights (`.bin`, `.ckpt`, …) are left out. Each output file is written atomically
//! ([`model_source::write_atomic_with`]), so an interrupted conversion never leaves a truncated
//! file under a real name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use half::{bf16, f16};
use model_source::write_atomic_with;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// Weight formats that are not copied (ddim-edit reads only safetensors).
const SKIPPED: [&str; 7] = [".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".h5", ".onnx"];

/// What [`convert`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Weight files rewritten, relative to the output folder.
    pub converted: Vec<PathBuf>,
    /// Other files copied.
    pub copied: Vec<PathBuf>,
    /// Files left out (other weight formats).
    pub skipped: Vec<PathBuf>,
    /// Finite values that became infinite in the new dtype (f16 tops out at 65504).
    pub overflows: usize,
}

/// `cargo xtask convert` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A diffusers folder, or a model name / repo id in the Hugging Face cache, or `toy`.
    #[arg(long, value_name = "M", required_unless_present = "from_single_file")]
    pub model: Option<String>,
    /// A single-file SD 1.x / 2.x checkpoint (LDM layout) to write as a diffusers folder.
    #[arg(long, value_name = "FILE", conflicts_with = "model")]
    pub from_single_file: Option<PathBuf>,
    /// With --from-single-file: the folder, cached model or preset (sd-1-5, sd-2-1-base,
    /// sd-2-1) whose configs, scheduler and tokenizer to use (default: the file's family's).
    #[arg(long)]
    pub config: Option<String>,
    /// With --from-single-file: the scheduler's prediction type.
    #[arg(long, value_parser = ["epsilon", "v_prediction"])]
    pub prediction_type: Option<String>,
    /// With --from-single-file: write the trained UNet weights, not the EMA copy.
    #[arg(long)]
    pub no_ema: bool,
    /// The dtype of the float weights written: f16, bf16 or f32 (with --from-single-file:
    /// default the file's own).
    #[arg(long, value_parser = parse_dtype, required_unless_present = "from_single_file")]
    pub dtype: Option<Dtype>,
    /// The folder to write.
    #[arg(long, value_name = "DIR2")]
    pub out: PathBuf,
    /// No list of the files converted on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

impl Args {
    /// Flags that only apply to `--from-single-file`.
    pub fn check(&self) -> Result<()> {
        let single = [
            ("--config", self.config.is_some()),
            ("--prediction-type", self.prediction_type.is_some()),
            ("--no-ema", self.no_ema),
        ];
        if let (None, Some((flag, _))) = (&self.from_single_file, single.iter().find(|f| f.1)) {
            bail!("{flag} only applies with --from-single-file");
        }
        Ok(())
    }
}

/// The storage dtype of `--dtype` (not a compute dtype: safetensors' own, as written to disk).
/// Parses `f16`/`fp16`/`float16`, `bf16`/`bfloat16`, `f32`/`fp32`/`float32`.
pub fn parse_dtype(s: &str) -> Result<Dtype> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "f16" | "fp16" | "float16" | "half" => Dtype::F16,
        "bf16" | "bfloat16" => Dtype::BF16,
        "f32" | "fp32" | "float32" | "float" => Dtype::F32,
        _ => bail!("unsupported --dtype {s:?}: use f16, bf16 or f32"),
    })
}

/// Writes a copy of the diffusers folder `model` to `out` with float weights in `dtype`.
pub fn convert(model: &Path, dtype: Dtype, out: &Path) -> Result<Summary> {
    if !matches!(dtype, Dtype::F16 | Dtype::BF16 | Dtype::F32) {
        bail!("cannot convert to {dtype:?}: use F16, BF16 or F32");
    }
    if !model.join("model_index.json").is_file() && !model.join("config.json").is_file() {
        bail!("{model:?} is not a diffusers folder (no model_index.json or config.json)");
    }
    let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
    if same(model, out) {
        bail!("--out must be another folder than --model ({out:?})");
    }
    let mut summary = Summary::default();
    walk(model, Path::new(""), out, dtype, &mut summary)?;
    Ok(summary)
}

fn walk(root: &Path, rel: &Path, out: &Path, dtype: Dtype, summary: &mut Summary) -> Result<()> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {dir:?}"))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {dir:?}"))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        if name_str.starts_with('.') {
            continue; // .git, .cache (huggingface_hub's local-dir metadata), temporaries
        }
        let rel = rel.join(&name);
        let src = root.join(&rel);
        // `metadata` follows symlinks: Hugging Face snapshots are symlinks into blobs/.
        let meta = std::fs::metadata(&src).with_context(|| format!("reading {src:?}"))?;
        if meta.is_dir() {
            walk(root, &rel, out, dtype, summary)?;
            continue;
        }
        let dst = out.join(&rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {parent:?}"))?;
        }
        if name_str.ends_with(".safetensors") {
            summary.overflows += convert_file(&src, &dst, dtype)?;
            summary.converted.push(rel);
        } else if SKIPPED.iter().any(|e| name_str.ends_with(e)) {
            summary.skipped.push(rel);
        } else {
            write_atomic_with(&dst, |tmp| std::fs::copy(&src, tmp).map(|_| ()))
                .with_context(|| format!("copying {src:?}"))?;
            summary.copied.push(rel);
        }
    }
    Ok(())
}

/// Rewrites one safetensors file; returns the number of values that overflowed.
fn convert_file(src: &Path, dst: &Path, dtype: Dtype) -> Result<usize> {
    let bytes = std::fs::read(src).with_context(|| format!("reading {src:?}"))?;
    let tensors = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{src:?} is not a safetensors file"))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("reading the header of {src:?}"))?;
    let mut overflows = 0;
    let mut cast: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in tensors.tensors() {
        let (to, data) = match cast_bytes(view.data(), view.dtype(), dtype) {
            Some((data, n)) => {
                overflows += n;
                (dtype, data)
            }
            None => (view.dtype(), view.data().to_vec()),
        };
        cast.push((name, to, view.shape().to_vec(), data));
    }
    let views = cast
        .iter()
        .map(|(name, to, shape, data)| {
            Ok((name.as_str(), TensorView::new(*to, shape.clone(), data)?))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .with_context(|| format!("building the tensors of {dst:?}"))?;
    let metadata: Option<HashMap<String, String>> = header.metadata().clone();
    write_atomic_with(dst, |tmp| {
        safetensors::serialize_to_file(views, metadata, tmp).map_err(std::io::Error::other)
    })?;
    Ok(overflows)
}

/// `data` of dtype `from` as `to`, with the count of finite values that became infinite; `None`
/// when `from` is not a float dtype this converts.
fn cast_bytes(data: &[u8], from: Dtype, to: Dtype) -> Option<(Vec<u8>, usize)> {
    let values: Vec<f32> = match from {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        _ => return None,
    };
    if from == to {
        return Some((data.to_vec(), 0));
    }
    let mut overflows = 0;
    let mut out = Vec::with_capacity(values.len() * to.bitsize() / 8);
    for v in values {
        let finite = match to {
            Dtype::F16 => {
                let h = f16::from_f32(v);
                out.extend_from_slice(&h.to_le_bytes());
                h.is_finite()
            }
            Dtype::BF16 => {
                let h = bf16::from_f32(v);
                out.extend_from_slice(&h.to_le_bytes());
                h.is_finite()
            }
            _ => {
                out.extend_from_slice(&v.to_le_bytes());
                v.is_finite()
            }
        };
        if v.is_finite() && !finite {
            overflows += 1;
        }
    }
    Some((out, overflows))
}

/// `cargo xtask convert …` (see the module docs).
pub fn run(args: Args) -> Result<()> {
    args.check()?;
    let Args {
        model,
        from_single_file,
        config,
        prediction_type,
        no_ema,
        dtype,
        out,
        quiet,
    } = args;
    if let Some(file) = from_single_file {
        let source = crate::convert_single::Source {
            file,
            config,
            prediction_type,
            ema: !no_ema,
        };
        let Some(dtype) = dtype else {
            crate::convert_single::write_folder(&source, &out)?;
            println!("{}", out.display());
            return Ok(());
        };
        let staged = tempfile_dir(&out)?;
        crate::convert_single::write_folder(&source, &staged.join("model"))?;
        let result = convert(&staged.join("model"), dtype, &out);
        let _ = std::fs::remove_dir_all(&staged);
        return report(result?, dtype, &out, quiet);
    }
    let (Some(model), Some(dtype)) = (model, dtype) else {
        bail!("--model and --dtype are needed without --from-single-file");
    };
    let dir = model_source::resolve(&model)?;
    let summary = convert(&dir, dtype, &out)?;
    report(summary, dtype, &out, quiet)
}

/// A fresh folder beside `out` for a staged conversion.
fn tempfile_dir(out: &Path) -> Result<PathBuf> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = parent.join(format!(".convert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {dir:?}"))?;
    Ok(dir)
}

fn report(summary: Summary, dtype: Dtype, out: &Path, quiet: bool) -> Result<()> {
    if !quiet {
        for f in &summary.converted {
            eprintln!("converted {} to {dtype:?}", f.display());
        }
        for f in &summary.skipped {
            eprintln!("left out {} (not safetensors)", f.display());
        }
        eprintln!("copied {} other files", summary.copied.len());
        if summary.overflows > 0 {
            eprintln!(
                "warning: {} values overflowed to infinity in {dtype:?}",
                summary.overflows
            );
        }
    }
    println!("{}", out.display());
    Ok(())
}
