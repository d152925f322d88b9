//! Which part of a job file one process runs: shard I of N takes the jobs whose key (the photo
//! and its prompt, so that the edits of one photo share its inversion) hashes to I modulo N.
//! The first 8 bytes of the key's SHA-256, read big-endian, are the hash: the same on every
//! machine and release, and independent of the order of the lines, so N processes given the
//! same file cover every job exactly once.
//!
//! Without `--shard`, the shard comes from the engine that started the process: a Slurm array
//! task (`SLURM_ARRAY_TASK_ID`, `_MIN`, `_STEP`, `_COUNT`) or a Kubernetes Indexed Job
//! (`JOB_COMPLETION_INDEX`, with the Job's completions in `DDIM_EDIT_SHARDS`).

use sha2::{Digest, Sha256};

/// The most shards a batch is split into.
pub const MAX_SHARDS: usize = 1 << 20;

/// Shard `index` of `count`, 0-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Everything: one shard.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether the job with this key is this shard's.
    pub fn owns(&self, key: &str) -> bool {
        bucket(key, self.count) == self.index
    }

    fn new(index: usize, count: usize, source: &str) -> Result<Shard, String> {
        if count == 0 || count > MAX_SHARDS {
            return Err(format!(
                "{source}: the shard count must be 1 to {MAX_SHARDS}, got {count}"
            ));
        }
        if index >= count {
            return Err(format!(
                "{source}: shard index {index} is not below the count {count} (indices are 0..{})",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The bucket of `key` among `count`.
fn bucket(key: &str, count: usize) -> usize {
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % count as u64) as usize
}

/// `--shard I/N`.
pub fn parse(s: &str) -> Result<Shard, String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("expected I/N (e.g. 0/4: the first of 4 shards), got {s:?}"))?;
    let number = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| format!("{v:?} in --shard {s:?} is not a whole number"))
    };
    Shard::new(number(i)?, number(n)?, "--shard")
}

/// The shard set by the engine's environment (`var` reads one variable), and what set it; `None`
/// when no engine set one.
pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<(Shard, String)>, String> {
    let number = |name: &str| -> Result<Option<usize>, String> {
        var(name)
            .map(|v| {
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("{name}={v:?} is not a whole number"))
            })
            .transpose()
    };
    if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
        let source = "SLURM_ARRAY_TASK_ID".to_string();
        let count = number("SLURM_ARRAY_TASK_COUNT")?
            .ok_or("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not")?;
        let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let step = number("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
        if id < min || !(id - min).is_multiple_of(step) {
            return Err(format!(
                "SLURM_ARRAY_TASK_ID {id} is not in the array {min}, {}, … (SLURM_ARRAY_TASK_MIN, _STEP)",
                min + step
            ));
        }
        return Ok(Some((
            Shard::new((id - min) / step, count, &source)?,
            source,
        )));
    }
    if let Some(index) = number("JOB_COMPLETION_INDEX")? {
        let source = "JOB_COMPLETION_INDEX".to_string();
        let count = number("DDIM_EDIT_SHARDS")?.ok_or(
            "JOB_COMPLETION_INDEX is set but DDIM_EDIT_SHARDS is not: set it to the Job's `completions`",
        )?;
        return Ok(Some((Shard::new(index, count, &source)?, source)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        let map: HashMap<&str, &str> = vars.iter().copied().collect();
        move |name| map.get(name).map(|v| v.to_string())
    }

    /// Buckets from Python: `int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], 'big')`
    /// is 14598278634844962250 for "a" and 17026450997173998032 for "photo.png\na cat".
    #[test]
    fn buckets_are_the_sha256_prefix_modulo_the_count() {
        assert_eq!(
            bucket("a", usize::MAX),
            (14598278634844962250u64 % usize::MAX as u64) as usize
        );
        assert_eq!([2, 3, 7].map(|n| bucket("a", n)), [0, 1, 4]);
        assert_eq!([2, 3, 7].map(|n| bucket("photo.png\na cat", n)), [0, 2, 2]);
        assert_eq!([2, 3, 7].map(|n| bucket("", n)), [0, 1, 1]);
    }

    #[test]
    fn shards_cover_every_key_exactly_once() {
        for count in [1, 2, 3, 5] {
            for k in 0..200 {
                let key = format!("photos/{k}.png\na photo");
                let owners = (0..count)
                    .filter(|&index| Shard { index, count }.owns(&key))
                    .count();
                assert_eq!(owners, 1, "{key} in {count} shards");
            }
        }
    }

    #[test]
    fn the_flag_is_parsed_strictly() {
        assert_eq!(parse("1/4"), Ok(Shard { index: 1, count: 4 }));
        assert!(parse("4/4").unwrap_err().contains("not below the count 4"));
        assert!(parse("0/0").unwrap_err().contains("1 to"));
        assert!(parse("1").unwrap_err().contains("expected I/N"));
        assert!(parse("a/2").unwrap_err().contains("not a whole number"));
    }

    #[test]
    fn slurm_and_kubernetes_set_the_shard() {
        assert_eq!(from_env(env(&[])), Ok(None));
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ];
        let (shard, source) = from_env(env(&slurm)).unwrap().unwrap();
        assert_eq!(
            (shard, source.as_str()),
            (Shard { index: 1, count: 2 }, "SLURM_ARRAY_TASK_ID")
        );
        // `--array=1-7:2` runs tasks 1, 3, 5, 7.
        let stepped = [
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert_eq!(
            from_env(env(&stepped)).unwrap().unwrap().0,
            Shard { index: 2, count: 4 }
        );
        let off = [
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert!(
            from_env(env(&off))
                .unwrap_err()
                .contains("not in the array")
        );
        let no_count = [("SLURM_ARRAY_TASK_ID", "0")];
        assert!(
            from_env(env(&no_count))
                .unwrap_err()
                .contains("SLURM_ARRAY_TASK_COUNT")
        );
        let k8s = [("JOB_COMPLETION_INDEX", "2"), ("DDIM_EDIT_SHARDS", "3")];
        assert_eq!(
            from_env(env(&k8s)).unwrap().unwrap().0,
            Shard { index: 2, count: 3 }
        );
        let k8s_alone = [("JOB_COMPLETION_INDEX", "2")];
        assert!(
            from_env(env(&k8s_alone))
                .unwrap_err()
                .contains("DDIM_EDIT_SHARDS")
        );
        let bad = [("JOB_COMPLETION_INDEX", "x")];
        assert!(
            from_env(env(&bad))
                .unwrap_err()
                .contains("not a whole number")
        );
    }
}
