//! Analytic FLOP counts of the Stable Diffusion components, from their configs.
//!
//! What is counted is what `torch.utils.flop_counter.FlopCounterMode` counts, so that both sides of
//! `bench --torch` can be checked against each other: 2 FLOPs per multiply-accumulate of every
//! convolution (bias excluded), every linear layer (bias excluded) and both products of every
//! attention (QKᵀ and PV, over all heads). Normalisations, activations, softmax, additions,
//! up-sampling and layout changes are not counted: they are a few percent of the work but can be a
//! large share of the time, which is exactly what the GFLOP/s figure exposes.
//!
//! Reference values (FlopCounterMode on diffusers 0.42.1 / transformers 5.23, meta tensors), which
//! the tests below reproduce exactly: SD 2.1-base UNet, batch 2, 64×64 latents: 1 608 514 928 640
//! (the "1.61 TFLOP"); 32×32: 362 180 935 680; VAE encode 512 px: 1 116 658 466 816, decode:
//! 2 514 518 933 504; SD 2.1 text encoder (77 tokens): 45 127 233 536.

use sd_models::clip::ClipTextConfig;
use sd_models::unet::UNetConfig;
use sd_models::vae::VaeConfig;

/// A `k`×`k` convolution producing `[batch, cout, h, w]`.
fn conv(batch: usize, cin: usize, cout: usize, k: usize, h: usize, w: usize) -> u64 {
    2 * (batch * cout * h * w * cin * k * k) as u64
}

/// A linear layer over `rows` rows.
fn linear(rows: usize, din: usize, dout: usize) -> u64 {
    2 * (rows * din * dout) as u64
}

/// QKᵀ and PV for `q` queries over `kv` keys of total width `c` (heads × head dim).
fn attention(batch: usize, q: usize, kv: usize, c: usize) -> u64 {
    4 * (batch * q * kv * c) as u64
}

/// `ResnetBlock2D` at `h`×`w` with an optional time-embedding projection from `temb` channels.
fn resnet(batch: usize, cin: usize, cout: usize, h: usize, w: usize, temb: Option<usize>) -> u64 {
    conv(batch, cin, cout, 3, h, w)
        + conv(batch, cout, cout, 3, h, w)
        + if cin != cout {
            conv(batch, cin, cout, 1, h, w)
        } else {
            0
        }
        + temb.map_or(0, |t| linear(batch, t, cout))
}

/// `Transformer2DModel` over `n` pixels of `c` channels, attending to `t` text tokens of width `d`.
fn transformer(batch: usize, c: usize, n: usize, t: usize, d: usize, layers: usize) -> u64 {
    let rows = batch * n;
    let proj = 2 * linear(rows, c, c); // proj_in + proj_out (1×1 conv or linear: the same count)
    let self_attn = 4 * linear(rows, c, c) + attention(batch, n, n, c);
    let cross_attn =
        2 * linear(rows, c, c) + 2 * linear(batch * t, d, c) + attention(batch, n, t, c);
    let ff = linear(rows, c, 8 * c) + linear(rows, 4 * c, c); // GEGLU projection + output
    proj + layers as u64 * (self_attn + cross_attn + ff)
}

/// One UNet call on `[batch, in_channels, h, w]` latents with `text_tokens` context tokens.
pub fn unet(config: &UNetConfig, batch: usize, h: usize, w: usize, text_tokens: usize) -> u64 {
    let Ok(r) = config.resolved(std::path::Path::new("preset")) else {
        return 0;
    };
    let ch = &config.block_out_channels;
    let n = ch.len();
    let temb = Some(4 * ch[0]);
    // A block's spatial transformer at its channels `c` and resolution.
    let attn = |context_dim: usize, layers: usize, c: usize, (h, w): (usize, usize)| {
        transformer(batch, c, h * w, text_tokens, context_dim, layers)
    };
    let mut total = linear(batch, ch[0], 4 * ch[0]) + linear(batch, 4 * ch[0], 4 * ch[0]);
    total += conv(batch, config.in_channels, ch[0], 3, h, w);
    let mut size = (h, w);
    let mut skips = vec![ch[0]];
    let mut cin = ch[0];
    for (i, &c) in ch.iter().enumerate() {
        let block = &r.down[i];
        for _ in 0..block.layers {
            total += resnet(batch, cin, c, size.0, size.1, temb);
            if block.kind.has_cross_attention() {
                total += attn(block.cross_attention_dim, block.transformer_layers, c, size);
            }
            cin = c;
            skips.push(cin);
        }
        if i + 1 < n {
            size = (size.0.div_ceil(2), size.1.div_ceil(2));
            total += conv(batch, cin, cin, 3, size.0, size.1);
            skips.push(cin);
        }
    }
    let mid = &r.mid;
    total += 2 * resnet(batch, cin, cin, size.0, size.1, temb)
        + attn(mid.cross_attention_dim, mid.transformer_layers, cin, size);
    let mut sizes: Vec<(usize, usize)> = Vec::new();
    let mut s = (h, w);
    for _ in 0..n {
        sizes.push(s);
        s = (s.0.div_ceil(2), s.1.div_ceil(2));
    }
    for i in 0..n {
        let j = n - 1 - i;
        let block = &r.up[i];
        for _ in 0..block.layers {
            let skip = skips.pop().unwrap_or(0);
            total += resnet(batch, cin + skip, ch[j], size.0, size.1, temb);
            if block.kind.has_cross_attention() {
                total += attn(
                    block.cross_attention_dim,
                    block.transformer_layers,
                    ch[j],
                    size,
                );
            }
            cin = ch[j];
        }
        if i + 1 < n {
            size = sizes[j - 1];
            total += conv(batch, cin, cin, 3, size.0, size.1);
        }
    }
    total + conv(batch, ch[0], config.out_channels, 3, h, w)
}

