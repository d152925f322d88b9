#!/usr/bin/env python3
"""Write tiny Stable Diffusion checkpoints in the original LDM single-file layout, and the key/shape
manifests of the published SD 1.5 / 2.1 single files.

Run from anywhere, after gen_tiny_models.py and gen_manifests.py:
    python tests/reference/gen_single_file.py
Deterministic (fixed seeds, single CPU thread).

Writes (paths relative to the repository root):
  tests/fixtures/models/single-file/tiny-sd1.safetensors
      tests/fixtures/models/tiny-sd1 in the layout of `v1-5-pruned.safetensors`: the UNet under
      `model.diffusion_model.`, its EMA copy under `model_ema.` (dots removed from the names, plus
      `model_ema.decay` / `model_ema.num_updates`), the VAE under `first_stage_model.` (mid-block
      attention as 1x1 convolutions `q/k/v/proj_out`), CLIP under `cond_stage_model.transformer.`
      with its int64 `position_ids`, and the LatentDiffusion schedule buffers (`betas`,
      `alphas_cumprod`, ...). The EMA copy holds the folder's UNet weights; the non-EMA UNet holds
      their negation (exact), so a loader that picks the wrong one gives other tensors. Every tensor
      keeps its dtype in the folder's files (tiny-sd2's UNet and text encoder are f16).
  tests/fixtures/models/single-file/tiny-sd2.safetensors
      tests/fixtures/models/tiny-sd2 in the layout of `v2-1_512-ema-pruned.safetensors`: no EMA
      copy, and the text encoder in OpenCLIP's layout under `cond_stage_model.model.` (q/k/v fused
      into `attn.in_proj_weight`/`in_proj_bias`, `ln_1`, `mlp.c_fc`, `positional_embedding`, ...,
      plus `text_projection` and `logit_scale`, which Stable Diffusion does not use).
  fuzz/corpus/single_file/seed-{sd1,sd2,sdxl}.safetensors
      fuzz seeds: the tiny files' keys with 1-element tensors (the shapes the map reads kept
      minimal but valid: conv_in [1, 4, 1, 1], VAE attention [1, 1, 1, 1], fused q/k/v [3, 1]),
      and an SDXL-like one.
  tests/fixtures/manifests/{sd-1-5,sd-2-1}/single-file.json
      {"key": [shape]} of every tensor of the published single files (EMA-pruned, so no
      `model_ema.*`), from the models of gen_manifests.py on the `meta` device; SD 2.1's has the
      OpenCLIP text tower's 24th block (`resblocks.23`), which SD 2.x does not use.

Checks before anything is kept:
  - each tiny file loads with diffusers' StableDiffusionPipeline.from_single_file (config = the
    folder, extract_ema=True), and every tensor of its UNet, VAE and text encoder equals the
    folder's; with extract_ema=False the UNet's tensors are the folder's negated;
  - for the full-size manifests, diffusers' own converters (convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint, convert_open_clip_checkpoint, the CLIP prefix strip) map the meta
    tensors back to exactly the keys and shapes of tests/fixtures/manifests/<model>/*.json.

The diffusers → LDM key map below is written from the LDM model's module names (ldm/modules/
diffusionmodules/openaimodel.py and model.py); diffusers' converters are the check, not the source.
"""
import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.loaders import single_file_utils as sfu
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "tests/fixtures/models"
OUT = MODELS / "single-file"
CONFIGS = ROOT / "tests/fixtures/configs"
MANIFESTS = ROOT / "tests/fixtures/manifests"

RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def rename_inner(rest, table):
    for new, old in table.items():
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def unet_key(key, layers, attention_levels):
    """diffusers UNet2DConditionModel key -> LDM UNetModel key (without `model.diffusion_model.`)."""
    p = key.split(".")
    fixed = {
        "conv_in": "input_blocks.0.0",
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    for new, old in fixed.items():
        if key.startswith(new + "."):
            return old + key[len(new):]
    if p[0] == "down_blocks":
        b = int(p[1])
        if p[2] == "downsamplers":
            return f"input_blocks.{1 + b * (layers + 1) + layers}.0.op." + ".".join(p[5:])
        i = 1 + b * (layers + 1) + int(p[3])
        rest = ".".join(p[4:])
        if p[2] == "resnets":
            return f"input_blocks.{i}.0." + rename_inner(rest, RESNET)
        return f"input_blocks.{i}.1." + rest
    if p[0] == "mid_block":
        index = {"resnets.0": 0, "attentions.0": 1, "resnets.1": 2}[f"{p[1]}.{p[2]}"]
        rest = ".".join(p[3:])
        return f"middle_block.{index}." + (rename_inner(rest, RESNET) if p[1] == "resnets" else rest)
    if p[0] == "up_blocks":
        b = int(p[1])
        if p[2] == "upsamplers":
            slot = 2 if attention_levels[b] else 1
            return f"output_blocks.{b * (layers + 1) + layers}.{slot}.conv." + ".".join(p[5:])
        i = b * (layers + 1) + int(p[3])
        rest = ".".join(p[4:])
        if p[2] == "resnets":
            return f"output_blocks.{i}.0." + rename_inner(rest, RESNET)
        return f"output_blocks.{i}.1." + rest
    raise KeyError(key)


def vae_key(key, levels):
    """diffusers AutoencoderKL key -> LDM AutoencoderKL key (without `first_stage_model.`)."""
    p = key.split(".")
    if p[0] in ("quant_conv", "post_quant_conv"):
        return key
    side, rest = p[0], p[1:]
    if rest[0] == "conv_norm_out":
        return f"{side}.norm_out." + ".".join(rest[1:])
    if rest[0] in ("conv_in", "conv_out"):
        return key
    if rest[0] in ("down_blocks", "up_blocks"):
        i = int(rest[1])
        ldm_i = i if side == "encoder" else levels - 1 - i
        name = "down" if side == "encoder" else "up"
        if rest[2] in ("downsamplers", "upsamplers"):
            sampler = "downsample" if side == "encoder" else "upsample"
            return f"{side}.{name}.{ldm_i}.{sampler}.conv." + ".".join(rest[5:])
        return f"{side}.{name}.{ldm_i}.block.{rest[3]}." + rename_inner(".".join(rest[4:]), VAE_RESNET)
    if rest[0] == "mid_block":
        tail = ".".join(rest[3:])
        if rest[1] == "resnets":
            return f"{side}.mid.block_{int(rest[2]) + 1}." + rename_inner(tail, VAE_RESNET)
        return f"{side}.mid.attn_1." + rename_inner(tail, VAE_ATTENTION)
    raise KeyError(key)


def openclip_entries(state, layers):
    """transformers CLIPTextModel state (with `text_model.`) -> OpenCLIP text tower tensors."""
    out = {
        "token_embedding.weight": state["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": state["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": state["text_model.final_layer_norm.weight"],
        "ln_final.bias": state["text_model.final_layer_norm.bias"],
    }
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    for i in range(layers):
        src = f"text_model.encoder.layers.{i}."
        dst = f"transformer.resblocks.{i}."
        for new, old in names.items():
            for t in ("weight", "bias"):
                out[dst + f"{old}.{t}"] = state[src + f"{new}.{t}"]
        for t in ("weight", "bias"):
            out[dst + f"attn.in_proj_{t}"] = torch.cat(
                [state[src + f"self_attn.{x}_proj.{t}"] for x in "qkv"], dim=0)
    return out


def with_prefix(state):
    return {(k if k.startswith("text_model.") else "text_model." + k): v for k, v in state.items()}


def schedule_buffers(n=1000):
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, n, dtype=torch.float64) ** 2
    alphas = torch.cumprod(1 - betas, 0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas[:-1]])
    bufs = {"betas": betas, "alphas_cumprod": alphas, "alphas_cumprod_prev": prev,
            "sqrt_alphas_cumprod": alphas.sqrt(), "sqrt_one_minus_alphas_cumprod": (1 - alphas).sqrt(),
            "log_one_minus_alphas_cumprod": (1 - alphas).log(), "sqrt_recip_alphas_cumprod": alphas.rsqrt(),
            "sqrt_recipm1_alphas_cumprod": (1 / alphas - 1).sqrt(),
            "posterior_variance": betas * (1 - prev) / (1 - alphas)}
    return {k: v.float() for k, v in bufs.items()}


def ldm_state(unet_sd, unet_cfg, vae_sd, vae_cfg, text_sd, text_layers, style, ema):
    layers = unet_cfg["layers_per_block"]
    attention = [t.startswith("CrossAttn") for t in unet_cfg["up_block_types"]]
    levels = len(vae_cfg["block_out_channels"])
    out = {}
    for k, v in unet_sd.items():
        ldm = unet_key(k, layers, attention)
        if ema:
            out["model.diffusion_model." + ldm] = -v
            out["model_ema.diffusion_model" + ldm.replace(".", "")] = v.clone()
        else:
            out["model.diffusion_model." + ldm] = v
    if ema:
        out["model_ema.decay"] = torch.tensor(0.9999)
        out["model_ema.num_updates"] = torch.tensor(470000, dtype=torch.int32)
    for k, v in vae_sd.items():
        ldm = vae_key(k, levels)
        if ".mid.attn_1." in ldm and ldm.endswith("weight") and v.ndim == 2:
            v = v[:, :, None, None]
        out["first_stage_model." + ldm] = v
    if style == "sd1":
        for k, v in text_sd.items():
            out["cond_stage_model.transformer." + k] = v
        out["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(
            text_sd["text_model.embeddings.position_embedding.weight"].shape[0])[None]
    else:
        for k, v in openclip_entries(text_sd, text_layers).items():
            out["cond_stage_model.model." + k] = v
        hidden = text_sd["text_model.final_layer_norm.weight"].shape[0]
        g = torch.Generator().manual_seed(3)
        out["cond_stage_model.model.text_projection"] = torch.randn((hidden, hidden), generator=g)
        out["cond_stage_model.model.logit_scale"] = torch.tensor(4.6052)
    out.update(schedule_buffers())
    return {k: v.contiguous() for k, v in out.items()}


def read_json(path):
    return json.loads(Path(path).read_text())


LEGACY_VAE = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}


