//! How transformers 5 reads a CLIP tokenizer folder: vocabulary and merges, `model_max_length`,
//! and which special and added tokens it registers, with which flags.
//!
//! Follows `PreTrainedTokenizerBase._from_pretrained` and `TokenizersBackend.__init__`:
//! `tokenizer_config.json` gives the named tokens; a folder without `added_tokens_decoder` in it
//! (every published Stable Diffusion folder) also reads `special_tokens_map.json`, whose entries
//! win, and `tokenizer.json`'s added tokens. A token given as a plain string is special and
//! unnormalized (matched in the raw prompt); an `AddedToken` dict keeps its own flags.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde_json::{Map, Value};
use tokenizers::AddedToken;
use tokenizers::models::bpe::{Merges, Vocab};

use crate::error::{ModelError, Result};

const VOCAB_FILE: &str = "vocab.json";
const MERGES_FILE: &str = "merges.txt";
const SPECIAL_TOKENS_MAP_FILE: &str = "special_tokens_map.json";
const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
const TOKENIZER_FILE: &str = "tokenizer.json";

/// Named special tokens, in the order transformers registers them (`SPECIAL_TOKENS_ATTRIBUTES`):
/// the order decides whose flags win when two of them share a content.
const NAMED_TOKENS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// `CLIPTokenizer`'s defaults for a folder that does not name a token.
fn clip_default(key: &str) -> Option<&'static str> {
    match key {
        "bos_token" => Some("<|startoftext|>"),
        "eos_token" | "unk_token" | "pad_token" => Some("<|endoftext|>"),
        _ => None,
    }
}

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

/// A special or added token as transformers holds it while building the tokenizer.
#[derive(Debug, Clone)]
struct TokenSpec {
    content: String,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    /// `None` until set: `tokenizers`' `AddedToken` then reads it as `!special`, evaluated late.
    normalized: Option<bool>,
    special: bool,
    /// Given as a plain string, not an `AddedToken` dict: Python compares the two kinds as unequal.
    from_string: bool,
}

impl TokenSpec {
    /// A token given as a plain string or as an `AddedToken` dict (`{"content": …, …}`, with or
    /// without `"__type": "AddedToken"`); `None` for JSON `null`.
    fn parse(value: &Value, path: &Path, key: &str) -> Result<Option<Self>> {
        let flag = |map: &Map<String, Value>, name: &str| match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(invalid(
                path,
                format!("{key}.{name} should be true or false, found {other}"),
            )),
        };
        match value {
            Value::Null => Ok(None),
            Value::String(content) => Ok(Some(Self::plain(content))),
            Value::Object(map) => {
                let Some(Value::String(content)) = map.get("content") else {
                    return Err(invalid(path, format!("{key} has no string \"content\"")));
                };
                Ok(Some(Self {
                    content: content.clone(),
                    single_word: flag(map, "single_word")?.unwrap_or(false),
                    lstrip: flag(map, "lstrip")?.unwrap_or(false),
                    rstrip: flag(map, "rstrip")?.unwrap_or(false),
                    normalized: flag(map, "normalized")?,
                    special: flag(map, "special")?.unwrap_or(false),
                    from_string: false,
                }))
            }
            other => Err(invalid(
                path,
                format!("{key} should be a string or an AddedToken object, found {other}"),
            )),
        }
    }

    /// A special token given as a plain string: matched in the raw text, not normalized.
    fn plain(content: &str) -> Self {
        Self {
            content: content.to_string(),
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: Some(false),
            special: true,
            from_string: true,
        }
    }

    fn to_added(&self) -> AddedToken {
        AddedToken::from(self.content.clone(), self.special)
            .single_word(self.single_word)
            .lstrip(self.lstrip)
            .rstrip(self.rstrip)
            .normalized(self.normalized.unwrap_or(!self.special))
    }
}

/// Python's `==` between two candidate tokens: strings by content, `AddedToken`s by every flag.
impl PartialEq for TokenSpec {
    fn eq(&self, other: &Self) -> bool {
        match (self.from_string, other.from_string) {
            (true, true) => self.content == other.content,
            (false, false) => self.to_added() == other.to_added(),
            _ => false,
        }
    }
}

/// The named special tokens of a folder and the added tokens to register.
struct SpecialTokens {
    named: BTreeMap<&'static str, String>,
    to_add: Vec<AddedToken>,
}

