#!/usr/bin/env python3
"""End-to-end reference for ddim-edit: DDIM inversion + guided DDIM sampling on the tiny SD pipelines.

Run from anywhere:  python tests/reference/gen_pipeline.py
Deterministic (fixed seeds, single CPU thread, torch.use_deterministic_algorithms(True), float32); a
second run rewrites byte-identical files. Needs the tiny models written by gen_tiny_models.py
(tests/fixtures/models/{tiny-sd1,tiny-sd2,tiny-sd2-v}). NOTE: gen_tiny_models.py deletes
tests/fixtures/refs/ wholesale, so rerun this script after it.

Components are loaded one by one in float32 straight from the model folder (f16 weights on disk, as in
tiny-sd2, are upcast at load time):
    CLIPTokenizer(m/tokenizer), CLIPTextModel(m/text_encoder), UNet2DConditionModel(m/unet),
    AutoencoderKL(m/vae), DDIMScheduler / DDIMInverseScheduler .from_pretrained(m/scheduler).
The schedulers are built from scheduler_config.json as written on disk (also when its _class_name is
PNDMScheduler); StableDiffusionPipeline is deliberately NOT used to load them, because its __init__
rewrites steps_offset (and the UNet sample_size) in memory.

Algorithm (the spec the Rust code follows)
------------------------------------------
  sf = vae.config.scaling_factor (0.18215 when the config has no such key).
  image -> x0: PNG uint8 RGB [H,W,3] -> float32 [1,3,H,W] = u8 / 127.5 - 1 (no resizing)
        -> x0 = vae.encode(img).latent_dist.mean * sf                         (the mean, no sampling)
  text states: tokenizer(p, padding="max_length", max_length=tokenizer.model_max_length (77),
        truncation=True).input_ids -> text_encoder(ids)[0]  (last_hidden_state, no attention mask).
        Negative prompt defaults to "".
  guided UNet(latents, t, cond, uncond, g):
        g == 1: eps = unet(latents, t, cond).sample                          (one batch-1 call)
        else:   e = unet(cat([latents, latents]), t, cat([uncond, cond])).sample  (t a scalar)
                eps_u, eps_c = e.chunk(2); eps = eps_u + g * (eps_c - eps_u)
        ("eps" is whatever the model predicts: epsilon, or v for v-prediction; the scheduler converts.)
  invert(x0, source prompt, N, g_inv):
        inv = DDIMInverseScheduler(m/scheduler); inv.set_timesteps(N)  -> s_1 < ... < s_N (ascending)
        latents = x0; for t in inv.timesteps: latents = inv.step(guidedUNet(latents, t), t, latents)
        .prev_sample; append latents.   trajectory[j] (0-based) is the latent AT timestep inv.timesteps[j].
  sample(start latents, prompt, N, k, g):
        sch = DDIMScheduler(m/scheduler); sch.set_timesteps(N) -> tau_0 > ... > tau_{N-1}
        start = trajectory[N-1-k]   (asserted: tau_k == inv.timesteps[N-1-k])
        for i in k..N-1: latents = sch.step(guidedUNet(latents, tau_i), tau_i, latents, eta=0).prev_sample
        image = vae.decode(latents / sf).sample; image = (image / 2 + 0.5).clamp(0, 1)
        u8 = (image * 255).round() (float32, round-half-to-even) -> uint8 [H,W,3]
  edit  = invert(source prompt, g_inv) then sample(edit prompt, g) from step k.
  recon = sample(SOURCE prompt, g) from the same trajectory entry (reconstruction check).
  generate = sample from given initial latents at step 0 (no trajectory): initial latents =
        torch.randn([1, C, H/f, W/f], generator=torch.Generator().manual_seed(seed)); saved, because the
        Rust RNG differs. (DDIM's init_noise_sigma is 1.0, so they are used unscaled.) The generate case is
        cross-checked against diffusers' StableDiffusionPipeline (given the same components, the DDIM
        scheduler and latents=initial_latents), which must agree to the last bit.

Deliberate differences from the Hugging Face diffusion-models-class DDIM inversion notebook
(unit 4, "ddim_inversion"): that notebook inverts all N steps (its loop skips the first and the last
timestep) and then starts the sampler from `inverted_latents[-(start_step + 1)]`, a latent that is one
step LESS noisy than the timestep tau_start_step it then samples from. Here the trajectory entry and
the timestep agree exactly (entry N-1-k is the latent at tau_k == inv.timesteps[N-1-k]), every inverse
step is taken (none skipped), and an edit only needs the first N-k inverse steps; the fixtures
nevertheless compute and store the full N-step trajectory.

Fixtures written (relative to the repository root)
--------------------------------------------------
  tests/fixtures/images/<case>.png            synthetic inputs (edit cases only), drawn with numpy
  tests/fixtures/refs/pipeline.json           {"cases": [...]}: per case name, kind ("edit" | "generate"),
        model (folder under tests/fixtures/models), image (path relative to tests/fixtures, null for
        generate), width, height, prompt, edit_prompt (null for generate), negative_prompt, steps,
        start_step, guidance, inversion_guidance (null for generate), seed (null for edit), ref and
        image_png (paths relative to tests/fixtures), and informational scheduler facts.
  tests/fixtures/refs/pipeline-<case>.safetensors   (float32 unless noted; h = H/f, w = W/f, C = 4)
     edit cases:
        x0 [1,C,h,w]; trajectory [N,C,h,w]; timesteps int64 [N] (inverse, ascending);
        sampler_timesteps int64 [N] (descending); edited_latents [1,C,h,w]; recon_latents [1,C,h,w];
        edited_image uint8 [H,W,3]; recon_image uint8 [H,W,3];
        extra, for bisecting: cond_states / edit_states / uncond_states [1,77,D] (source, edit, negative
        prompt); edit_path / recon_path [N-k,C,h,w] (latents after each sampler step, last == final).
     generate case:
        initial_latents [1,C,h,w]; sampler_timesteps int64 [N]; generated_latents [1,C,h,w];
        generated_image uint8 [H,W,3]; extra: cond_states / uncond_states [1,77,D], generated_path [N,C,h,w].
  tests/fixtures/refs/pipeline-<case>-edited.png    edited_image   (generate: pipeline-<case>-generated.png)

Cases: sd1 (tiny-sd1, 16x16, N=10, k=3, g=g_inv=3.5), sd2 (tiny-sd2, f16 on disk, W=24 x H=16,
N=10, k=2, g=2, g_inv=1 -> single-batch inversion), sd2v (tiny-sd2-v, v-prediction, trailing spacing,
32x32, N=8, k=1, g=g_inv=3.5), gen_sd1 (generate, tiny-sd1, 16x16, N=6, g=3.5, negative "blurry", seed 7).
The models are random, so edits/reconstructions are not meaningful pictures; the PSNRs printed are
informational only.
"""

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMInverseScheduler,
    DDIMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: E402