def raw(path, renames=None):
    """A folder's weight file as stored (dtypes kept), legacy VAE attention names as diffusers reads them."""
    out = {}
    for k, v in load_file(path).items():
        for old, new in (renames or {}).items():
            k = k.replace(old, new)
        out[k] = v
    return out


def tiny(name, style, ema):
    folder = MODELS / name
    unet = UNet2DConditionModel.from_pretrained(folder / "unet").eval()
    vae = AutoencoderKL.from_pretrained(folder / "vae").eval()
    text = CLIPTextModel.from_pretrained(folder / "text_encoder").eval()
    raw_text = with_prefix(raw(folder / "text_encoder/model.safetensors"))
    raw_text.pop("text_model.embeddings.position_ids", None)
    state = ldm_state(raw(folder / "unet/diffusion_pytorch_model.safetensors"), dict(unet.config),
                      raw(folder / "vae/diffusion_pytorch_model.safetensors", LEGACY_VAE), dict(vae.config),
                      raw_text, text.config.num_hidden_layers, style, ema)
    text_sd = with_prefix(text.state_dict())
    text_sd.pop("text_model.embeddings.position_ids", None)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.safetensors"
    save_file(state, path, metadata={"format": "pt"})

    want = {"unet": unet.state_dict(), "vae": vae.state_dict(), "text_encoder": text_sd}
    for extract_ema in ([True, False] if ema else [True]):
        pipe = StableDiffusionPipeline.from_single_file(
            str(path), config=str(folder), local_files_only=True, extract_ema=extract_ema,
            safety_checker=None, requires_safety_checker=False)
        for part, ref in want.items():
            got = getattr(pipe, part).state_dict()
            if part == "text_encoder":
                got = with_prefix(got)
                got.pop("text_model.embeddings.position_ids", None)
            assert sorted(got) == sorted(ref), (name, part, set(got) ^ set(ref))
            for k, v in ref.items():
                expect = -v if (part == "unet" and ema and not extract_ema) else v
                assert torch.equal(got[k], expect), (name, part, k, extract_ema)
    print(f"{path.relative_to(ROOT)}: {len(state)} tensors, diffusers' from_single_file gives the folder")


