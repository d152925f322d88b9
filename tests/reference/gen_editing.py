#!/usr/bin/env python3
"""Reference for ddim-edit's editing methods: Prompt-to-Prompt attention control and the inversions
that change the sampling (negative-prompt, direct), on diffusers' UNet with attention processors.

Run from anywhere:  python tests/reference/gen_editing.py   (after gen_pipeline.py; same venv)
Deterministic (float32, one CPU thread, deterministic algorithms).

Algorithm (the spec the Rust code follows; P2P = Hertz et al., arXiv 2208.01626)
-------------------------------------------------------------------------------
Inversion: unguided DDIM inversion of x0 with the source prompt (gen_pipeline.invert, g = 1).
Branches: latents [source, edit] sampled together from trajectory[N-1-k]; UNet batch
  g == 1: [x_s, x_e] with states [c_src, c_edit];
  else:   [x_s, x_e, x_s, x_e] with [u, u, c_src, c_edit]; eps = eps_u + g (eps_c - eps_u) per row.
  u = the negative prompt's states ("" here); for negative-prompt inversion (Miyake et al., arXiv
  2305.16807) u = c_src in both rows.
  Without attention control, negative-prompt inversion samples the edit prompt alone with u = c_src.
Direct inversion (Ju et al., arXiv 2310.01506): after each step the source row is set to the exact
  inversion latent of the next timestep (trajectory[N-2-k_global], x0 after the last step), and the
  same correction (exact - source row) is added to the edit row (the paper code's add_target variant).
Attention control (every attention layer's probabilities computed as softmax(q k^T / sqrt(d)); only
  the conditional rows [source, edit] — the last two of the batch — are touched), at sampling step i
  of n = N - k:
  - cross-attention, i < floor(cross_replace * n): edit row := M(source row) * eq, where M is the
    identity for prompts of equal token count (word swap), else refinement: column j takes source
    column a[j] with weight w[j] (w = 0 for inserted tokens: the edit's own column), a/w from a
    Needleman-Wunsch alignment of the id sequences (gap 0, match 1, mismatch -1; ties: insertion,
    deletion, match), positions past the edit prompt's end map to themselves; eq = 1 except the
    re-weighted words' tokens (their factor).
  - self-attention at layers of <= 256 query tokens, i < floor(self_replace * n): edit row := source row.
  - local blend: at cross-attention layers of <= 256 query tokens, maps[q] += sum over heads and over
    the blend words' tokens of each conditional row's probabilities (before replacement); after
    the step (and the direct correction), for i >= floor(0.2 n): take the largest q stored, reshape
    to [bh, bw], 3x3 max-pool (stride 1, pad 1), nearest-resize to the latent size, divide by the
    max, > 0.3; mask = mask_source | mask_edit; x_edit := x_src + mask (x_edit - x_src).
  - local blend from the branches (blend_auto): d += mean over channels of |eps_edit - eps_source|
    (the guided predictions, after the UNet pass of step i); after the step (and the direct
    correction), for i >= floor(0.2 n): mask = d / max(d) > 0.3; x_edit := x_src + mask (x_edit - x_src).
  - feature injection (Plug-and-Play, Tumanyan et al., arXiv 2211.12572), i < floor(feature_replace n):
    the output of unet.up_blocks[1].resnets[1] in every edit row (1, and 3 when guided) := the
    source row before it (0, 2).
  Word positions: the prompt split at whitespace, each word tokenized alone; its tokens follow the
  previous words' (position 0 is the start token). Words compare without case or punctuation.

Fixtures: tests/fixtures/refs/editing.json (cases) and editing-<case>.safetensors
  (x0, trajectory, sampler_timesteps, source_latents, edited_latents; float32 [.., C, h, w]).
"""

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_pipeline as gp  # noqa: E402

