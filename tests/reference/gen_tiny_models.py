#!/usr/bin/env python3
"""Generate tiny random Stable-Diffusion pipelines and component reference outputs.

Run from anywhere:  python tests/reference/gen_tiny_models.py
Deterministic (fixed seeds, single CPU thread); a second run rewrites byte-identical files.
Needs: torch, diffusers, transformers (5.x), safetensors, open_clip_torch (only for its
bundled BPE file `bpe_simple_vocab_16e6.txt.gz` and as a tokenizer cross-check), numpy.
No network access: every model/tokenizer is built locally.

Fixtures written (paths relative to the repository root):

  tests/fixtures/models/<M>/            for M in tiny-sd1, tiny-sd2, tiny-sd2-v
      model_index.json
      scheduler/scheduler_config.json
      tokenizer/vocab.json               real CLIP BPE vocab (49408 entries), from open_clip's file
      tokenizer/merges.txt               "#version: 0.2" + 48894 merges
      tokenizer/special_tokens_map.json
      tokenizer/tokenizer_config.json    (no tokenizer.json, as in the published SD repos)
      text_encoder/config.json
      text_encoder/model.safetensors
      unet/config.json
      unet/diffusion_pytorch_model.safetensors
      vae/config.json
      vae/diffusion_pytorch_model.safetensors

    tiny-sd1   : SD1.5 layout. PNDMScheduler. Tokenizer pads with <|endoftext|> (49407).
                 text_encoder: transformers-4.x form, keys "text_model.*" + int64 buffer
                 "text_model.embeddings.position_ids" [1,77], f32, quick_gelu, 2 layers.
                 unet: f32, use_linear_projection=false, attention_head_dim=4 (scalar = #heads),
                 old minimal SD1.5-style config.json (keys missing -> diffusers defaults).
                 vae: f32, 2 blocks (factor 2), LEGACY mid-block attention key names
                 (query/key/value/proj_attn), old minimal config.json (no scaling_factor key ->
                 default 0.18215).
    tiny-sd2   : SD2.1-base layout. PNDMScheduler (epsilon). Tokenizer pad "!" (id 0).
                 text_encoder: "text_model.*" keys WITHOUT position_ids, stored float16, gelu,
                 3 layers. unet: stored float16, use_linear_projection=true,
                 attention_head_dim=[2,4,4]. vae: f32, current key names, 2 blocks.
    tiny-sd2-v : SD2.x v-prediction. DDIMScheduler(v_prediction, trailing, steps_offset 0).
                 text_encoder: transformers-5 save_pretrained form (no "text_model." prefix), f32.
                 unet: f32, linear projection, upcast_attention=true, transformer_layers_per_block=2,
                 attention_head_dim=[2,4,4]. vae: f32, 3 blocks (factor 4).

  tests/fixtures/refs/prompts.json
      {"prompts": [...],
       "token_ids": {"sd1": [[77 ids]...], "sd2": [[77 ids]...]},      padding=max_length, truncation
       "untruncated_lengths": {"sd1": [...], "sd2": [...]}}          incl. bos/eos, no truncation
  tests/fixtures/refs/<M>-text.safetensors
      input_ids int64 [P,77]; last_hidden_state f32 [P,77,hidden]   (no attention mask, as SD)
  tests/fixtures/refs/<M>-unet.safetensors
      case{0,1,2}_{sample,timestep,encoder_hidden_states,out}:
        case0 B=2 8x8 t=[981,981]; case1 B=1 8x12 t=[1]; case2 B=2 8x8 t=[500,20]
      sample/out f32 [B,4,h,w]; timestep int64 [B]; encoder_hidden_states f32 [B,77,cross_dim]
  tests/fixtures/refs/<M>-vae.safetensors
      image [1,3,16,24] in [-1,1]; posterior_mean, posterior_logvar [1,4,16/f,24/f]
      (vae.encode(image).latent_dist.mean / .logvar; logvar is diffusers-clamped to [-30,20]);
      latents [1,4,16/f,24/f] randn; decoded = vae.decode(latents).sample [1,3,16,24];
      image_sq [1,3,16,16]; posterior_mean_sq [1,4,16/f,16/f].
      f = 2 for tiny-sd1/tiny-sd2, 4 for tiny-sd2-v.

NOTE: these are COMPONENT references. scaling_factor (0.18215) is NOT applied anywhere in the
VAE refs (posterior_mean is the raw latent mean; `latents` go straight into vae.decode) — latent
scaling is a pipeline concern. Every reference is computed from the component as loaded back
from disk with from_pretrained(..., float32), so f16 rounding of stored weights is included.
"""

