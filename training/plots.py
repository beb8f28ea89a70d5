"""Headless plotting: every figure is written as a PNG, never shown."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["plt", "save_current_figure"]


def save_current_figure(path: Path, title: str | None = None) -> Path:
    fig = plt.gcf()
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close("all")
    return path


def image_axes(n: int) -> list[Any]:
    """A square-ish grid of n axes with their frames off (the rest of the last row left blank)."""
    ncols = max(1, math.ceil(math.sqrt(n)))
    nrows = max(1, math.ceil(n / ncols))
    _, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return list(axes.flat)


def plot_image_grid(images: list[tuple[Path, str]], path: Path, title: str) -> Path:
    """A square-ish grid of images, each with its caption (the top losses of `interpret`, single- or multi-label)."""
    from PIL import Image

    for ax, (file, caption) in zip(image_axes(len(images)), images, strict=False):
        with Image.open(file) as im:
            ax.imshow(im.convert("RGB"))
        ax.set_title(caption, fontsize=9)
    return save_current_figure(path, title=title)


def plot_heatmap_grid(images: list[tuple[Any, Any, str]], path: Path, title: str) -> Path:
    """A grid of (pixels [H, W, 3], map [h, w] in 0..1, caption): each image with its map stretched over it in a
    translucent colour scale (the map's cells are coarser than the pixels; bilinear between them)."""
    for ax, (pixels, heat, caption) in zip(image_axes(len(images)), images, strict=False):
        height, width = pixels.shape[:2]
        ax.imshow(pixels)
        ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear",
                  extent=(-0.5, width - 0.5, height - 0.5, -0.5))  # fmt: skip
        ax.set_title(caption, fontsize=9)
    return save_current_figure(path, title=title)
