//! Which special and added tokens transformers registers for a folder, with which flags.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde_json::{Map, Value};
use tokenizers::AddedToken;

use super::invalid;
use crate::error::Result;

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

/// A special or added token as transformers holds it while building the tokenizer.
#[derive(Debug, Clone)]
pub(super) struct TokenSpec {
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
    pub(super) fn parse(value: &Value, path: &Path, key: &str) -> Result<Option<Self>> {
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
pub(super) struct SpecialTokens {
    named: BTreeMap<&'static str, String>,
    pub to_add: Vec<AddedToken>,
}

impl SpecialTokens {
    /// Follows `TokenizersBackend.__init__`: the folder's added tokens by id, then each named and
    /// extra token unless its content is among those or an equal value was already listed; tokens
    /// that name a special token become special. `tokenizers` (Python, 0.23) then keeps the last
    /// flags given for a content, while the Rust crate (0.22) matches special tokens with the
    /// first ones, so repeats are merged here, last flags winning.
    pub(super) fn resolve(
        values: &Map<String, Value>,
        added: Vec<TokenSpec>,
        path: &Path,
    ) -> Result<Self> {
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
    pub(super) fn content(&self, key: &str) -> String {
        self.named.get(key).cloned().unwrap_or_default()
    }
}

/// Keys that list extra special tokens (transformers 4 and 5 spellings).
pub(super) fn is_extra_key(key: &str) -> bool {
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
pub(super) fn mark_special(map: &mut Map<String, Value>) {
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
pub(super) fn merge_extra_tokens(values: &mut Map<String, Value>, map: &Map<String, Value>) {
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
pub(super) fn parse_added_tokens_decoder(decoder: &Value, path: &Path) -> Result<Vec<TokenSpec>> {
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
