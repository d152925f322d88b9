#!/usr/bin/env python3
"""Generate tests/fixtures/scheduler/cases.json from diffusers' own DDIMScheduler / DDIMInverseScheduler.

Behaviour of the installed diffusers (0.42.1), read from the source and asserted below:

DDIMScheduler.step(t), N = num_inference_steps, T = num_train_timesteps:
  * prev = t - T // N for EVERY timestep_spacing (leading, trailing, linspace alike); it is not the next
    entry of `timesteps` (N=7: linspace t=999 -> prev 857 but next timestep 832; trailing t=999 -> prev 857
    but next timestep 856).
  * alpha_t = alphas_cumprod[t]; alpha_prev = alphas_cumprod[prev] if prev >= 0 else final_alpha_cumprod
    (final_alpha_cumprod = 1.0 if set_alpha_to_one else alphas_cumprod[0]).
  * clip_sample clamps pred_x0 to +-clip_sample_range; pred_epsilon is NOT recomputed from the clipped x0
    unless use_clipped_model_output=True (default False).
  * eta > 0: std = eta * sqrt(var), var = (1-a_prev)/(1-a_t) * (1 - a_t/a_prev);
    prev_sample = sqrt(a_prev) x0 + sqrt(1 - a_prev - std^2) eps + std * noise.
  * timesteps: leading = arange(N) * (T // N) + steps_offset, descending; trailing =
    round(arange(T, 0, -T/N)) - 1; linspace = round(linspace(0, T-1, N)), descending. steps_offset only
    affects leading. With steps_offset=1 and N=T the first timestep is T, and step() raises IndexError
    (alphas_cumprod[T]); such entries are stored with a=b=null and "error".
DDIMInverseScheduler.step(t):
  * source = min(t - T // N, T - 1): alpha_src = alphas_cumprod[source] if source >= 0 else
    initial_alpha_cumprod (= 1.0 if set_alpha_to_one else alphas_cumprod[0]); target = t: alpha_tgt =
    alphas_cumprod[t]. x0 / eps are predicted with alpha_src, prev_sample = sqrt(alpha_tgt) x0 +
    sqrt(1 - alpha_tgt) eps.
  * clip_sample clamps x0; pred_epsilon is never recomputed after clipping (no use_clipped_model_output).
  * no eta, no noise, no thresholding (step(model_output, timestep, sample, return_dict) only).
  * set_timesteps supports "leading" (arange(N) * (T // N) + steps_offset, ascending) and "trailing"
    (round(arange(T, 0, -T/N)[::-1]) - 1, ascending); anything else (linspace) raises ValueError
    (the constructor accepts it) -> "inverse_timesteps": null.

The a/b/c coefficients are extracted by calling diffusers' step() with float64 tensors after replacing
alphas_cumprod and final/initial_alpha_cumprod by the float64 schedule.
"""
import inspect
import json
import math
import os
import sys

import diffusers
import numpy as np
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

F64 = torch.float64
STEPS = [1, 7, 50, 250, 1000]
STRIDE_1000 = 37
SCALE = 2.0 ** -20  # exact power-of-two input scale: keeps |x0| tiny so clip_sample never engages in a/b
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "scheduler", "cases.json")

