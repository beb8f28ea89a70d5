"""`discs`: a small generated regression set, so that regression training and serving can be tried offline in
seconds (a CSV of `path,radius,brightness` rows: two values per image, on different scales).

Each image is dark gray noise with one disc somewhere on it; its radius (pixels of the image) and its brightness
(0..1, the disc's gray level over 255) are the values to learn.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

VALUES = ("radius", "brightness")
RADIUS = (3.0, 12.0)
BRIGHTNESS = (0.35, 1.0)


def make_disc(rng: np.random.Generator, size: int) -> tuple[Image.Image, float, float]:
    """One image, its disc's radius (in this image's pixels) and brightness."""
    pixels = rng.normal(50, 12, (size, size, 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    scale = size / 32
    radius = float(rng.uniform(*RADIUS)) * scale
    brightness = float(rng.uniform(*BRIGHTNESS))
    cx, cy = (float(rng.uniform(radius, size - radius)) for _ in range(2))
    gray = round(brightness * 255)
    ImageDraw.Draw(image).ellipse(
        (cx - radius, cy - radius, cx + radius, cy + radius), fill=(gray, gray, gray)
    )
    return image, round(radius, 3), round(gray / 255, 4)


def write_discs(dest: Path, n: int = 400, size: int = 32, seed: int = 0) -> Path:
    """Write `n` images to DEST/images/ and DEST/values.csv (path,radius,brightness); returns the CSV's path."""
    rng = np.random.default_rng(seed)
    (dest / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        image, radius, brightness = make_disc(rng, size)
        name = f"images/{i:04d}.png"
        image.save(dest / name)
        rows.append({"path": name, "radius": radius, "brightness": brightness})
    table = dest / "values.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["path", *VALUES])
        writer.writeheader()
        writer.writerows(rows)
    return table
