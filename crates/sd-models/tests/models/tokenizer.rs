//! `ClipTokenizer` against transformers' `CLIPTokenizer`: exact ids for every reference prompt on
//! the SD 1.x and SD 2.x tokenizer folders, truncation counts, and errors that name the bad file.
//!
//! Fixtures: `tests/fixtures/models/tiny-sd*/tokenizer/` and `tests/fixtures/refs/prompts.json`,
//! written by the scripts in `tests/reference/` (`prompts.json` holds
//! `tokenizer(prompt, padding="max_length", max_length=77, truncation=True).input_ids`).

use std::path::{Path, PathBuf};

use sd_models::clip::ClipTokenizer;
use sd_models::error::ModelError;
use serde_json::Value;
use test_support::fixtures;

const TOKENIZER_FILES: [&str; 4] = [
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "tokenizer_config.json",
];

fn tokenizer_dir(model: &str) -> PathBuf {
    fixtures().join("models").join(model).join("tokenizer")
}

fn load(model: &str) -> ClipTokenizer {
    let dir = tokenizer_dir(model);
    ClipTokenizer::from_dir(&dir).unwrap_or_else(|e| panic!("loading {dir:?}: {e}"))
}

fn references() -> Value {
    let path = fixtures().join("refs/prompts.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {path:?}: {e}"))
}

fn as_vec<T: serde::de::DeserializeOwned>(value: &Value, what: &str) -> T {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("prompts.json {what}: {e}"))
}

/// Every reference prompt gives transformers' ids and drops `untruncated length - 77` tokens.
fn check_folder(model: &str, key: &str) {
    let refs = references();
    let prompts: Vec<String> = as_vec(&refs["prompts"], "prompts");
    let expected: Vec<Vec<u32>> = as_vec(&refs["token_ids"][key], "token_ids");
    // Lengths of the untruncated encodings, start and end tokens included.
    let lengths: Vec<usize> = as_vec(&refs["untruncated_lengths"][key], "untruncated_lengths");
    assert_eq!(prompts.len(), expected.len(), "{key}: prompts vs token_ids");
    assert_eq!(
        prompts.len(),
        lengths.len(),
        "{key}: prompts vs untruncated_lengths"
    );

    let tokenizer = load(model);
    let mut mismatches = Vec::new();
    for ((prompt, want), &length) in prompts.iter().zip(&expected).zip(&lengths) {
        let got = tokenizer.encode(prompt).expect("encoding a prompt");
        assert_eq!(got.ids.len(), tokenizer.max_length(), "{model}: {prompt:?}");
        if &got.ids != want {
            mismatches.push(format!(
                "{prompt:?}\n  expected {want:?}\n  got      {:?}",
                got.ids
            ));
        }
        let dropped = length.saturating_sub(tokenizer.max_length());
        assert_eq!(
            got.dropped, dropped,
            "{model}: tokens dropped from {prompt:?}"
        );
    }
    assert!(
        mismatches.is_empty(),
        "{model}: {} of {} prompts differ from transformers:\n{}",
        mismatches.len(),
        prompts.len(),
        mismatches.join("\n")
    );
    assert!(
        lengths.iter().any(|&n| n > tokenizer.max_length()),
        "prompts.json should hold a prompt longer than {} tokens",
        tokenizer.max_length()
    );
}

#[test]
fn sd1_folder_matches_transformers() {
    check_folder("tiny-sd1", "sd1");
}

#[test]
fn sd2_folder_matches_transformers() {
    check_folder("tiny-sd2", "sd2");
    check_folder("tiny-sd2-v", "sd2");
}

#[test]
fn special_ids_come_from_the_folder() {
    for (model, pad) in [("tiny-sd1", 49407), ("tiny-sd2", 0)] {
        let tokenizer = load(model);
        assert_eq!(tokenizer.max_length(), 77, "{model}");
        assert_eq!(tokenizer.bos_id(), 49406, "{model}");
        assert_eq!(tokenizer.eos_id(), 49407, "{model}");
        assert_eq!(tokenizer.pad_id(), pad, "{model}");
    }
}

/// SD 2.x's pad token `"!"` is a special token, so transformers cuts every `!` out before BPE:
/// "hello!!" is `hello</w> ! !` there, and `hello</w> !!</w>` with SD 1.x's folder.
/// Ids from transformers 5.23 `CLIPTokenizer`.
#[test]
fn sd2_pad_token_splits_exclamation_marks() {
    let head = |model: &str| load(model).encode("hello!!").expect("encoding").ids[..6].to_vec();
    assert_eq!(head("tiny-sd1"), [49406, 3306, 748, 49407, 49407, 49407]);
    assert_eq!(head("tiny-sd2"), [49406, 3306, 0, 0, 49407, 0]);
}

/// A copy of the SD 1.x tokenizer folder, minus `skip`, in a fresh temporary directory.
fn scratch_copy(name: &str, skip: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("sd-models-tokenizer-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a temporary directory");
    for file in TOKENIZER_FILES.into_iter().filter(|f| *f != skip) {
        std::fs::copy(tokenizer_dir("tiny-sd1").join(file), dir.join(file)).expect("copying");
    }
    dir
}

fn load_error(dir: &Path) -> ModelError {
    let result = ClipTokenizer::from_dir(dir);
    let _ = std::fs::remove_dir_all(dir);
    match result {
        Ok(_) => panic!("{dir:?} should not load"),
        Err(e) => e,
    }
}

#[test]
fn missing_vocab_is_named() {
    let error = load_error(&scratch_copy("no-vocab", "vocab.json"));
    assert!(matches!(error, ModelError::MissingFile { .. }), "{error:?}");
    assert!(error.to_string().contains("vocab.json"), "{error}");
}

#[test]
fn corrupt_merges_are_named() {
    for (name, merges) in [
        ("merges-syntax", "#version: 0.2\ni n\nnot a merge line\n"),
        ("merges-vocab", "#version: 0.2\ni n\nqq\u{1F600} zz\n"),
    ] {
        let dir = scratch_copy(name, "");
        std::fs::write(dir.join("merges.txt"), merges).expect("writing merges.txt");
        let error = load_error(&dir);
        assert!(matches!(error, ModelError::Tokenizer { .. }), "{error:?}");
        assert!(error.to_string().contains("merges.txt"), "{error}");
    }
}

#[test]
fn malformed_json_is_named() {
    for file in [
        "special_tokens_map.json",
        "tokenizer_config.json",
        "vocab.json",
    ] {
        let dir = scratch_copy(&format!("bad-{file}"), "");
        std::fs::write(dir.join(file), "{\"pad_token\": ").expect("writing");
        let error = load_error(&dir);
        assert!(
            matches!(error, ModelError::Tokenizer { .. }),
            "{file}: {error:?}"
        );
        assert!(error.to_string().contains(file), "{error}");
    }
}

/// The largest id a prompt can hold, which the text encoder's `vocab_size` must exceed: the end
/// token, the last of CLIP's vocabulary.
#[test]
fn max_token_id_is_the_last_special_token() {
    for model in ["tiny-sd1", "tiny-sd2"] {
        assert_eq!(load(model).max_token_id(), 49407, "{model}");
    }
}
