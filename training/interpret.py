"""`interpret`: confusion matrix, top losses (grid and CSV) and most-confused pairs on the validation split.

top_losses.csv is the start of `clean`: its paths are relative to the data folder (so a copy of the data can be
cleaned with it), and its probabilities say whose they are: the predicted class's and the actual class's.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
from fastai.interpret import ClassificationInterpretation
from fastai.learner import Learner
from PIL import Image

from training.datasets import ImageTable, load_table, shorten
from training.errors import TrainingError, warn
from training.explain_report import plot_top_loss_overlays
from training.loading import load_verified, read_model_manifest
from training.manifest import Manifest
from training.plots import plt, save_current_figure
from training.progress import quiet
from training.splits import DESCRIBED, RANDOM_KINDS, given_split, random_split

TOP_LOSSES_COLUMNS = ["path", "actual", "predicted", "loss", "predicted_probability", "actual_probability"]


def validation_frame(model: Path, data: str) -> pd.DataFrame:
    """The same validation split `train` used: the data's own, or rebuilt from the manifest's seed and valid_pct."""
    return rebuild_validation(read_model_manifest(model), load_table(data), model, data)


def rebuild_validation(manifest: Manifest, table: ImageTable, model: Path, data: str) -> pd.DataFrame:
    if manifest.dataset is None or manifest.source == "imported":  # no split of ours: all of DATA is scored
        return table.frame.reset_index(drop=True)
    kind, hyper = manifest.dataset.split, manifest.hyperparameters
    if (kind in RANDOM_KINDS) != (table.split_by is None) or (table.split_by and kind != table.split_by):
        now = DESCRIBED.get(table.split_by or "", "no split of its own")
        raise TrainingError(f"{model} was trained on a {kind} split, but {data} now has {now}")
    if kind in RANDOM_KINDS:
        _, valid_idx = random_split(kind, table, float(hyper["valid_pct"]), int(hyper["seed"]))
    else:
        valid_idx = given_split(table).valid_idx
    return table.frame.iloc[valid_idx].reset_index(drop=True)


def warn_if_changed(manifest: Manifest, table: ImageTable, data: str) -> None:
    """The manifest counts images per class at training time; other counts now mean other data."""
    if manifest.dataset is None or manifest.source == "imported":
        return
    before, now = manifest.dataset.counts, table.counts()
    if before == now:
        return
    changes = [
        f"{c}: {before.get(c, 0)} -> {now.get(c, 0)}"
        for c in sorted(set(before) | set(now))
        if before.get(c, 0) != now.get(c, 0)
    ]
    why = (
        "; its validation split is rebuilt from the seed, so it now mixes in images the model trained on and "
        "the figures below look better than they are"
        if manifest.dataset.split in RANDOM_KINDS
        else ""
    )
    warn(
        f"{data} changed since training ({sum(before.values())} -> {sum(now.values())} images; "
        f"{shorten(changes)}){why}"
    )


def interpret(model: Path, data: str, out: Path, k: int = 9) -> list[tuple[str, str, int]]:
    learn, manifest = load_verified(model)
    with quiet(learn):  # fastai runs get_preds for the confusion matrix too: no bars off a terminal
        return interpret_with(learn, manifest, model, data, out, k)


def interpret_with(
    learn: Learner, manifest: Manifest, model: Path, data: str, out: Path, k: int
) -> list[tuple[str, str, int]]:
    table = load_table(data)
    warn_if_changed(manifest, table, data)
    frame = rebuild_validation(manifest, table, model, data)
    vocab = list(learn.dls.vocab)
    unknown = sorted(set(frame["label"]) - set(vocab))
    if unknown:
        frame = frame[frame["label"].isin(vocab)].reset_index(drop=True)
        print(f"ignoring validation images of classes the model does not know: {', '.join(unknown)}")
    dl = learn.dls.test_dl(frame, with_labels=True, num_workers=0)
    interp = ClassificationInterpretation.from_learner(learn, dl=dl)
    all_probs, _ = learn.get_preds(dl=dl)  # fastai 2.8's Interpretation keeps losses only, not preds
    out.mkdir(parents=True, exist_ok=True)

    interp.plot_confusion_matrix(figsize=(6, 6))
    save_current_figure(out / "confusion_matrix.png")

    base = Path(table.source) if Path(table.source).is_dir() else Path(table.source).parent
    losses, idxs = interp.top_losses(min(k, len(frame)))
    rows = []
    for loss, i in zip(losses, idxs, strict=True):
        path, actual, probs = frame.loc[int(i), "path"], frame.loc[int(i), "label"], all_probs[int(i)]
        rows.append({
            "path": os.path.relpath(path, base),
            "actual": actual,
            "predicted": vocab[int(probs.argmax())],
            "loss": round(float(loss), 4),
            "predicted_probability": round(float(probs.max()), 4),
            "actual_probability": round(float(probs[vocab.index(actual)]), 4),
        })  # fmt: skip
    pd.DataFrame(rows, columns=TOP_LOSSES_COLUMNS).to_csv(out / "top_losses.csv", index=False)
    plot_top_losses(rows, base, out / "top_losses.png")
    plot_top_loss_overlays(learn, manifest, rows, base, out / "top_losses_explained.png")

    return [(str(a), str(b), int(n)) for a, b, n in interp.most_confused(min_val=1)]


def plot_top_losses(rows: list[dict[str, object]], base: Path, path: Path) -> Path:
    """The images behind the top losses, each titled with its path in the data folder, as in the CSV."""
    ncols = max(1, math.ceil(math.sqrt(len(rows))))
    nrows = max(1, math.ceil(len(rows) / ncols))
    _, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows, strict=False):
        with Image.open(base / str(row["path"])) as im:
            ax.imshow(im.convert("RGB"))
        ax.set_title(
            f"{row['path']}\npredicted {row['predicted']} ({row['predicted_probability']:.2f})\n"
            f"actual {row['actual']} ({row['actual_probability']:.2f}), loss {row['loss']:.2f}",
            fontsize=9,
        )
    return save_current_figure(path, title="top losses: file, predicted and actual class (probability), loss")
