//! The editing-method flags of `edit`: which inversion keeps the source on the photo's path, and
//! Prompt-to-Prompt's attention control with its options.

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use inversion::{Inversion, P2pOptions};

/// Attention control of an edit.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attention {
    /// A plain prompt swap: the edit prompt's branch is sampled on its own.
    None,
    /// Prompt-to-Prompt: the edit branch takes the source branch's attention maps.
    P2p,
}

#[derive(Args, Debug, Clone)]
pub struct MethodArgs {
    /// How the photo is inverted and the source kept on its path: `ddim` (plain),
    /// `negative-prompt` (the source prompt's states as the unconditional branch), `null-text`
    /// (per-step unconditional states optimised by 10 Adam iterations of UNet forward + backward
    /// passes, so that guided sampling retraces the photo), `direct` (the source branch reset to
    /// the inversion's latents every step and the edit branch corrected by the same amount; with
    /// --attention p2p). Default: `direct` with --attention p2p, `ddim` with --attention none.
    #[arg(long, value_parser = parse_inversion)]
    pub inversion: Option<Inversion>,
    /// Attention control: `none` (plain prompt swap) or `p2p` (Prompt-to-Prompt: word swap for
    /// prompts of the same token count, refinement when words are added or removed). Default:
    /// `p2p` for `edit` and `batch`, `none` for `sample`.
    #[arg(long, value_enum)]
    pub attention: Option<Attention>,
    /// Fraction of the sampling steps whose cross-attention the edit takes from the source (p2p).
    #[arg(long, default_value_t = inversion::algorithms::p2p::DEFAULT_CROSS_REPLACE, value_parser = parse_fraction)]
    pub cross_replace: f64,
    /// Fraction of the sampling steps whose self-attention the edit takes from the source, at the
    /// layers of at most 16×16 query tokens (p2p).
    #[arg(long, default_value_t = inversion::algorithms::p2p::DEFAULT_SELF_REPLACE, value_parser = parse_fraction)]
    pub self_replace: f64,
    /// `WORD=FACTOR`: scales the edit prompt's cross-attention to WORD by FACTOR (p2p; repeatable).
    #[arg(long, value_name = "WORD=FACTOR", value_parser = parse_reweight)]
    pub reweight: Vec<(String, f64)>,
    /// Words (of either prompt) whose attention marks the region that may change; the rest keeps
    /// the source's latents: mask = their cross-attention at 16×16 or finer, summed over steps,
    /// dilated 3×3, normalised to its maximum and cut at 0.3, from 20 % of the steps on (p2p).
    #[arg(long, value_name = "WORD", num_args = 1..)]
    pub blend_words: Vec<String>,
    /// Local blend without words: the mask is where the edit prompt changes the guided noise
    /// prediction (|ε̂_edit − ε̂_source| averaged over channels, summed over steps, normalised to
    /// its maximum and cut at 0.3), from 20 % of the steps on (p2p; not with --blend-words).
    #[arg(long)]
    pub blend_auto: bool,
    /// Fraction of the sampling steps whose edit takes the source's features at the second up
    /// block's second resnet (Plug-and-Play feature injection; 0.8 is the paper's): holds the
    /// layout for edits of colour or material, keeps shapes from changing (p2p; default 0).
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub feature_replace: f64,
}

impl MethodArgs {
    /// The inversion and the attention options, after checking that the flags fit together;
    /// `default` is the command's attention control when --attention is not given.
    pub fn method(&self, default: Attention) -> Result<(Inversion, Option<P2pOptions>)> {
        let attention = self.attention.unwrap_or(default);
        let inversion = self
            .inversion
            .unwrap_or_else(|| inversion::default_inversion(attention == Attention::P2p));
        if attention == Attention::None {
            let p2p_only = [
                ("--reweight", !self.reweight.is_empty()),
                ("--blend-words", !self.blend_words.is_empty()),
                ("--blend-auto", self.blend_auto),
                ("--feature-replace", self.feature_replace != 0.0),
            ];
            if let Some((flag, _)) = p2p_only.iter().find(|(_, given)| *given) {
                bail!("{flag} needs --attention p2p");
            }
            return Ok((inversion, None));
        }
        let options = P2pOptions {
            cross_replace: self.cross_replace,
            self_replace: self.self_replace,
            reweight: self.reweight.clone(),
            blend_words: self.blend_words.clone(),
            blend_auto: self.blend_auto,
            feature_replace: self.feature_replace,
        };
        Ok((inversion, Some(options)))
    }
}

