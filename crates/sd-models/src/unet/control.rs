//! Attention control: a value the caller passes down one UNet forward pass to observe and replace
//! the attention probabilities of the layers it chooses — what Prompt-to-Prompt (Hertz et al.,
//! arXiv 2208.01626) is built on — and the features of the up path's resnets, what Plug-and-Play
//! feature injection (Tumanyan et al., arXiv 2211.12572) is built on. diffusers' `AttnProcessor` and prompt-to-prompt's
//! `AttentionControl` are the hooks it mirrors; here it is an argument, never global state.
//!
//! Layers the control declines, and every layer of a pass without a control, run the fused
//! attention op exactly as before: asking nothing costs nothing.

use burn::tensor::Tensor;

/// Self-attention (`attn1`, the latent pixels over each other) or cross-attention (`attn2`, the
/// latent pixels over the prompt's tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttentionKind {
    SelfAttention,
    CrossAttention,
}

/// The part of the UNet a layer is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Place {
    Down,
    Mid,
    Up,
}

/// Where an attention layer sits, as the control sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttentionSite {
    pub kind: AttentionKind,
    pub place: Place,
    /// 0-based index among the layers of this kind, in forward order.
    pub index: usize,
    /// The feature map the queries come from: `height · width` query tokens.
    pub height: usize,
    pub width: usize,
}

impl AttentionSite {
    /// Query tokens of the layer.
    pub fn tokens(&self) -> usize {
        self.height * self.width
    }
}

/// Where a resnet of the up path sits: `resnet` of `UpBlock` number `block`, both 0-based in
/// forward order (`up_blocks[block].resnets[resnet]` in diffusers' names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResnetSite {
    pub block: usize,
    pub resnet: usize,
}

/// Observes and replaces attention probabilities, layer by layer, within one UNet pass. The
/// caller keeps any state across passes (the denoising step, stored maps) in the value itself.
pub trait AttentionControl {
    /// Whether the layer at `site` should hand its probabilities to [`control`](Self::control);
    /// a layer declined here runs the fused op.
    fn wants(&self, site: &AttentionSite) -> bool;

    /// Receives the softmax probabilities of the layer and returns those to apply to the values.
    ///
    /// # Shapes
    /// - probs, output: `[batch, heads, query_tokens, key_tokens]`, f32
    fn control(&mut self, site: &AttentionSite, probs: Tensor<4>) -> Tensor<4>;

    /// Receives the output of the up-path resnet at `site` and returns the features the UNet goes
    /// on with; the default keeps them.
    ///
    /// # Shapes
    /// - features, output: `[batch, channels, height, width]`, the UNet's dtype
    fn features(&mut self, site: ResnetSite, features: Tensor<4>) -> Tensor<4> {
        let _ = site;
        features
    }
}

/// Carries an optional control through one forward pass and numbers the layers it passes.
pub struct Hooks<'a> {
    control: Option<&'a mut dyn AttentionControl>,
    place: Place,
    counts: [usize; 2],
    /// The up block being run (`None` before the first) and the resnets it has run.
    up: Option<ResnetSite>,
}

impl<'a> Hooks<'a> {
    /// A pass without control: every layer fused.
    pub fn none() -> Self {
        Self {
            control: None,
            place: Place::Down,
            counts: [0; 2],
            up: None,
        }
    }

    pub fn new(control: &'a mut dyn AttentionControl) -> Self {
        Self {
            control: Some(control),
            ..Self::none()
        }
    }

    pub(crate) fn enter(&mut self, place: Place) {
        self.place = place;
        if place == Place::Up {
            self.up = Some(ResnetSite {
                block: self.up.map_or(0, |s| s.block + 1),
                resnet: 0,
            });
        }
    }

    /// The output of the next resnet of the current up block, through the control if there is one.
    pub(crate) fn up_resnet(&mut self, features: Tensor<4>) -> Tensor<4> {
        let Some(site) = self.up else {
            return features;
        };
        self.up = Some(ResnetSite {
            resnet: site.resnet + 1,
            ..site
        });
        match self.control.as_deref_mut() {
            Some(control) => control.features(site, features),
            None => features,
        }
    }

    /// The next layer of `kind` at a `height × width` map, and the control if it wants that layer.
    pub(crate) fn next(
        &mut self,
        kind: AttentionKind,
        height: usize,
        width: usize,
    ) -> Option<(AttentionSite, &mut dyn AttentionControl)> {
        let control = self.control.as_deref_mut()?;
        let slot = &mut self.counts[kind as usize];
        let site = AttentionSite {
            kind,
            place: self.place,
            index: *slot,
            height,
            width,
        };
        *slot += 1;
        control.wants(&site).then_some((site, control))
    }
}
