#!/usr/bin/env python3
"""Write published pipeline configs and state_dict key/shape manifests for SD 1.5, SD 2.1-base and SD 2.1.

Writes
  tests/fixtures/configs/<model>/{model_index.json, unet/config.json, vae/config.json,
                                  text_encoder/config.json, scheduler/scheduler_config.json}
  tests/fixtures/manifests/<model>/{unet,vae,text_encoder}.json   ({"key": [shape, ...]}, sorted keys)

No weights are downloaded: the configs are transcribed below and the models are instantiated on the
`meta` device. Text-encoder keys are written in the published (transformers 4.x) form, i.e. with the
`text_model.` prefix that transformers 5's CLIPTextModel.state_dict() no longer has; the non-persistent
`text_model.embeddings.position_ids` buffer is not in the manifest (some published checkpoints contain it).
"""
import json
import os

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")

DOWN = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
UP = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
VAE_DOWN = ["DownEncoderBlock2D"] * 4
VAE_UP = ["UpDecoderBlock2D"] * 4

# ---------------------------------------------------------------- runwayml/stable-diffusion-v1-5
SD15 = {
    "model_index.json": {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.6.0",
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    },
    "scheduler/scheduler_config.json": {
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
    },
    "unet/config.json": {
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": "0.6.0",
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": False,
        "cross_attention_dim": 768,
        "down_block_types": DOWN,
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": 64,
        "up_block_types": UP,
    },
    "vae/config.json": {
        "_class_name": "AutoencoderKL",
        "_diffusers_version": "0.6.0",
        "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": VAE_DOWN,
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "out_channels": 3,
        "sample_size": 512,
        "up_block_types": VAE_UP,
    },
    "text_encoder/config.json": {
        "_name_or_path": "openai/clip-vit-large-patch14",
        "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "dropout": 0.0,
        "eos_token_id": 2,
        "hidden_act": "quick_gelu",
        "hidden_size": 768,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 3072,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77,
        "model_type": "clip_text_model",
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "pad_token_id": 1,
        "projection_dim": 768,
        "torch_dtype": "float32",
        "transformers_version": "4.22.0.dev0",
        "vocab_size": 49408,
    },
}

# ---------------------------------------------------------------- SD 2.x shared pieces
SD2_VAE = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.8.0",
    "_name_or_path": "hf-models/stable-diffusion-v2-768x768/vae",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": VAE_DOWN,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 768,
    "up_block_types": VAE_UP,
}
SD2_TEXT = {
    "_name_or_path": "hf-models/stable-diffusion-v2-768x768/text_encoder",
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_size": 1024,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 4096,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 16,
    "num_hidden_layers": 23,
    "pad_token_id": 1,
    "projection_dim": 512,
    "torch_dtype": "float32",
    "transformers_version": "4.25.0.dev0",
    "vocab_size": 49408,
}


def sd2_unet(sample_size, upcast):
    cfg = {
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": "0.10.0.dev0",
        "act_fn": "silu",
        "attention_head_dim": [5, 10, 20, 20],
        "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": False,
        "cross_attention_dim": 1024,
        "down_block_types": DOWN,
        "downsample_padding": 1,
        "dual_cross_attention": False,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "num_class_embeds": None,
        "only_cross_attention": False,
        "out_channels": 4,
        "sample_size": sample_size,
        "up_block_types": UP,
        "use_linear_projection": True,
    }
    if upcast:
        cfg["upcast_attention"] = True
    return cfg


def sd2_model_index(diffusers_version, scheduler):
    return {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers_version,
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", scheduler],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def sd2_scheduler(cls, version, prediction_type):
    return {
        "_class_name": cls,
        "_diffusers_version": version,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": False,
        "num_train_timesteps": 1000,
        "prediction_type": prediction_type,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "trained_betas": None,
    }


# ---------------------------------------------------------------- stabilityai/stable-diffusion-2-1-base
SD21_BASE = {
    "model_index.json": sd2_model_index("0.10.0.dev0", "PNDMScheduler"),
    "scheduler/scheduler_config.json": sd2_scheduler("PNDMScheduler", "0.10.0.dev0", "epsilon"),
    "unet/config.json": sd2_unet(64, upcast=False),
    "vae/config.json": SD2_VAE,
    "text_encoder/config.json": SD2_TEXT,
}

# ---------------------------------------------------------------- stabilityai/stable-diffusion-2-1
SD21 = {
    "model_index.json": sd2_model_index("0.8.0", "DDIMScheduler"),
    "scheduler/scheduler_config.json": sd2_scheduler("DDIMScheduler", "0.8.0", "v_prediction"),
    "unet/config.json": sd2_unet(96, upcast=True),
    "vae/config.json": SD2_VAE,
    "text_encoder/config.json": SD2_TEXT,
}

MODELS = {"sd-1-5": SD15, "sd-2-1-base": SD21_BASE, "sd-2-1": SD21}


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def write_manifest(path, m):
    """One `"key": [shape]` per line, keys sorted."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in m.items()]
    with open(path, "w") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")


def strip_private(cfg):
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def manifest(sd, prefix=""):
    return {prefix + k: list(v.shape) for k, v in sorted(sd.items(), key=lambda kv: prefix + kv[0])}


def build(files):
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(strip_private(files["unet/config.json"]))
        vae = AutoencoderKL.from_config(strip_private(files["vae/config.json"]))
        tcfg = {k: v for k, v in files["text_encoder/config.json"].items()
                if k not in ("_name_or_path", "architectures", "transformers_version", "torch_dtype", "model_type")}
        text = CLIPTextModel(CLIPTextConfig(**tcfg))
    return unet, vae, text


def main():
    for name, files in MODELS.items():
        for rel, obj in files.items():
            write_json(os.path.join(ROOT, "configs", name, rel), obj)
        unet, vae, text = build(files)
        tsd = text.state_dict()
        assert not any(k.startswith("text_model.") for k in tsd), "transformers now keeps the prefix: drop it here"
        assert not any("position_ids" in k for k in tsd)
        # sanity: the configs really did what they say
        tc = files["text_encoder/config.json"]
        assert text.config.hidden_act == tc["hidden_act"] and len(text.encoder.layers) == tc["num_hidden_layers"]
        vae_attn = sorted({k.split("attentions.0.")[1] for k in vae.state_dict() if ".attentions." in k})
        assert vae_attn == ["group_norm.bias", "group_norm.weight", "to_k.bias", "to_k.weight", "to_out.0.bias",
                            "to_out.0.weight", "to_q.bias", "to_q.weight", "to_v.bias", "to_v.weight"], vae_attn
        out = os.path.join(ROOT, "manifests", name)
        for part, m in (("unet", manifest(unet.state_dict())), ("vae", manifest(vae.state_dict())),
                        ("text_encoder", manifest(tsd, "text_model."))):
            write_manifest(os.path.join(out, part + ".json"), m)
            n = sum(int(torch.Size(s).numel()) for s in m.values())
            print(f"{name}/{part}: {len(m)} tensors, {n} params")


if __name__ == "__main__":
    main()
