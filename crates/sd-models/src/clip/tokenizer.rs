//! CLIP's byte-level BPE tokenizer, read from a diffusers `tokenizer/` folder.
//!
//! Mirrors transformers' `CLIPTokenizer` (5.x, which is backed by the `tokenizers` library and is
//! what `CLIPTokenizerFast` was in 4.x) as diffusers' Stable Diffusion pipelines call it:
//! `tokenizer(prompt, padding="max_length", max_length=model_max_length, truncation=True)`.
//! The pipeline is the one `CLIPTokenizer.__init__` builds (Radford et al., arXiv 2103.00020):
//!
//! - normalization: NFC, every whitespace run becomes one space, lower case;
//! - pre-tokenization: CLIP's split pattern (letters runs, single digits, punctuation runs,
//!   English contractions), then GPT-2's byte-to-unicode mapping;
//! - byte-level BPE whose word-final pieces carry the `</w>` suffix;
//! - `<|startoftext|>` … `<|endoftext|>` around at most `model_max_length - 2` tokens, then
//!   padding with the folder's pad token (SD 1.x: `<|endoftext|>`; SD 2.x: `!`, id 0).
//!
//! Special and added tokens are registered exactly as transformers does, flags included (see
//! `tokenizer/folder.rs`). Two consequences worth knowing: a named token given as a plain string
//! (SD 2.x's `"pad_token": "!"`) is an unnormalized special token, so every `!` in a prompt is cut
//! out before BPE and becomes id 0 (`"hi!!"` → `hi</w> ! !`, not `hi</w> !!</w>`); and SD 1.x's
//! plain-string `"pad_token": "<|endoftext|>"` makes the end token unnormalized too, so a prompt's
//! `<|endoftext|>` is the end token but `<|ENDOFTEXT|>` is ordinary text (SD 2.x matches both).

use std::fmt;
use std::path::{Path, PathBuf};

use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{SplitDelimiterBehavior, Tokenizer};

use crate::error::Result;

mod folder;

use folder::{TokenizerFolder, invalid};

/// CLIP's pre-tokenizer pattern, as in transformers' `CLIPTokenizer` (OpenAI's
/// `simple_tokenizer.py` without its case-insensitive flag: the text is lower-cased first).
const CLIP_SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
const END_OF_WORD_SUFFIX: &str = "</w>";

/// A prompt as token ids, ready for the text encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedPrompt {
    /// Exactly `max_length` ids: start token, the prompt's tokens, end token, padding.
    pub ids: Vec<u32>,
    /// How many of the prompt's tokens were cut to make room for the end token.
    pub dropped: usize,
}

/// CLIP's tokenizer with the settings of one model folder (vocabulary, special tokens, length).
pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    dir: PathBuf,
    max_length: usize,
    max_token_id: u32,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
}

impl fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("dir", &self.dir)
            .field("vocab_size", &self.tokenizer.get_vocab_size(true))
            .field("max_length", &self.max_length)
            .field("max_token_id", &self.max_token_id)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

impl ClipTokenizer {
    /// Reads a diffusers `tokenizer/` folder as published: `vocab.json`, `merges.txt`,
    /// `special_tokens_map.json` (optional, as in transformers) and `tokenizer_config.json`
    /// (for `model_max_length` and the special tokens); vocabulary, merges and added tokens come
    /// from `tokenizer.json` instead when the folder has one.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let folder = TokenizerFolder::read(dir)?;
        let model = BPE::builder()
            .vocab_and_merges(folder.vocab, folder.merges)
            .unk_token(folder.unk_token)
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix(END_OF_WORD_SUFFIX.to_string())
            .build()
            .map_err(|e| invalid(dir, format!("cannot build the BPE model: {e}")))?;
        let mut tokenizer = Tokenizer::new(model);
        let normalizer = NormalizerSequence::new(vec![
            NFC.into(),
            Replace::new(ReplacePattern::Regex(r"\s+".into()), " ")
                .map_err(|e| invalid(dir, e.to_string()))?
                .into(),
            Lowercase.into(),
        ]);
        let split = Split::new(
            SplitPattern::Regex(CLIP_SPLIT_PATTERN.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(|e| invalid(dir, e.to_string()))?;
        // `use_regex = true` as in transformers; after CLIP's split it never splits further.
        let byte_level = ByteLevel::new(false, true, true);
        tokenizer.with_normalizer(Some(normalizer));
        tokenizer.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
            split.into(),
            byte_level.into(),
        ])));
        // After the normalizer: tokens marked `normalized` are matched in normalized text.
        tokenizer.add_tokens(&folder.added_tokens);

        let id = |content: &str| {
            tokenizer
                .token_to_id(content)
                .ok_or_else(|| invalid(dir, format!("{content:?} has no id in the vocabulary")))
        };
        let max_token_id = tokenizer
            .get_vocab(true)
            .into_values()
            .max()
            .ok_or_else(|| invalid(dir, "the vocabulary is empty"))?;
        Ok(Self {
            max_token_id,
            bos_id: id(&folder.bos_token)?,
            eos_id: id(&folder.eos_token)?,
            pad_id: id(&folder.pad_token)?,
            tokenizer,
            dir: dir.to_path_buf(),
            max_length: folder.max_length,
        })
    }

    /// Tokenizes `prompt` into exactly [`max_length`](Self::max_length) ids. A prompt too long
    /// for the model loses its last tokens (the end token is kept), with a warning.
    pub fn encode(&self, prompt: &str) -> Result<TokenizedPrompt> {
        let tokens = self.tokens(prompt)?;
        let room = self.max_length - 2;
        let kept = tokens.len().min(room);
        let dropped = tokens.len() - kept;
        if dropped > 0 {
            log::warn!(
                "prompt is {} tokens long, over CLIP's limit of {room}: dropped its last {dropped} \
                 tokens (prompt {:?}…)",
                tokens.len(),
                prompt_start(prompt),
            );
        }
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos_id);
        ids.extend_from_slice(&tokens[..kept]);
        ids.push(self.eos_id);
        ids.resize(self.max_length, self.pad_id);
        Ok(TokenizedPrompt { ids, dropped })
    }

    /// The tokens of `text` alone: no start, end or padding ids, nothing dropped.
    pub fn tokens(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| invalid(&self.dir, format!("cannot encode prompt: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The number of ids per prompt (`model_max_length`, 77 for every Stable Diffusion).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The largest id [`encode`](Self::encode) can emit: the highest of the vocabulary's and the
    /// added and special tokens'. A text encoder needs `vocab_size` above it.
    pub fn max_token_id(&self) -> u32 {
        self.max_token_id
    }

    /// The id that fills a prompt after its end token.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The id of `<|startoftext|>`.
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// The id of `<|endoftext|>`.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }
}

/// The first few words of a prompt, for messages.
fn prompt_start(prompt: &str) -> &str {
    const CHARS: usize = 40;
    match prompt.char_indices().nth(CHARS) {
        Some((end, _)) => &prompt[..end],
        None => prompt,
    }
}