import gzip
import hashlib
import json
import os
import shutil
import sys
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn
from safetensors.torch import save_file, load_file

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402
import transformers.utils.logging as tlogging  # noqa: E402
import diffusers.utils.logging as dlogging  # noqa: E402

tlogging.set_verbosity_error()
dlogging.set_verbosity_error()
tlogging.disable_progress_bar()
dlogging.disable_progress_bar()

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "tests" / "fixtures" / "models"
REFS = ROOT / "tests" / "fixtures" / "refs"

# ---- sizes -------------------------------------------------------------------------------------
# The 49408x hidden token embedding and three copies of the BPE files dominate the size budget
# (<= 25 MB in all), hence hidden 16 and UNet widths [24, 32, 32]. All widths are pairwise distinct
# (16 cross-attn dim vs 24/32 UNet channels, 64 CLIP MLP) so that a transposed or swapped weight
# cannot go unnoticed.
TE_HIDDEN = 16  # CLIP hidden size == UNet cross_attention_dim
TE_INTER = 64
UNET_CH = [24, 32, 32]
UNET_GROUPS = 8

PROMPTS = [
    "a photograph of an astronaut riding a horse",
    "Hello, world! (test)...",
    "3 cats and 12 dogs in 2024",
    "it's the dog's bone, isn't it?",
    "café naïve Zürich São Paulo",
    "a cat 🐱 on a 🚀",
    "  a   puppy \t on  the\n grass  ",
    "A RED Circle",
    "",
    "wow!!! so cool! !",
    (
        "an extremely detailed and intricate oil painting of a majestic medieval castle standing "
        "on top of a steep green hill at golden hour, surrounded by ancient oak trees, a winding "
        "river reflecting the warm orange and pink sky, flocks of birds flying over distant snowy "
        "mountains, soft volumetric light rays breaking through scattered clouds, tiny villagers "
        "walking along a cobblestone road towards the gate, banners waving in the gentle breeze, "
        "masterpiece, trending on artstation, highly detailed, sharp focus, 8k resolution"
    ),
]


# ------------------------------------------------------------------------------------------------
# Tokenizer
# ------------------------------------------------------------------------------------------------
@lru_cache()
def bytes_to_unicode():
    """OpenAI CLIP / GPT-2 byte -> unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def bpe_file():
    import open_clip

    p = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    assert p.is_file(), p
    return p


def build_vocab_merges():
    lines = gzip.open(bpe_file()).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    assert all(len(m) == 2 for m in merges)
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408, len(vocab)
    assert len(set(vocab)) == 49408
    return {t: i for i, t in enumerate(vocab)}, merges


def _added(content):
    # AddedToken-style dict as serialized by transformers 4.2x (published SD repos).
    return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def _added_cfg(content):
    return {"__type": "AddedToken", **_added(content)}


def write_tokenizer(folder: Path, style: str, vocab, merges):
    """style 'sd1': runwayml/stable-diffusion-v1-5 tokenizer/ (copy of openai/clip-vit-large-patch14);
    style 'sd2': stabilityai/stable-diffusion-2-1-base tokenizer/ (pad "!" in special_tokens_map.json,
    while tokenizer_config.json still says <|endoftext|>: special_tokens_map.json wins when loading)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    special = {
        "bos_token": _added("<|startoftext|>"),
        "eos_token": _added("<|endoftext|>"),
        "pad_token": "<|endoftext|>" if style == "sd1" else "!",
        "unk_token": _added("<|endoftext|>"),
    }
    cfg = {
        "add_prefix_space": False,
        "bos_token": _added_cfg("<|startoftext|>"),
        "do_lower_case": True,
        "eos_token": _added_cfg("<|endoftext|>"),
        "errors": "replace",
        "model_max_length": 77,
        "name_or_path": "openai/clip-vit-large-patch14",
        "pad_token": "<|endoftext|>",
        "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": _added_cfg("<|endoftext|>"),
    }
    write_json(folder / "special_tokens_map.json", special)
    write_json(folder / "tokenizer_config.json", cfg)


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def write_json(path: Path, obj, indent=2):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")


