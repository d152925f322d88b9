"""Trains the toy Stable Diffusion model (`--model toy`) on the synthetic scenes of toy_shapes.py and
writes it in the diffusers folder layout, exactly as the published SD 1.x repositories are laid out
(transformers-4.x text encoder keys, PNDM scheduler config, the real CLIP tokenizer).

    python tests/reference/train_toy.py [--out tests/fixtures/models/toy] [--threads 2]

Three stages, each seeded, each leaving its result on disk before the next starts (a run cut short
keeps what it finished; `--resume` skips stages whose output exists):
  1. AutoencoderKL (factor 4: 64×64 px ↔ 8×16×16 latents by default, `--vae-latent-channels`
     to change it; no mid-block attention so that it is fully convolutional), L1 + MSE
     reconstruction + 1e-6 KL; 90 % of the steps on random 32×32 crops, the last 10 % on whole
     images; then `scaling_factor` = 1 / std of the training
     latents, as SD's 0.18215 was chosen. One more term (`--presence`, `--presence-weight`) asks
     latent channel 0 to carry the shapes' coverage of each 4×4 cell, whatever their colour.
     Without it (measured on the previous toy model) the latent of a shape minus its background
     points in opposite directions for warm and cool colours on the gray background (cosine −0.6
     to −0.8), so a latent showing a red shape is evidence *against* a green shape at that place,
     and colour edits moved or erased the shape; with it the cosines are 0.9 to 1.0.
  2. UNet2DConditionModel (attention at 8×8 and 4×4 only) + CLIPTextModel trained together on
     ε-prediction with SD's scaled-linear 1000-step schedule, min-SNR-5 loss weights (Hang et
     al. 2023), 10 % empty captions (for classifier-free guidance), EMA 0.999 of the weights;
     the EMA weights are saved.
  3. The held-out scenes for the evaluation (`tests/fixtures/toy-heldout`), written first: the
     VAE's round trip of them (`toy_vae_ceiling.py`) is printed after stage 1 and kept in
     training.json, as the ceiling of every PSNR the evaluation reports.

`--vae-minutes` and `--minutes` cap the two stages by time, `--vae-stop-at` / `--unet-stop-at` by
step. The committed model is this script's defaults on a 2-core machine (an AMD EPYC, AVX2): all
7000 VAE and 4100 UNet steps, 56 minutes in all (30 of them the VAE's), so the plain command
repeats it (deterministic algorithms, every random draw seeded; float rounding may still differ
on another CPU or thread count). 8 latent channels and 7000 VAE steps lift the held-out round
trip from 30.2 to 38.1 dB over the whole image and from 39.4 to 48.6 dB outside the shape
(4 channels, 1700 steps; textured paper 27.1 → 31.8 dB), the ceiling of every edit the
evaluation scores. `training.json` records what ran. Then
`gen_toy_refs.py` writes the component references that the Rust parity tests check the toy model
against, and `gen_editing.py` and `gen_null_text.py` rewrite their toy cases.

PyTorch + diffusers train it (pinned in requirements.txt), not Burn's autodiff through the Rust
models: the Rust crates are written for inference (their modules are not wired to an autodiff
backend), and the one-hour budget on 2 cores left no room to build and tune a second trainer. The
same Rust code then loads the result, and its parity with diffusers on this very model is tested.
"""

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel  # noqa: E402
from diffusers.models.attention_processor import AttnProcessor  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

import gen_tiny_models as gtm  # noqa: E402
import toy_shapes  # noqa: E402
import toy_vae_ceiling  # noqa: E402

ROOT = HERE.parent.parent
TEXT_HIDDEN = 64


def vae_config(latent_channels=4, channels=(32, 32, 64), layers=1):
    return dict(
        in_channels=3, out_channels=3, latent_channels=latent_channels,
        down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
        block_out_channels=list(channels), layers_per_block=layers, norm_num_groups=16,
        sample_size=toy_shapes.SIZE, act_fn="silu",
        # Fully convolutional (no mid-block attention): trains on crops, 4× cheaper per step.
        mid_block_add_attention=False,
    )