CASES = [
    # word swap, DDIM inversion, from step 2
    dict(name="sd1-swap", model="tiny-sd1", image="images/sd1.png", size=16, steps=10, start_step=2,
         guidance=3.5, inversion="ddim", attention="p2p", cross_replace=0.8, self_replace=0.4,
         reweight=[], blend_words=[],
         prompt="a red circle on a white background", edit_prompt="a blue circle on a white background"),
    # refinement + re-weighting + local blend, direct inversion, from step 0 (the x0 correction)
    dict(name="sd1-refine-direct", model="tiny-sd1", image="images/sd1.png", size=16, steps=10,
         start_step=0, guidance=3.5, inversion="direct", attention="p2p", cross_replace=0.6,
         self_replace=0.3, reweight=[["big", 2.0]], blend_words=["circle"],
         prompt="a red circle on a white background", edit_prompt="a big red circle on a white background"),
    # negative-prompt inversion with a word swap and a blend, on the trained toy model
    dict(name="toy-npi-blend", model="toy", image="images/toy.png", size=64, steps=10, start_step=1,
         guidance=3.5, inversion="negative-prompt", attention="p2p", cross_replace=0.8,
         self_replace=0.5, reweight=[], blend_words=["triangle"],
         prompt="an orange triangle on a textured background",
         edit_prompt="a blue triangle on a textured background"),
    # structure held: feature injection and the blend from the branches, direct inversion, toy model
    dict(name="toy-features-auto", model="toy", image="images/toy.png", size=64, steps=10, start_step=0,
         guidance=3.5, inversion="direct", attention="p2p", cross_replace=0.8, self_replace=0.4,
         reweight=[], blend_words=[], blend_auto=True, feature_replace=0.8,
         prompt="an orange triangle on a textured background",
         edit_prompt="a blue triangle on a textured background"),
    # the same unguided (a batch of two rows), DDIM inversion, tiny SD1 model
    dict(name="sd1-features-auto", model="tiny-sd1", image="images/sd1.png", size=16, steps=10,
         start_step=2, guidance=1.0, inversion="ddim", attention="p2p", cross_replace=0.8,
         self_replace=0.4, reweight=[], blend_words=[], blend_auto=True, feature_replace=0.5,
         prompt="a red circle on a white background", edit_prompt="a blue circle on a white background"),
    # negative-prompt inversion without attention control
    dict(name="toy-npi", model="toy", image="images/toy.png", size=64, steps=10, start_step=3,
         guidance=3.5, inversion="negative-prompt", attention="none", cross_replace=0.8,
         self_replace=0.4, reweight=[], blend_words=[],
         prompt="an orange triangle on a textured background",
         edit_prompt="a blue triangle on a textured background"),
]
MAX_TOKENS = 256
THRESHOLD = 0.3
BLEND_START = 0.2


# ------------------------------------------------------------------------------------------------
# prompts as token positions
# ------------------------------------------------------------------------------------------------
def ids_of(tok, text):
    return tok(text, add_special_tokens=False).input_ids


def prompt_ids(tok, prompt):
    room = tok.model_max_length - 2
    return [tok.bos_token_id] + ids_of(tok, prompt)[:room] + [tok.eos_token_id]


def word_positions(tok, prompt, word):
    def norm(w):
        i, j = 0, len(w)
        while i < j and not w[i].isalnum():
            i += 1
        while j > i and not w[j - 1].isalnum():
            j -= 1
        return w[i:j].lower()
    key = norm(word)
    out, at = [], 1
    for w in prompt.split():
        n = len(ids_of(tok, w))
        if norm(w) == key:
            out += [p for p in range(at, at + n) if p < tok.model_max_length - 1]
        at += n
    assert at - 1 == len(ids_of(tok, prompt))
    return out


def needleman_wunsch(x, y):
    """For each token of y, the index of the token of x it pairs with, or None."""
    n, m = len(x), len(y)
    score = [[0] * (m + 1) for _ in range(n + 1)]
    move = [["diag"] * (m + 1) for _ in range(n + 1)]
    for j in range(1, m + 1):
        move[0][j] = "left"
    for i in range(1, n + 1):
        move[i][0] = "up"
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cand = {"left": score[i][j - 1], "up": score[i - 1][j],
                    "diag": score[i - 1][j - 1] + (1 if x[i - 1] == y[j - 1] else -1)}
            best = max(cand.values())
            score[i][j] = best
            move[i][j] = next(k for k in ("left", "up", "diag") if cand[k] == best)
    pairs = [None] * m
    i, j = n, m
    while i > 0 or j > 0:
        if move[i][j] == "diag":
            i, j = i - 1, j - 1
            pairs[j] = i
        elif move[i][j] == "left":
            j -= 1
        else:
            i -= 1
    return pairs


