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
