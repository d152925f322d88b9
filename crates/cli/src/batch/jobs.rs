//! The job file of `ddim-edit batch`: JSON Lines, one edit job per line. A line holds `id`,
//! `image` (a path relative to the job file, or an http(s) URL), `prompt`, `edit_prompt` (a
//! string) or `edit_prompts` (a list), and any per-photo option of `edit` under its flag's name
//! with `_` for `-`; what a line leaves out comes from the command line. A line that cannot be
//! a job (bad JSON, an unknown key, a bad id or option, an id already used) becomes an
//! [`Entry::Invalid`] that the batch records as failed, and the other lines run.

use std::collections::HashMap;
use std::path::Path;

use super::line::{JobLine, merge};
use crate::args::{Common, EditSettings};

/// The largest job file read: 64 MiB is some 100 000 jobs with long prompts.
pub const MAX_JOB_FILE_BYTES: u64 = 64 << 20;

/// The longest id: it names the output files.
pub const MAX_ID_CHARS: usize = 128;

/// The most edit prompts of one job.
pub const MAX_EDITS_PER_JOB: usize = 256;

/// Keys that apply to the whole batch: one model is loaded for all the jobs.
const BATCH_WIDE: [&str; 7] = [
    "model",
    "device",
    "dtype",
    "variant",
    "no_size_limit",
    "quiet",
    "verbose",
];

/// A job ready to run: the flags of one `edit` per edit prompt.
#[derive(Clone)]
pub struct Job {
    pub id: String,
    /// 1-based line of the job file.
    pub line: usize,
    /// `image` as the line gives it (the shard key), and resolved against the job file's folder.
    pub image_as_written: String,
    pub image: String,
    pub prompt: String,
    pub edit_prompts: Vec<String>,
    /// Output file names in the output folder, one per edit prompt.
    pub outputs: Vec<String>,
    pub common: Common,
    pub settings: EditSettings,
}

/// One non-blank line of the job file.
pub enum Entry {
    Job(Box<Job>),
    Invalid {
        line: usize,
        id: Option<String>,
        /// The line itself: its shard key.
        text: String,
        error: String,
    },
}

impl Entry {
    pub fn line(&self) -> usize {
        match self {
            Entry::Job(j) => j.line,
            Entry::Invalid { line, .. } => *line,
        }
    }

    pub fn id(&self) -> Option<&str> {
        match self {
            Entry::Job(j) => Some(&j.id),
            Entry::Invalid { id, .. } => id.as_deref(),
        }
    }

    /// What decides the shard: the photo and its prompt, or the text of an invalid line.
    pub fn shard_key(&self) -> String {
        match self {
            Entry::Job(j) => format!("{}\n{}", j.image_as_written, j.prompt),
            Entry::Invalid { text, .. } => text.clone(),
        }
    }
}

/// Reads the job file's lines into entries; `defaults` are the command line's flags.
pub fn parse(text: &str, job_dir: &Path, defaults: (&Common, &EditSettings)) -> Vec<Entry> {
    let mut line_of_id: HashMap<String, usize> = HashMap::new();
    let mut line_of_output: HashMap<String, usize> = HashMap::new();
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let (line, raw) = (i + 1, raw.trim());
        if raw.is_empty() {
            continue;
        }
        let invalid = |id: Option<String>, error: String| Entry::Invalid {
            line,
            id,
            text: raw.to_string(),
            error,
        };
        let value: serde_json::Value = match serde_json::from_str(raw) {
            Ok(v) => v,
            Err(e) => {
                entries.push(invalid(None, format!("not a JSON object: {e}")));
                continue;
            }
        };
        let id = value.get("id").and_then(|v| v.as_str()).map(String::from);
        let job = job(line, value, job_dir, defaults).and_then(|job| {
            if let Some(first) = line_of_id.get(&job.id) {
                return Err(format!("duplicate id {:?}: line {first} has it", job.id));
            }
            if let Some((name, first)) = job
                .outputs
                .iter()
                .find_map(|o| line_of_output.get(o).map(|l| (o, l)))
            {
                return Err(format!(
                    "id {:?}: its output {name:?} is already line {first}'s",
                    job.id
                ));
            }
            line_of_id.insert(job.id.clone(), line);
            for o in &job.outputs {
                line_of_output.insert(o.clone(), line);
            }
            Ok(job)
        });
        entries.push(match job {
            Ok(job) => Entry::Job(Box::new(job)),
            Err(e) => invalid(id, e),
        });
    }
    entries
}