import diffusers.utils.logging as dlogging  # noqa: E402
import transformers.utils.logging as tlogging  # noqa: E402

tlogging.set_verbosity_error()
dlogging.set_verbosity_error()
tlogging.disable_progress_bar()
dlogging.disable_progress_bar()

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
MODELS = FIXTURES / "models"
IMAGES = FIXTURES / "images"
REFS = FIXTURES / "refs"

CASES = [
    dict(name="sd1", kind="edit", model="tiny-sd1", width=16, height=16, steps=10, start_step=3,
         guidance=3.5, inversion_guidance=3.5,
         prompt="a red circle on a white background", edit_prompt="a blue square on a white background",
         negative_prompt="", seed=None),
    dict(name="sd2", kind="edit", model="tiny-sd2", width=24, height=16, steps=10, start_step=2,
         guidance=2.0, inversion_guidance=1.0,
         prompt="a photo of a yellow car on a grey road", edit_prompt="a photo of a red bus on a grey road",
         negative_prompt="", seed=None),
    dict(name="sd2v", kind="edit", model="tiny-sd2-v", width=32, height=32, steps=8, start_step=1,
         guidance=3.5, inversion_guidance=3.5,
         prompt="a green tree under a blue sky", edit_prompt="a snowy pine tree under a night sky",
         negative_prompt="", seed=None),
    dict(name="gen_sd1", kind="generate", model="tiny-sd1", width=16, height=16, steps=6, start_step=0,
         guidance=3.5, inversion_guidance=None,
         prompt="a green star", edit_prompt=None, negative_prompt="blurry", seed=7),
]


