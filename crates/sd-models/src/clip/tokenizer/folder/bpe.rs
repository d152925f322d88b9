//! The BPE model of a folder: vocabulary and merges, from `vocab.json` + `merges.txt` or from
//! `tokenizer.json`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};
use tokenizers::models::bpe::{Merges, Vocab};

use super::special_tokens::TokenSpec;
use super::{invalid, read_json_object, read_text};
use crate::error::Result;

/// vocab.json, or tokenizer.json's `model.vocab`: `{"token": id, …}`.
pub(super) fn parse_vocab(map: &Map<String, Value>, path: &Path) -> Result<Vocab> {
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
pub(super) fn read_merges(path: &Path, vocab: &Vocab) -> Result<Merges> {
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
pub(super) fn read_tokenizer_json(path: &Path) -> Result<(Vocab, Merges, Vec<TokenSpec>)> {
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
