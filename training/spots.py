"""`spots`: a small generated key point set, so that key point training and serving can be tried offline in
seconds (a CSV of `path,red_x,red_y,blue_x,blue_y` rows: two named points, in pixels of the original image).

Each image is WIDER than tall (48 x 32 by default), so the resize to the model's square input (squish, crop or
pad) moves the points, as it moves fastai's: dark noise with a red spot and a blue spot at known places. A point's
coordinates are its spot's centre, x to the right and y down from the image's top-left corner (0, 0), in the
continuous coordinates fastai's PointScaler uses (the centre of pixel column i is at x = i + 0.5).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

POINTS = ("red", "blue")
COLOURS = {"red": (235, 50, 40), "blue": (60, 110, 245)}


def make_spots(
    rng: np.random.Generator, width: int, height: int
) -> tuple[Image.Image, dict[str, tuple[float, float]]]:
    """One image and its spots' centres."""
    pixels = rng.normal(45, 12, (height, width, 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    r = max(2, round(min(width, height) / 12))
    centres: dict[str, tuple[float, float]] = {}
    for name in POINTS:
        while True:  # the spots do not touch, so each is seen whole
            cx, cy = int(rng.integers(r, width - r)), int(rng.integers(r, height - r))
            if all(
                abs(cx - x + 0.5) > 2 * r + 1 or abs(cy - y + 0.5) > 2 * r + 1 for x, y in centres.values()
            ):
                break
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=COLOURS[name])
        centres[name] = (cx + 0.5, cy + 0.5)  # the middle of the pixel the spot is centred on
    return image, centres


def write_spots(dest: Path, n: int = 400, width: int = 48, height: int = 32, seed: int = 0) -> Path:
    """Write `n` images to DEST/images/ and DEST/points.csv; returns the CSV's path."""
    rng = np.random.default_rng(seed)
    (dest / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        image, centres = make_spots(rng, width, height)
        name = f"images/{i:04d}.png"
        image.save(dest / name)
        row: dict[str, object] = {"path": name}
        for point, (x, y) in centres.items():
            row |= {f"{point}_x": x, f"{point}_y": y}
        rows.append(row)
    table = dest / "points.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["path", *(f"{p}_{a}" for p in POINTS for a in "xy")])
        writer.writeheader()
        writer.writerows(rows)
    return table