def unet_config(latent_channels=4):
    return dict(
        sample_size=toy_shapes.SIZE // 4, in_channels=latent_channels, out_channels=latent_channels,
        # Attention at 8×8 and 4×4 only: at 16×16 the attention scores dominate a CPU step.
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        block_out_channels=[32, 64, 64], layers_per_block=1, norm_num_groups=16,
        cross_attention_dim=TEXT_HIDDEN, attention_head_dim=4, use_linear_projection=True,
    )


def text_config():
    return CLIPTextConfig(
        vocab_size=49408, hidden_size=TEXT_HIDDEN, intermediate_size=4 * TEXT_HIDDEN,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
        hidden_act="quick_gelu", layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=1, projection_dim=TEXT_HIDDEN,
    )


def dataset(count):
    """`count` training scenes as a float tensor in [-1, 1], their shapes' coverage averaged over
    the VAE's 4×4 cells ([count, 1, 16, 16]) and their captions."""
    images, coverage, captions = [], [], []
    for i in range(count):
        s = toy_shapes.scene(toy_shapes.TRAIN_SEED, i)
        images.append(s["image"])
        coverage.append(s["coverage"])
        captions.append(s["caption"])
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    cov = F.avg_pool2d(torch.from_numpy(np.stack(coverage))[:, None], 4)
    return x, cov, captions


def log(stage, step, total, start, **values):
    parts = " ".join(f"{k} {v:.5f}" for k, v in values.items())
    print(f"[{stage}] {step}/{total} {time.time() - start:7.1f}s {parts}", flush=True)