# ------------------------------------------------------------------------------------------------
# synthetic images
# ------------------------------------------------------------------------------------------------
def smooth_noise(rng, h, w, cells=4):
    """Low-frequency noise in [-1, 1]: a (cells+1)^2 random grid, bilinearly interpolated, per channel."""
    grid = rng.uniform(-1.0, 1.0, size=(3, cells + 1, cells + 1))
    ys = np.linspace(0.0, cells, h)
    xs = np.linspace(0.0, cells, w)
    y0 = np.minimum(np.floor(ys).astype(int), cells - 1)
    x0 = np.minimum(np.floor(xs).astype(int), cells - 1)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    out = np.empty((h, w, 3))
    for c in range(3):
        g = grid[c]
        a = g[y0][:, x0]
        b = g[y0][:, x0 + 1]
        cc = g[y0 + 1][:, x0]
        d = g[y0 + 1][:, x0 + 1]
        out[..., c] = (a * (1 - fx) + b * fx) * (1 - fy) + (cc * (1 - fx) + d * fx) * fy
    return out


def draw_image(name, w, h):
    rng = np.random.default_rng({"sd1": 1001, "sd2": 1002, "sd2v": 1003}[name])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    img = np.ones((h, w, 3))  # white background
    if name == "sd1":
        # red disc on white, soft (anti-aliased) edge
        r = np.hypot(yy - h * 0.5, xx - w * 0.5)
        m = np.clip(h * 0.32 - r + 0.5, 0.0, 1.0)[..., None]
        img = img * (1 - m) + np.array([0.85, 0.1, 0.1]) * m
    elif name == "sd2":
        # yellow rounded box ("car") on a grey road, sky gradient above
        sky = np.stack([0.55 + 0.2 * yy / h, 0.7 + 0.1 * yy / h, np.full_like(yy, 0.95)], -1)
        road = np.full((h, w, 3), 0.45)
        img = np.where((yy > h * 0.55)[..., None], road, sky)
        m = ((np.abs(xx - w * 0.5) < w * 0.3) & (np.abs(yy - h * 0.6) < h * 0.18)).astype(float)[..., None]
        img = img * (1 - m) + np.array([0.95, 0.8, 0.1]) * m
    else:
        # green triangle ("tree") with brown trunk under a blue sky, green ground
        sky = np.stack([0.3 + 0.3 * yy / h, 0.5 + 0.3 * yy / h, np.full_like(yy, 0.95)], -1)
        img = np.where((yy > h * 0.8)[..., None], np.array([0.3, 0.6, 0.25]), sky)
        tri = (yy > h * 0.15) & (yy < h * 0.7) & (np.abs(xx - w * 0.5) < (yy - h * 0.15) * 0.55)
        trunk = (yy >= h * 0.7) & (yy < h * 0.85) & (np.abs(xx - w * 0.5) < w * 0.06)
        img = np.where(tri[..., None], np.array([0.1, 0.55, 0.15]), img)
        img = np.where(trunk[..., None], np.array([0.45, 0.3, 0.15]), img)
    img = img + 0.06 * smooth_noise(rng, h, w)
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def save_png(arr, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode="RGB").save(path, format="PNG", optimize=False, compress_level=9)


