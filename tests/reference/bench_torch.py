#!/usr/bin/env python3
"""PyTorch/diffusers side of `cargo xtask bench --torch`: the same measurements as the Rust bench.

Run alone:  python tests/reference/bench_torch.py [--full] [--iters N] [--threads T]
                [--preset sd-2-1-base|sd-1-5] [--component matmul,text-encoder,vae-encode,vae-decode,unet,edit]
                [--device cpu|cuda] [--dtype f32|f16|bf16]
Prints one JSON line per measurement on stdout, in the format of `xtask/src/bench.rs`:
    {"impl": "torch", "component", "preset", "latent": [h, w], "image": [H, W], "batch",
     "backend": "torch <version>", "device": "cpu" or "cuda: <name>", "dtype": "f32", "threads", "warmup",
     "iterations", "median_s", "min_s", "flop", "gflop_per_s", "peak_rss_mib", ...}
`edit` adds steps, start_step, unet_evals and tutorial_unet_evals.

Models are built from the full-size configs in tests/fixtures/configs/<preset> with diffusers'/
transformers' own random initialisation (no weight files): speed does not depend on the values.
The tokenizer is the real CLIP vocabulary of the tiny fixture models (tests/fixtures/models/tiny-sd2,
SD 1 padding, or tiny-sd2, SD 2 padding — both have the full 49408-token vocabulary).

FLOPs are counted by torch.utils.flop_counter.FlopCounterMode (convolutions, matmuls, attention) on
the warm-up call, which is not timed; this is an independent check of the Rust side's analytic count.
On the CPU, peak memory is VmHWM from /proc/self/status, reset to the current RSS (write "5" to
/proc/self/clear_refs) before each measurement, so it is the peak of that measurement alone (on
top of everything the process already holds, models included). With --device cuda every timed call
ends in torch.cuda.synchronize(), the peak is torch.cuda.max_memory_allocated() (the GPU's tensors,
models included) and autocast is torch.autocast("cuda", that dtype). `loadavg_1m` is the 1-minute load
average after the measurement: well above the thread count means other work shared the cores.
"""

