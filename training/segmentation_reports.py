"""Reports for a segmentation learner, written by `train` beside history.csv and loss.png:

- per_code.csv and segmentation.txt: pixel accuracy, and each code's IoU, true and predicted pixels;
- confusion.csv and confusion.png: the validation pixels of each actual code (rows) by the code predicted (columns);
- masks.png: validation images with their true mask and the predicted one laid over them, side by side.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.manifest import Metrics
from training.plots import plt, save_current_figure

OVERLAYS = 6  # validation images in masks.png
PER_CODE_COLUMNS = ["code", "iou", "true_pixels", "predicted_pixels"]


def write_segmentation_reports(
    metrics: Metrics, counts: torch.Tensor, kept: list[Any], codes: list[str], folder: Path
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = [
        write_per_code(metrics, counts, codes, folder / "per_code.csv"),
        write_text(metrics, counts, codes, folder / "segmentation.txt"),
        write_confusion(counts, codes, folder / "confusion.csv"),
        plot_confusion(counts, codes, folder / "confusion.png"),
    ]
    if kept:
        written.append(plot_overlays(kept, codes, folder / "masks.png"))
    return written


def write_per_code(metrics: Metrics, counts: torch.Tensor, codes: list[str], path: Path) -> Path:
    iou = metrics.iou or {}
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(PER_CODE_COLUMNS)
        for i, code in enumerate(codes):
            score = round(iou[code], 4) if code in iou else ""
            writer.writerow([code, score, int(counts[i].sum()), int(counts[:, i].sum())])
    return path


def summary_lines(metrics: Metrics, counts: torch.Tensor, codes: list[str]) -> list[str]:
    """What `train` prints at the end and segmentation.txt holds."""
    total = int(counts.sum())
    share = counts.sum(1).double() / max(total, 1)
    commonest = int(share.argmax())
    lines = [
        f"pixel accuracy {metrics.accuracy:.4f} over {total} validation pixels (always answering the commonest "
        f"code, '{codes[commonest]}', scores {float(share[commonest]):.4f})",
        "IoU per code (share of the validation pixels):",
    ]
    iou = metrics.iou or {}
    for i, code in enumerate(codes):
        score = f"{iou[code]:.4f}" if code in iou else "  none"
        lines.append(f"  {code:>14}  {score}  ({float(share[i]):.3f})")
    if iou:
        lines.append(f"mean IoU {sum(iou.values()) / len(iou):.4f}")
    return lines


def write_text(metrics: Metrics, counts: torch.Tensor, codes: list[str], path: Path) -> Path:
    path.write_text("\n".join(summary_lines(metrics, counts, codes)) + "\n", encoding="utf-8")
    return path


def write_confusion(counts: torch.Tensor, codes: list[str], path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["actual \\ predicted", *codes])
        for code, row in zip(codes, counts.tolist(), strict=True):
            writer.writerow([code, *row])
    return path


def plot_confusion(counts: torch.Tensor, codes: list[str], path: Path) -> Path:
    """Each row as shares of its actual code's pixels (the counts are in confusion.csv)."""
    shares = (counts.double() / counts.sum(1, keepdim=True).clamp_min(1)).numpy()
    size = max(4.0, 0.6 * len(codes) + 2)
    _, ax = plt.subplots(figsize=(size, size))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(codes)), codes, rotation=45, ha="right")
    ax.set_yticks(range(len(codes)), codes)
    ax.set_xlabel("predicted code")
    ax.set_ylabel("actual code")
    if len(codes) <= 12:
        for (r, c), v in np.ndenumerate(shares):
            ax.text(
                c, r, f"{v:.2f}", ha="center", va="center", color="white" if v > 0.5 else "black", fontsize=8
            )
    return save_current_figure(path, title="validation pixels: share of each actual code")


def plot_overlays(kept: list[Any], codes: list[str], path: Path) -> Path:
    """One row per image: the true mask over it, the predicted mask over it (code 0 left clear: often background)."""
    cmap = plt.get_cmap("tab20", max(len(codes), 2))
    _, axes = plt.subplots(len(kept), 2, figsize=(6, 3 * len(kept)), squeeze=False)
    for row, (image, true_mask, predicted) in zip(axes, kept, strict=True):
        pixels = np.asarray(image.permute(1, 2, 0).cpu()).clip(0, 255).astype(np.uint8)
        for ax, mask, title in ((row[0], true_mask, "true"), (row[1], predicted, "predicted")):
            values = np.asarray(mask.cpu()).astype(float)
            ax.imshow(pixels)
            ax.imshow(np.ma.masked_equal(values, 0), cmap=cmap, vmin=0, vmax=max(len(codes) - 1, 1), alpha=0.55,
                      interpolation="nearest")  # fmt: skip
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    from matplotlib.patches import Rectangle

    handles = [Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(1, len(codes))]
    plt.gcf().legend(handles, codes[1:], loc="lower center", ncol=min(len(codes) - 1, 6), fontsize=8)
    return save_current_figure(path, title=f"validation masks over their images ({codes[0]} left clear)")


def figures_line(metrics: Metrics) -> str:
    """The figures of `train`'s last line: pixel accuracy and the mean IoU over the codes."""
    iou = metrics.iou or {}
    mean = f", mean IoU {sum(iou.values()) / len(iou):.4f}" if iou else ""
    return f"pixel accuracy {metrics.accuracy:.4f}{mean}"
