"""`interpret`'s overlays of the top losses: for each, where the evidence for the class the model PREDICTED is
(Grad-CAM, app/core/explain.py), drawn over the image, so the "clean the top losses" step shows what misled it.

Each image goes through the learner's own validation pipeline (item and batch transforms) as the server prepares
it (app/core/backends/fastai.py); the map is drawn over the image at its own size, the learner's resize undone (app/core/overlay.py).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from training.manifest import Manifest
from training.plots import plt, save_current_figure


def plot_top_loss_overlays(
    learn: Any, manifest: Manifest, rows: list[dict[str, object]], base: Path, path: Path
) -> Path:
    from app.core.backends.fastai import FastaiBackend
    from app.core.explain import explain_prepared
    from app.core.overlay import overlay_png

    backend = FastaiBackend(learn, torch.device("cpu"), manifest.input_size)
    spec = manifest.preprocessing
    ncols = max(1, math.ceil(math.sqrt(len(rows))))
    nrows = max(1, math.ceil(len(rows) / ncols))
    _, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows, strict=False):
        file = base / str(row["path"])
        with Image.open(file) as im:
            image = im.convert("RGB")
        explanation = explain_prepared(backend, backend.prepare(image), str(row["predicted"]))
        png = overlay_png(image, explanation.map, spec.resize_method, spec.size)
        ax.imshow(Image.open(io.BytesIO(png)))
        ax.set_title(f"{row['path']}\nwhy {row['predicted']}? (actual {row['actual']})", fontsize=9)
    return save_current_figure(
        path, title="top losses: where the evidence for the predicted class is (red: most)"
    )