# ------------------------------------------------------------------------------------------------
# the controller and the processors that hand it the probabilities
# ------------------------------------------------------------------------------------------------
class Controller:
    def __init__(self, tok, c, n):
        L = tok.model_max_length
        src, dst = prompt_ids(tok, c["prompt"]), prompt_ids(tok, c["edit_prompt"])
        self.step = 0
        self.cross_steps = int(c["cross_replace"] * n)
        self.self_steps = int(c["self_replace"] * n)
        self.refine = len(src) != len(dst)
        self.source = torch.arange(L)
        self.weight = torch.ones(L)
        if self.refine:
            for j, i in enumerate(needleman_wunsch(src, dst)[:L]):
                self.source[j] = 0 if i is None else i
                self.weight[j] = 0.0 if i is None else 1.0
        self.eq = None
        if c["reweight"]:
            self.eq = torch.ones(L)
            for word, f in c["reweight"]:
                for p in word_positions(tok, c["edit_prompt"], word):
                    self.eq[p] = f
        self.words = None
        if c["blend_words"]:
            self.words = torch.zeros(2, L)
            for word in c["blend_words"]:
                for r, prompt in enumerate((c["prompt"], c["edit_prompt"])):
                    for p in word_positions(tok, prompt, word):
                        self.words[r, p] = 1.0
        self.maps = {}
        self.blend_start = int(BLEND_START * n)

    def __call__(self, probs, is_cross, hw):
        b, h, q, k = probs.shape
        s, e = b - 2, b - 1
        small = q <= MAX_TOKENS
        if is_cross and small and self.words is not None:
            m = (probs[s:] * self.words[:, None, None, :]).sum(-1).sum(1)
            prev = self.maps.get(q, (hw, 0))[1]
            self.maps[q] = (hw, prev + m)
        probs = probs.clone()
        if is_cross and self.step < self.cross_steps:
            base, edit = probs[s], probs[e]
            mapped = base[..., self.source] * self.weight + edit * (1 - self.weight) if self.refine else base
            probs[e] = mapped * self.eq if self.eq is not None else mapped
        elif not is_cross and small and self.step < self.self_steps:
            probs[e] = probs[s]
        return probs

    def blend(self, x):
        if self.words is None or self.step < self.blend_start or not self.maps:
            return x
        (bh, bw), m = self.maps[max(self.maps)]
        m = F.max_pool2d(m.reshape(2, 1, bh, bw), 3, 1, 1)
        m = F.interpolate(m, size=x.shape[2:], mode="nearest")
        mask = (m / m.amax(dim=(2, 3), keepdim=True)) > THRESHOLD
        union = (mask[0] | mask[1]).float()
        x = x.clone()
        x[1] = x[0] + union * (x[1] - x[0])
        return x


