//! How transformers 5 reads a CLIP tokenizer folder: vocabulary and merges, `model_max_length`,
//! and which special and added tokens it registers, with which flags.
//!
//! Follows `PreTrainedTokenizerBase._from_pretrained` and `TokenizersBackend.__init__`:
//! `tokenizer_config.json` gives the named tokens; a folder without `added_tokens_decoder` in it
//! (every published Stable Diffusion folder) also reads `special_tokens_map.json`, whose entries
//! win, and `tokenizer.json`'s added tokens. A token given as a plain string is special and
//! unnormalized (matched in the raw prompt); an `AddedToken` dict keeps its own flags.

mod bpe;
mod special_tokens;

use std::path::Path;

use serde_json::{Map, Value};
use tokenizers::AddedToken;
use tokenizers::models::bpe::{Merges, Vocab};

use crate::config::{MAX_POSITIONS, at_most};
use crate::error::{ModelError, Result};
use bpe::{parse_vocab, read_merges, read_tokenizer_json};
use special_tokens::{
    SpecialTokens, is_extra_key, mark_special, merge_extra_tokens, parse_added_tokens_decoder,
};

const VOCAB_FILE: &str = "vocab.json";
const MERGES_FILE: &str = "merges.txt";
const SPECIAL_TOKENS_MAP_FILE: &str = "special_tokens_map.json";
const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
const TOKENIZER_FILE: &str = "tokenizer.json";

/// What a tokenizer folder says, ready to build the `tokenizers` pipeline from.
pub(super) struct TokenizerFolder {
    pub vocab: Vocab,
    /// By rank, highest priority first.
    pub merges: Merges,
    /// Special and added tokens, in registration order, one per content.
    pub added_tokens: Vec<AddedToken>,
    pub bos_token: String,
    pub eos_token: String,
    pub unk_token: String,
    pub pad_token: String,
    /// `model_max_length`: how many ids a prompt becomes.
    pub max_length: usize,
}

impl TokenizerFolder {
    /// Reads `tokenizer_config.json`, `special_tokens_map.json` and either `tokenizer.json` or
    /// `vocab.json` + `merges.txt`, as `CLIPTokenizer.from_pretrained` does.
    pub fn read(dir: &Path) -> Result<Self> {
        let config_path = dir.join(TOKENIZER_CONFIG_FILE);
        let config = read_json_object(&config_path, "CLIP tokenizer config")?;
        let max_length = max_length(&config, &config_path)?;

        let tokenizer_json = dir.join(TOKENIZER_FILE);
        let (vocab, merges, file_added) = if tokenizer_json.is_file() {
            read_tokenizer_json(&tokenizer_json)?
        } else {
            let vocab_path = dir.join(VOCAB_FILE);
            let vocab_json = read_json_object(&vocab_path, "CLIP vocabulary")?;
            let vocab = parse_vocab(&vocab_json, &vocab_path)?;
            let merges = read_merges(&dir.join(MERGES_FILE), &vocab)?;
            (vocab, merges, Vec::new())
        };

        let mut values = config.clone();
        let added = match config.get("added_tokens_decoder") {
            Some(decoder) => parse_added_tokens_decoder(decoder, &config_path)?,
            None => {
                let map_path = dir.join(SPECIAL_TOKENS_MAP_FILE);
                if map_path.is_file() {
                    let mut map = read_json_object(&map_path, "CLIP special tokens map")?;
                    mark_special(&mut map);
                    merge_extra_tokens(&mut values, &map);
                    values.extend(map.into_iter().filter(|(k, _)| !is_extra_key(k)));
                }
                file_added
            }
        };
        let specials = SpecialTokens::resolve(&values, added, &config_path)?;
        Ok(Self {
            vocab,
            merges,
            bos_token: specials.content("bos_token"),
            eos_token: specials.content("eos_token"),
            unk_token: specials.content("unk_token"),
            pad_token: specials.content("pad_token"),
            added_tokens: specials.to_add,
            max_length,
        })
    }
}

/// `model_max_length`: how many ids a prompt becomes.
fn max_length(config: &Map<String, Value>, path: &Path) -> Result<usize> {
    for side in ["padding_side", "truncation_side"] {
        if let Some(value) = config.get(side).filter(|v| v.as_str() != Some("right")) {
            return Err(ModelError::config(
                path,
                format!("{side} {value} is not supported, only \"right\""),
            ));
        }
    }
    let length = config
        .get("model_max_length")
        .ok_or_else(|| ModelError::config(path, "model_max_length is missing"))?;
    match length.as_u64().and_then(|n| usize::try_from(n).ok()) {
        Some(n) if n >= 2 => at_most(path, "model_max_length", n, MAX_POSITIONS).map(|()| n),
        _ => Err(ModelError::config(
            path,
            format!("model_max_length {length} should be an integer of at least 2"),
        )),
    }
}

pub(super) fn read_text(path: &Path, what: &str) -> Result<String> {
    crate::config::read_text(path, what)
}

pub(super) fn read_json_object(path: &Path, what: &str) -> Result<Map<String, Value>> {
    let text = read_text(path, what)?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid(path, "expected a JSON object")),
        Err(e) => Err(invalid(path, format!("malformed JSON: {e}"))),
    }
}

/// A tokenizer file that cannot be used, and why.
pub(super) fn invalid(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Tokenizer {
        path: path.to_path_buf(),
        message: message.into(),
    }
}