pub(crate) fn parse_inversion(s: &str) -> Result<Inversion, String> {
    s.parse()
}

/// A fraction of the steps, in [0, 1].
pub(crate) fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "expected a fraction of the steps in [0, 1], got {s:?}"
        )),
    }
}

/// `WORD=FACTOR`, the factor a finite number.
pub(crate) fn parse_reweight(s: &str) -> Result<(String, f64), String> {
    let (word, factor) = s
        .split_once('=')
        .ok_or_else(|| format!("expected WORD=FACTOR (e.g. fluffy=2), got {s:?}"))?;
    let word = word.trim();
    match factor.trim().parse::<f64>() {
        Ok(f) if f.is_finite() && !word.is_empty() => Ok((word.to_string(), f)),
        _ => Err(format!(
            "expected WORD=FACTOR with a finite FACTOR (e.g. fluffy=2), got {s:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(inversion: Option<Inversion>, attention: Option<Attention>) -> MethodArgs {
        MethodArgs {
            inversion,
            attention,
            cross_replace: inversion::algorithms::p2p::DEFAULT_CROSS_REPLACE,
            self_replace: inversion::algorithms::p2p::DEFAULT_SELF_REPLACE,
            reweight: Vec::new(),
            blend_words: Vec::new(),
            blend_auto: false,
            feature_replace: 0.0,
        }
    }

    /// The flags that act on the source branch are refused without attention control, by name.
    #[test]
    fn structure_flags_need_attention_control() {
        let mut a = args(None, Some(Attention::None));
        a.blend_auto = true;
        let e = a.method(Attention::P2p).unwrap_err().to_string();
        assert_eq!(e, "--blend-auto needs --attention p2p");
        a.blend_auto = false;
        a.feature_replace = 0.8;
        let e = a.method(Attention::P2p).unwrap_err().to_string();
        assert_eq!(e, "--feature-replace needs --attention p2p");
        let (_, p2p) = args(None, None).method(Attention::P2p).unwrap();
        assert_eq!(
            p2p.map(|o| (o.blend_auto, o.feature_replace)),
            Some((false, 0.0))
        );
        assert!(parse_fraction("1.5").is_err());
    }

    /// With no method flag, `edit` is Prompt-to-Prompt over direct inversion and `sample` a plain
    /// DDIM continuation; `--attention none` alone brings `ddim` back with it.
    #[test]
    fn the_inversion_follows_the_attention_control_unless_named() {
        let given = |i, a, default| args(i, a).method(default).unwrap();
        let p2p = Some(P2pOptions::default());
        assert_eq!(
            given(None, None, Attention::P2p),
            (Inversion::Direct, p2p.clone())
        );
        assert_eq!(given(None, None, Attention::None), (Inversion::Ddim, None));
        let none = Some(Attention::None);
        assert_eq!(given(None, none, Attention::P2p), (Inversion::Ddim, None));
        let named = Some(Inversion::NullText);
        assert_eq!(
            given(named, None, Attention::P2p),
            (Inversion::NullText, p2p)
        );
        let direct = args(Some(Inversion::Direct), none);
        // Direct without control is refused later, by `check_method`, naming --inversion.
        assert_eq!(
            direct.method(Attention::P2p).unwrap(),
            (Inversion::Direct, None)
        );
    }
}
