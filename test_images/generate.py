"""Generate the verify scene: an 1800x1200 picture of a two-part truck, with ground-truth masks.

Run `python test_images/generate.py` to rebuild `scene.png`, the `gt_*.png` masks and
`scene_cases.json` in the package's assets (deterministic: same bytes every run; a test checks
that the shipped files equal what this writes). `provision verify --image scene` uses them. The
four prompts are the user's own (EdgeTAM's truck demo):
one point [500,375] on the cab, two points [500,375]+[1125,625] on cab and cargo box (= the truck),
the box [75,275,1725,850] around the truck, and two objects (cab, cargo box) with one point each.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

W, H = 1800, 1200
ASSETS = Path(__file__).resolve().parent.parent / "edgetam_provision" / "verify" / "assets"
CAB = [(300, 420), (380, 300), (760, 300), (760, 820), (300, 820)]
CARGO = (790, 290, 1700, 840)


def _mask(draw_fn) -> Image.Image:
    m = Image.new("L", (W, H), 0)
    draw_fn(ImageDraw.Draw(m))
    return m


def build() -> tuple[Image.Image, dict[str, Image.Image]]:
    rng = np.random.default_rng(20261125)
    y = np.linspace(0, 1, H)[:, None, None]
    sky = np.array([110, 160, 220]) * (1 - y) + np.array([180, 200, 230]) * y
    ground = np.array([95, 110, 80])
    img = np.where(np.arange(H)[:, None, None] < 860, sky, ground) * np.ones((1, W, 1))
    img += rng.normal(0, 6, img.shape)
    scene = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1))
    d = ImageDraw.Draw(scene)
    d.ellipse((1480, 60, 1640, 220), fill=(250, 220, 90))  # sun, outside the box prompt
    d.ellipse((20, 930, 380, 1150), fill=(40, 90, 40))  # bush, outside the box prompt
    d.polygon(CAB, fill=(200, 40, 35))
    d.rectangle((580, 330, 735, 500), fill=(150, 200, 230))  # cab window, clear of the point
    d.rectangle(CARGO, fill=(235, 235, 225))
    d.line((790, 560, 1700, 560), fill=(200, 200, 190), width=6)
    masks = {
        "cab": _mask(lambda m: m.polygon(CAB, fill=255)),
        "cargo": _mask(lambda m: m.rectangle(CARGO, fill=255)),
    }
    truck = np.maximum(np.array(masks["cab"]), np.array(masks["cargo"]))
    masks["truck"] = Image.fromarray(truck)
    return scene, masks


CASES = [
    {"name": "single point", "points": [[[500, 375]]], "labels": [[1]], "truth": ["gt_cab.png"]},
    {"name": "two points", "points": [[[500, 375], [1125, 625]]], "labels": [[1, 1]],
     "truth": ["gt_truck.png"]},
    {"name": "box", "box": [75, 275, 1725, 850], "truth": ["gt_truck.png"]},
    {"name": "two objects", "points": [[[500, 375]], [[1125, 625]]], "labels": [[1], [1]],
     "truth": ["gt_cab.png", "gt_cargo.png"]},
]


def main(out: Path = ASSETS) -> None:
    scene, masks = build()
    scene.save(out / "scene.png", optimize=True)
    for name, m in masks.items():
        m.convert("1").save(out / f"gt_{name}.png", optimize=True)
    (out / "scene_cases.json").write_text(json.dumps({"image": "scene.png", "cases": CASES}, indent=1) + "\n")


if __name__ == "__main__":
    import sys

    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ASSETS)
