"""Reports for a multi-label learner: per_label.csv (precision, recall, F1 and support of every label at the
threshold) and threshold.png (macro F1 and accuracy_multi against the threshold, the learner's own marked), written
by `train`; `interpret` adds its top losses (images whose decisions are furthest from their labels).

There is no confusion matrix: a multi-label model answers each label yes or no on its own, so no image has one
predicted class to confuse with its actual one. The per-label figures say which labels it misses or over-gives.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch

from training.gradcam import WHY, plot_why
from training.multilabel import Scores, one_hot, scores
from training.plots import plot_image_grid, plt, save_current_figure
from training.progress import quiet

PER_LABEL_COLUMNS = ["label", "precision", "recall", "f1", "support"]
TOP_LOSSES_COLUMNS = ["path", "actual", "predicted", "loss", "probabilities"]
NO_CONFUSION_MATRIX = (
    "no confusion matrix: a multi-label model answers each label yes or no on its own, so an image has no one "
    "predicted class to confuse with its actual one; per_label.csv has each label's precision, recall and F1"
)


def write_label_reports(learn: Any, folder: Path, probs: Any = None, targets: Any = None) -> list[Path]:
    """per_label.csv and threshold.png for the validation set (`probs`, `targets`: already predicted)."""
    if probs is None:
        with quiet(learn):
            probs, targets = learn.get_preds()
    thresh = float(learn.loss_func.thresh)
    vocab = [str(c) for c in learn.dls.vocab]
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_per_label(scores(probs, targets, thresh), vocab, folder / "per_label.csv"),
        plot_threshold(probs, targets, thresh, folder / "threshold.png"),
    ]


def write_per_label(s: Scores, vocab: list[str], path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(PER_LABEL_COLUMNS)
        for i, label in enumerate(vocab):
            writer.writerow(
                [label, *(round(v[i], 4) for v in (s.precision, s.recall, s.per_label_f1)), s.support[i]]
            )
    return path


def plot_threshold(probs: torch.Tensor, targets: torch.Tensor, chosen: float, path: Path) -> Path:
    grid = [i / 100 for i in range(1, 100)]
    curve = [scores(probs, targets, t) for t in grid]
    _, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(grid, [c.f1 for c in curve], label="macro F1")
    ax.plot(grid, [c.accuracy for c in curve], label="accuracy_multi")
    at = scores(probs, targets, chosen)
    ax.axvline(chosen, color="grey", linestyle=":")
    ax.plot([chosen, chosen], [at.f1, at.accuracy], "r*", markersize=12,
            label=f"threshold {chosen:g}: F1 {at.f1:.3f}, accuracy {at.accuracy:.3f}")  # fmt: skip
    ax.set_xlabel("threshold (a label is given when its probability is over it)")
    ax.set_ylabel("validation score")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower center")
    return save_current_figure(path, title="validation scores against the threshold")


def image_losses(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each image's binary cross-entropy, averaged over its labels (BCEWithLogitsLossFlat's, per image)."""
    p = probs.clamp(1e-7, 1 - 1e-7)
    return -(targets * p.log() + (1 - targets) * (1 - p).log()).mean(dim=1)


def top_loss_rows(
    probs: torch.Tensor, targets: torch.Tensor, thresh: float, vocab: list[str], paths: list[str], k: int
) -> list[dict[str, Any]]:
    """The k images with the highest losses: their labels, the labels given at `thresh`, and the loss."""
    losses = image_losses(probs, targets.float())
    order = losses.argsort(descending=True)[:k]
    rows = []
    for i in order.tolist():
        given = [v for v, p in zip(vocab, probs[i].tolist(), strict=True) if p > thresh]
        actual = [v for v, t in zip(vocab, targets[i].tolist(), strict=True) if t > 0.5]
        rows.append({
            "path": paths[i], "actual": " ".join(actual), "predicted": " ".join(given),
            "loss": round(float(losses[i]), 4),
            "probabilities": " ".join(f"{v}:{p:.2f}" for v, p in zip(vocab, probs[i].tolist(), strict=True)),
            "misleading": misleading_label(probs[i].tolist(), targets[i].tolist(), thresh),
        })  # fmt: skip
    return rows


def misleading_label(probs: list[float], targets: list[float], thresh: float) -> tuple[int, str]:
    """The label of one image's wrong decisions to explain: the most probable label given but not actual (where did
    it see that?), else the least probable actual label missed (where did it look for it?); with its verdict."""
    given = [(p, i) for i, (p, t) in enumerate(zip(probs, targets, strict=True)) if p > thresh and t <= 0.5]
    if given:
        return max(given)[1], "given wrongly"
    missed = [(p, i) for i, (p, t) in enumerate(zip(probs, targets, strict=True)) if p <= thresh and t > 0.5]
    return (min(missed)[1], "missed") if missed else (max((p, i) for i, p in enumerate(probs))[1], "right")


def interpret_multi(learn: Any, frame: Any, base: Path, out: Path, k: int) -> list[str]:
    """per_label.csv, threshold.png, top_losses.csv and top_losses.png for the validation `frame` (path, label
    with space-separated labels); returns the lines to print."""
    import os

    import pandas as pd

    vocab = [str(c) for c in learn.dls.vocab]
    dl = learn.dls.test_dl(list(frame["path"]), num_workers=0)
    probs, _ = learn.get_preds(dl=dl)
    targets = one_hot(frame["label"].tolist(), vocab)
    thresh = float(learn.loss_func.thresh)
    written = write_label_reports(learn, out, probs, targets)
    paths = [os.path.relpath(p, base) for p in frame["path"]]
    rows = top_loss_rows(probs, targets, thresh, vocab, paths, min(k, len(frame)))
    pd.DataFrame(rows, columns=TOP_LOSSES_COLUMNS).to_csv(out / "top_losses.csv", index=False)
    written += [out / "top_losses.csv", plot_top_losses(rows, base, out / "top_losses.png")]
    captions = [f"{row['path']}\n{vocab[row['misleading'][0]]}: {row['misleading'][1]}" for row in rows]
    targets_why = [row["misleading"][0] for row in rows]
    why = plot_why(learn, [base / row["path"] for row in rows], targets_why, captions, out / WHY)
    written += [why] if why else []
    s = scores(probs, targets, thresh)
    lines = [NO_CONFUSION_MATRIX, f"per label at threshold {thresh:g} (F1, support):"]
    lines += [
        f"  {label:>12}  {f1:.4f}  {n}" for label, f1, n in zip(vocab, s.per_label_f1, s.support, strict=True)
    ]
    lines.append(f"macro F1 {s.f1:.4f}, accuracy_multi {s.accuracy:.4f} on {len(frame)} images")
    lines.append(f"wrote {', '.join(str(p) for p in written)}")
    return lines


def plot_top_losses(rows: list[dict[str, Any]], base: Path, path: Path) -> Path:
    """The images behind the top losses, each titled with its path, its labels and the labels given."""
    captions = [
        f"{row['path']}\nactual: {row['actual'] or '(none)'}\ngiven: {row['predicted'] or '(none)'}\n"
        f"loss {row['loss']:.2f}"
        for row in rows
    ]
    images = [(base / str(row["path"]), caption) for row, caption in zip(rows, captions, strict=True)]
    return plot_image_grid(images, path, title="top losses: file, its labels, the labels given, loss")