def warmup_cosine(opt, steps, warmup):
    """Linear warm-up over the first `warmup` of the steps, then cosine decay to 5 %."""
    n = max(1, int(steps * warmup))

    def factor(step):
        if step < n:
            return (step + 1) / n
        p = (step - n) / max(1, steps - n)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train_vae(x, cov, steps, batch, seed, crop, full_fraction, presence, presence_weight, minutes, stop_at,
              arch):
    """The first (1 - full_fraction) of the steps see random crop×crop windows (one offset per
    batch), the rest whole images. Latent channel 0 (the posterior mean) is also pulled towards
    `presence` × the shapes' coverage of each 4×4 cell, with weight `presence_weight`."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(**vae_config(**arch))
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    sched = warmup_cosine(opt, steps, warmup=0.05)
    g = torch.Generator().manual_seed(seed)
    start = time.time()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        img, target = x[idx], presence * cov[idx]
        if step <= steps * (1 - full_fraction):
            oy, ox = (int(v) * 4 for v in torch.randint(0, (img.shape[-1] - crop) // 4 + 1, (2,), generator=g))
            img = img[:, :, oy:oy + crop, ox:ox + crop]
            target = target[:, :, oy // 4:(oy + crop) // 4, ox // 4:(ox + crop) // 4]
        post = vae.encode(img).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        rec = vae.decode(z).sample
        kl = post.kl().mean() / img[0].numel()
        aux = F.mse_loss(post.mean[:, :1], target)
        loss = F.l1_loss(rec, img) + F.mse_loss(rec, img) + 1e-6 * kl + presence_weight * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps:
            psnr = 10 * math.log10(4.0 / F.mse_loss(rec.clamp(-1, 1), img).item())
            log("vae", step, steps, start, loss=loss.item(), psnr_db=psnr, presence_mse=aux.item())
        if stop_at and step >= stop_at:
            break
        if minutes and time.time() - start > minutes * 60:
            print(f"[vae] time limit of {minutes} min reached at step {step}", flush=True)
            break
    return vae.eval(), step


@torch.no_grad()
def encode_all(vae, x):
    means, stds = [], []
    for chunk in x.split(256):
        post = vae.encode(chunk).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    return torch.cat(means), torch.cat(stds)


def tokenize(tokenizer, captions):
    return tokenizer(captions, padding="max_length", max_length=77, truncation=True,
                     return_tensors="pt").input_ids


def train_unet(lat_mean, lat_std, captions, tokenizer, scaling, steps, batch, seed, min_snr, minutes, stop_at):
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_config(lat_mean.shape[1]))
    # Plain matmul attention: on CPU, PyTorch's fused kernels are several times slower at these sizes.
    unet.set_attn_processor(AttnProcessor())
    tcfg = text_config()
    tcfg._attn_implementation = "eager"
    text = CLIPTextModel(tcfg)
    noise_sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                beta_schedule="scaled_linear")
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2, fused=True)
    sched = warmup_cosine(opt, steps, warmup=0.03)
    # Min-SNR-γ loss weights (Hang et al. 2023) for ε-prediction: min(SNR, γ) / SNR.
    snr = noise_sched.alphas_cumprod / (1 - noise_sched.alphas_cumprod)
    weights = snr.clamp(max=min_snr) / snr if min_snr else torch.ones_like(snr)
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text).eval()
    ema_params = list(ema_unet.parameters()) + list(ema_text.parameters())
    ids_all = tokenize(tokenizer, captions)
    ids_empty = tokenize(tokenizer, [""])[0]
    g = torch.Generator().manual_seed(seed)
    start = time.time()
    done = 0
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(lat_mean), (batch,), generator=g)
        z = (lat_mean[idx] + lat_std[idx] * torch.randn(lat_mean[idx].shape, generator=g)) * scaling
        ids = ids_all[idx].clone()
        drop = torch.rand(batch, generator=g) < 0.1
        ids[drop] = ids_empty
        noise = torch.randn(z.shape, generator=g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        noisy = noise_sched.add_noise(z, noise, t)
        states = text(ids).last_hidden_state
        pred = unet(noisy, t, states).sample
        loss = (weights[t] * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_mul_(ema_params, decay)
            torch._foreach_add_(ema_params, params, alpha=1 - decay)
        done = step
        if step % 100 == 0 or step == steps:
            log("unet", step, steps, start, loss=loss.item())
        if stop_at and step >= stop_at:
            break
        if minutes and time.time() - start > minutes * 60:
            print(f"[unet] time limit of {minutes} min reached at step {step}", flush=True)
            break
    return ema_unet, ema_text, done


def save_text_encoder(text, folder: Path):
    """transformers-4.x published form: `text_model.*` keys plus the position_ids buffer."""
    sd = {"text_model." + k: v for k, v in gtm.sd_contig(text.state_dict()).items()}
    sd["text_model.embeddings.position_ids"] = torch.arange(77, dtype=torch.int64)[None]
    gtm.save_st(sd, folder / "model.safetensors")
    cfg = text.config.to_dict()
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_") and k not in ("dtype", "torch_dtype")}
    cfg.update({"architectures": ["CLIPTextModel"], "torch_dtype": "float32",
                "transformers_version": "4.25.1"})
    gtm.write_json(folder / "config.json", dict(sorted(cfg.items())))


def write_model(out: Path, vae, unet, text, scaling, meta):
    vocab, merges = gtm.build_vocab_merges()
    gtm.write_tokenizer(out / "tokenizer", "sd1", vocab, merges)
    vae.register_to_config(scaling_factor=float(scaling))
    vae.save_pretrained(out / "vae", safe_serialization=True)
    unet.save_pretrained(out / "unet", safe_serialization=True)
    save_text_encoder(text, out / "text_encoder")
    gtm.write_json(out / "scheduler" / "scheduler_config.json", gtm.scheduler_config("tiny-sd1"))
    index = gtm.model_index("tiny-sd1")
    index["_diffusers_version"] = gtm._diffusers_version()
    gtm.write_json(out / "model_index.json", index)
    gtm.write_json(out / "training.json", meta)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "tests/fixtures/models/toy")
    ap.add_argument("--heldout", type=Path, default=ROOT / "tests/fixtures/toy-heldout")
    ap.add_argument("--work", type=Path, default=ROOT / "target/toy-train")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--vae-steps", type=int, default=7000)
    ap.add_argument("--vae-batch", type=int, default=16)
    ap.add_argument("--vae-crop", type=int, default=32)
    ap.add_argument("--vae-full", type=float, default=0.1, help="fraction of VAE steps on whole images")
    ap.add_argument("--vae-minutes", type=float, default=0, help="stop the VAE stage after this long")
    ap.add_argument("--vae-stop-at", type=int, default=0, help="stop the VAE stage after this step")
    ap.add_argument("--vae-latent-channels", type=int, default=8)
    ap.add_argument("--vae-channels", default="32,32,64", help="block_out_channels of the VAE")
    ap.add_argument("--vae-layers", type=int, default=1, help="layers_per_block of the VAE")
    ap.add_argument("--vae-only", action="store_true",
                    help="stop after the VAE stage (its held-out round trip is printed and kept in WORK)")
    ap.add_argument("--unet-steps", type=int, default=4100)
    ap.add_argument("--unet-batch", type=int, default=32)
    ap.add_argument("--minutes", type=float, default=0, help="stop the UNet stage after this long")
    ap.add_argument("--unet-stop-at", type=int, default=0, help="stop the UNet stage after this step")
    ap.add_argument("--presence", type=float, default=40.0,
                    help="amplitude of the shape-coverage target of latent channel 0")
    ap.add_argument("--presence-weight", type=float, default=0.01, help="weight of that target's MSE")
    ap.add_argument("--min-snr", type=float, default=5.0, help="γ of the min-SNR loss weights (0: plain MSE)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(True)
    a.work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    x, cov, captions = dataset(a.images)
    print(f"dataset: {len(x)} scenes in {time.time() - t0:.1f}s", flush=True)
    toy_shapes.write_heldout(a.heldout, 48)
    arch = {"latent_channels": a.vae_latent_channels, "layers": a.vae_layers,
            "channels": [int(c) for c in a.vae_channels.split(",")]}

    vae_dir = a.work / "vae"
    if a.resume and (vae_dir / "config.json").is_file():
        vae = AutoencoderKL.from_pretrained(vae_dir).eval()
        vae_done = None
    else:
        vae, vae_done = train_vae(x, cov, a.vae_steps, a.vae_batch, a.seed, a.vae_crop, a.vae_full, a.presence,
                                  a.presence_weight, a.vae_minutes, a.vae_stop_at, arch)
        print(f"vae: {vae_done} steps", flush=True)
        vae.save_pretrained(vae_dir, safe_serialization=True)
    # The held-out round trip: the ceiling of every PSNR that the evaluation reports.
    vae_heldout = toy_vae_ceiling.ceiling(vae_dir, a.heldout)
    for k, r in sorted(vae_heldout.items()):
        print(f"[vae] held-out {k:9} PSNR {r['psnr_db']:6.2f} dB, outside the shape {r['psnr_outside_db']:6.2f} dB",
              flush=True)
    (a.work / "vae-heldout.json").write_text(json.dumps(vae_heldout, indent=1) + "\n")
    if a.vae_only:
        return
    mean, std = encode_all(vae, x)
    scaling = 1.0 / (mean + std * torch.randn(mean.shape, generator=torch.Generator().manual_seed(a.seed))).std().item()
    print(f"latent scaling factor {scaling:.5f}", flush=True)

    tokenizer_dir = a.work / "tokenizer"
    vocab, merges = gtm.build_vocab_merges()
    gtm.write_tokenizer(tokenizer_dir, "sd1", vocab, merges)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)

    unet, text, done = train_unet(mean, std, captions, tokenizer, scaling, a.unet_steps,
                                  a.unet_batch, a.seed + 1, a.min_snr, a.minutes, a.unet_stop_at)
    meta = {
        "images": a.images, "vae_steps": a.vae_steps, "vae_steps_done": vae_done, "vae_batch": a.vae_batch,
        "vae_crop": a.vae_crop, "vae_full": a.vae_full, "vae_arch": arch, "vae_heldout": vae_heldout,
        "presence": a.presence,
        "presence_weight": a.presence_weight, "min_snr": a.min_snr,
        "unet_steps_planned": a.unet_steps, "unet_steps_done": done, "unet_batch": a.unet_batch,
        "seed": a.seed, "threads": a.threads, "scaling_factor": scaling,
        "minutes": round((time.time() - t0) / 60, 1), "torch": torch.__version__,
    }
    write_model(a.out, vae, unet, text, scaling, meta)
    print(json.dumps(meta), flush=True)


if __name__ == "__main__":
    main()
