"""Component references for the trained toy model (`tests/fixtures/models/toy`), in the same form
as the tiny models' (`gen_tiny_models.py`): the text encoder, UNet and VAE reloaded from the
committed folder by transformers/diffusers in float32 and run on the same inputs as the tiny
models' references. The Rust parity tests then cover the toy model's own configuration (plain
first down block, attention at 8×8 and 4×4 only, VAE without mid-block attention).

    python tests/reference/gen_toy_refs.py      # after train_toy.py

Writes tests/fixtures/refs/toy-{text,unet,vae}.safetensors.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: E402

import gen_tiny_models as gtm  # noqa: E402

NAME = "toy"


def main():
    folder = gtm.ROOT / "tests" / "fixtures" / "models" / NAME
    torch.manual_seed(0)
    te = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32).eval()
    tok = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", dtype=torch.float32).eval()
    vae = AutoencoderKL.from_pretrained(folder / "vae", dtype=torch.float32).eval()
    hs = gtm.text_refs(te, tok, NAME)
    ustats = gtm.unet_refs(unet, NAME, 300, hidden=te.config.hidden_size)
    vstats = gtm.vae_refs(vae, NAME, 400)
    print(f"{NAME}: hs.std={hs.std():.3f} unet out std={ustats} vae mean/decoded std={vstats}")


if __name__ == "__main__":
    main()
