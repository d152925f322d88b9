//! What each fuzz target does with its input, shared by the libFuzzer targets
//! (`fuzz/fuzz_targets/*.rs`) and by the plain `cargo test` that replays the committed corpus
//! (`crates/inversion/tests/fuzz_corpus/mod.rs`). Every function runs a library parser on the
//! input and returns its typed error; a panic, abort or hang is the bug the fuzzer looks for.

use std::error::Error;
use std::path::Path;

use inversion::Trajectory;
use sd_models::clip::ClipTextConfig;
use sd_models::clip::ClipTokenizer;
use sd_models::unet::UNetConfig;
use sd_models::vae::VaeConfig;

/// The error a parser returned, boxed so that one signature covers every crate's error type.
pub type Outcome = Result<(), Box<dyn Error>>;

/// What a target does with one input.
pub type Target = fn(&[u8]) -> Outcome;

/// The fuzz targets, by name, and the function each runs.
pub const TARGETS: [(&str, Target); 5] = [
    ("safetensors_header", safetensors_header),
    ("config", config),
    ("trajectory", trajectory),
    ("tokenizer_folder", tokenizer_folder),
    ("single_file", single_file),
];

/// The input is a whole safetensors file (as the weight loader reads it).
pub fn safetensors_header(data: &[u8]) -> Outcome {
    sd_models::weights::parse_header(data, Path::new("fuzz.safetensors"))?;
    Ok(())
}

/// The input is the text of a config file, read by all four config parsers (each ignores the
/// keys the others use); a scheduler config that parses is also built into a schedule and asked
/// for its step counts.
pub fn config(data: &[u8]) -> Outcome {
    let text = std::str::from_utf8(data)?;
    let path = Path::new("config.json");
    let results: [Outcome; 4] = [
        UNetConfig::from_json_str(text, path)
            .map(drop)
            .map_err(Into::into),
        VaeConfig::from_json_str(text, path)
            .map(drop)
            .map_err(Into::into),
        ClipTextConfig::from_json_str(text, path)
            .map(drop)
            .map_err(Into::into),
        schedule(text),
    ];
    results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
}

fn schedule(text: &str) -> Outcome {
    let schedule = ddim::DdimSchedule::new(ddim::SchedulerConfig::from_json_str(text)?)?;
    let max = schedule.max_steps();
    for steps in [1, 50, max, max + 1] {
        if let Ok(ts) = schedule.timesteps(steps) {
            schedule.step(ts[0], steps, 0.0)?;
            schedule.inverse_step(ts[0], steps)?;
        }
    }
    Ok(())
}

/// The input is a trajectory file; the entries of one that loads are read back.
pub fn trajectory(data: &[u8]) -> Outcome {
    let device = sd_models::device::select("cpu")?;
    let t = Trajectory::from_bytes(data, Path::new("fuzz.safetensors"), &device)?;
    if !t.is_empty() {
        t.entry(t.len() - 1);
    }
    Ok(())
}

/// The files of a tokenizer folder, in the order the input gives them, separated by NUL bytes
/// (which none of them can contain); an empty or missing part is an absent file.
pub const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "tokenizer.json",
];

/// The input is a tokenizer folder (see [`TOKENIZER_FILES`]); a tokenizer that loads encodes a
/// prompt.
pub fn tokenizer_folder(data: &[u8]) -> Outcome {
    let dir = tempfile::tempdir()?;
    for (name, part) in TOKENIZER_FILES.iter().zip(data.split(|&b| b == 0)) {
        if !part.is_empty() {
            std::fs::write(dir.path().join(name), part)?;
        }
    }
    let tokenizer = ClipTokenizer::from_dir(dir.path())?;
    let ids = tokenizer.encode("A photo of a cat, in the style of <|endoftext|>!!")?;
    if ids.ids.len() != tokenizer.max_length() {
        return Err(format!("{} ids, not {}", ids.ids.len(), tokenizer.max_length()).into());
    }
    Ok(())
}

/// The input is a single-file checkpoint (written to a temporary file, as `--model FILE` opens
/// it): detection, the LDM → diffusers map with and without EMA, every component's shapes, the
/// configs derived from them, and the text encoder's tensors read back.
pub fn single_file(data: &[u8]) -> Outcome {
    use sd_models::single_file::{Part, SingleFile, derive::derive};
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, data)?;
    let file = SingleFile::open(&path)?;
    for ema in [true, false] {
        let plan = file.plan(ema)?;
        for part in [Part::Unet, Part::Vae, Part::TextEncoder] {
            let shapes = file.shapes(plan.part(part))?;
            let mut config = serde_json::json!({"num_attention_heads": 12});
            derive(part, file.family(), &shapes, &mut config);
        }
        file.weights(&plan.text_encoder)?;
    }
    Ok(())
}
