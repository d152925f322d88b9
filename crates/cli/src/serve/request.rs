//! The body of `POST /api/jobs`: an edit of an uploaded photo, checked field by field into the
//! library's [`EditOptions`], and written back as the equivalent `ddim-edit edit` command.

use inversion::algorithms::p2p::{DEFAULT_CROSS_REPLACE, DEFAULT_SELF_REPLACE};
use inversion::{EditOptions, Inversion, P2pOptions};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::limits::{MAX_PROMPT_CHARS, MAX_STEPS, MAX_WORDS};
use crate::method::{Attention, MethodArgs};

/// A reweighting of one word of the edit prompt (Prompt-to-Prompt).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Reweight {
    pub word: String,
    pub factor: f64,
}

/// An edit job as the page and the API send it; absent fields take `ddim-edit edit`'s defaults.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EditRequest {
    /// The id `POST /api/images` gave the photo.
    pub image: String,
    /// A prompt describing the photo.
    pub prompt: String,
    /// The prompt describing the wanted result.
    pub edit_prompt: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_step: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guidance: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inversion_guidance: Option<f64>,
    #[serde(default)]
    pub negative_prompt: String,
    /// `ddim`, `negative-prompt` or `direct`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inversion: Option<String>,
    /// `none` or `p2p`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cross_replace: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_replace: Option<f64>,
    #[serde(default)]
    pub reweight: Vec<Reweight>,
    #[serde(default)]
    pub blend_words: Vec<String>,
    #[serde(default)]
    pub blend_auto: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_replace: Option<f64>,
}

/// What the server's flags set: the defaults of the page's fields.
#[derive(Debug, Clone, Serialize)]
pub struct Defaults {
    pub steps: usize,
    pub guidance: f64,
    pub inversion_guidance: f64,
    /// `edit`'s: Prompt-to-Prompt over direct inversion from step 0 (`none` → `ddim` from 30 %).
    pub attention: &'static str,
    pub inversion: &'static str,
}

fn bad(field: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::field(field, message)
}

fn prompt(field: &'static str, text: &str, required: bool) -> Result<(), ApiError> {
    if required && text.trim().is_empty() {
        return Err(bad(field, "must not be empty"));
    }
    if text.chars().count() > MAX_PROMPT_CHARS {
        return Err(bad(
            field,
            format!("is longer than {MAX_PROMPT_CHARS} characters"),
        ));
    }
    Ok(())
}