def load_png(path: Path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


# ------------------------------------------------------------------------------------------------
# model loading
# ------------------------------------------------------------------------------------------------
def load_models(model):
    m = MODELS / model
    tok = CLIPTokenizer.from_pretrained(m / "tokenizer")
    te = CLIPTextModel.from_pretrained(m / "text_encoder", dtype=torch.float32).eval()
    unet = UNet2DConditionModel.from_pretrained(m / "unet", dtype=torch.float32).eval()
    vae = AutoencoderKL.from_pretrained(m / "vae", dtype=torch.float32).eval()
    for mod in (te, unet, vae):
        assert all(p.dtype == torch.float32 for p in mod.parameters()), type(mod)
    assert tok.model_max_length == 77, tok.model_max_length
    disk = json.loads((m / "scheduler" / "scheduler_config.json").read_text())
    inv = DDIMInverseScheduler.from_pretrained(m / "scheduler")
    sch = DDIMScheduler.from_pretrained(m / "scheduler")
    for s in (inv, sch):  # the on-disk values are used, not rewritten
        for key in ("steps_offset", "set_alpha_to_one", "clip_sample", "beta_schedule", "beta_start", "beta_end",
                    "num_train_timesteps", "prediction_type", "timestep_spacing"):
            if key in disk:
                assert s.config[key] == disk[key], (model, type(s).__name__, key, s.config[key], disk[key])
    return tok, te, unet, vae, inv, sch, disk


def scaling_factor(vae):
    return float(getattr(vae.config, "scaling_factor", None) or 0.18215)


def vae_factor(vae):
    return 2 ** (len(vae.config.block_out_channels) - 1)


# ------------------------------------------------------------------------------------------------
# the algorithm
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def encode_text(tok, te, prompt):
    ids = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    return te(ids)[0]


@torch.no_grad()
def encode_image(vae, u8):
    img = torch.from_numpy(u8).permute(2, 0, 1)[None].to(torch.float32) / 127.5 - 1
    return vae.encode(img).latent_dist.mean * scaling_factor(vae)


@torch.no_grad()
def decode_image(vae, latents):
    image = vae.decode(latents / scaling_factor(vae)).sample
    image = (image / 2 + 0.5).clamp(0, 1)
    x = image[0].permute(1, 2, 0).numpy()
    return (x * 255).round().astype("uint8")


@torch.no_grad()
def guided(unet, latents, t, cond, uncond, g):
    if g == 1.0:
        return unet(latents, t, encoder_hidden_states=cond).sample
    e = unet(torch.cat([latents, latents]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
    eu, ec = e.chunk(2)
    return eu + g * (ec - eu)


@torch.no_grad()
def invert(unet, inv, x0, cond, uncond, n, g):
    inv.set_timesteps(n)
    latents = x0
    traj = []
    for t in inv.timesteps:
        out = guided(unet, latents, t, cond, uncond, g)
        latents = inv.step(out, t, latents).prev_sample
        traj.append(latents)
    return torch.cat(traj), inv.timesteps.clone().to(torch.int64)


@torch.no_grad()
def sample(unet, sch, latents, cond, uncond, n, k, g):
    sch.set_timesteps(n)
    path = []
    for i in range(k, n):
        t = sch.timesteps[i]
        out = guided(unet, latents, t, cond, uncond, g)
        latents = sch.step(out, t, latents, eta=0.0).prev_sample
        path.append(latents)
    return latents, torch.cat(path), sch.timesteps.clone().to(torch.int64)


def psnr(a, b):
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def save_st(tensors, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


# ------------------------------------------------------------------------------------------------
def run_edit(c, comps):
    tok, te, unet, vae, inv, sch, _ = comps
    n, k, g, g_inv = c["steps"], c["start_step"], c["guidance"], c["inversion_guidance"]
    img_path = IMAGES / f"{c['name']}.png"
    save_png(draw_image(c["name"], c["width"], c["height"]), img_path)
    u8 = load_png(img_path)
    assert u8.shape == (c["height"], c["width"], 3)

    cond = encode_text(tok, te, c["prompt"])
    edit = encode_text(tok, te, c["edit_prompt"])
    uncond = encode_text(tok, te, c["negative_prompt"])
    x0 = encode_image(vae, u8)
    f = vae_factor(vae)
    assert x0.shape == (1, unet.config.in_channels, c["height"] // f, c["width"] // f), x0.shape

    traj, ts = invert(unet, inv, x0, cond, uncond, n, g_inv)
    assert traj.shape == (n,) + tuple(x0.shape[1:])
    assert bool((ts[1:] > ts[:-1]).all())

    sch.set_timesteps(n)
    assert int(sch.timesteps[k]) == int(ts[n - 1 - k]), (sch.timesteps, ts)
    start = traj[n - 1 - k : n - k]
    edited, edit_path, sts = sample(unet, sch, start, edit, uncond, n, k, g)
    recon, recon_path, sts2 = sample(unet, sch, start, cond, uncond, n, k, g)
    assert torch.equal(sts, sts2) and torch.equal(sts, ts.flip(0)), (sts, ts)
    edited_img = decode_image(vae, edited)
    recon_img = decode_image(vae, recon)
    vae_rt = decode_image(vae, x0)

    out = {
        "x0": x0, "trajectory": traj, "timesteps": ts, "sampler_timesteps": sts,
        "edited_latents": edited, "recon_latents": recon,
        "edited_image": torch.from_numpy(edited_img), "recon_image": torch.from_numpy(recon_img),
        "cond_states": cond, "edit_states": edit, "uncond_states": uncond,
        "edit_path": edit_path, "recon_path": recon_path,
    }
    save_st(out, REFS / f"pipeline-{c['name']}.safetensors")
    save_png(edited_img, REFS / f"pipeline-{c['name']}-edited.png")
    stats = dict(
        psnr_input_recon=psnr(u8, recon_img), psnr_input_edited=psnr(u8, edited_img),
        psnr_input_vae_roundtrip=psnr(u8, vae_rt),
        recon_vs_x0_latent_rmse=float((recon - x0).pow(2).mean().sqrt()),
        x0_std=float(x0.std()), traj_last_std=float(traj[-1].std()),
    )
    return out, stats


def run_generate(c, comps):
    tok, te, unet, vae, inv, sch, _ = comps
    n, g = c["steps"], c["guidance"]
    f = vae_factor(vae)
    shape = [1, unet.config.in_channels, c["height"] // f, c["width"] // f]
    init = torch.randn(shape, generator=torch.Generator().manual_seed(c["seed"]))
    cond = encode_text(tok, te, c["prompt"])
    uncond = encode_text(tok, te, c["negative_prompt"])
    sch.set_timesteps(n)
    assert float(sch.init_noise_sigma) == 1.0
    gen, path, sts = sample(unet, sch, init, cond, uncond, n, 0, g)
    img = decode_image(vae, gen)

    # cross-check with diffusers' own pipeline (same component objects, DDIM scheduler from disk)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet,
                                   scheduler=DDIMScheduler.from_pretrained(MODELS / c["model"] / "scheduler"),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.scheduler.config.steps_offset == sch.config.steps_offset
    with torch.no_grad():
        pl = pipe(c["prompt"], negative_prompt=c["negative_prompt"], height=c["height"], width=c["width"],
                  num_inference_steps=n, guidance_scale=g, eta=0.0, latents=init.clone(),
                  output_type="latent").images
        pimg = pipe(c["prompt"], negative_prompt=c["negative_prompt"], height=c["height"], width=c["width"],
                    num_inference_steps=n, guidance_scale=g, eta=0.0, latents=init.clone(),
                    output_type="np").images[0]
    assert torch.equal(pl, gen), float((pl - gen).abs().max())
    pipe_u8 = (pimg * 255).round().astype("uint8")
    assert np.array_equal(pipe_u8, img), int(np.abs(pipe_u8.astype(int) - img.astype(int)).max())

    out = {
        "initial_latents": init, "sampler_timesteps": sts, "generated_latents": gen,
        "generated_image": torch.from_numpy(img), "cond_states": cond, "uncond_states": uncond,
        "generated_path": path,
    }
    save_st(out, REFS / f"pipeline-{c['name']}.safetensors")
    save_png(img, REFS / f"pipeline-{c['name']}-generated.png")
    return out, dict(generated_std=float(gen.std()), matches_StableDiffusionPipeline=True)


def main():
    manifest = []
    for c in CASES:
        comps = load_models(c["model"])
        disk = comps[6]
        if c["kind"] == "edit":
            out, stats = run_edit(c, comps)
        else:
            out, stats = run_generate(c, comps)
        entry = {k: c[k] for k in ("name", "kind", "model")}
        entry["image"] = f"images/{c['name']}.png" if c["kind"] == "edit" else None
        entry.update({k: c[k] for k in ("width", "height", "prompt", "edit_prompt", "negative_prompt", "steps",
                                          "start_step", "guidance", "inversion_guidance", "seed")})
        entry["ref"] = f"refs/pipeline-{c['name']}.safetensors"
        entry["image_png"] = f"refs/pipeline-{c['name']}-{'edited' if c['kind'] == 'edit' else 'generated'}.png"
        sch = comps[5]
        entry["info"] = {
            "scaling_factor": scaling_factor(comps[3]),
            "prediction_type": sch.config.prediction_type,
            "timestep_spacing": sch.config.timestep_spacing,
            "steps_offset": sch.config.steps_offset,
            "scheduler_class_on_disk": disk["_class_name"],
            "sampler_timesteps": out["sampler_timesteps"].tolist(),
        }
        manifest.append(entry)
        print(f"== {c['name']} ({c['model']}, {c['kind']})")
        for k, v in out.items():
            print(f"   {k:18s} {str(v.dtype).replace('torch.', ''):8s} {list(v.shape)}")
        if "timesteps" in out:
            print(f"   inverse timesteps {out['timesteps'].tolist()}")
        print(f"   sampler timesteps {out['sampler_timesteps'].tolist()}")
        print("   " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items()))

    (REFS / "pipeline.json").write_text(json.dumps({"cases": manifest}, indent=2, ensure_ascii=False) + "\n",
                                        encoding="utf-8")
    files = sorted([*IMAGES.glob("*.png"), *REFS.glob("pipeline*")])
    for p in files:
        print(f"{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}  {p.stat().st_size:7d}  {p.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