impl SpecialTokens {
    /// Follows `TokenizersBackend.__init__`: the folder's added tokens by id, then each named and
    /// extra token unless its content is among those or an equal value was already listed; tokens
    /// that name a special token become special. `tokenizers` (Python, 0.23) then keeps the last
    /// flags given for a content, while the Rust crate (0.22) matches special tokens with the
    /// first ones, so repeats are merged here, last flags winning.
    fn resolve(values: &Map<String, Value>, added: Vec<TokenSpec>, path: &Path) -> Result<Self> {
        let mut named = BTreeMap::new();
        let mut candidates = Vec::new();
        for key in NAMED_TOKENS {
            let spec = match values.get(key) {
                Some(value) => TokenSpec::parse(value, path, key)?,
                None => None,
            };
            if let Some(spec) = spec.or_else(|| clip_default(key).map(TokenSpec::plain)) {
                named.insert(key, spec.content.clone());
                candidates.push(spec);
            }
        }
        for value in extra_tokens(values) {
            candidates.extend(TokenSpec::parse(value, path, "extra_special_tokens")?);
        }

        let added_contents: HashSet<String> = added.iter().map(|t| t.content.clone()).collect();
        let mut listed = added;
        for spec in candidates {
            if !added_contents.contains(&spec.content) && !listed.contains(&spec) {
                listed.push(spec);
            }
        }
        let named_contents: HashSet<&str> = named.values().map(String::as_str).collect();
        let mut to_add: Vec<AddedToken> = Vec::with_capacity(listed.len());
        for mut spec in listed {
            spec.special |= named_contents.contains(spec.content.as_str());
            let token = spec.to_added();
            match to_add.iter_mut().find(|t| t.content == token.content) {
                Some(earlier) => *earlier = token,
                None => to_add.push(token),
            }
        }
        Ok(Self { named, to_add })
    }

    /// The content of a named token that always has a CLIP default.
    fn content(&self, key: &str) -> String {
        self.named.get(key).cloned().unwrap_or_default()
    }
}

/// Keys that list extra special tokens (transformers 4 and 5 spellings).
fn is_extra_key(key: &str) -> bool {
    key == "additional_special_tokens" || key == "extra_special_tokens"
}

fn extra_tokens(values: &Map<String, Value>) -> impl Iterator<Item = &Value> {
    values
        .iter()
        .filter(|(k, _)| is_extra_key(k))
        .filter_map(|(_, v)| v.as_array())
        .flatten()
}

/// transformers makes every token dict of special_tokens_map.json a special `AddedToken`.
fn mark_special(map: &mut Map<String, Value>) {
    for (key, value) in map.iter_mut() {
        let tokens: Vec<&mut Value> = match value {
            Value::Array(list) if is_extra_key(key) => list.iter_mut().collect(),
            value => vec![value],
        };
        for token in tokens {
            if let Value::Object(fields) = token {
                fields.insert("special".into(), Value::Bool(true));
            }
        }
    }
}

/// Appends special_tokens_map.json's extra special tokens to the config's, skipping repeats.
fn merge_extra_tokens(values: &mut Map<String, Value>, map: &Map<String, Value>) {
    let mut list: Vec<Value> = extra_tokens(values).cloned().collect();
    for value in extra_tokens(map) {
        if !list.contains(value) {
            list.push(value.clone());
        }
    }
    values.retain(|k, _| !is_extra_key(k));
    if !list.is_empty() {
        values.insert("extra_special_tokens".into(), Value::Array(list));
    }
}

/// `added_tokens_decoder` of a newer tokenizer_config.json: `{"49406": {"content": …}, …}`.
fn parse_added_tokens_decoder(decoder: &Value, path: &Path) -> Result<Vec<TokenSpec>> {
    let Value::Object(entries) = decoder else {
        return Err(invalid(path, "added_tokens_decoder should be an object"));
    };
    let mut by_id = BTreeMap::new();
    for (id, value) in entries {
        let id: u32 = id.parse().map_err(|_| {
            invalid(
                path,
                format!("added_tokens_decoder key {id:?} is not a token id"),
            )
        })?;
        if let Some(spec) = TokenSpec::parse(value, path, "added_tokens_decoder")? {
            by_id.insert(id, spec);
        }
    }
    Ok(by_id.into_values().collect())
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
        Some(n) if n >= 2 => Ok(n),
        _ => Err(ModelError::config(
            path,
            format!("model_max_length {length} should be an integer of at least 2"),
        )),
    }
}