class Processor:
    """softmax(q k^T / sqrt(d)) v with the probabilities passed through the controller."""

    def __init__(self, ctl, latent_hw):
        self.ctl, self.latent_hw = ctl, latent_hw

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 **kwargs):
        is_cross = encoder_hidden_states is not None
        ctx = encoder_hidden_states if is_cross else hidden_states
        b, n, _ = hidden_states.shape
        q, k, v = attn.to_q(hidden_states), attn.to_k(ctx), attn.to_v(ctx)
        heads = attn.heads

        def split(t):
            return t.reshape(b, t.shape[1], heads, -1).transpose(1, 2)
        q, k, v = split(q), split(k), split(v)
        probs = torch.softmax(q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5), dim=-1)
        H, W = self.latent_hw
        f = int(round((H * W / n) ** 0.5))
        probs = self.ctl(probs, is_cross, (H // f, W // f))
        out = (probs @ v).transpose(1, 2).reshape(b, n, -1)
        return attn.to_out[1](attn.to_out[0](out))


# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def run(c):
    tok, te, unet, vae, inv, sch, _ = gp.load_models(c["model"])
    n, k, g = c["steps"], c["start_step"], c["guidance"]
    u8 = gp.load_png(gp.FIXTURES / c["image"])
    assert u8.shape == (c["size"], c["size"], 3)
    x0 = gp.encode_image(vae, u8)
    c_src = gp.encode_text(tok, te, c["prompt"])
    c_edit = gp.encode_text(tok, te, c["edit_prompt"])
    empty = gp.encode_text(tok, te, "")
    traj, ts = gp.invert(unet, inv, x0, c_src, empty, n, 1.0)
    sch.set_timesteps(n)
    start = traj[n - 1 - k: n - k]
    u = c_src if c["inversion"] == "negative-prompt" else empty
    if c["attention"] == "none":
        edited, _, _ = gp.sample(unet, sch, start, c_edit, u, n, k, g)
        source = start.clone()
    else:
        # The processor with the probabilities passed through unchanged is diffusers' attention.
        probe = torch.cat([start, start])
        t0 = sch.timesteps[k]
        want = unet(probe, t0, encoder_hidden_states=torch.cat([c_src, c_edit])).sample
        unet.set_attn_processor(Processor(lambda probs, is_cross, hw: probs, tuple(x0.shape[2:])))
        got = unet(probe, t0, encoder_hidden_states=torch.cat([c_src, c_edit])).sample
        assert float((got - want).abs().max()) < 1e-5 * float(want.abs().max()), "processor"
        ctl = Controller(tok, c, n - k)
        unet.set_attn_processor(Processor(ctl, tuple(x0.shape[2:])))
        feature_steps = int(c.get("feature_replace", 0.0) * (n - k))

        def inject(module, args, output):
            if ctl.step >= feature_steps:
                return output
            output = output.clone()
            for pair in range(output.shape[0] // 2):
                output[2 * pair + 1] = output[2 * pair]
            return output
        hook = unet.up_blocks[1].resnets[1].register_forward_hook(inject)
        diff = None
        x = torch.cat([start, start])
        ctx = torch.cat([u, u, c_src, c_edit]) if g != 1.0 else torch.cat([c_src, c_edit])
        for i, t in enumerate(sch.timesteps[k:]):
            ctl.step = i
            inp = torch.cat([x, x]) if g != 1.0 else x
            out = unet(inp, t, encoder_hidden_states=ctx).sample
            if g != 1.0:
                eu, ec = out.chunk(2)
                out = eu + g * (ec - eu)
            d = (out[1] - out[0]).abs().mean(0)
            diff = d if diff is None else diff + d
            x = sch.step(out, t, x, eta=0.0).prev_sample
            if c["inversion"] == "direct":
                kg = k + i
                exact = traj[n - 2 - kg] if kg + 1 < n else x0[0]
                # The source's correction, added to the edit branch too (PnP Inversion's add_target).
                x[1] = x[1] + (exact - x[0])
                x[0] = exact
            x = ctl.blend(x)
            if c.get("blend_auto") and i >= ctl.blend_start and float(diff.max()) > 0:
                mask = (diff / diff.max() > THRESHOLD).float()
                x[1] = x[0] + mask * (x[1] - x[0])
        hook.remove()
        source, edited = x[:1], x[1:]
        print(f"   maps stored at {sorted(ctl.maps)} query tokens" if ctl.maps else "   no blend")
    if c["inversion"] == "direct" and c["attention"] != "none":
        assert torch.equal(source, x0), "direct inversion ends the source branch at x0"
    gp.save_st({"x0": x0, "trajectory": traj, "sampler_timesteps": sch.timesteps.clone().to(torch.int64),
                "source_latents": source.contiguous(), "edited_latents": edited.contiguous()},
               gp.REFS / f"editing-{c['name']}.safetensors")
    print(f"== {c['name']}: |edited - x0| rms {float((edited - x0).pow(2).mean().sqrt()):.4f}")


def main():
    for c in CASES:
        run(c)
    cases = [dict(c, ref=f"refs/editing-{c['name']}.safetensors") for c in CASES]
    (gp.REFS / "editing.json").write_text(json.dumps({"cases": cases}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
