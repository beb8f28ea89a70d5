"""Headless plotting: every figure is written as a PNG, never shown."""

from __future__ import annotations

from pathlib import Path

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


def plot_image_grid(images: list[tuple[Path, str]], path: Path, title: str) -> Path:
    """A square-ish grid of images, each with its caption (the top losses of `interpret`, single- or multi-label)."""
    import math

    from PIL import Image

    ncols = max(1, math.ceil(math.sqrt(len(images))))
    nrows = max(1, math.ceil(len(images) / ncols))
    _, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (file, caption) in zip(axes.flat, images, strict=False):
        with Image.open(file) as im:
            ax.imshow(im.convert("RGB"))
        ax.set_title(caption, fontsize=9)
    return save_current_figure(path, title=title)