/// One line's job: its keys checked, its options merged over the defaults.
fn job(
    line: usize,
    value: serde_json::Value,
    job_dir: &Path,
    (common, settings): (&Common, &EditSettings),
) -> Result<Job, String> {
    let object = value
        .as_object()
        .ok_or("not a JSON object ({\"id\": …, \"image\": …, …})")?;
    if let Some(key) = BATCH_WIDE.iter().find(|k| object.contains_key(**k)) {
        return Err(format!(
            "`{key}` applies to the whole batch: give --{} on the command line",
            key.replace('_', "-")
        ));
    }
    for key in ["out", "save_latents", "save_trajectory"] {
        if object.contains_key(key) {
            return Err(format!(
                "`{key}`: a batch names its outputs by id (<out-dir>/<id>.png)"
            ));
        }
    }
    let mut l: JobLine = serde_json::from_value(value).map_err(|e| e.to_string())?;
    check_id(&l.id)?;
    let listed = l.edit_prompts.is_some();
    let edit_prompts = match (l.edit_prompt.take(), l.edit_prompts.take()) {
        (Some(p), None) => vec![p],
        (None, Some(list)) if !list.is_empty() && list.len() <= MAX_EDITS_PER_JOB => list,
        (None, Some(list)) => {
            return Err(format!(
                "`edit_prompts` holds {} prompts; give 1 to {MAX_EDITS_PER_JOB}",
                list.len()
            ));
        }
        (Some(_), Some(_)) => return Err("give `edit_prompt` or `edit_prompts`, not both".into()),
        (None, None) => return Err("missing `edit_prompt` (or `edit_prompts`, a list)".into()),
    };
    let outputs = if !listed {
        vec![format!("{}.png", l.id)]
    } else {
        (0..edit_prompts.len())
            .map(|n| format!("{}-{n}.png", l.id))
            .collect()
    };
    let (mut common, mut settings) = (common.clone(), settings.clone());
    merge(&l, &mut common, &mut settings)?;
    let image = if l.image.starts_with("http://") || l.image.starts_with("https://") {
        l.image.clone()
    } else {
        job_dir.join(&l.image).display().to_string()
    };
    Ok(Job {
        id: l.id,
        line,
        image_as_written: l.image,
        image,
        prompt: l.prompt,
        edit_prompts,
        outputs,
        common,
        settings,
    })
}

