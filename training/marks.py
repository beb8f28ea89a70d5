"""`marks`: a small generated multi-label set, so that multi-label training and serving can be tried offline in
seconds (the PASCAL layout: images and a CSV of `path,labels` with the labels separated by spaces).

Each image is gray noise with one to three of four coloured marks, each in its own quadrant: a red square, a green
disc, a blue bar and a yellow cross. Its labels are the marks it shows. The marks sit in known places (written to
the CSV's `boxes` column as x0,y0,x1,y1 per mark, in label order), so a heatmap of what the model looked at can be
checked against where the evidence is.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

MARKS = ("bar", "cross", "disc", "square")  # sorted: fastai's MultiCategoryBlock vocab order
COLOURS = {"bar": (40, 90, 230), "cross": (235, 210, 30), "disc": (40, 190, 60), "square": (220, 40, 40)}


def draw_mark(draw: ImageDraw.ImageDraw, mark: str, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    colour = COLOURS[mark]
    if mark == "square":
        draw.rectangle(box, fill=colour)
    elif mark == "disc":
        draw.ellipse(box, fill=colour)
    elif mark == "bar":
        height = max(2, (y1 - y0) // 3)
        middle = (y0 + y1) // 2
        draw.rectangle((x0, middle - height // 2, x1, middle + height // 2), fill=colour)
    else:  # cross
        width = max(2, (x1 - x0) // 4)
        draw.line((x0, y0, x1, y1), fill=colour, width=width)
        draw.line((x0, y1, x1, y0), fill=colour, width=width)


def make_image(
    rng: np.random.Generator, size: int
) -> tuple[Image.Image, list[str], list[tuple[int, int, int, int]]]:
    """One image: its marks (sorted) and their boxes."""
    pixels = rng.normal(128, 30, (size, size, 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    count = int(rng.integers(1, 4))
    marks = sorted(rng.choice(MARKS, count, replace=False).tolist())
    quadrants = rng.permutation(4)[:count]
    half = size // 2
    side = max(4, int(half * 0.7))
    boxes = []
    for mark, quadrant in zip(marks, quadrants, strict=True):
        qx, qy = (int(quadrant) % 2) * half, (int(quadrant) // 2) * half
        x0 = qx + int(rng.integers(0, half - side + 1))
        y0 = qy + int(rng.integers(0, half - side + 1))
        box = (x0, y0, x0 + side - 1, y0 + side - 1)
        draw_mark(draw, mark, box)
        boxes.append(box)
    return image, marks, boxes


def write_marks(dest: Path, n: int = 400, size: int = 32, seed: int = 0) -> Path:
    """Write `n` images to DEST/images/ and DEST/labels.csv (path,labels,boxes); returns the CSV's path."""
    rng = np.random.default_rng(seed)
    (dest / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        image, marks, boxes = make_image(rng, size)
        name = f"images/{i:04d}.png"
        image.save(dest / name)
        rows.append(
            {"path": name, "labels": " ".join(marks), "boxes": " ".join(",".join(map(str, b)) for b in boxes)}
        )
    table = dest / "labels.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "labels", "boxes"])
        writer.writeheader()
        writer.writerows(rows)
    return table
