//! Writing a command's outputs: all or none, and never at the cost of a file this run did not
//! create. Every output is first written completely to a temporary file beside its target; only
//! when all are staged are they renamed into place, so a failure on the second output leaves the
//! first output's old content untouched. Targets are checked before any compute.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use image::RgbImage;

/// One output of a command: the flag that named it, its path and its bytes.
pub struct Output<'a> {
    pub flag: &'static str,
    pub path: &'a Path,
    pub bytes: Vec<u8>,
}

/// The folder a file is written in (`.` for a bare file name).
fn folder(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The path with its folder resolved, so that `x.png` and `./x.png` compare equal.
fn resolved(path: &Path) -> PathBuf {
    let dir = std::fs::canonicalize(folder(path)).unwrap_or_else(|_| folder(path).into());
    dir.join(path.file_name().unwrap_or_default())
}

/// Checks, before any compute, that every target can be written: its folder exists, it is not a
/// folder itself, and no two flags name the same file.
pub fn check_targets(targets: &[(&'static str, &Path)]) -> Result<()> {
    for (i, (flag, path)) in targets.iter().enumerate() {
        if path.file_name().is_none() || path.is_dir() {
            bail!("{flag} {path:?} is a folder; expected a file name");
        }
        let dir = folder(path);
        if !dir.is_dir() {
            bail!("{flag} {path:?}: the folder {dir:?} does not exist");
        }
        for (other, other_path) in &targets[..i] {
            if resolved(path) == resolved(other_path) {
                bail!("{other} and {flag} both name {path:?}; give each output its own file");
            }
        }
    }
    Ok(())
}

/// Writes every output or none of them (see the module header).
pub fn write_all(outputs: Vec<Output<'_>>) -> Result<()> {
    let files: Vec<(&Path, &[u8])> = outputs.iter().map(|o| (o.path, &o.bytes[..])).collect();
    model_source::write_all_atomic(&files).map_err(|e| {
        let flag = match &e {
            model_source::Error::Write { path, .. } => outputs
                .iter()
                .find(|o| o.path == path.as_path())
                .map_or("output", |o| o.flag),
            _ => "output",
        };
        anyhow::Error::new(e).context(flag)
    })
}

/// PNG bytes of an image.
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .context("encoding the PNG")?;
    Ok(out.into_inner())
}