/// vocab.json, or tokenizer.json's `model.vocab`: `{"token": id, …}`.
fn parse_vocab(map: &Map<String, Value>, path: &Path) -> Result<Vocab> {
    map.iter()
        .map(
            |(token, id)| match id.as_u64().and_then(|id| u32::try_from(id).ok()) {
                Some(id) => Ok((token.clone(), id)),
                None => Err(invalid(
                    path,
                    format!("token {token:?} has id {id}, not a u32"),
                )),
            },
        )
        .collect()
}

/// merges.txt: an optional `#version` line, then one `left right` pair per line, by rank.
fn read_merges(path: &Path, vocab: &Vocab) -> Result<Merges> {
    let text = read_text(path, "CLIP BPE merges")?;
    let mut merges = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.starts_with("#version") {
            continue;
        }
        merges.push(parse_merge(line, path, &format!("line {}", index + 1))?);
    }
    check_merges(&merges, vocab, path)?;
    Ok(merges)
}

fn parse_merge(line: &str, path: &Path, place: &str) -> Result<(String, String)> {
    match line.split(' ').collect::<Vec<_>>()[..] {
        [left, right] => Ok((left.to_string(), right.to_string())),
        _ => Err(invalid(
            path,
            format!("{place}: expected two tokens separated by one space, found {line:?}"),
        )),
    }
}

/// Every merge must join two vocabulary tokens into a third; names the first that does not.
fn check_merges(merges: &Merges, vocab: &Vocab, path: &Path) -> Result<()> {
    for (rank, (left, right)) in merges.iter().enumerate() {
        let joined = format!("{left}{right}");
        if let Some(missing) = [left, right, &joined]
            .into_iter()
            .find(|t| !vocab.contains_key(*t))
        {
            return Err(invalid(
                path,
                format!(
                    "merge {} ({left:?} {right:?}) needs {missing:?}, absent from the vocabulary",
                    rank + 1
                ),
            ));
        }
    }
    Ok(())
}

/// tokenizer.json: vocabulary, merges and added tokens of its BPE model. transformers 5 rebuilds
/// CLIP's normalizer and pre-tokenizer itself, so only these are read.
fn read_tokenizer_json(path: &Path) -> Result<(Vocab, Merges, Vec<TokenSpec>)> {
    let json = read_json_object(path, "CLIP tokenizer")?;
    let Some(Value::Object(model)) = json.get("model") else {
        return Err(invalid(path, "no \"model\" object"));
    };
    if let Some(kind) = model.get("type").filter(|t| t.as_str() != Some("BPE")) {
        return Err(invalid(path, format!("model type {kind} is not BPE")));
    }
    let Some(Value::Object(vocab)) = model.get("vocab") else {
        return Err(invalid(path, "model has no \"vocab\" object"));
    };
    let vocab = parse_vocab(vocab, path)?;
    let Some(Value::Array(entries)) = model.get("merges") else {
        return Err(invalid(path, "model has no \"merges\" list"));
    };
    let merges = entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let place = format!("merge {}", index + 1);
            match entry {
                Value::String(line) => parse_merge(line, path, &place),
                Value::Array(pair) => match &pair[..] {
                    [Value::String(l), Value::String(r)] => Ok((l.clone(), r.clone())),
                    _ => Err(invalid(path, format!("{place} is not a pair of strings"))),
                },
                other => Err(invalid(path, format!("{place} is {other}, not a pair"))),
            }
        })
        .collect::<Result<Merges>>()?;
    check_merges(&merges, &vocab, path)?;

    let mut added = BTreeMap::new();
    for entry in json
        .get("added_tokens")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = entry.get("id").and_then(Value::as_u64);
        let (Some(id), Some(spec)) = (id, TokenSpec::parse(entry, path, "added_tokens")?) else {
            return Err(invalid(path, format!("added token {entry} has no id")));
        };
        added.insert(id, spec);
    }
    Ok((vocab, merges, added.into_values().collect()))
}

fn read_text(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ModelError::MissingFile {
            path: path.to_path_buf(),
            what: what.to_string(),
        },
        _ => ModelError::io(path, source),
    })
}

fn read_json_object(path: &Path, what: &str) -> Result<Map<String, Value>> {
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
