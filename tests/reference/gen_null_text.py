#!/usr/bin/env python3
"""Reference for ddim-edit's null-text inversion (Mokady et al., arXiv 2211.09794) on the tiny models.

Run from anywhere:  python tests/reference/gen_null_text.py   (after gen_pipeline.py; same venv)
Deterministic (float32, one CPU thread, deterministic algorithms).

Algorithm (the spec the Rust code follows; the paper's Algorithm 1 as its code runs it)
------------------------------------------------------------------------------------------
Pivot: unguided DDIM inversion of x0 with the source prompt (gen_pipeline.invert, g = 1); with N
  steps, trajectory entry j is the latent at inverse timestep s_{j+1}, the sampler's tau_i = s_{N-i}.
Optimisation from start step k with guidance g: x = trajectory[N-1-k] (the latent at tau_k);
  u = the negative prompt's states ("" here), carried from step to step. For each sampler step
  i = k .. N-1 (timestep t = tau_i):
    target = trajectory[N-2-i], or x0 after the last step;
    eps_c  = UNet(x, t, c_src)                         (no gradient)
    Adam on u (betas 0.9 / 0.999, eps 1e-8, lr = 1e-2 (1 - i / 100), fresh state each step),
    at most `inner` iterations j:
        eps_u = UNet(x, t, u);  eps = eps_u + g (eps_c - eps_u)
        loss  = mean((DDIM step(x, eps) - target)^2);   backward;  Adam step
        stop when loss (before that Adam step) < 1e-5 + i * 2e-5
    null[i - k] = u;  x = DDIM step(x, guided eps with [u, c_src])   (no gradient)
Sampling with the nulls: every sampler step i uses null[i - k] as its unconditional states.

Fixtures: tests/fixtures/refs/null-text.json (cases) and null-text-<case>.safetensors
  (x0, trajectory, nulls [N-k, 77, D], losses [N-k] (each step's last loss), iterations [N-k],
   recon_latents (the source prompt sampled with the nulls), edited_latents (the edit prompt)).
"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_pipeline as gp  # noqa: E402

CASES = [
    dict(name="sd1", model="tiny-sd1", image="images/sd1.png", size=16, steps=6, start_step=1, guidance=3.5,
         inner=10, prompt="a red circle on a white background", edit_prompt="a blue circle on a white background"),
    dict(name="toy", model="toy", image="images/toy.png", size=64, steps=5, start_step=1, guidance=3.5,
         inner=10, prompt="an orange triangle on a textured background",
         edit_prompt="a blue triangle on a textured background"),
]
EPSILON = 1e-5


def step(sch, out, t, x):
    return sch.step(out, t, x, eta=0.0).prev_sample


def null_text(unet, sch, traj, x0, c_src, u0, n, k, g, inner):
    sch.set_timesteps(n)
    x = traj[n - 1 - k: n - k].clone()
    u = u0.clone()
    nulls, losses, iterations = [], [], []
    for i in range(k, n):
        t = sch.timesteps[i]
        target = traj[n - 2 - i: n - 1 - i] if i + 1 < n else x0
        with torch.no_grad():
            eps_c = unet(x, t, encoder_hidden_states=c_src).sample
        u = u.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([u], lr=1e-2 * (1.0 - i / 100.0))
        for j in range(inner):
            eps_u = unet(x, t, encoder_hidden_states=u).sample
            eps = eps_u + g * (eps_c - eps_u)
            loss = torch.nn.functional.mse_loss(step(sch, eps, t, x), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if loss.item() < EPSILON + i * 2e-5:
                break
        nulls.append(u.detach().clone())
        losses.append(loss.item())
        iterations.append(j + 1)
        with torch.no_grad():
            x = step(sch, gp.guided(unet, x, t, c_src, u.detach(), g), t, x)
    return torch.cat(nulls), losses, iterations


@torch.no_grad()
def sample_with_nulls(unet, sch, start, cond, nulls, n, k, g):
    sch.set_timesteps(n)
    x = start
    for i in range(k, n):
        t = sch.timesteps[i]
        x = step(sch, gp.guided(unet, x, t, cond, nulls[i - k: i - k + 1], g), t, x)
    return x


def run(c):
    torch.manual_seed(0)
    tok, te, unet, vae, inv, sch, _ = gp.load_models(c["model"])
    unet.requires_grad_(False)
    n, k, g = c["steps"], c["start_step"], c["guidance"]
    u8 = gp.load_png(gp.FIXTURES / c["image"])
    assert u8.shape == (c["size"], c["size"], 3)
    x0 = gp.encode_image(vae, u8)
    c_src = gp.encode_text(tok, te, c["prompt"])
    c_edit = gp.encode_text(tok, te, c["edit_prompt"])
    empty = gp.encode_text(tok, te, "")
    traj, _ = gp.invert(unet, inv, x0, c_src, empty, n, 1.0)
    nulls, losses, iterations = null_text(unet, sch, traj, x0, c_src, empty, n, k, g, c["inner"])
    start = traj[n - 1 - k: n - k]
    recon = sample_with_nulls(unet, sch, start, c_src, nulls, n, k, g)
    plain = gp.sample(unet, sch, start, c_src, empty, n, k, g)[0]
    edited = sample_with_nulls(unet, sch, start, c_edit, nulls, n, k, g)
    rms = lambda a: float((a - x0).pow(2).mean().sqrt())
    print(f"== {c['name']}: losses {['%.2e' % v for v in losses]}, iterations {iterations}; "
          f"|recon - x0| rms {rms(recon):.5f} (plain DDIM with guidance: {rms(plain):.5f})")
    assert rms(recon) < rms(plain), "the nulls bring the guided reconstruction closer to x0"
    gp.save_st({"x0": x0, "trajectory": traj, "nulls": nulls, "losses": torch.tensor(losses),
                "iterations": torch.tensor(iterations, dtype=torch.int64), "recon_latents": recon,
                "edited_latents": edited}, gp.REFS / f"null-text-{c['name']}.safetensors")


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for c in CASES:
        run(c)
    cases = [dict(c, ref=f"refs/null-text-{c['name']}.safetensors") for c in CASES]
    (gp.REFS / "null-text.json").write_text(json.dumps({"cases": cases}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
