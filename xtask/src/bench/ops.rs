//! `--component ops`: the UNet's op categories timed alone, at the shapes of its first block
//! (batch 2, `latent`² pixels, 320 channels, 5 heads of 64) and of its deepest (1280 channels at
//! `latent`/4), so that a slow component can be traced to an op. `bench_torch.py` times the same
//! ops with PyTorch; the records are `"component": "op:<name>"` lines with `flop` 0 for the
//! memory-bound ops (norms, activations, layout copies), whose time is what matters.

use burn::nn::{GroupNormConfig, LayerNormConfig};
use burn::tensor::activation::{gelu, silu, softmax};
use burn::tensor::module::{attention, interpolate, linear};
use burn::tensor::ops::{AttentionModuleOptions, InterpolateMode, InterpolateOptions};
use burn::tensor::{DType, Device, Distribution, Tensor};
use sd_models::{cpu, layers};
use serde_json::{Value, json};

use super::Options;
use super::measure::{record, time};

fn randn<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// Times every op; prints and returns the records.
pub fn run(o: &Options, device: &Device) -> anyhow::Result<Vec<Value>> {
    let (b, s, c, heads) = (2, o.latent, 320, 5);
    let n = s * s;
    let d = c / heads;
    let iters = o.iters.unwrap_or(5);
    let sync = || {
        device
            .sync()
            .map_err(|e| anyhow::anyhow!("device error: {e:?}"))
    };
    let mut out = Vec::new();
    let mut op = |name: &str, flop: u64, f: &mut dyn FnMut() -> Tensor<4>| -> anyhow::Result<()> {
        let (times, peak) = time(1, iters, || {
            let _ = f();
            sync()
        })?;
        let r = record(
            o,
            &format!("op:{name}"),
            b,
            flop,
            1,
            &times,
            peak,
            json!({}),
        );
        println!("{r}");
        out.push(r);
        Ok(())
    };

    // Convolutions as the models run them: burn's `Conv2d::forward` and sd-models'
    // `conv2d_forward` (im2col + one matmul on flex, see `sd_models::cpu::conv`). The UNet's
    // first and deepest blocks (batch 2), then the VAE's widest layers at its image size
    // (latent × 8, batch 1, as an edit runs them): 128 channels at full resolution, 256 at half,
    // 512 at an eighth.
    let x = randn([b, c, s, s], device);
    let (cd, sd) = (1280, s.div_ceil(4));
    let xd = randn([b, cd, sd, sd], device);
    let mut convs = vec![
        ("conv3x3-320".to_string(), x.clone()),
        ("conv3x3-1280".into(), xd.clone()),
    ];
    for (cv, div) in [(128, 1), (256, 2), (512, 8)] {
        let px = 8 * s / div;
        convs.push((
            format!("vae-conv3x3-{cv}@{px}"),
            randn([1, cv, px, px], device),
        ));
    }
    for (name, input) in &convs {
        let [n, cin, h, w] = input.dims();
        let conv = layers::conv2d(cin, cin, 3, 1, 1, device);
        let flop = 2 * (n * cin * h * w * cin * 9) as u64;
        op(name, flop, &mut || conv.forward(input.clone()))?;
        op(&format!("{name}-im2col"), flop, &mut || {
            cpu::conv2d_forward(&conv, input.clone())
        })?;
    }
    // Group norm and SiLU at the VAE's 128-channel full-resolution maps.
    let input = &convs[2].1;
    let [_, cv, px, _] = input.dims();
    let gn = GroupNormConfig::new(32, cv).with_epsilon(1e-6).init(device);
    op(&format!("vae-group-norm-{cv}@{px}"), 0, &mut || {
        gn.forward(input.clone())
    })?;
    op(&format!("vae-silu-{cv}@{px}"), 0, &mut || {
        silu(input.clone())
    })?;
    // What the models run: both in one pass (`sd_models::cpu`).
    op(&format!("vae-group-norm-silu-{cv}@{px}"), 0, &mut || {
        cpu::group_norm_silu(&gn, input.clone())
    })?;

    let tokens = randn([b, n, c], device);
    let wl = randn([c, c], device);
    op("linear-320", 2 * (b * n * c * c) as u64, &mut || {
        linear(tokens.clone(), wl.clone(), None).unsqueeze()
    })?;
    let wff = randn([c, 8 * c], device);
    op("linear-geglu", 2 * (b * n * c * 8 * c) as u64, &mut || {
        linear(tokens.clone(), wff.clone(), None).unsqueeze()
    })?;

    let q = randn([b, heads, n, d], device);
    let k = randn([b, heads, n, d], device);
    let v = randn([b, heads, n, d], device);
    let attn_flop = 4 * (b * heads * n * n * d) as u64;
    let opts = AttentionModuleOptions::default;
    op("attention-self", attn_flop, &mut || {
        attention(q.clone(), k.clone(), v.clone(), None, None, opts())
    })?;
    let scale = (d as f64).powf(-0.5);
    op("attention-self-unfused", attn_flop, &mut || {
        let scores = q.clone().matmul(k.clone().swap_dims(2, 3)) * scale;
        softmax(scores, 3).matmul(v.clone())
    })?;
    let kc = randn([b, heads, 77, d], device);
    let vc = randn([b, heads, 77, d], device);
    op(
        "attention-cross",
        4 * (b * heads * n * 77 * d) as u64,
        &mut || attention(q.clone(), kc.clone(), vc.clone(), None, None, opts()),
    )?;

    let gn = GroupNormConfig::new(32, c).init(device);
    op("group-norm", 0, &mut || gn.forward(x.clone()))?;
    let ln = LayerNormConfig::new(c).init(device);
    op("layer-norm", 0, &mut || {
        ln.forward(tokens.clone()).unsqueeze()
    })?;
    op("silu", 0, &mut || silu(x.clone()))?;
    let wide = randn([b, n, 4 * c], device);
    op("gelu", 0, &mut || gelu(wide.clone()).unsqueeze())?;
    let proj = randn([b, n, 8 * c], device);
    op("geglu", 0, &mut || cpu::geglu(proj.clone()).unsqueeze())?;
    // The transformer's proj_in reads the NCHW feature map as tokens through a transposed view.
    op(
        "linear-320-from-nchw",
        2 * (b * n * c * c) as u64,
        &mut || {
            let view = x.clone().reshape([b, c, n]).swap_dims(1, 2);
            linear(view, wl.clone(), None).unsqueeze()
        },
    )?;
    op("upsample-nearest-1280", 0, &mut || {
        interpolate(
            xd.clone(),
            InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([2 * sd, 2 * sd]),
        )
    })?;
    // Reduced precision: what a bf16/f16 path could gain on this backend and CPU.
    let m = 1024;
    let a = randn([m, m], device);
    for (name, dtype) in [
        ("f32", DType::F32),
        ("f16", DType::F16),
        ("bf16", DType::BF16),
    ] {
        let (a, bm) = (a.clone().cast(dtype), a.clone().cast(dtype));
        op(
            &format!("matmul-1024-{name}"),
            2 * (m as u64).pow(3),
            &mut || a.clone().matmul(bm.clone()).unsqueeze(),
        )?;
    }
    Ok(out)
}
