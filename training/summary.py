"""`summary`: what the manifest says about an exported learner, then its layer table, computed from a dummy batch of
the manifest's input size (fastai's `learn.summary()` needs a training batch, which an export does not carry).
"""

from __future__ import annotations

from pathlib import Path

import torch
from fastai.callback.hook import module_summary

from training.loading import load_verified
from training.manifest import POINTS, REGRESSION, SEGMENTATION, Manifest


def describe(m: Manifest) -> str:
    d, x = m.dataset, m.metrics
    kept = f"kept epoch {m.best_epoch} of {m.epochs_run}" if m.best_epoch else "untrained"
    made = "imported" if m.source == "imported" else "trained"
    what = f"multi-label, {len(m.classes)} labels, threshold {m.threshold:g}" if m.multi_label else (
        f"{len(m.classes)} classes")  # fmt: skip
    if m.kind in (REGRESSION, POINTS):
        what = f"{m.kind}: {', '.join(m.classes)}"
    elif m.kind == SEGMENTATION:
        what = f"segmentation, {len(m.classes)} codes ({', '.join(m.classes)})"
    lines = [f"{m.name}: {m.arch}, {what}, {m.input_size} px, {made} {m.created_at:%Y-%m-%d %H:%M} UTC"]
    if d is not None and m.source == "imported":
        lines.append(f"validated on {d.valid_size} images from {d.source}")
    elif d is not None:
        lines.append(
            f"data: {d.train_size} training and {d.valid_size} validation images ({d.split} split) from {d.source}"
        )
    if x is None:
        lines.append("not validated (import it again with --data to measure its accuracy)")
    else:
        which = "accuracy" if m.source == "imported" else f"{kept}: accuracy"
        if m.kind == SEGMENTATION and x.accuracy is not None:
            iou = x.iou or {}
            mean = f", mean IoU {sum(iou.values()) / len(iou):.4f}" if iou else ""
            which = which.replace("accuracy", "pixel accuracy") + f" {x.accuracy:.4f}{mean}"
        elif x.accuracy is None:  # regression, key points: training/regression.py
            unit = "mean distance (px of the input)" if m.kind == POINTS else "MAE"
            which = which.replace("accuracy", unit) + f" {x.mae if x.mae is not None else float('nan'):.4f}"
        elif m.multi_label:
            which += f"_multi {x.accuracy:.4f}, macro F1 {x.f1 or 0:.4f}"
        else:
            which += f" {x.accuracy:.4f}, error_rate {x.error_rate:.4f}"
        lines.append(f"{which}, valid_loss {x.valid_loss:.4f}")
    return "\n".join(lines)  # fmt: skip


def summarize(model: Path) -> str:
    learn, manifest = load_verified(model)
    size = manifest.input_size
    with learn.no_bar():
        table = module_summary(learn, torch.zeros(1, 3, size, size))
    return f"{describe(manifest)}\n\n{table}"
