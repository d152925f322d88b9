//! What of a `UNet2DConditionModel` config this port implements, and the sizes it accepts.

use std::path::Path;

use super::UNetConfig;
use crate::config::{MAX_CHANNELS, MAX_SAMPLE_SIZE, at_most, check_blocks};
use crate::error::{ModelError, Result};

impl UNetConfig {
    /// Rejects, by name, every option that would change the model and that this port does not
    /// implement (class or addition embeddings, other time embeddings, kernel sizes, …). Block
    /// types and `act_fn` are enums of the supported values already.
    pub fn check_supported(&self, path: &Path) -> Result<()> {
        match self.first_unsupported() {
            None => Ok(()),
            Some((what, name, supported)) => Err(ModelError::Unsupported {
                path: path.to_path_buf(),
                what,
                name,
                supported,
            }),
        }
    }

    /// The first option set to a value other than the supported one: (field, value, supported).
    fn first_unsupported(&self) -> Option<(&'static str, String, &'static str)> {
        let set = |what, on: bool| on.then(|| (what, "true".to_string(), "false"));
        let null = |what, v: Option<String>| v.map(|v| (what, v, "null"));
        let named = |what, v: &str, want: &'static str| (v != want).then(|| (what, v.into(), want));
        let plain_cross = matches!(
            &self.only_cross_attention,
            serde_json::Value::Null | serde_json::Value::Bool(false)
        );
        let kernels = format!("{}/{}", self.conv_in_kernel, self.conv_out_kernel);
        set("center_input_sample", self.center_input_sample)
            .or_else(|| {
                let value = self.only_cross_attention.to_string();
                (!plain_cross).then_some(("only_cross_attention", value, "false"))
            })
            .or(set("dual_cross_attention", self.dual_cross_attention))
            .or(null("class_embed_type", self.class_embed_type.clone()))
            .or(null(
                "addition_embed_type",
                self.addition_embed_type.clone(),
            ))
            .or(null(
                "num_class_embeds",
                self.num_class_embeds.map(|v| v.to_string()),
            ))
            .or(null(
                "encoder_hid_dim",
                self.encoder_hid_dim.map(|v| v.to_string()),
            ))
            .or(null(
                "time_cond_proj_dim",
                self.time_cond_proj_dim.map(|v| v.to_string()),
            ))
            .or(named(
                "time_embedding_type",
                &self.time_embedding_type,
                "positional",
            ))
            .or(named(
                "resnet_time_scale_shift",
                &self.resnet_time_scale_shift,
                "default",
            ))
            .or(named("attention_type", &self.attention_type, "default"))
            .or_else(|| {
                let scale = self.mid_block_scale_factor;
                (scale != 1.0).then(|| ("mid_block_scale_factor", scale.to_string(), "1"))
            })
            .or(named("conv_in_kernel/conv_out_kernel", &kernels, "3/3"))
    }

    /// Block counts and channel numbers within `crate::config`'s limits, and channels that divide
    /// into the norm groups. Per-block options are checked as the blocks are resolved.
    pub(super) fn check_sizes(&self, path: &Path) -> Result<()> {
        check_blocks(
            path,
            &self.block_out_channels,
            self.down_block_types.len(),
            self.up_block_types.len(),
        )?;
        at_most(path, "in_channels", self.in_channels, MAX_CHANNELS)?;
        at_most(path, "out_channels", self.out_channels, MAX_CHANNELS)?;
        if let Some(s) = self.sample_size {
            at_most(path, "sample_size", s, MAX_SAMPLE_SIZE)?;
        }
        let g = self.norm_num_groups;
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            if g == 0 || !c.is_multiple_of(g) {
                return Err(ModelError::config(
                    path,
                    format!(
                        "block_out_channels[{i}] = {c} is not divisible by norm_num_groups {g}"
                    ),
                ));
            }
        }
        Ok(())
    }
}
