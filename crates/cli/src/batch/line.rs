//! One line of a job file as written, and how its options override the command line's: each
//! is checked as the `edit` flag of the same name (`start_step` as `--start-step`).

use serde::Deserialize;

use crate::args::{Common, EditSettings, parse_guidance, parse_size};
use crate::method::{Attention, parse_fraction, parse_inversion, parse_reweight};

/// One line as written. Every option is optional: the command line gives the defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobLine {
    pub id: String,
    pub image: String,
    pub prompt: String,
    pub edit_prompt: Option<String>,
    pub edit_prompts: Option<Vec<String>>,
    pub steps: Option<usize>,
    pub start_step: Option<usize>,
    pub guidance: Option<f64>,
    pub inversion_guidance: Option<f64>,
    pub negative_prompt: Option<String>,
    pub size: Option<String>,
    pub inversion: Option<String>,
    pub attention: Option<String>,
    pub cross_replace: Option<f64>,
    pub self_replace: Option<f64>,
    pub reweight: Option<Reweight>,
    pub blend_words: Option<Vec<String>>,
    pub blend_auto: Option<bool>,
    pub feature_replace: Option<f64>,
}

/// `reweight` as the flag writes it (`["fluffy=2"]`) or as a map (`{"fluffy": 2}`).
#[derive(Deserialize)]
#[serde(untagged)]
pub enum Reweight {
    Flags(Vec<String>),
    Map(std::collections::BTreeMap<String, f64>),
}

/// Sets the options the line gives, checked as the flags of the same name are.
pub fn merge(l: &JobLine, common: &mut Common, settings: &mut EditSettings) -> Result<(), String> {
    let named = |key: &str, r: Result<f64, String>| r.map_err(|e| format!("`{key}`: {e}"));
    if let Some(v) = l.steps {
        common.steps = v;
    }
    if let Some(v) = l.guidance {
        common.guidance = Some(named("guidance", parse_guidance(&v.to_string()))?);
    }
    if let Some(v) = &l.size {
        common.size = Some(parse_size(v).map_err(|e| format!("`size`: {e}"))?);
    }
    if let Some(v) = l.start_step {
        settings.start_step = Some(v);
    }
    if let Some(v) = l.inversion_guidance {
        settings.inversion_guidance = named("inversion_guidance", parse_guidance(&v.to_string()))?;
    }
    if let Some(v) = &l.negative_prompt {
        settings.negative_prompt = v.clone();
    }
    let method = &mut settings.method;
    if let Some(v) = &l.inversion {
        method.inversion = Some(parse_inversion(v).map_err(|e| format!("`inversion`: {e}"))?);
    }
    if let Some(v) = &l.attention {
        method.attention = Some(
            <Attention as clap::ValueEnum>::from_str(v, false)
                .map_err(|_| format!("`attention`: expected \"none\" or \"p2p\", got {v:?}"))?,
        );
    }
    if let Some(v) = l.cross_replace {
        method.cross_replace = named("cross_replace", parse_fraction(&v.to_string()))?;
    }
    if let Some(v) = l.self_replace {
        method.self_replace = named("self_replace", parse_fraction(&v.to_string()))?;
    }
    if let Some(v) = &l.reweight {
        let flags: Vec<String> = match v {
            Reweight::Flags(list) => list.clone(),
            Reweight::Map(map) => map.iter().map(|(w, f)| format!("{w}={f}")).collect(),
        };
        method.reweight = flags
            .iter()
            .map(|f| parse_reweight(f).map_err(|e| format!("`reweight`: {e}")))
            .collect::<Result<_, _>>()?;
    }
    if let Some(v) = &l.blend_words {
        method.blend_words = v.clone();
    }
    if let Some(v) = l.blend_auto {
        method.blend_auto = v;
    }
    if let Some(v) = l.feature_replace {
        method.feature_replace = named("feature_replace", parse_fraction(&v.to_string()))?;
    }
    Ok(())
}