def perturb(model: nn.Module, seed: int):
    """Make every parameter non-trivial (incl. zero-initialised layers), keep activations O(1)."""
    g = torch.Generator().manual_seed(seed)
    norm_w, norm_b = set(), set()
    for m in model.modules():
        if isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
            if m.weight is not None:
                norm_w.add(id(m.weight))
            if m.bias is not None:
                norm_b.add(id(m.bias))
    with torch.no_grad():
        for _, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype)
            if id(p) in norm_w:
                p.copy_(1.0 + 0.1 * noise)
            elif id(p) in norm_b:
                p.copy_(0.05 * noise)
            else:
                p.add_(0.05 * noise)


def sd_contig(sd, dtype=None):
    out = {}
    for k, v in sd.items():
        v = v.detach().clone().contiguous()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[k] = v
    return out


def save_st(tensors, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt"})


def assert_same_params(a: nn.Module, b: nn.Module, dtype=None, what=""):
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb), (what, set(sa) ^ set(sb))
    for k in sa:
        x = sa[k]
        if dtype is not None and x.is_floating_point():
            x = x.to(dtype).to(x.dtype)
        assert torch.equal(x, sb[k]), (what, k)


# ------------------------------------------------------------------------------------------------
# model configs
# ------------------------------------------------------------------------------------------------
DOWN = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
UP = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]

SPECS = {
    "tiny-sd1": dict(
        seed=1001,
        tok="sd1",
        te=dict(layers=2, act="quick_gelu", bos=49406, eos=49407, form="v4_pos_ids", dtype=torch.float32),
        unet=dict(
            attention_head_dim=4, use_linear_projection=False, upcast_attention=False,
            transformer_layers_per_block=1, dtype=torch.float32, config_form="sd15",
        ),
        vae=dict(blocks=[16, 32], legacy=True, sample_size=16, config_form="sd15"),
    ),
    "tiny-sd2": dict(
        seed=2002,
        tok="sd2",
        te=dict(layers=3, act="gelu", bos=0, eos=2, form="v4", dtype=torch.float16),
        unet=dict(
            attention_head_dim=[2, 4, 4], use_linear_projection=True, upcast_attention=False,
            transformer_layers_per_block=1, dtype=torch.float16, config_form="sd21base",
        ),
        vae=dict(blocks=[16, 32], legacy=False, sample_size=16, config_form="full"),
    ),
    "tiny-sd2-v": dict(
        seed=3003,
        tok="sd2",
        te=dict(layers=3, act="gelu", bos=49406, eos=49407, form="v5", dtype=torch.float32),
        unet=dict(
            attention_head_dim=[2, 4, 4], use_linear_projection=True, upcast_attention=True,
            transformer_layers_per_block=2, dtype=torch.float32, config_form="full",
        ),
        vae=dict(blocks=[16, 32, 32], legacy=False, sample_size=32, config_form="full"),
    ),
}