/// An id names its output files: letters, digits, `-`, `_` and `.`, not starting with `.`.
fn check_id(id: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, '-' | '_' | '.');
    if id.is_empty() || id.chars().count() > MAX_ID_CHARS {
        return Err(format!("id {id:?} must be 1 to {MAX_ID_CHARS} characters"));
    }
    if id.starts_with('.') || !id.chars().all(allowed) {
        return Err(format!(
            "id {id:?} may hold only letters, digits, '-', '_' and '.', and not start with '.': it names the output file <out-dir>/<id>.png"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::method::Attention;

    /// The defaults of `ddim-edit batch jobs.jsonl --out-dir out` plus `flags`.
    fn defaults(flags: &[&str]) -> (Common, EditSettings) {
        let mut args = vec!["ddim-edit", "batch", "jobs.jsonl", "--out-dir", "out"];
        args.extend_from_slice(flags);
        match crate::args::Cli::parse_from(args).command {
            crate::args::Command::Batch(b) => (b.common, b.settings),
            _ => unreachable!(),
        }
    }

    fn parse_lines(lines: &[&str], flags: &[&str]) -> Vec<Entry> {
        let (c, s) = defaults(flags);
        parse(&lines.join("\n"), Path::new("/jobs"), (&c, &s))
    }

    fn error(e: &Entry) -> &str {
        match e {
            Entry::Invalid { error, .. } => error,
            Entry::Job(j) => panic!("line {} is a valid job", j.line),
        }
    }

    fn job(e: &Entry) -> &Job {
        match e {
            Entry::Job(j) => j,
            Entry::Invalid { error, .. } => panic!("{error}"),
        }
    }

    #[test]
    fn lines_merge_their_options_over_the_command_line() {
        let e = parse_lines(
            &[
                r#"{"id": "a", "image": "in/a.png", "prompt": "a cat", "edit_prompt": "a dog"}"#,
                "",
                r#"{"id": "b", "image": "https://x/b.png", "prompt": "p", "edit_prompts": ["q", "r"], "steps": 20, "start_step": 4, "guidance": 7.5, "size": "64x32", "attention": "p2p", "reweight": {"q": 2}, "inversion": "direct"}"#,
            ],
            &["--steps", "30", "--guidance", "5", "--cross-replace", "0.5"],
        );
        assert_eq!(e.len(), 2);
        let (a, b) = (job(&e[0]), job(&e[1]));
        assert_eq!(
            (a.line, a.image.as_str(), a.common.steps),
            (1, "/jobs/in/a.png", 30)
        );
        assert_eq!(
            (a.outputs.clone(), a.common.guidance),
            (vec!["a.png".to_string()], Some(5.0))
        );
        assert_eq!(b.line, 3);
        assert_eq!(b.image, "https://x/b.png");
        assert_eq!(b.outputs, ["b-0.png", "b-1.png"]);
        assert_eq!(
            (b.common.steps, b.common.guidance, b.common.size),
            (20, Some(7.5), Some((64, 32)))
        );
        assert_eq!(b.settings.start_step, Some(4));
        assert_eq!(b.settings.method.attention, Some(Attention::P2p));
        assert_eq!(
            b.settings.method.inversion,
            Some(inversion::Inversion::Direct)
        );
        assert_eq!(b.settings.method.reweight, [("q".to_string(), 2.0)]);
        assert_eq!(b.settings.method.cross_replace, 0.5);
        assert_ne!(e[0].shard_key(), e[1].shard_key());
    }

    #[test]
    fn bad_lines_fail_alone_with_what_is_wrong() {
        let ok = r#"{"id": "a", "image": "a.png", "prompt": "p", "edit_prompt": "q"}"#;
        let cases: [(&str, &str); 11] = [
            (
                r#"{"id": "a", "image": "b.png", "prompt": "p", "edit_prompt": "q"}"#,
                "duplicate id \"a\": line 1 has it",
            ),
            (
                r#"{"id": "../x", "image": "a.png", "prompt": "p", "edit_prompt": "q"}"#,
                "may hold only letters",
            ),
            (
                r#"{"id": ".hidden", "image": "a.png", "prompt": "p", "edit_prompt": "q"}"#,
                "not start with '.'",
            ),
            (
                r#"{"id": "c", "image": "a.png", "prompt": "p"}"#,
                "missing `edit_prompt`",
            ),
            (
                r#"{"id": "c", "image": "a.png", "prompt": "p", "edit_prompt": "q", "stpes": 3}"#,
                "unknown field `stpes`",
            ),
            (
                r#"{"id": "c", "image": "a.png", "prompt": "p", "edit_prompt": "q", "model": "toy"}"#,
                "give --model on the command line",
            ),
            (
                r#"{"id": "c", "image": "a.png", "prompt": "p", "edit_prompt": "q", "out": "x.png"}"#,
                "names its outputs by id",
            ),
            (
                r#"{"id": "c", "image": "a.png", "prompt": "p", "edit_prompt": "q", "cross_replace": 2}"#,
                "`cross_replace`: expected a fraction",
            ),
            (
                r#"{"id": "c", "image": "a.png", "prompt": "p", "edit_prompt": "q", "attention": "p3p"}"#,
                "`attention`",
            ),
            (
                r#"{"id": "c", "image": "a.png", "prompt": "p", "edit_prompts": []}"#,
                "holds 0 prompts",
            ),
            ("{\"id\": \"c\", \"image\": ", "not a JSON object"),
        ];
        for (line, expected) in cases {
            let e = parse_lines(&[ok, line], &[]);
            assert!(matches!(&e[0], Entry::Job(_)));
            let err = error(&e[1]);
            assert!(err.contains(expected), "{line}: {err}");
            assert_eq!(e[1].line(), 2);
        }
        // An output name taken by another id's list: `a` writes a-0.png, so does the id `a-0`.
        let e = parse_lines(
            &[
                r#"{"id": "a", "image": "a.png", "prompt": "p", "edit_prompts": ["q"]}"#,
                r#"{"id": "a-0", "image": "a.png", "prompt": "p", "edit_prompt": "q"}"#,
            ],
            &[],
        );
        assert!(
            error(&e[1]).contains("its output \"a-0.png\" is already line 1's"),
            "{}",
            error(&e[1])
        );
    }
}
