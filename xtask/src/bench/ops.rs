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

/// The op timer: runs each op `iters` times after one warm-up and keeps its record.
struct Ops<'a> {
    o: &'a Options,
    device: &'a Device,
    iters: usize,
    out: Vec<Value>,
}

/// The shapes of the UNet's first block: batch, latent side, channels, heads.
const B: usize = 2;
const C: usize = 320;
const HEADS: usize = 5;

impl Ops<'_> {
    fn op(
        &mut self,
        name: &str,
        flop: u64,
        f: &mut dyn FnMut() -> Tensor<4>,
    ) -> anyhow::Result<()> {
        let device = self.device;
        let (times, peak) = time(1, self.iters, || {
            let _ = f();
            device
                .sync()
                .map_err(|e| anyhow::anyhow!("device error: {e:?}"))
        })?;
        let r = record(
            self.o,
            &format!("op:{name}"),
            B,
            flop,
            1,
            &times,
            peak,
            json!({}),
        );
        println!("{r}");
        self.out.push(r);
        Ok(())
    }

    /// Convolutions as the models run them: burn's `Conv2d::forward`, sd-models' im2col + one
    /// matmul (`cpu::conv2d_im2col`) and `cpu::conv2d_forward` (tap products on the wide layers).
    /// The UNet's first and deepest blocks (batch 2), then the VAE's widest layers at its image
    /// size (latent × 8, batch 1, as an edit runs them): 128 channels at full resolution, 256 at
    /// half, 512 at an eighth. Then group norm and SiLU at the VAE's 128-channel full-resolution
    /// maps, apart and fused.
    fn convolutions(&mut self, s: usize) -> anyhow::Result<()> {
        let device = self.device;
        let (cd, sd) = (1280, s.div_ceil(4));
        let mut convs = vec![
            ("conv3x3-320".to_string(), randn([B, C, s, s], device)),
            ("conv3x3-1280".into(), randn([B, cd, sd, sd], device)),
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
            self.op(name, flop, &mut || conv.forward(input.clone()))?;
            self.op(&format!("{name}-im2col"), flop, &mut || {
                cpu::conv2d_im2col(&conv, input.clone())
            })?;
            self.op(&format!("{name}-ours"), flop, &mut || {
                cpu::conv2d_forward(&conv, input.clone())
            })?;
        }
        let input = &convs[2].1;
        let [_, cv, px, _] = input.dims();
        let gn = GroupNormConfig::new(32, cv).with_epsilon(1e-6).init(device);
        self.op(&format!("vae-group-norm-{cv}@{px}"), 0, &mut || {
            gn.forward(input.clone())
        })?;
        self.op(&format!("vae-silu-{cv}@{px}"), 0, &mut || {
            silu(input.clone())
        })?;
        self.op(&format!("vae-group-norm-silu-{cv}@{px}"), 0, &mut || {
            cpu::group_norm_silu(&gn, input.clone())
        })
    }

    /// Self-attention over the s² tokens and cross-attention to 77 text tokens, fused and not.
    fn attention(&mut self, n: usize) -> anyhow::Result<()> {
        let (device, d) = (self.device, C / HEADS);
        let q = randn([B, HEADS, n, d], device);
        let k = randn([B, HEADS, n, d], device);
        let v = randn([B, HEADS, n, d], device);
        let attn_flop = 4 * (B * HEADS * n * n * d) as u64;
        let opts = AttentionModuleOptions::default;
        self.op("attention-self", attn_flop, &mut || {
            attention(q.clone(), k.clone(), v.clone(), None, None, opts())
        })?;
        // The same product on the UNet's path: tokens × heads·d, heads read in place.
        let merge = |t: &Tensor<4>| t.clone().swap_dims(1, 2).reshape([B, n, C]);
        let (qm, km, vm) = (merge(&q), merge(&k), merge(&v));
        self.op("attention-self-ours", attn_flop, &mut || {
            let out = cpu::multi_head_f32(&qm, &km, &vm, HEADS);
            out.unwrap_or_else(|| qm.clone()).unsqueeze()
        })?;
        let scale = (d as f64).powf(-0.5);
        self.op("attention-self-unfused", attn_flop, &mut || {
            let scores = q.clone().matmul(k.clone().swap_dims(2, 3)) * scale;
            softmax(scores, 3).matmul(v.clone())
        })?;
        let kc = randn([B, HEADS, 77, d], device);
        let vc = randn([B, HEADS, 77, d], device);
        self.op(
            "attention-cross",
            4 * (B * HEADS * n * 77 * d) as u64,
            &mut || attention(q.clone(), kc.clone(), vc.clone(), None, None, opts()),
        )
    }

    /// The transformer's linear layers, norms and activations on s² tokens, and the deepest
    /// block's nearest-neighbour upsampling.
    fn token_ops(&mut self, s: usize) -> anyhow::Result<()> {
        let (device, n) = (self.device, s * s);
        let x = randn([B, C, s, s], device);
        let tokens = randn([B, n, C], device);
        let wl = randn([C, C], device);
        self.op("linear-320", 2 * (B * n * C * C) as u64, &mut || {
            linear(tokens.clone(), wl.clone(), None).unsqueeze()
        })?;
        let wff = randn([C, 8 * C], device);
        self.op("linear-geglu", 2 * (B * n * C * 8 * C) as u64, &mut || {
            linear(tokens.clone(), wff.clone(), None).unsqueeze()
        })?;
        let gn = GroupNormConfig::new(32, C).init(device);
        self.op("group-norm", 0, &mut || gn.forward(x.clone()))?;
        let ln = LayerNormConfig::new(C).init(device);
        self.op("layer-norm", 0, &mut || {
            ln.forward(tokens.clone()).unsqueeze()
        })?;
        self.op("silu", 0, &mut || silu(x.clone()))?;
        let wide = randn([B, n, 4 * C], device);
        self.op("gelu", 0, &mut || gelu(wide.clone()).unsqueeze())?;
        let proj = randn([B, n, 8 * C], device);
        self.op("geglu", 0, &mut || cpu::geglu(proj.clone()).unsqueeze())?;
        // The transformer's proj_in reads the NCHW feature map as tokens through a transposed view.
        self.op(
            "linear-320-from-nchw",
            2 * (B * n * C * C) as u64,
            &mut || {
                let view = x.clone().reshape([B, C, n]).swap_dims(1, 2);
                linear(view, wl.clone(), None).unsqueeze()
            },
        )?;
        let sd = s.div_ceil(4);
        let xd = randn([B, 1280, sd, sd], device);
        self.op("upsample-nearest-1280", 0, &mut || {
            interpolate(
                xd.clone(),
                InterpolateOptions::new(InterpolateMode::Nearest)
                    .with_output_size([2 * sd, 2 * sd]),
            )
        })
    }

    /// Reduced precision: what a bf16/f16 path could gain on this backend and CPU.
    fn reduced_precision(&mut self) -> anyhow::Result<()> {
        let m = 1024;
        let a = randn([m, m], self.device);
        for (name, dtype) in [
            ("f32", DType::F32),
            ("f16", DType::F16),
            ("bf16", DType::BF16),
        ] {
            let (a, bm) = (a.clone().cast(dtype), a.clone().cast(dtype));
            self.op(
                &format!("matmul-1024-{name}"),
                2 * (m as u64).pow(3),
                &mut || a.clone().matmul(bm.clone()).unsqueeze(),
            )?;
        }
        Ok(())
    }
}

/// Times every op; prints and returns the records.
pub fn run(o: &Options, device: &Device) -> anyhow::Result<Vec<Value>> {
    let mut ops = Ops {
        o,
        device,
        iters: o.iters.unwrap_or(5),
        out: Vec::new(),
    };
    let s = o.latent;
    ops.convolutions(s)?;
    ops.token_ops(s)?;
    ops.attention(s * s)?;
    ops.reduced_precision()?;
    Ok(ops.out)
}
