//! Prompts as token positions: where each word's tokens sit in the text encoder's input, and how
//! the tokens of an edited prompt line up with the source prompt's — what Prompt-to-Prompt's
//! attention edits are indexed by (Hertz et al., arXiv 2208.01626, its `seq_aligner`).

use std::ops::Range;

use sd_models::clip::ClipTokenizer;

use crate::error::{InversionError, Result};

/// A prompt's ids as the text encoder sees them (start token, tokens, end token; no padding) and
/// the positions of its words.
#[derive(Debug, Clone)]
pub struct PromptTokens {
    pub ids: Vec<u32>,
    /// Each whitespace-separated word and the positions of its tokens among `ids`.
    pub words: Vec<(String, Range<usize>)>,
}

impl PromptTokens {
    /// Tokenizes `prompt` word by word. CLIP's tokenizer splits at whitespace before its BPE, so
    /// the words' tokens laid end to end are the prompt's tokens.
    pub fn new(tokenizer: &ClipTokenizer, prompt: &str) -> Result<Self> {
        let all = tokenizer.tokens(prompt)?;
        let room = tokenizer.max_length().saturating_sub(2);
        let mut words = Vec::new();
        let mut at = 1;
        for word in prompt.split_whitespace() {
            let n = tokenizer.tokens(word)?.len();
            let span = at.min(room + 1)..(at + n).min(room + 1);
            words.push((word.to_string(), span));
            at += n;
        }
        if at - 1 != all.len() {
            return Err(InversionError::EditOption {
                flag: "--prompt",
                message: format!(
                    "the tokens of {prompt:?} word by word ({}) differ from the whole prompt's ({}): its words cannot be located",
                    at - 1,
                    all.len()
                ),
            });
        }
        let mut ids = vec![tokenizer.bos_id()];
        ids.extend_from_slice(&all[..all.len().min(room)]);
        ids.push(tokenizer.eos_id());
        Ok(Self { ids, words })
    }

    /// Token positions of every occurrence of `word`: compared without case and without the
    /// punctuation around it ("Cat," matches "cat"). Empty when the prompt lacks it.
    pub fn positions(&self, word: &str) -> Vec<usize> {
        let key = normalise(word);
        self.words
            .iter()
            .filter(|(w, _)| normalise(w) == key)
            .flat_map(|(_, span)| span.clone())
            .collect()
    }
}

fn normalise(word: &str) -> String {
    word.trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase()
}

/// For each token position of the edited prompt, the source position whose attention it takes,
/// and how much of it (1 for a token both prompts share, 0 for an inserted one).
#[derive(Debug, Clone, PartialEq)]
pub struct Alignment {
    /// `max_length` source positions.
    pub source: Vec<usize>,
    /// `max_length` weights in {0, 1}.
    pub weight: Vec<f32>,
}

impl Alignment {
    /// Word swap: both prompts have the same token count, position i takes position i.
    pub fn identity(max_length: usize) -> Self {
        Self {
            source: (0..max_length).collect(),
            weight: vec![1.0; max_length],
        }
    }

    /// Refinement: a global alignment of the two id sequences (Needleman–Wunsch with gap 0,
    /// match 1, mismatch −1, so only equal tokens pair up: a longest common subsequence). Ties
    /// prefer an insertion, then a deletion, then a match, as P2P's aligner does. Positions past
    /// the edited prompt's end token map to themselves.
    pub fn refinement(source: &[u32], target: &[u32], max_length: usize) -> Result<Self> {
        let pairs = align(source, target);
        let shared = pairs.iter().flatten().count();
        // The start and end tokens always pair; a refinement needs a word in common besides.
        if shared <= 2 {
            return Err(InversionError::EditOption {
                flag: "--edit-prompt",
                message: "shares no word with the source prompt, so its tokens cannot be aligned for a refinement (a word swap needs prompts of the same token count; --attention none edits by a plain prompt swap)".into(),
            });
        }
        let mut out = Self::identity(max_length);
        for (j, pair) in pairs.iter().enumerate().take(max_length) {
            match pair {
                Some(i) => out.source[j] = *i,
                None => {
                    out.source[j] = 0;
                    out.weight[j] = 0.0;
                }
            }
        }
        Ok(out)
    }
}

/// For each target token, the source token it aligns with, if any.
fn align(x: &[u32], y: &[u32]) -> Vec<Option<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Move {
        Left,
        Up,
        Diag,
    }
    let (n, m) = (x.len(), y.len());
    let mut score = vec![vec![0i32; m + 1]; n + 1];
    let mut moves = vec![vec![Move::Diag; m + 1]; n + 1];
    (1..=m).for_each(|j| moves[0][j] = Move::Left);
    (1..=n).for_each(|i| moves[i][0] = Move::Up);
    for i in 1..=n {
        for j in 1..=m {
            let left = score[i][j - 1];
            let up = score[i - 1][j];
            let diag = score[i - 1][j - 1] + if x[i - 1] == y[j - 1] { 1 } else { -1 };
            let best = left.max(up).max(diag);
            score[i][j] = best;
            moves[i][j] = if best == left {
                Move::Left
            } else if best == up {
                Move::Up
            } else {
                Move::Diag
            };
        }
    }
    let mut out = vec![None; m];
    let (mut i, mut j) = (n, m);
    while i > 0 || j > 0 {
        match moves[i][j] {
            Move::Diag => {
                i -= 1;
                j -= 1;
                out[j] = Some(i);
            }
            Move::Left => j -= 1,
            Move::Up => i -= 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-aligned: "a cat" → "a big cat" inserts one token; "a red big cat" → "a cat" deletes.
    #[test]
    fn refinement_pairs_shared_tokens_and_zeroes_inserted_ones() {
        // [bos, a, cat, eos] → [bos, a, big, cat, eos]
        let a = Alignment::refinement(&[9, 1, 2, 8], &[9, 1, 5, 2, 8], 7).unwrap();
        assert_eq!(a.source, vec![0, 1, 0, 2, 3, 5, 6]);
        assert_eq!(a.weight, vec![1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
        // [bos, a, red, big, cat, eos] → [bos, a, cat, eos]
        let d = Alignment::refinement(&[9, 1, 3, 5, 2, 8], &[9, 1, 2, 8], 6).unwrap();
        assert_eq!(d.source, vec![0, 1, 4, 5, 4, 5]);
        assert_eq!(d.weight, vec![1.0; 6]);
    }

    #[test]
    fn prompts_without_a_shared_word_cannot_be_refined() {
        let e = Alignment::refinement(&[9, 1, 8], &[9, 2, 3, 8], 5).unwrap_err();
        assert!(e.to_string().contains("cannot be aligned"), "{e}");
    }

    /// The tie order decides which of two equal tokens pairs: a deletion is preferred to a match
    /// at a tie, so the later source "a" is dropped and the earlier one pairs (worked by hand).
    #[test]
    fn ties_prefer_insertion_then_deletion() {
        // [bos, a, a, eos] → [bos, a, eos]
        let a = Alignment::refinement(&[9, 1, 1, 8], &[9, 1, 8], 4).unwrap();
        assert_eq!(a.source[..3], [0, 1, 3]);
    }
}
