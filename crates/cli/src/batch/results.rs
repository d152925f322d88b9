//! The results file of a batch: one JSON line per finished job, appended with a single write
//! and synced after the job's outputs are in place, so that a line means its outputs are
//! complete. A rerun reads every `results*.jsonl` of the output folder: a job is done when a line
//! says "ok" and all its outputs exist, or "failed" (unless failed jobs are retried). Lines of
//! this shard's file that no longer count (a cut-off last line, a job to redo) are dropped by
//! rewriting the file atomically before anything runs, so every job has exactly one line.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::jobs::Entry;
use super::shard::Shard;

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Failed,
}

/// One line of the results file.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Record {
    /// The job's id (none for a line with no usable id).
    pub id: Option<String>,
    /// Its line in the job file, 1-based.
    pub line: usize,
    pub status: Status,
    /// The output files, relative to the output folder.
    pub outputs: Vec<String>,
    /// Wall time of the job, including the inversion when this job computed it.
    pub seconds: f64,
    /// UNet forward passes the job ran (the inversion's count on the job that computed it).
    pub unet_calls: u64,
    pub error: Option<String>,
}

/// The results of earlier runs, and this shard's file to append to.
pub struct Results {
    dir: PathBuf,
    path: PathBuf,
    retry_failed: bool,
    /// Own file's records, then the other files'.
    own: Vec<Record>,
    others: Vec<Record>,
    /// The own file needs rewriting (a cut-off or unreadable line).
    damaged: bool,
}

/// `results.jsonl`, or `results-I-of-N.jsonl` for shard I of N (so that shards on shared storage
/// never append to one file).
pub fn file_name(shard: Shard) -> String {
    if shard.count == 1 {
        "results.jsonl".into()
    } else {
        format!("results-{}-of-{}.jsonl", shard.index, shard.count)
    }
}

/// The readable records of a results file, and whether any line was not one.
fn read_records(path: &Path) -> Result<(Vec<Record>, bool)> {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), false)),
        Err(e) => return Err(e).with_context(|| format!("reading {path:?}")),
    };
    let mut damaged = !text.is_empty() && !text.ends_with('\n');
    let mut records = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Record>(line) {
            Ok(r) => records.push(r),
            Err(_) => damaged = true,
        }
    }
    Ok((records, damaged))
}

impl Results {
    /// Reads the results files of `dir`.
    pub fn open(dir: &Path, shard: Shard, retry_failed: bool) -> Result<Self> {
        let path = dir.join(file_name(shard));
        let (own, damaged) = read_records(&path)?;
        let mut others = Vec::new();
        let listing = std::fs::read_dir(dir).with_context(|| format!("listing {dir:?}"))?;
        for entry in listing {
            let p = entry.with_context(|| format!("listing {dir:?}"))?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if p != path && name.starts_with("results") && name.ends_with(".jsonl") {
                others.extend(read_records(&p)?.0);
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            path,
            retry_failed,
            own,
            others,
            damaged,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `r` finishes `entry`: an "ok" line of the same id whose outputs all exist, or a
    /// "failed" line of the same id and line when failures are not retried.
    fn finishes(&self, r: &Record, entry: &Entry) -> bool {
        if r.id.as_deref() != entry.id() {
            return false;
        }
        match (r.status, entry) {
            (Status::Ok, Entry::Job(job)) => {
                r.outputs == job.outputs && job.outputs.iter().all(|o| self.dir.join(o).is_file())
            }
            (Status::Ok, Entry::Invalid { .. }) => false,
            (Status::Failed, _) => !self.retry_failed && r.line == entry.line(),
        }
    }

    /// The earlier record that finishes `entry`, if any.
    pub fn finished(&self, entry: &Entry) -> Option<&Record> {
        self.own
            .iter()
            .chain(&self.others)
            .find(|r| self.finishes(r, entry))
    }

    /// Drops from this shard's file the lines of the entries about to run and any unreadable
    /// line, rewriting it atomically when that changes it.
    pub fn drop_redone(&mut self, to_run: &[&Entry]) -> Result<()> {
        // Jobs are redone by id; every line to run, valid or not, by its line and id.
        let redone_ids: HashSet<&str> = to_run
            .iter()
            .filter(|e| matches!(e, Entry::Job(_)))
            .filter_map(|e| e.id())
            .collect();
        let redone_lines: HashSet<(usize, Option<&str>)> =
            to_run.iter().map(|e| (e.line(), e.id())).collect();
        let before = self.own.len();
        self.own.retain(|r| match (r.status, r.id.as_deref()) {
            (Status::Ok, Some(id)) => !redone_ids.contains(id),
            (Status::Failed, id) => !redone_lines.contains(&(r.line, id)),
            (Status::Ok, None) => false,
        });
        if self.own.len() == before && !self.damaged {
            return Ok(());
        }
        let mut text = String::new();
        for r in &self.own {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        model_source::write_atomic(&self.path, text.as_bytes())?;
        self.damaged = false;
        Ok(())
    }

    /// Appends `record` as one line with a single write, synced.
    pub fn append(&mut self, record: Record) -> Result<()> {
        let mut line = serde_json::to_string(&record)?;
        line.push('\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("opening {:?}", self.path))?;
        f.write_all(line.as_bytes())
            .and_then(|()| f.sync_data())
            .with_context(|| format!("appending to {:?}", self.path))?;
        self.own.push(record);
        Ok(())
    }
}