def model_index(name):
    base = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.6.0" if name == "tiny-sd1" else "0.10.0.dev0",
        "feature_extractor": [None, None],
    }
    if name != "tiny-sd1":
        base["requires_safety_checker"] = False
    base.update(
        {
            "safety_checker": [None, None],
            "scheduler": ["diffusers", "DDIMScheduler" if name == "tiny-sd2-v" else "PNDMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        }
    )
    return base


def scheduler_config(name):
    if name == "tiny-sd1":  # runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json
        return {
            "_class_name": "PNDMScheduler",
            "_diffusers_version": "0.6.0",
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "num_train_timesteps": 1000,
            "set_alpha_to_one": False,
            "skip_prk_steps": True,
            "steps_offset": 1,
            "trained_betas": None,
            "clip_sample": False,
        }
    if name == "tiny-sd2":  # stabilityai/stable-diffusion-2-1-base
        return {
            "_class_name": "PNDMScheduler",
            "_diffusers_version": "0.10.0.dev0",
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "clip_sample": False,
            "num_train_timesteps": 1000,
            "prediction_type": "epsilon",
            "set_alpha_to_one": False,
            "skip_prk_steps": True,
            "steps_offset": 1,
            "trained_betas": None,
        }
    # tiny-sd2-v: full config as written by diffusers' save_config
    s = DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=0, prediction_type="v_prediction",
        timestep_spacing="trailing",
    )
    cfg = dict(s.config)
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    return {"_class_name": "DDIMScheduler", "_diffusers_version": _diffusers_version(), **cfg}


def _diffusers_version():
    import diffusers

    return diffusers.__version__


# ------------------------------------------------------------------------------------------------
# text encoder
# ------------------------------------------------------------------------------------------------
def build_text_encoder(folder: Path, spec, seed):
    te = spec["te"]
    cfg = CLIPTextConfig(
        vocab_size=49408, hidden_size=TE_HIDDEN, intermediate_size=TE_INTER,
        num_hidden_layers=te["layers"], num_attention_heads=4, max_position_embeddings=77,
        hidden_act=te["act"], layer_norm_eps=1e-5, bos_token_id=te["bos"], eos_token_id=te["eos"],
        pad_token_id=1, projection_dim=TE_HIDDEN,
    )
    torch.manual_seed(seed)
    model = CLIPTextModel(cfg).eval()
    perturb(model, seed + 1)
    folder.mkdir(parents=True, exist_ok=True)
    if te["form"] == "v5":
        model.save_pretrained(folder)  # transformers-5 native form
    else:
        sd = {"text_model." + k: v for k, v in sd_contig(model.state_dict(), te["dtype"]).items()}
        if te["form"] == "v4_pos_ids":
            sd["text_model.embeddings.position_ids"] = torch.arange(77, dtype=torch.int64)[None]
        save_st(sd, folder / "model.safetensors")
        # published transformers-4.x config.json shape
        write_json(
            folder / "config.json",
            {
                "_name_or_path": "openai/clip-vit-large-patch14" if te["form"] == "v4_pos_ids" else "hf-models/stable-diffusion-v2-768x768/text_encoder",
                "architectures": ["CLIPTextModel"],
                "attention_dropout": 0.0,
                "bos_token_id": te["bos"],
                "dropout": 0.0,
                "eos_token_id": te["eos"],
                "hidden_act": te["act"],
                "hidden_size": TE_HIDDEN,
                "initializer_factor": 1.0,
                "initializer_range": 0.02,
                "intermediate_size": TE_INTER,
                "layer_norm_eps": 1e-05,
                "max_position_embeddings": 77,
                "model_type": "clip_text_model",
                "num_attention_heads": 4,
                "num_hidden_layers": te["layers"],
                "pad_token_id": 1,
                "projection_dim": TE_HIDDEN,
                "torch_dtype": "float32" if te["dtype"] == torch.float32 else "float16",
                "transformers_version": "4.22.0.dev0" if te["form"] == "v4_pos_ids" else "4.25.0.dev0",
                "vocab_size": 49408,
            },
        )
    return model


def load_text_encoder(folder: Path, orig, spec):
    loaded, info = CLIPTextModel.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    loaded.eval()
    assert loaded.dtype == torch.float32
    assert not info["missing_keys"], info
    assert not info.get("mismatched_keys"), info
    assert_same_params(orig, loaded, dtype=spec["te"]["dtype"], what=str(folder))
    return loaded, info


# ------------------------------------------------------------------------------------------------
# unet
# ------------------------------------------------------------------------------------------------
def unet_kwargs(u):
    return dict(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=tuple(UNET_CH),
        down_block_types=tuple(DOWN), up_block_types=tuple(UP), layers_per_block=2,
        attention_head_dim=u["attention_head_dim"], cross_attention_dim=TE_HIDDEN,
        norm_num_groups=UNET_GROUPS, use_linear_projection=u["use_linear_projection"],
        upcast_attention=u["upcast_attention"], transformer_layers_per_block=u["transformer_layers_per_block"],
    )


def unet_config_old(u, form):
    cfg = {
        "_class_name": "UNet2DConditionModel",
        # SD1.5 publishes 0.6.0; with a version < 0.9.0 *and* sample_size < 64, StableDiffusionPipeline
        # silently rewrites unet.config.sample_size to 64, so the tiny model claims 0.9.0.
        "_diffusers_version": "0.9.0" if form == "sd15" else "0.10.0.dev0",
        "act_fn": "silu",
        "attention_head_dim": u["attention_head_dim"],
        "block_out_channels": UNET_CH,
        "center_input_sample": False,
        "cross_attention_dim": TE_HIDDEN,
        "down_block_types": DOWN,
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": UNET_GROUPS,
        "out_channels": 4,
        "sample_size": 8,
        "up_block_types": UP,
    }
    if form == "sd21base":
        cfg.update(
            {
                "dual_cross_attention": False,
                "num_class_embeds": None,
                "only_cross_attention": False,
                "use_linear_projection": True,
            }
        )
        cfg = dict(sorted(cfg.items(), key=lambda kv: (not kv[0].startswith("_"), kv[0])))
    return cfg


def build_unet(folder: Path, spec, seed):
    u = spec["unet"]
    torch.manual_seed(seed)
    model = UNet2DConditionModel(**unet_kwargs(u)).eval()
    perturb(model, seed + 1)
    folder.mkdir(parents=True, exist_ok=True)
    save_st(sd_contig(model.state_dict(), u["dtype"]), folder / "diffusion_pytorch_model.safetensors")
    if u["config_form"] == "full":
        model.save_config(folder)
    else:
        write_json(folder / "config.json", unet_config_old(u, u["config_form"]))
    return model


# ------------------------------------------------------------------------------------------------
# vae
# ------------------------------------------------------------------------------------------------
LEGACY = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def vae_kwargs(v):
    n = len(v["blocks"])
    return dict(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(v["blocks"]),
        layers_per_block=1, act_fn="silu", latent_channels=4, norm_num_groups=8,
        sample_size=v["sample_size"], scaling_factor=0.18215,
    )


def build_vae(folder: Path, spec, seed):
    v = spec["vae"]
    torch.manual_seed(seed)
    model = AutoencoderKL(**vae_kwargs(v)).eval()
    perturb(model, seed + 1)
    folder.mkdir(parents=True, exist_ok=True)
    sd = sd_contig(model.state_dict())
    if v["legacy"]:
        renamed = {}
        for k, t in sd.items():
            nk = k
            if ".mid_block.attentions.0." in k:
                for new, old in LEGACY.items():
                    if f".attentions.0.{new}." in k:
                        nk = k.replace(f".attentions.0.{new}.", f".attentions.0.{old}.")
            renamed[nk] = t
        assert sum(".proj_attn." in k for k in renamed) == 4 and not any(".to_q." in k for k in renamed)
        sd = renamed
    save_st(sd, folder / "diffusion_pytorch_model.safetensors")
    if v["config_form"] == "sd15":
        n = len(v["blocks"])
        write_json(
            folder / "config.json",
            {
                "_class_name": "AutoencoderKL",
                "_diffusers_version": "0.6.0",
                "act_fn": "silu",
                "block_out_channels": v["blocks"],
                "down_block_types": ["DownEncoderBlock2D"] * n,
                "in_channels": 3,
                "latent_channels": 4,
                "layers_per_block": 1,
                "norm_num_groups": 8,
                "out_channels": 3,
                "sample_size": v["sample_size"],
                "up_block_types": ["UpDecoderBlock2D"] * n,
            },
        )
    else:
        model.save_config(folder)
    return model


def load_diffusers(cls, folder, orig, dtype, what):
    loaded, info = cls.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    loaded.eval()
    for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        assert not info.get(k), (what, k, info[k])
    assert next(loaded.parameters()).dtype == torch.float32
    assert_same_params(orig, loaded, dtype=dtype, what=what)
    return loaded


# ------------------------------------------------------------------------------------------------
# references
# ------------------------------------------------------------------------------------------------
def tokenize(tok, prompts):
    ids = tok(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    lens = [len(tok(p, truncation=False).input_ids) for p in prompts]
    return ids.to(torch.int64), lens


@torch.no_grad()
def text_refs(te, tok, name):
    ids, _ = tokenize(tok, PROMPTS)
    hs = te(input_ids=ids).last_hidden_state
    save_st({"input_ids": ids.contiguous(), "last_hidden_state": hs.float().contiguous()}, REFS / f"{name}-text.safetensors")
    return hs


@torch.no_grad()
def unet_refs(unet, name, seed, hidden=TE_HIDDEN):
    g = torch.Generator().manual_seed(seed)
    cases = [(2, 8, 8, [981, 981]), (1, 8, 12, [1]), (2, 8, 8, [500, 20])]
    out = {}
    stats = []
    for i, (b, h, w, ts) in enumerate(cases):
        x = torch.randn((b, unet.config.in_channels, h, w), generator=g)
        t = torch.tensor(ts, dtype=torch.int64)
        ehs = torch.randn((b, 77, hidden), generator=g)
        y = unet(x, t, encoder_hidden_states=ehs).sample
        out.update({f"case{i}_sample": x, f"case{i}_timestep": t, f"case{i}_encoder_hidden_states": ehs, f"case{i}_out": y})
        stats.append(float(y.std()))
    save_st({k: v.contiguous() for k, v in out.items()}, REFS / f"{name}-unet.safetensors")
    return stats


@torch.no_grad()
def vae_refs(vae, name, seed):
    g = torch.Generator().manual_seed(seed)
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    image = torch.rand((1, 3, 16, 24), generator=g) * 2 - 1
    dist = vae.encode(image).latent_dist
    latents = torch.randn((1, vae.config.latent_channels, 16 // f, 24 // f), generator=g)
    decoded = vae.decode(latents).sample
    image_sq = torch.rand((1, 3, 16, 16), generator=g) * 2 - 1
    mean_sq = vae.encode(image_sq).latent_dist.mean
    # NOTE: no scaling_factor anywhere here (component refs, not pipeline refs).
    out = {
        "image": image, "posterior_mean": dist.mean, "posterior_logvar": dist.logvar,
        "latents": latents, "decoded": decoded, "image_sq": image_sq, "posterior_mean_sq": mean_sq,
    }
    save_st({k: v.contiguous() for k, v in out.items()}, REFS / f"{name}-vae.safetensors")
    return float(dist.mean.std()), float(decoded.std())


def check_against_open_clip(tok_sd1, tok_sd2):
    from open_clip.tokenizer import SimpleTokenizer

    oc = SimpleTokenizer(bpe_path=str(bpe_file()))
    report = []
    for p in PROMPTS:
        ref = oc.encode(p)
        a = tok_sd1(p, truncation=False).input_ids
        b = tok_sd2(p, truncation=False).input_ids
        assert a[0] == 49406 and a[-1] == 49407
        report.append((p, a[1:-1] == ref, b[1:-1] == ref, ref, a[1:-1], b[1:-1]))
    return report


def main():
    vocab, merges = build_vocab_merges()
    if MODELS.exists():
        shutil.rmtree(MODELS)
    if REFS.exists():
        shutil.rmtree(REFS)
    MODELS.mkdir(parents=True)
    REFS.mkdir(parents=True)

    toks = {}
    for name, spec in SPECS.items():
        root = MODELS / name
        write_json(root / "model_index.json", model_index(name))
        write_json(root / "scheduler" / "scheduler_config.json", scheduler_config(name))
        write_tokenizer(root / "tokenizer", spec["tok"], vocab, merges)
        toks.setdefault(spec["tok"], CLIPTokenizer.from_pretrained(root / "tokenizer"))

    # tokenizer cross-check vs open_clip's SimpleTokenizer
    oc = check_against_open_clip(toks["sd1"], toks["sd2"])
    for p, ok1, ok2, ref, a, b in oc:
        if not (ok1 and ok2):
            print(f"[tokenizer] differs from open_clip: {p!r}: sd1={ok1} sd2={ok2}\n  open_clip={ref}\n  sd1={a}\n  sd2={b}")
    assert all(ok1 for _, ok1, *_ in oc), "sd1 tokenizer must match open_clip exactly"

    prompts = {"prompts": PROMPTS, "token_ids": {}, "untruncated_lengths": {}}
    for style in ("sd1", "sd2"):
        ids, lens = tokenize(toks[style], PROMPTS)
        prompts["token_ids"][style] = ids.tolist()
        prompts["untruncated_lengths"][style] = lens
    (REFS / "prompts.json").write_text(
        json.dumps(prompts, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8"
    )
    print("pad ids:", {s: toks[s].pad_token_id for s in toks}, "lengths:", prompts["untruncated_lengths"])

    for name, spec in SPECS.items():
        root = MODELS / name
        seed = spec["seed"]
        te = build_text_encoder(root / "text_encoder", spec, seed)
        unet = build_unet(root / "unet", spec, seed + 100)
        vae = build_vae(root / "vae", spec, seed + 200)

        te_l, info = load_text_encoder(root / "text_encoder", te, spec)
        unet_l = load_diffusers(UNet2DConditionModel, root / "unet", unet, spec["unet"]["dtype"], name + "/unet")
        vae_l = load_diffusers(AutoencoderKL, root / "vae", vae, None, name + "/vae")
        # config round trip sanity
        assert vae_l.config.scaling_factor == 0.18215
        for k in ("block_out_channels", "attention_head_dim", "use_linear_projection", "upcast_attention", "cross_attention_dim"):
            assert unet_l.config[k] == unet.config[k] or list(unet_l.config[k]) == list(unet.config[k]), (name, k)

        # whole pipeline loads from the folder (model_index, tokenizer, scheduler)
        pipe = StableDiffusionPipeline.from_pretrained(root, dtype=torch.float32, safety_checker=None)
        assert type(pipe.scheduler).__name__ == model_index(name)["scheduler"][1]
        assert pipe.tokenizer.pad_token_id == (49407 if spec["tok"] == "sd1" else 0)
        assert pipe.unet.config.sample_size == 8
        # StableDiffusionPipeline.__init__ forces steps_offset=1 in memory (tiny-sd2-v has 0 on disk)
        print(f"{name}: pipeline scheduler steps_offset on disk={scheduler_config(name)['steps_offset']} "
              f"after StableDiffusionPipeline load={pipe.scheduler.config.steps_offset}")
        del pipe

        tok = toks[spec["tok"]]
        hs = text_refs(te_l, tok, name)
        ustats = unet_refs(unet_l, name, seed + 300)
        vstats = vae_refs(vae_l, name, seed + 400)
        print(
            f"{name}: te unexpected={info['unexpected_keys']} hs.std={hs.std():.3f} "
            f"unet out std={['%.3f' % s for s in ustats]} vae mean.std={vstats[0]:.3f} decoded.std={vstats[1]:.3f}"
        )

    total = 0
    for p in sorted(list(MODELS.rglob("*")) + list(REFS.rglob("*"))):
        if p.is_file():
            total += p.stat().st_size
    print(f"total bytes written: {total} ({total / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