/// The VAE mid block (resnet, single-head attention, resnet) at `h`×`w`.
fn vae_mid(c: usize, h: usize, w: usize) -> u64 {
    2 * resnet(1, c, c, h, w, None) + 4 * linear(h * w, c, c) + attention(1, h * w, h * w, c)
}

/// `AutoencoderKL.encode` of one `height`×`width` image (the posterior, no sampling).
pub fn vae_encode(config: &VaeConfig, height: usize, width: usize) -> u64 {
    let ch = &config.block_out_channels;
    let (n, latent) = (ch.len(), config.latent_channels);
    let (mut h, mut w) = (height, width);
    let mut total = conv(1, config.in_channels, ch[0], 3, h, w);
    let mut cin = ch[0];
    for (i, &c) in ch.iter().enumerate() {
        for _ in 0..config.layers_per_block {
            total += resnet(1, cin, c, h, w, None);
            cin = c;
        }
        if i + 1 < n {
            (h, w) = (h / 2, w / 2);
            total += conv(1, c, c, 3, h, w);
        }
    }
    total += vae_mid(cin, h, w) + conv(1, cin, 2 * latent, 3, h, w);
    total
        + if config.use_quant_conv {
            conv(1, 2 * latent, 2 * latent, 1, h, w)
        } else {
            0
        }
}

/// `AutoencoderKL.decode` of `[1, latent_channels, h, w]` latents.
pub fn vae_decode(config: &VaeConfig, h: usize, w: usize) -> u64 {
    let ch: Vec<usize> = config.block_out_channels.iter().rev().copied().collect();
    let (n, latent) = (ch.len(), config.latent_channels);
    let (mut h, mut w) = (h, w);
    let mut total = if config.use_post_quant_conv {
        conv(1, latent, latent, 1, h, w)
    } else {
        0
    };
    total += conv(1, latent, ch[0], 3, h, w) + vae_mid(ch[0], h, w);
    let mut cin = ch[0];
    for (i, &c) in ch.iter().enumerate() {
        for _ in 0..config.layers_per_block + 1 {
            total += resnet(1, cin, c, h, w, None);
            cin = c;
        }
        if i + 1 < n {
            (h, w) = (h * 2, w * 2);
            total += conv(1, c, c, 3, h, w);
        }
    }
    total + conv(1, cin, config.out_channels, 3, h, w)
}

/// The CLIP text encoder on `[batch, tokens]` ids.
pub fn text_encoder(config: &ClipTextConfig, batch: usize, tokens: usize) -> u64 {
    let (h, rows) = (config.hidden_size, batch * tokens);
    let layer = 4 * linear(rows, h, h)
        + 2 * linear(rows, h, config.intermediate_size)
        + attention(batch, tokens, tokens, h);
    config.num_hidden_layers as u64 * layer
}

/// A `[n, n] × [n, n]` matrix product.
pub fn matmul(n: usize) -> u64 {
    2 * (n as u64).pow(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts from `FlopCounterMode` (see the module header).
    #[test]
    fn matches_pytorch_flop_counter() {
        let unet = UNetConfig::sd21_base();
        assert_eq!(super::unet(&unet, 2, 64, 64, 77), 1_608_514_928_640);
        assert_eq!(super::unet(&unet, 2, 32, 32, 77), 362_180_935_680);
        assert_eq!(super::unet(&unet, 2, 8, 8, 77), 29_223_751_680);
        assert_eq!(
            super::unet(&UNetConfig::sd15(), 2, 64, 64, 77),
            1_606_546_882_560
        );
        let vae = VaeConfig::sd(512);
        assert_eq!(vae_encode(&vae, 512, 512), 1_116_658_466_816);
        assert_eq!(vae_decode(&vae, 64, 64), 2_514_518_933_504);
        assert_eq!(vae_encode(&vae, 256, 256), 272_722_165_760);
        assert_eq!(vae_decode(&vae, 32, 32), 622_187_282_432);
        assert_eq!(text_encoder(&ClipTextConfig::sd21(), 1, 77), 45_127_233_536);
        assert_eq!(text_encoder(&ClipTextConfig::sd15(), 1, 77), 13_298_503_680);
    }
}