PUBLISHED_SD15 = {
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
PUBLISHED_SD21_BASE = {
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
PUBLISHED_SD21_V = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": "0.8.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}


def ddim_config(**kw):
    """The config dict exactly as diffusers stores it (scheduler_config.json) for DDIMScheduler(**kw)."""
    return json.loads(DDIMScheduler(**kw).to_json_string())


def case_configs():
    trained = np.geomspace(1e-4, 2e-2, 1000).tolist()
    sl = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return [
        ("sd15", PUBLISHED_SD15),
        ("sd21_base", PUBLISHED_SD21_BASE),
        ("sd21_v", PUBLISHED_SD21_V),
        ("trailing_v", ddim_config(**sl, prediction_type="v_prediction", timestep_spacing="trailing",
                                   steps_offset=0, set_alpha_to_one=False, clip_sample=False)),
        ("linspace", ddim_config(**sl, prediction_type="epsilon", timestep_spacing="linspace",
                                 steps_offset=1, set_alpha_to_one=False, clip_sample=False)),
        ("linear_one", ddim_config(beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                                   set_alpha_to_one=True, prediction_type="epsilon", timestep_spacing="leading",
                                   steps_offset=0, clip_sample=False)),
        ("cosine", ddim_config(beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
                               timestep_spacing="trailing", set_alpha_to_one=True, steps_offset=1,
                               clip_sample=False)),
        ("trained", ddim_config(trained_betas=trained, num_train_timesteps=1000, timestep_spacing="leading",
                                prediction_type="epsilon", set_alpha_to_one=False, steps_offset=0,
                                clip_sample=False)),
        ("clip_sample", ddim_config(beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                                    prediction_type="sample", clip_sample=True, clip_sample_range=1.0,
                                    set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")),
        ("clip_eps", ddim_config(**sl, prediction_type="epsilon", clip_sample=True, clip_sample_range=1.5,
                                 set_alpha_to_one=False, steps_offset=0, timestep_spacing="leading")),
    ]


def alphas_cumprod_f64(cfg):
    """Same formulas as diffusers' __init__, evaluated in float64."""
    n = cfg["num_train_timesteps"]
    if cfg.get("trained_betas") is not None:
        betas = torch.tensor(cfg["trained_betas"], dtype=F64)
    elif cfg["beta_schedule"] == "linear":
        betas = torch.linspace(cfg["beta_start"], cfg["beta_end"], n, dtype=F64)
    elif cfg["beta_schedule"] == "scaled_linear":
        betas = torch.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, n, dtype=F64) ** 2
    elif cfg["beta_schedule"] == "squaredcos_cap_v2":
        def abar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = torch.tensor([min(1 - abar((i + 1) / n) / abar(i / n), 0.999) for i in range(n)], dtype=F64)
    else:
        raise ValueError(cfg["beta_schedule"])
    return torch.cumprod(1.0 - betas, dim=0)


def close(x, y, tol=1e-12):
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return bool(np.all(np.abs(x - y) <= tol * np.maximum(1.0, np.abs(y))))


def coeffs_expected(pred, a_src, a_tgt, std=0.0):
    """(a, b) of prev = sqrt(a_tgt) x0 + sqrt(1 - a_tgt - std^2) eps, x0/eps predicted with a_src."""
    sa, sb = math.sqrt(a_src), math.sqrt(1 - a_src)
    d = math.sqrt(1 - a_tgt - std ** 2)
    st = math.sqrt(a_tgt)
    if pred == "epsilon":  # x0 = (x - sb e)/sa, eps = e
        return st / sa, d - st * sb / sa
    if pred == "v_prediction":  # x0 = sa x - sb v, eps = sa v + sb x
        return st * sa + d * sb, -st * sb + d * sa
    if pred == "sample":  # x0 = m, eps = (x - sa m)/sb
        return d / sb, st - d * sa / sb
    raise ValueError(pred)


def install_f64(sched, ac64, inverse):
    s2o = sched.config.set_alpha_to_one
    sched.alphas_cumprod = ac64.clone()
    edge = torch.tensor(1.0 if s2o else float(ac64[0]), dtype=F64)
    if inverse:
        sched.initial_alpha_cumprod = edge
    else:
        sched.final_alpha_cumprod = edge
    return float(edge)


def fwd_step(sched, mo, t, x, **kw):
    return sched.step(model_output=mo, timestep=t, sample=x, **kw)


def extract_ab(sched, t, inverse, rng, expect):
    """Step on unit inputs (scaled by SCALE), return (a, b); check linearity and the closed form."""
    x = torch.tensor([SCALE, 0.0], dtype=F64)
    m = torch.tensor([0.0, SCALE], dtype=F64)
    kw = {} if inverse else {"eta": 0.0}
    out = fwd_step(sched, m, t, x, **kw).prev_sample
    assert out.dtype == F64
    a, b = float(out[0]) / SCALE, float(out[1]) / SCALE
    # linear-map check with a random pair
    xr = torch.from_numpy(rng.standard_normal(16)) * SCALE
    mr = torch.from_numpy(rng.standard_normal(16)) * SCALE
    got = fwd_step(sched, mr, t, xr, **kw).prev_sample.numpy() / SCALE
    want = (a * xr.numpy() + b * mr.numpy()) / SCALE
    assert close(got, want), (t, got, want)
    assert close([a, b], expect, 1e-12), (t, (a, b), expect)
    return a, b


def src_tgt_alphas(ac64, edge, T, N, t, inverse):
    ratio = T // N
    if inverse:
        src = min(t - ratio, T - 1)
        return (float(ac64[src]) if src >= 0 else edge), float(ac64[t])
    prev = t - ratio
    return float(ac64[t]), (float(ac64[prev]) if prev >= 0 else edge)


def keep_index(i, n):
    return n != 1000 or i % STRIDE_1000 == 0 or i == n - 1


def step_list(sched, timesteps, ac64, edge, cfg, N, inverse, rng):
    T = cfg["num_train_timesteps"]
    pred = sched.config.prediction_type
    out = []
    for i, t in enumerate(timesteps):
        if not keep_index(i, N):
            continue
        entry = {"i": i, "timestep": t}
        if t >= T:  # alphas_cumprod[t] out of range: diffusers raises
            try:
                fwd_step(sched, torch.zeros(2, dtype=F64), t, torch.zeros(2, dtype=F64),
                         **({} if inverse else {"eta": 0.0}))
            except IndexError as e:
                entry.update(a=None, b=None, error="IndexError: " + str(e))
                out.append(entry)
                continue
            raise AssertionError("expected IndexError for t >= T")
        a_src, a_tgt = src_tgt_alphas(ac64, edge, T, N, t, inverse)
        if pred == "sample" and a_src == 1.0:
            # beta_prod_src = 0: diffusers divides by zero when recovering eps from x0 -> non-finite output
            p = fwd_step(sched, torch.tensor([0.0, SCALE], dtype=F64), t, torch.tensor([SCALE, 0.0], dtype=F64),
                         **({} if inverse else {"eta": 0.0})).prev_sample
            assert not torch.isfinite(p).all()
            entry.update(a=None, b=None, error="non-finite: alpha_src == 1 with prediction_type 'sample' "
                                               "(eps = (x - x0) / sqrt(1 - alpha_src) divides by zero)")
            out.append(entry)
            continue
        a, b = extract_ab(sched, t, inverse, rng, coeffs_expected(pred, a_src, a_tgt))
        entry.update(a=a, b=b)
        out.append(entry)
    return out


def sample_indices(n):
    return sorted({0, n // 2, n - 1})


def eta_list(sched, timesteps, ac64, edge, cfg, N, rng):
    T = cfg["num_train_timesteps"]
    pred = sched.config.prediction_type
    eta = 0.5
    out = []
    for i in sample_indices(N):
        t = timesteps[i]
        x = torch.tensor([SCALE, 0.0, 0.0], dtype=F64)
        m = torch.tensor([0.0, SCALE, 0.0], dtype=F64)
        z = torch.tensor([0.0, 0.0, SCALE], dtype=F64)
        if t >= T:
            try:
                sched.step(m, t, x, eta=eta, variance_noise=z)
            except IndexError as e:
                out.append({"i": i, "timestep": t, "eta": eta, "a": None, "b": None, "c": None,
                            "error": "IndexError: " + str(e)})
                continue
            raise AssertionError("expected IndexError")
        p = sched.step(m, t, x, eta=eta, variance_noise=z).prev_sample
        a, b, c = (float(v) / SCALE for v in p)
        a_t, a_p = src_tgt_alphas(ac64, edge, T, N, t, False)
        var = (1 - a_p) / (1 - a_t) * (1 - a_t / a_p)
        std = eta * math.sqrt(var)
        assert close([a, b, c], [*coeffs_expected(pred, a_t, a_p, std), std]), (t, a, b, c)
        xr, mr, zr = (torch.from_numpy(rng.standard_normal(16)) * SCALE for _ in range(3))
        got = sched.step(mr, t, xr, eta=eta, variance_noise=zr).prev_sample.numpy() / SCALE
        assert close(got, (a * xr.numpy() + b * mr.numpy() + c * zr.numpy()) / SCALE)
        out.append({"i": i, "timestep": t, "eta": eta, "a": a, "b": b, "c": c})
    return out


def clip_inputs(rng, pred, a_src, rng_max):
    """8 (sample, model_output) pairs whose predicted x0 partly exceeds +-rng_max (by a clear margin)."""
    while True:
        x0 = rng.standard_normal(8) * rng_max * 1.1
        mag = np.abs(x0)
        n_out = int(np.sum(mag > rng_max))
        if 2 <= n_out <= 6 and np.all(np.abs(mag - rng_max) > 1e-2):
            break
    eps = rng.standard_normal(8)
    sa, sb = math.sqrt(a_src), math.sqrt(1 - a_src)
    sample = sa * x0 + sb * eps
    if pred == "epsilon":
        mo = eps
    elif pred == "sample":
        mo = x0
    else:
        mo = sa * eps - sb * x0
    return torch.from_numpy(sample), torch.from_numpy(mo.copy()), x0, eps


def clip_list(sched, timesteps, ac64, edge, cfg, N, inverse, rng):
    T = cfg["num_train_timesteps"]
    pred = sched.config.prediction_type
    r = sched.config.clip_sample_range
    out = []
    for i in sample_indices(N):
        t = timesteps[i]
        if t >= T:
            continue
        a_src, a_tgt = src_tgt_alphas(ac64, edge, T, N, t, inverse)
        if pred == "sample" and a_src == 1.0:
            continue  # non-finite in diffusers, see step_list
        x, m, x0, eps = clip_inputs(rng, pred, a_src, r)
        res = fwd_step(sched, m, t, x, **({} if inverse else {"eta": 0.0}))
        x0c = np.clip(x0, -r, r)
        assert close(res.pred_original_sample.numpy(), x0c, 1e-10)
        assert np.sum(np.abs(res.pred_original_sample.numpy()) == r) >= 2
        # pred_epsilon is the unclipped one (not recomputed from the clipped x0)
        want = math.sqrt(a_tgt) * x0c + math.sqrt(1 - a_tgt) * eps
        assert close(res.prev_sample.numpy(), want, 1e-10), (t, res.prev_sample, want)
        e = {"i": i, "timestep": t, "sample": x.tolist(), "model_output": m.tolist(),
             "prev_sample": res.prev_sample.tolist(),
             "pred_original_sample": res.pred_original_sample.tolist()}
        if not inverse:
            res2 = fwd_step(sched, m, t, x, eta=0.0, use_clipped_model_output=True)
            eps_c = (x.numpy() - math.sqrt(a_src) * x0c) / math.sqrt(1 - a_src)
            assert close(res2.prev_sample.numpy(), math.sqrt(a_tgt) * x0c + math.sqrt(1 - a_tgt) * eps_c, 1e-10)
            e["prev_sample_use_clipped_model_output"] = res2.prev_sample.tolist()
        out.append(e)
    return out


def main():
    assert "eta" not in inspect.signature(DDIMInverseScheduler.step).parameters
    assert "use_clipped_model_output" not in inspect.signature(DDIMInverseScheduler.step).parameters
    rng = np.random.RandomState(20240611)
    cases = []
    for name, cfg in case_configs():
        fwd = DDIMScheduler.from_config(cfg)
        inv = DDIMInverseScheduler.from_config(cfg)
        rc = fwd.config
        assert not rc.thresholding and not rc.rescale_betas_zero_snr
        ac32 = fwd.alphas_cumprod.clone()
        assert ac32.dtype == torch.float32 and torch.equal(ac32, inv.alphas_cumprod)
        s2o = rc.set_alpha_to_one
        assert float(fwd.final_alpha_cumprod) == (1.0 if s2o else float(ac32[0]))
        assert float(inv.initial_alpha_cumprod) == (1.0 if s2o else float(ac32[0]))
        ac64 = alphas_cumprod_f64(cfg)
        assert float((ac64 - ac32.double()).abs().max()) < 1e-6
        runs = []
        for N in STEPS:
            fwd.set_timesteps(N)
            ts = [int(v) for v in fwd.timesteps.tolist()]
            try:
                inv.set_timesteps(N)
                its = [int(v) for v in inv.timesteps.tolist()]
            except ValueError:
                assert rc.timestep_spacing not in ("leading", "trailing")
                its = None
            if its is not None:
                assert its == sorted(its) and len(its) == N
                if rc.timestep_spacing == "leading":
                    assert its == ts[::-1]
            edge_f = install_f64(fwd, ac64, inverse=False)
            edge_i = install_f64(inv, ac64, inverse=True)
            run = {
                "steps": N,
                "stride_note": (f"forward/inverse keep only entries with i % {STRIDE_1000} == 0 or i == {N - 1}; "
                                "'i' indexes timesteps / inverse_timesteps") if N == 1000 else "all steps kept",
                "timesteps": ts,
                "inverse_timesteps": its,
                "forward": step_list(fwd, ts, ac64, edge_f, cfg, N, False, rng),
                "inverse": None if its is None else step_list(inv, its, ac64, edge_i, cfg, N, True, rng),
                "eta": eta_list(fwd, ts, ac64, edge_f, cfg, N, rng),
                "clip": clip_list(fwd, ts, ac64, edge_f, cfg, N, False, rng) if rc.clip_sample else None,
                "inverse_clip": (clip_list(inv, its, ac64, edge_i, cfg, N, True, rng)
                                 if rc.clip_sample and its is not None else None),
            }
            runs.append(run)
            # restore the float32 schedule for the next set_timesteps (not strictly needed)
            fwd.alphas_cumprod, inv.alphas_cumprod = ac32.clone(), ac32.clone()
        cases.append({
            "name": name,
            "config": cfg,
            "resolved_config": json.loads(fwd.to_json_string()),
            "alphas_cumprod_f32": [float(v) for v in ac32.tolist()],
            "alphas_cumprod_f64": [float(v) for v in ac64.tolist()],
            "runs": runs,
        })
        print(name, "ok", file=sys.stderr)
    doc = {"generator": {"diffusers": diffusers.__version__, "torch": torch.__version__}, "cases": cases}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(doc, f, separators=(",", ":"), allow_nan=False)
        f.write("\n")
    print(OUT, os.path.getsize(OUT), "bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
