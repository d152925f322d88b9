"""What a toy VAE alone keeps of the held-out scenes: encode (posterior mean), decode, compare.

    python tests/reference/toy_vae_ceiling.py [VAE_DIR ...] [--heldout tests/fixtures/toy-heldout]

No editing method can keep more of a scene than the VAE round trip does, so these numbers are the
ceiling of `cargo xtask eval-toy`'s PSNR columns. Prints, per VAE folder and per background, the
mean of the per-scene PSNRs over the whole image and outside the shape (its mask grown by 2 px in a
square neighbourhood, as the evaluation does), and one JSON line per folder.
"""

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent.parent


def psnr(a, b, keep=None):
    d = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    if keep is not None:
        d = d[keep]
    mse = d.mean()
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def dilate(mask, r):
    out = np.zeros_like(mask)
    h, w = mask.shape
    for y, x in zip(*np.nonzero(mask)):
        out[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1] = True
    return out


@torch.no_grad()
def round_trip(vae, img):
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    y = vae.decode(vae.encode(x).latent_dist.mean).sample[0]
    return np.clip(np.rint((y.permute(1, 2, 0).numpy() + 1.0) * 127.5), 0, 255).astype(np.uint8)


def ceiling(vae_dir, heldout):
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    meta = json.loads((heldout / "scenes.json").read_text())
    rows = {}
    for s in meta["scenes"]:
        img = np.array(Image.open(heldout / s["image"]).convert("RGB"))
        mask = np.asarray(Image.open(heldout / s["mask"])) > 127
        out = round_trip(vae, img)
        outside = ~dilate(mask, 2)
        for key in (s["background"], "all"):
            rows.setdefault(key, []).append((psnr(img, out), psnr(img, out, outside)))
    return {k: {"scenes": len(v), "psnr_db": float(np.mean([a for a, _ in v])),
                "psnr_outside_db": float(np.mean([b for _, b in v]))} for k, v in rows.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("vae", nargs="*", type=Path, default=[ROOT / "tests/fixtures/models/toy/vae"])
    ap.add_argument("--heldout", type=Path, default=ROOT / "tests/fixtures/toy-heldout")
    a = ap.parse_args()
    for vae_dir in a.vae:
        result = ceiling(vae_dir, a.heldout)
        print(f"{vae_dir}:")
        for k, r in sorted(result.items()):
            print(f"  {k:9} {r['scenes']:3} scenes  PSNR {r['psnr_db']:6.2f} dB  outside {r['psnr_outside_db']:6.2f} dB")
        print(json.dumps({"vae": str(vae_dir), **result}))


if __name__ == "__main__":
    main()
