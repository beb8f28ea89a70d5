"""`shapes`: a small generated segmentation set, so that segmentation training and serving can be tried offline in
seconds (the CamVid layout: `images/NAME.png`, `masks/NAME.png` of the same name whose pixel values are code
indices, and `codes.txt` with one code per line, the code of value 0 first).

Each image is gray noise with one to three coloured shapes (a red square, a green disc, a blue triangle) at random
places and sizes, a later shape drawn over an earlier one; its mask holds, for every pixel, the index of what covers
it (0 background). The same seed writes the same files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CODES = ("background", "square", "disc", "triangle")  # mask value = index
COLOURS = {"square": (220, 40, 40), "disc": (40, 190, 60), "triangle": (40, 90, 230)}


def draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill: int | tuple[int, ...]
) -> None:
    x0, y0, x1, y1 = box
    if shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "disc":
        draw.ellipse(box, fill=fill)
    else:  # triangle, point up
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)


def make_pair(rng: np.random.Generator, size: int) -> tuple[Image.Image, Image.Image]:
    """One RGB image and its mask (mode L, code indices)."""
    pixels = rng.normal(128, 30, (size, size, 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    mask = Image.new("L", (size, size), 0)
    draw, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(1, 4))):
        code = int(rng.integers(1, len(CODES)))
        side = int(rng.integers(size // 5, size // 2))
        x0, y0 = (int(v) for v in rng.integers(0, size - side, 2))
        box = (x0, y0, x0 + side - 1, y0 + side - 1)
        jitter = rng.integers(-25, 26, 3)
        colour = tuple(int(c) for c in np.clip(np.array(COLOURS[CODES[code]]) + jitter, 0, 255))
        draw_shape(draw, CODES[code], box, colour)
        draw_shape(draw_mask, CODES[code], box, code)
    return image, mask


def write_shapes(dest: Path, n: int = 300, size: int = 64, seed: int = 0) -> Path:
    """Write `n` image/mask pairs and codes.txt under DEST; returns DEST."""
    rng = np.random.default_rng(seed)
    for folder in ("images", "masks"):
        (dest / folder).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, mask = make_pair(rng, size)
        image.save(dest / "images" / f"{i:04d}.png")
        mask.save(dest / "masks" / f"{i:04d}.png")
    (dest / "codes.txt").write_text("\n".join(CODES) + "\n", encoding="utf-8")
    return dest