def meta_models(model):
    cfg = lambda part: read_json(CONFIGS / model / part / "config.json")
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(cfg("unet"))
        vae = AutoencoderKL.from_config(cfg("vae"))
        text_cfg = CLIPTextConfig.from_dict(cfg("text_encoder"))
        text = CLIPTextModel(text_cfg)
    return unet, vae, text, text_cfg


def full_size(model, style):
    unet, vae, text, text_cfg = meta_models(model)
    text_sd = with_prefix(text.state_dict())
    text_sd.pop("text_model.embeddings.position_ids", None)
    layers = text_cfg.num_hidden_layers
    if style == "sd2":
        # The published file holds OpenCLIP ViT-H's 24 blocks; SD 2.x conditions on the 23rd's output.
        text_cfg24 = CLIPTextConfig.from_dict({**text_cfg.to_dict(), "num_hidden_layers": layers + 1})
        with torch.device("meta"):
            text_sd = with_prefix(CLIPTextModel(text_cfg24).state_dict())
        text_sd.pop("text_model.embeddings.position_ids", None)
        layers += 1
    state = ldm_state(unet.state_dict(), dict(unet.config), vae.state_dict(), dict(vae.config), text_sd,
                      layers, style, ema=False)
    if style == "sd2":
        state["cond_stage_model.model.text_projection"] = torch.empty((1024, 1024), device="meta")

    # diffusers' converters must give back the manifests of gen_manifests.py.
    manifest = lambda part: read_json(MANIFESTS / model / f"{part}.json")
    shapes = lambda sd: {k: list(v.shape) for k, v in sd.items()}
    got = shapes(sfu.convert_ldm_unet_checkpoint(state, dict(unet.config)))
    assert got == manifest("unet"), (model, "unet", set(got) ^ set(manifest("unet")))
    got = shapes(sfu.convert_ldm_vae_checkpoint(state, dict(vae.config)))
    assert got == manifest("vae"), (model, "vae", set(got) ^ set(manifest("vae")))
    if style == "sd1":
        prefix = "cond_stage_model.transformer."
        got = {k[len(prefix):]: v for k, v in shapes(state).items() if k.startswith(prefix)}
        got.pop("text_model.embeddings.position_ids")
    else:
        with torch.device("meta"):
            got = shapes(sfu.convert_open_clip_checkpoint(CLIPTextModel(text_cfg), state))
    assert got == manifest("text_encoder"), (model, "text", set(got) ^ set(manifest("text_encoder")))

    path = MANIFESTS / model / "single-file.json"
    path.write_text(json.dumps(shapes(state), indent=1, sort_keys=True) + "\n")
    print(f"{path.relative_to(ROOT)}: {len(state)} tensors, diffusers' converters give the manifests")


def fuzz_seeds():
    out = ROOT / "fuzz/corpus/single_file"
    out.mkdir(parents=True, exist_ok=True)
    for name in ("tiny-sd1", "tiny-sd2"):
        keys = list(load_file(OUT / f"{name}.safetensors"))
        small = {}
        for k in keys:
            shape = [1]
            if k.endswith("input_blocks.0.0.weight"):
                shape = [1, 4, 1, 1]
            elif ".mid.attn_1." in k and k.endswith("weight") and not k.endswith("norm.weight"):
                shape = [1, 1, 1, 1]
            elif k.endswith("in_proj_weight"):
                shape = [3, 1]
            elif k.endswith("in_proj_bias"):
                shape = [3]
            small[k] = torch.zeros(shape, dtype=torch.int64 if k.endswith("position_ids") else torch.float32)
        save_file(small, out / f"seed-{name[5:]}.safetensors")
    xl = {"conditioner.embedders.1.model.positional_embedding": torch.zeros(1),
          "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1, 4, 1, 1)}
    save_file(xl, out / "seed-sdxl.safetensors")


def main():
    torch.set_num_threads(1)
    tiny("tiny-sd1", "sd1", ema=True)
    tiny("tiny-sd2", "sd2", ema=False)
    full_size("sd-1-5", "sd1")
    full_size("sd-2-1", "sd2")
    fuzz_seeds()


if __name__ == "__main__":
    main()
