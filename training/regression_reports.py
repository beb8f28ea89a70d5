"""Reports for a regression or key points, written by `train` beside history.csv and loss.png:
- regression: scatter.png (predicted against true, one panel per value, the diagonal is perfect) and metrics.txt
  (MAE and RMSE per value, and always answering the training mean's);
- key points: points.png (validation images with their true points, circles, and the predicted ones, crosses, in
  the image's own pixels) and metrics.txt (the mean distance per point, in pixels of the model's input).
"""

from __future__ import annotations

from pathlib import Path

import torch

from training.learner import Prepared
from training.manifest import POINTS
from training.plots import plt, save_current_figure
from training.regression import Figures, to_image_pixels

GRID = 16  # validation images in points.png


def write_numeric_reports(prepared: Prepared, figures: Figures, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    figure = plot_points(prepared, figures, folder / "points.png") if figures.kind == POINTS else (
        plot_scatter(figures, folder / "scatter.png"))  # fmt: skip
    return [figure, write_text(figures, folder / "metrics.txt")]


def write_text(f: Figures, path: Path) -> Path:
    n = f.targets.shape[0]
    if f.kind == POINTS:
        lines = [f"key points on {n} validation images: distances in pixels of the model's input",
                 f"mean distance {f.mae:.4f}, root mean squared distance {f.rmse:.4f}",
                 f"always answering the training mean: mean distance {f.baseline:.4f}", "per point (model, mean):"]  # fmt: skip
    else:
        lines = [f"regression on {n} validation images", f"MAE {f.mae:.4f}, RMSE {f.rmse:.4f} (over every value)",
                 f"always answering the training mean: MAE {f.baseline:.4f}", "MAE per value (model, mean):"]  # fmt: skip
    width = max(len(name) for name in f.names)
    lines += [
        f"  {name:>{width}}  {ours:.4f}  {mean:.4f}"
        for name, ours, mean in zip(f.names, f.per_target, f.baseline_per_target, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def plot_scatter(f: Figures, path: Path) -> Path:
    n = f.targets.shape[0]
    preds, targets = f.preds.reshape(n, -1), f.targets.reshape(n, -1)
    _, axes = plt.subplots(1, len(f.names), figsize=(4.2 * len(f.names), 4.2), squeeze=False)
    for i, (ax, name) in enumerate(zip(axes.flat, f.names, strict=True)):
        t, p = targets[:, i].tolist(), preds[:, i].tolist()
        low, high = min(t + p), max(t + p)
        ax.plot([low, high], [low, high], color="grey", linestyle=":", label="perfect")
        ax.scatter(t, p, s=12, alpha=0.7)
        ax.set_xlabel(f"true {name}")
        ax.set_ylabel(f"predicted {name}")
        ax.set_title(f"{name}: MAE {f.per_target[i]:.3g} (mean's {f.baseline_per_target[i]:.3g})", fontsize=9)
        ax.legend(loc="upper left")
    return save_current_figure(path, title=f"validation: predicted against true ({n} images)")


def plot_points(prepared: Prepared, f: Figures, path: Path) -> Path:
    """The first validation images with true (o) and predicted (x) points, mapped back to the image's pixels."""
    from matplotlib.colors import is_color_like
    from PIL import Image

    frame = prepared.valid_frame()
    hyper_size = int(prepared.dls.valid.after_item.resize.size[0])
    method = str(prepared.dls.valid.after_item.resize.method)
    k = min(GRID, len(frame))
    cols = 4
    rows = (k + cols - 1) // cols
    _, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax in axes.flat:
        ax.axis("off")
    n = f.targets.shape[0]
    preds, targets = f.preds.reshape(n, -1, 2), f.targets.reshape(n, -1, 2)
    for i, ax in zip(range(k), axes.flat, strict=False):
        with Image.open(frame.loc[i, "path"]) as im:
            image = im.convert("RGB")
        w, h = image.size
        true = to_image_pixels(targets[i].float().cpu(), method, hyper_size, w, h)
        given = to_image_pixels(preds[i].float().cpu(), method, hyper_size, w, h)
        ax.imshow(image)
        for j, name in enumerate(f.names):
            colour = name if is_color_like(name) else colours[j % len(colours)]  # spots: red and blue
            ax.plot(*true[j].tolist(), "o", mfc="none", mec=colour, ms=9, mew=1.5, label=f"{name} true")
            ax.plot(*given[j].tolist(), "x", color=colour, ms=8, mew=2, label=f"{name} predicted")
        dist = torch.linalg.norm(true - given, dim=1).mean()
        ax.set_title(f"{Path(frame.loc[i, 'path']).name}: {dist:.1f} px apart", fontsize=8)
    axes.flat[0].legend(fontsize=6, loc="lower left")
    return save_current_figure(
        path,
        title=f"validation: true (o) and predicted (x) points; mean distance {f.mae:.2f} px of the input",
    )
