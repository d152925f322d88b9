#!/usr/bin/env python3
"""Generate a tiny random AutoencoderTiny (TAESD) in the diffusers layout, and its reference outputs.

Run from anywhere, after gen_tiny_models.py (which rewrites tests/fixtures/refs/):
    python tests/reference/gen_taesd.py
Deterministic (fixed seeds, single CPU thread).

Writes (paths relative to the repository root):
  tests/fixtures/models/tiny-taesd/config.json
  tests/fixtures/models/tiny-taesd/diffusion_pytorch_model.safetensors
      two stages (factor 2, like tiny-sd1's VAE, so it previews that model's latents), 8 channels,
      encoder blocks (1, 2), decoder blocks (2, 1); every weight perturbed so none is trivial.
  tests/fixtures/refs/taesd.safetensors
      image [1,3,16,24] in [-1, 1] -> encoded [1,4,8,12]   (AutoencoderTiny.encode(image).latents)
      latents [1,4,8,12] (N(0, 2^2), so the decoder's 3·tanh(x/3) clamp matters) -> decoded [1,3,16,24]
      (AutoencoderTiny.decode(latents).sample)
The folder is loaded back with AutoencoderTiny.from_pretrained and its outputs compared with the
in-memory model's before anything is written as a reference.
"""
import json
from pathlib import Path

import torch
from diffusers import AutoencoderTiny
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "tests/fixtures/models/tiny-taesd"
REFS = ROOT / "tests/fixtures/refs"


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 2),
        num_decoder_blocks=(2, 1),
        latent_channels=4,
    ).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    model.save_pretrained(FOLDER, safe_serialization=True)
    # Keep the config stable across diffusers versions' bookkeeping keys.
    config_path = FOLDER / "config.json"
    config = json.loads(config_path.read_text())
    config["_diffusers_version"] = "0.42.1"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    g = torch.Generator().manual_seed(2)
    image = torch.rand((1, 3, 16, 24), generator=g) * 2 - 1
    latents = torch.randn((1, 4, 8, 12), generator=g) * 2
    with torch.no_grad():
        encoded = model.encode(image).latents
        decoded = model.decode(latents).sample
        loaded = AutoencoderTiny.from_pretrained(FOLDER).eval()
        assert torch.equal(loaded.encode(image).latents, encoded)
        assert torch.equal(loaded.decode(latents).sample, decoded)
    REFS.mkdir(parents=True, exist_ok=True)
    out = {"image": image, "encoded": encoded, "latents": latents, "decoded": decoded}
    save_file({k: v.contiguous() for k, v in out.items()}, str(REFS / "taesd.safetensors"), metadata={"format": "pt"})
    print(f"encoded std {encoded.std():.4f}, decoded std {decoded.std():.4f}, "
          f"params {sum(p.numel() for p in model.parameters())}")


if __name__ == "__main__":
    main()
