//! Writing a file so that its path either keeps the old content or has the complete new one:
//! through a temporary file in the same folder (same file system, so the rename is atomic),
//! synced, then renamed. An interrupted write leaves no truncated file under the real name.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| {
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(bytes)
    })
}

/// Writes `path` atomically with `write`, which is given the temporary path to create and fill
/// (for writers that take a path, such as `safetensors::serialize_to_file`). The temporary,
/// `.{name}.{pid}.tmp` beside `path`, is removed on error.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<()> {
    remove_stale_temporaries(path);
    let tmp = temporary(path);
    let result = write(&tmp)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes several files all or none: each is first written completely (and synced) to its
/// temporary, and only when all are staged are they renamed into place. A failure while staging
/// removes the temporaries and leaves every target as it was, so a file this call did not create
/// is never lost.
pub fn write_all_atomic(files: &[(&Path, &[u8])]) -> Result<()> {
    let stage = |tmp: &Path, bytes: &[u8]| -> std::io::Result<()> {
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    let error = |path: &Path, source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    files
        .iter()
        .for_each(|(path, _)| remove_stale_temporaries(path));
    let staged: Vec<PathBuf> = files.iter().map(|(path, _)| temporary(path)).collect();
    let remove = |tmps: &[PathBuf]| tmps.iter().for_each(|t| drop(std::fs::remove_file(t)));
    for (i, (path, bytes)) in files.iter().enumerate() {
        if let Err(e) = stage(&staged[i], bytes) {
            remove(&staged[..=i]);
            return Err(error(path, e));
        }
    }
    for (i, (path, _)) in files.iter().enumerate() {
        if let Err(e) = std::fs::rename(&staged[i], path) {
            remove(&staged[i..]);
            return Err(error(path, e));
        }
    }
    Ok(())
}

/// Removes the temporaries `.{name}.{pid}.tmp` that an earlier run, killed between staging and
/// renaming, left beside `path`: those whose process no longer runs (Linux: no `/proc/{pid}`).
fn remove_stale_temporaries(path: &Path) {
    let (Some(name), Some(dir)) = (
        path.file_name(),
        temporary(path).parent().map(Path::to_path_buf),
    ) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let pid = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && Path::new("/proc/self").exists()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// `.{name}.{pid}.tmp` in `path`'s folder: hidden, and distinct between concurrent processes.
fn temporary(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(".{name}.{}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_file_and_a_failed_one_leaves_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");

        let e = write_atomic_with(&path, |tmp| {
            std::fs::write(tmp, b"partial")?;
            Err(std::io::Error::other("cut"))
        })
        .unwrap_err();
        assert!(
            matches!(&e, Error::Write { path: p, .. } if *p == path),
            "{e}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.bin"], "no temporary left");

        let missing = dir.path().join("no/such/folder/x");
        assert!(write_atomic(&missing, b"x").is_err());
    }

    #[test]
    fn a_failed_second_file_leaves_the_first_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first.png");
        std::fs::write(&first, b"old").unwrap();
        let second = dir.path().join("missing/second.bin");
        let err = write_all_atomic(&[(&first, b"new"), (&second, b"x")]).unwrap_err();
        assert!(err.to_string().contains("second.bin"), "{err}");
        assert_eq!(std::fs::read(&first).unwrap(), b"old");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "temporaries left behind");
        write_all_atomic(&[(&first, b"new"), (&dir.path().join("b"), b"b")]).unwrap();
        assert_eq!(std::fs::read(&first).unwrap(), b"new");
    }

    /// A temporary left by a killed run (its process gone) is removed by the next write; one of
    /// a process that still runs, or another file, is left alone.
    #[test]
    #[cfg(target_os = "linux")]
    fn stale_temporaries_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.png");
        // Linux pids stay below 2^22, so this one cannot be running.
        let stale = dir.path().join(".out.png.4194305.tmp");
        let live = dir.path().join(format!(
            ".out.png.{}.tmp",
            std::os::unix::process::parent_id()
        ));
        let other = dir.path().join(".other.png.4194305.tmp");
        for f in [&stale, &live, &other] {
            std::fs::write(f, b"partial").unwrap();
        }
        write_atomic(&path, b"new").unwrap();
        assert!(!stale.exists(), "the stale temporary is still there");
        assert!(live.exists() && other.exists());
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }
}
