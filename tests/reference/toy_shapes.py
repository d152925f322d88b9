"""Seeded synthetic captioned scenes for the toy model: one or two coloured shapes on a plain or
textured background, 64×64 px, with captions such as "a red circle on a white background".

Every scene is a pure function of (split seed, index), so the training set and the held-out set
(`python toy_shapes.py OUT` writes it as PNGs + `scenes.json`) can be regenerated exactly.
Rendering is supersampled 4× and box-filtered, so edges are antialiased; the mask of a shape is
its coverage ≥ 0.5.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np

SIZE = 64
SUPER = 4

# Well-separated RGB prototypes; the pixel-statistics classifier of the evaluation uses the same.
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 60, 190),
    "orange": (245, 140, 30),
}
SHAPES = ["circle", "square", "triangle", "star"]
BACKGROUNDS = {"white": (245, 245, 245), "black": (20, 20, 20), "gray": (128, 128, 128), "textured": None}
TEXTURE_BASE = (200, 185, 160)  # the textured background's mean colour

TRAIN_SEED = 1
HELDOUT_SEED = 2


def _coverage(shape, cx, cy, r):
    """Coverage in [0, 1] of one shape on the SIZE×SIZE grid (pixel centres at +0.5)."""
    n = SIZE * SUPER
    c = (np.arange(n) + 0.5) / SUPER
    x, y = np.meshgrid(c, c)
    dx, dy = x - cx, y - cy
    if shape == "circle":
        inside = dx * dx + dy * dy <= r * r
    elif shape == "square":
        h = r * 0.85
        inside = (np.abs(dx) <= h) & (np.abs(dy) <= h)
    elif shape == "triangle":  # pointing up, circumradius r
        v = [(0, -r), (r * math.sqrt(3) / 2, r / 2), (-r * math.sqrt(3) / 2, r / 2)]
        inside = np.ones_like(dx, dtype=bool)
        for (ax, ay), (bx, by) in zip(v, v[1:] + v[:1]):
            inside &= (bx - ax) * (dy - ay) - (by - ay) * (dx - ax) >= 0
    elif shape == "star":  # five points up, inner radius 0.45 r
        ang = np.arctan2(dx, -dy)  # 0 = up, clockwise
        rad = np.hypot(dx, dy)
        sector = (ang % (2 * math.pi / 5)) / (2 * math.pi / 5)  # 0 at a point, 0.5 between
        t = np.abs(sector - 0.5) * 2  # 1 at a point, 0 between
        ri = 0.45 * r
        # boundary radius along the straight edge from a point (r) to an inner vertex (ri)
        half = math.pi / 5
        phi = (1 - t) * half  # angle from the point direction
        # edge from P=(r,0) to Q=(ri cos half, ri sin half) in polar around the point direction
        px, py = r, 0.0
        qx, qy = ri * math.cos(half), ri * math.sin(half)
        ex, ey = qx - px, qy - py
        # intersection of the ray (cos phi, sin phi)·s with the edge: solve P + u E = s D
        cosp, sinp = np.cos(phi), np.sin(phi)
        den = ex * sinp - ey * cosp
        s = (px * ey - py * ex) / -den
        inside = rad <= s
    else:
        raise ValueError(shape)
    cov = inside.reshape(SIZE, SUPER, SIZE, SUPER).mean(axis=(1, 3))
    return cov


def _background(name, rng):
    if name != "textured":
        return np.broadcast_to(np.array(BACKGROUNDS[name], np.float32), (SIZE, SIZE, 3)).copy()
    # Beige paper: low-frequency blotches plus fine grain, kept away from the shape colours.
    base = np.array(TEXTURE_BASE, np.float32)
    coarse = rng.normal(0, 1, (8, 8, 1)).astype(np.float32)
    coarse = np.kron(coarse, np.ones((8, 8, 1), np.float32))
    grain = rng.normal(0, 1, (SIZE, SIZE, 1)).astype(np.float32)
    stripes = np.sin(np.arange(SIZE, dtype=np.float32) * (2 * math.pi / 6))[None, :, None]
    return np.clip(base + 8 * coarse + 6 * grain + 6 * stripes, 0, 255)


def _place(rng, r, taken):
    for _ in range(100):
        cx, cy = rng.uniform(r + 2, SIZE - r - 2, size=2)
        if all(math.hypot(cx - x, cy - y) > r + rr + 3 for x, y, rr in taken):
            return float(cx), float(cy)
    return None


def scene(split_seed, index, two_shapes_p=0.25):
    """One scene: {"image": uint8 [64,64,3], "caption", "background", "shapes": [{shape, colour,
    cx, cy, r}], "masks": [bool [64,64] per shape], "coverage": float32 [64,64] of all shapes}."""
    rng = np.random.default_rng([split_seed, index])
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    img = _background(background, rng)
    count = 2 if rng.random() < two_shapes_p else 1
    shapes, masks, taken = [], [], []
    coverage = np.zeros((SIZE, SIZE), np.float32)
    for _ in range(count):
        shape = SHAPES[rng.integers(len(SHAPES))]
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        while any(s["colour"] == colour and s["shape"] == shape for s in shapes):
            colour = list(COLOURS)[rng.integers(len(COLOURS))]
        r = float(rng.uniform(9, 15) if count == 2 else rng.uniform(10, 22))
        pos = _place(rng, r, taken)
        if pos is None:
            break
        cx, cy = pos
        taken.append((cx, cy, r))
        cov = _coverage(shape, cx, cy, r)[..., None]
        img = img * (1 - cov) + np.array(COLOURS[colour], np.float32) * cov
        shapes.append({"shape": shape, "colour": colour, "cx": cx, "cy": cy, "r": r})
        masks.append(cov[..., 0] >= 0.5)
        coverage = np.maximum(coverage, cov[..., 0])
    caption = caption_of(shapes, background)
    return {
        "image": np.clip(np.rint(img), 0, 255).astype(np.uint8),
        "caption": caption,
        "background": background,
        "shapes": shapes,
        "masks": masks,
        "coverage": coverage,
    }


def caption_of(shapes, background):
    """"a red circle and an orange star on a white background"."""

    def article(word):
        return "an" if word[0] in "aeiou" else "a"

    things = " and ".join(f"{article(s['colour'])} {s['colour']} {s['shape']}" for s in shapes)
    return f"{things} on a {background} background"


def write_heldout(out: Path, count: int):
    """The held-out evaluation set: single-shape scenes as PNG + mask PNG + scenes.json."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    records, i = [], 0
    while len(records) < count:
        s = scene(HELDOUT_SEED, i, two_shapes_p=0.0)
        i += 1
        name = f"{len(records):03d}"
        Image.fromarray(s["image"]).save(out / f"{name}.png")
        Image.fromarray((s["masks"][0] * 255).astype(np.uint8)).save(out / f"{name}-mask.png")
        records.append(
            {"image": f"{name}.png", "mask": f"{name}-mask.png", "caption": s["caption"],
             "background": s["background"], **s["shapes"][0]}
        )
    (out / "scenes.json").write_text(
        json.dumps({"size": SIZE, "colours": COLOURS, "shapes": SHAPES,
                    "backgrounds": {k: v or TEXTURE_BASE for k, v in BACKGROUNDS.items()}, "scenes": records},
                   indent=1) + "\n"
    )


if __name__ == "__main__":
    write_heldout(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 48)