import argparse
import contextlib
import json
import os
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "tests" / "fixtures" / "configs"
TOKENIZERS = {"sd-2-1-base": "tiny-sd2", "sd-1-5": "tiny-sd1"}
COMPONENTS = ["matmul", "text-encoder", "vae-encode", "vae-decode", "unet", "edit"]
EXTRA_COMPONENTS = ["ops"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--full", action="store_true", help="64x64 latents (512 px) instead of 32x32")
    p.add_argument("--latent", type=int, help="latent size (overrides --full)")
    p.add_argument("--iters", type=int, help="timed iterations per component (default: per component)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
    p.add_argument("--preset", default="sd-2-1-base", choices=sorted(TOKENIZERS))
    p.add_argument("--component", default=",".join(COMPONENTS))
    p.add_argument("--steps", type=int, default=10, help="edit: DDIM steps")
    p.add_argument("--start-step", type=int, default=2, help="edit: start step")
    p.add_argument("--matmul", type=int, default=2048, help="size of the f32 matmul ceiling")
    p.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"],
                   help="text encoder and UNet: f32, or torch.autocast('cpu', that dtype) (VAE f32)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="where the models run: cpu, or the first CUDA GPU")
    p.add_argument("--guidance", type=float, default=3.5, help="edit: guidance (inversion too)")
    return p.parse_args()


# The torch device of --device, set by main().
DEVICE = torch.device("cpu")


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def reset_peak():
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mib():
    if DEVICE.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return None


def count_flops(fn):
    """Runs fn once under FlopCounterMode; returns (result, FLOPs)."""
    with FlopCounterMode(display=False) as counter:
        out = fn()
    sync()
    return out, counter.get_total_flops()


def measure(fn, warmup, iters):
    """(FLOPs of one call counted on the first warm-up call, times of the timed calls, peak MiB)."""
    reset_peak()
    _, flop = count_flops(fn)
    for _ in range(warmup - 1):
        fn()
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return flop, times, peak_rss_mib()


# The components whose text encoder / UNet calls run under --dtype (the VAE stays f32, as ours).
AUTOCAST = ("text-encoder", "unet", "edit")


def amp(args):
    """Autocast on --device for --dtype bf16 / f16, else nothing."""
    dtypes = {"bf16": torch.bfloat16, "f16": torch.float16}
    if args.dtype in dtypes:
        return torch.autocast(DEVICE.type, dtype=dtypes[args.dtype])
    return contextlib.nullcontext()


def line(args, component, latent, batch, flop, times, peak, warmup, **extra):
    median = statistics.median(times)
    rec = {
        "impl": "torch",
        "component": component,
        "preset": args.preset,
        "latent": [latent, latent],
        "image": [latent * 8, latent * 8],
        "batch": batch,
        "backend": f"torch {torch.__version__}",
        "device": "cpu" if DEVICE.type == "cpu" else f"cuda: {torch.cuda.get_device_name(DEVICE)}",
        "dtype": args.dtype if component in AUTOCAST else "f32",
        "threads": torch.get_num_threads(),
        "warmup": warmup,
        "iterations": len(times),
        "median_s": median,
        "min_s": min(times),
        "flop": flop,
        "gflop_per_s": flop / median / 1e9,
        "peak_rss_mib": peak,
        "loadavg_1m": os.getloadavg()[0],
    }
    rec.update(extra)
    print(json.dumps(rec), flush=True)


def run_ops(args, s, iters):
    """The UNet's ops one by one, as `xtask/src/bench/ops.rs` times them."""
    import torch.nn.functional as F

    b, c, heads = 2, 320, 5
    n, d = s * s, c // heads
    r = torch.randn
    x, w = r(b, c, s, s), r(c, c, 3, 3)
    cd, sd = 1280, -(-s // 4)
    xd, wd = r(b, cd, sd, sd), r(cd, cd, 3, 3)
    tokens, wl, wff = r(b, n, c), r(c, c), r(8 * c, c)
    q, k, v = r(b, heads, n, d), r(b, heads, n, d), r(b, heads, n, d)
    kc, vc = r(b, heads, 77, d), r(b, heads, 77, d)
    gn, ln = torch.nn.GroupNorm(32, c), torch.nn.LayerNorm(c)
    wide = r(b, n, 4 * c)
    proj = r(b, n, 8 * c)
    attn = 4 * b * heads * n * n * d
    ops = [
        ("conv3x3-320", 2 * b * c * n * c * 9, lambda: F.conv2d(x, w, padding=1)),
        ("conv3x3-1280", 2 * b * cd * sd * sd * cd * 9, lambda: F.conv2d(xd, wd, padding=1)),
    ]
    # The VAE's widest layers at its image size (latent x 8), batch 1.
    for cv, div in [(128, 1), (256, 2), (512, 8)]:
        px = 8 * s // div
        xv, wv = r(1, cv, px, px), r(cv, cv, 3, 3)
        flop = 2 * cv * px * px * cv * 9
        ops.append((f"vae-conv3x3-{cv}@{px}", flop, lambda xv=xv, wv=wv: F.conv2d(xv, wv, padding=1)))
        if cv == 128:
            gv = torch.nn.GroupNorm(32, cv, eps=1e-6)
            ops.append((f"vae-group-norm-{cv}@{px}", 0, lambda xv=xv, gv=gv: gv(xv)))
            ops.append((f"vae-silu-{cv}@{px}", 0, lambda xv=xv: F.silu(xv)))
            ops.append((f"vae-group-norm-silu-{cv}@{px}", 0, lambda xv=xv, gv=gv: F.silu(gv(xv))))
    ops += [
        ("linear-320", 2 * b * n * c * c, lambda: F.linear(tokens, wl)),
        ("linear-geglu", 2 * b * n * c * 8 * c, lambda: F.linear(tokens, wff)),
        ("attention-self", attn, lambda: F.scaled_dot_product_attention(q, k, v)),
        ("attention-self-unfused", attn, lambda: torch.softmax(q @ k.transpose(2, 3) * d**-0.5, 3) @ v),
        ("attention-cross", 4 * b * heads * n * 77 * d, lambda: F.scaled_dot_product_attention(q, kc, vc)),
        ("group-norm", 0, lambda: gn(x)),
        ("layer-norm", 0, lambda: ln(tokens)),
        ("silu", 0, lambda: F.silu(x)),
        ("gelu", 0, lambda: F.gelu(wide)),
        ("geglu", 0, lambda: (lambda a, g: a * F.gelu(g))(*proj.chunk(2, -1))),
        ("linear-320-from-nchw", 2 * b * n * c * c, lambda: F.linear(x.reshape(b, c, n).transpose(1, 2), wl)),
        ("upsample-nearest-1280", 0, lambda: F.interpolate(xd, scale_factor=2.0, mode="nearest")),
    ]
    m = 1024
    a = r(m, m)
    for name, dtype in [("f32", torch.float32), ("f16", torch.float16), ("bf16", torch.bfloat16)]:
        am = a.to(dtype)
        ops.append((f"matmul-1024-{name}", 2 * m**3, lambda am=am: am @ am))
    for name, flop, fn in ops:
        reset_peak()
        fn()
        sync()
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        line(args, f"op:{name}", s, b, flop, times, peak_rss_mib(), 1)


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    global DEVICE
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"--device cuda: this torch {torch.__version__} sees no CUDA GPU")
        DEVICE = torch.device("cuda", 0)
        # Models and every tensor made below live on the GPU.
        torch.set_default_device(DEVICE)
    import diffusers.utils.logging as dlogging
    import transformers.utils.logging as tlogging
    from diffusers import AutoencoderKL, DDIMInverseScheduler, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tlogging.set_verbosity_error()
    dlogging.set_verbosity_error()

    s = args.latent or (64 if args.full else 32)
    cfg = CONFIGS / args.preset
    wanted = [c.strip() for c in args.component.split(",") if c.strip()]
    unknown = set(wanted) - set(COMPONENTS) - set(EXTRA_COMPONENTS)
    if unknown:
        raise SystemExit(f"unknown component(s) {sorted(unknown)}; known: {COMPONENTS}")
    iters = lambda default: args.iters or default  # noqa: E731

    text_encoder = CLIPTextModel(CLIPTextConfig.from_json_file(cfg / "text_encoder" / "config.json")).eval()
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(cfg / "vae")).eval()
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg / "unet")).eval()
    tokenizer = CLIPTokenizer.from_pretrained(ROOT / "tests" / "fixtures" / "models" / TOKENIZERS[args.preset] / "tokenizer")
    sf = vae.config.scaling_factor
    dim = unet.config.cross_attention_dim
    flops = {}

    def states(prompt):
        ids = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids.to(DEVICE)
        with amp(args):
            return text_encoder(ids)[0].float()

    def guided(x, t, context, g):
        with amp(args):
            e = unet(torch.cat([x, x]), t, encoder_hidden_states=context).sample.float()
        u, c = e.chunk(2)
        return u + g * (c - u)

    def unet_step(x, ctx):
        with amp(args):
            return unet(x, 500, encoder_hidden_states=ctx).sample

    with torch.inference_mode():
        image = torch.rand(1, 3, 8 * s, 8 * s) * 2 - 1
        latents = torch.randn(1, unet.config.in_channels, s, s)
        for comp in wanted:
            if comp == "ops":
                run_ops(args, s, iters(5))
            elif comp == "matmul":
                a, b = torch.randn(args.matmul, args.matmul), torch.randn(args.matmul, args.matmul)
                flop, times, peak = measure(lambda: a @ b, 1, iters(3))
                line(args, comp, s, 1, flop, times, peak, 1, size=[args.matmul] * 3)
            elif comp == "text-encoder":
                flop, times, peak = measure(lambda: states("a photo of a cat on the grass"), 2, iters(5))
                flops[comp] = flop
                line(args, comp, s, 1, flop, times, peak, 2, tokens=77)
            elif comp == "vae-encode":
                flop, times, peak = measure(lambda: vae.encode(image).latent_dist.mean * sf, 1, iters(2))
                flops[comp] = flop
                line(args, comp, s, 1, flop, times, peak, 1)
            elif comp == "vae-decode":
                flop, times, peak = measure(lambda: vae.decode(latents / sf).sample, 1, iters(2))
                flops[comp] = flop
                line(args, comp, s, 1, flop, times, peak, 1)
            elif comp == "unet":
                x = torch.randn(2, unet.config.in_channels, s, s)
                ctx = torch.randn(2, 77, dim)
                flop, times, peak = measure(lambda: unet_step(x, ctx), 1, iters(3))
                flops[comp] = flop
                line(args, comp, s, 2, flop, times, peak, 1)
            elif comp == "edit":
                n, k, g = args.steps, args.start_step, args.guidance
                inv = DDIMInverseScheduler.from_pretrained(cfg / "scheduler")
                sch = DDIMScheduler.from_pretrained(cfg / "scheduler")

                def edit():
                    x = vae.encode(image).latent_dist.mean * sf
                    ctx = torch.cat([states(""), states("a puppy on the grass")])
                    inv.set_timesteps(n)
                    for t in inv.timesteps[: n - k]:
                        x = inv.step(guided(x, t, ctx, g), t, x).prev_sample
                    ctx = torch.cat([states(""), states("a cat on the grass")])
                    sch.set_timesteps(n)
                    for t in sch.timesteps[k:]:
                        x = sch.step(guided(x, t, ctx, g), t, x, eta=0.0).prev_sample
                    return vae.decode(x / sf).sample

                # The edit's FLOPs are those of its parts (counted once each, untimed), so that the
                # timed runs carry no counting overhead.
                for part, fn in [("text-encoder", lambda: states("")),
                                 ("vae-encode", lambda: vae.encode(image).latent_dist.mean),
                                 ("vae-decode", lambda: vae.decode(latents).sample),
                                 ("unet", lambda: unet(torch.cat([latents, latents]), 500,
                                                       encoder_hidden_states=torch.zeros(2, 77, dim)))]:
                    if part not in flops:
                        flops[part] = count_flops(fn)[1]
                evals = 2 * (n - k)
                flop = (flops["vae-encode"] + flops["vae-decode"] + 4 * flops["text-encoder"]
                        + evals * flops["unet"])
                reset_peak()
                times = []
                for _ in range(iters(1)):
                    t0 = time.perf_counter()
                    edit()
                    sync()
                    times.append(time.perf_counter() - t0)
                line(args, comp, s, 1, flop, times, peak_rss_mib(), 0, steps=n, start_step=k,
                     unet_evals=evals, tutorial_unet_evals=2 * n - 2 - k, guidance=g)


if __name__ == "__main__":
    main()