fn finite(field: &'static str, value: Option<f64>, default: f64) -> Result<f64, ApiError> {
    match value {
        Some(v) if !v.is_finite() => Err(bad(field, "must be a finite number")),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

fn fraction(field: &'static str, value: Option<f64>, default: f64) -> Result<f64, ApiError> {
    let v = finite(field, value, default)?;
    if !(0.0..=1.0).contains(&v) {
        return Err(bad(
            field,
            format!("must be a fraction of the steps in [0, 1], got {v}"),
        ));
    }
    Ok(v)
}

impl EditRequest {
    /// The library's options, every field checked (what needs the model, the prompts' tokens for
    /// Prompt-to-Prompt, is checked by the caller with [`inversion::check_method`]).
    pub fn options(&self, d: &Defaults) -> Result<EditOptions, ApiError> {
        prompt("prompt", &self.prompt, true)?;
        prompt("edit_prompt", &self.edit_prompt, true)?;
        prompt("negative_prompt", &self.negative_prompt, false)?;
        let steps = self.steps.unwrap_or(d.steps);
        if steps == 0 || steps > MAX_STEPS {
            return Err(bad(
                "steps",
                format!("must be in 1..={MAX_STEPS}, got {steps}"),
            ));
        }
        let (inversion, attention) = self.method()?;
        let start_step = self
            .start_step
            .unwrap_or_else(|| inversion::default_start_step(steps, attention.is_some()));
        if start_step >= steps {
            return Err(bad(
                "start_step",
                format!("must be smaller than steps {steps}, got {start_step}"),
            ));
        }
        Ok(EditOptions {
            steps,
            start_step,
            guidance: finite("guidance", self.guidance, d.guidance)?,
            inversion_guidance: finite(
                "inversion_guidance",
                self.inversion_guidance,
                d.inversion_guidance,
            )?,
            negative_prompt: self.negative_prompt.clone(),
            inversion,
            attention,
        })
    }

    fn method(&self) -> Result<(Inversion, Option<P2pOptions>), ApiError> {
        let inversion = match self.inversion.as_deref() {
            None => None,
            Some(s) => Some(s.parse().map_err(|e: String| bad("inversion", e))?),
        };
        let attention = match self.attention.as_deref() {
            None => None,
            Some("none") => Some(Attention::None),
            Some("p2p") => Some(Attention::P2p),
            Some(other) => {
                return Err(bad(
                    "attention",
                    format!("must be `none` or `p2p`, got {other:?}"),
                ));
            }
        };
        if self.reweight.len() > MAX_WORDS || self.blend_words.len() > MAX_WORDS {
            return Err(bad("reweight", format!("at most {MAX_WORDS} words")));
        }
        for r in &self.reweight {
            if r.word.trim().is_empty() || !r.factor.is_finite() {
                return Err(bad("reweight", "each needs a word and a finite factor"));
            }
        }
        let args = MethodArgs {
            inversion,
            attention,
            cross_replace: fraction("cross_replace", self.cross_replace, DEFAULT_CROSS_REPLACE)?,
            self_replace: fraction("self_replace", self.self_replace, DEFAULT_SELF_REPLACE)?,
            reweight: self
                .reweight
                .iter()
                .map(|r| (r.word.trim().to_string(), r.factor))
                .collect(),
            blend_words: self.blend_words.clone(),
            blend_auto: self.blend_auto,
            feature_replace: fraction("feature_replace", self.feature_replace, 0.0)?,
        };
        args.method(Attention::P2p).map_err(|e| {
            let message = e.to_string();
            let field = ["reweight", "blend_auto", "feature_replace"]
                .into_iter()
                .find(|f| message.starts_with(&format!("--{}", f.replace('_', "-"))))
                .unwrap_or("blend_words");
            bad(field, message.replace("--attention p2p", "attention `p2p`"))
        })
    }
}

/// `s` quoted for a POSIX shell where it needs to be.
fn quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The flags of the server that an equivalent `edit` needs too.
#[derive(Debug, Clone)]
pub struct ModelFlags {
    pub model: String,
    pub device: String,
    pub dtype: String,
    pub variant: Option<String>,
    pub size: Option<(usize, usize)>,
}

/// The `ddim-edit edit` command that gives the same PNG as this job, `image` standing for the
/// uploaded file.
pub fn command(image: &str, r: &EditRequest, o: &EditOptions, m: &ModelFlags) -> String {
    let mut args: Vec<String> = vec!["ddim-edit".into(), "edit".into()];
    let mut flag = |name: &str, value: String| {
        args.push(format!("--{name}"));
        args.push(quote(&value));
    };
    flag("model", m.model.clone());
    if m.device != "cpu" {
        flag("device", m.device.clone());
    }
    if m.dtype != "f32" {
        flag("dtype", m.dtype.clone());
    }
    if let Some(v) = &m.variant {
        flag("variant", v.clone());
    }
    if let Some((w, h)) = m.size {
        flag("size", format!("{w}x{h}"));
    }
    flag("image", image.to_string());
    flag("prompt", r.prompt.clone());
    flag("edit-prompt", r.edit_prompt.clone());
    flag("steps", o.steps.to_string());
    flag("start-step", o.start_step.to_string());
    flag("guidance", o.guidance.to_string());
    flag("inversion-guidance", o.inversion_guidance.to_string());
    if !o.negative_prompt.is_empty() {
        flag("negative-prompt", o.negative_prompt.clone());
    }
    flag("inversion", o.inversion.to_string());
    flag(
        "attention",
        if o.attention.is_some() { "p2p" } else { "none" }.into(),
    );
    if let Some(a) = &o.attention {
        flag("cross-replace", a.cross_replace.to_string());
        flag("self-replace", a.self_replace.to_string());
        for (word, factor) in &a.reweight {
            flag("reweight", format!("{word}={factor}"));
        }
        if a.feature_replace != 0.0 {
            flag("feature-replace", a.feature_replace.to_string());
        }
        if !a.blend_words.is_empty() {
            args.push("--blend-words".into());
            args.extend(a.blend_words.iter().map(|w| quote(w)));
        }
        if a.blend_auto {
            args.push("--blend-auto".into());
        }
    }
    args.push("--out".into());
    args.push("edited.png".into());
    args.join(" ")
}
