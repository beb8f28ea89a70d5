"""`interpret`: confusion matrix, top losses (grid, CSV, and where the model looked: Grad-CAM maps) and
most-confused pairs on the validation split
(multi-label: per-label figures and top losses instead, training/multilabel_reports.py).

top_losses.csv is the start of `clean`: its paths are relative to the data folder (so a copy of the data can be
cleaned with it), and its probabilities say whose they are: the predicted class's and the actual class's.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from fastai.interpret import ClassificationInterpretation
from fastai.learner import Learner

from training.datasets import ImageTable, load_table, shorten
from training.errors import TrainingError, warn
from training.gradcam import WHY, plot_why
from training.loading import load_verified, read_model_manifest
from training.manifest import POINTS, REGRESSION, Manifest
from training.multilabel_reports import interpret_multi
from training.plots import plot_image_grid, save_current_figure
from training.progress import quiet
from training.splits import DESCRIBED, RANDOM_KINDS, given_split, random_split

TOP_LOSSES_COLUMNS = ["path", "actual", "predicted", "loss", "predicted_probability", "actual_probability"]


def validation_frame(model: Path, data: str) -> pd.DataFrame:
    """The same validation split `train` used: the data's own, or rebuilt from the manifest's seed and valid_pct."""
    manifest = read_model_manifest(model)
    return rebuild_validation(manifest, load_table(data, manifest.multi_label), model, data)


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


def interpret(model: Path, data: str, out: Path, k: int = 9) -> list[tuple[str, str, int]] | list[str]:
    """Single-label: the most confused pairs (actual, predicted, count). Multi-label: the lines to print."""
    learn, manifest = load_verified(model)
    with quiet(learn):  # fastai runs get_preds for the confusion matrix too: no bars off a terminal
        return interpret_with(learn, manifest, model, data, out, k)


def interpret_with(
    learn: Learner, manifest: Manifest, model: Path, data: str, out: Path, k: int
) -> list[tuple[str, str, int]] | list[str]:
    if manifest.kind in (REGRESSION, POINTS):
        raise TrainingError(
            f"interpret reads a classifier's confusions, and {model.name} is a {manifest.kind}: train wrote its "
            "figures (metrics.txt) and scatter.png or points.png into its reports folder"
        )
    table = load_table(data, manifest.multi_label)
    warn_if_changed(manifest, table, data)
    frame = rebuild_validation(manifest, table, model, data)
    vocab = list(learn.dls.vocab)
    base = Path(table.source) if Path(table.source).is_dir() else Path(table.source).parent
    label_sets = frame["label"].map(lambda text: set(text.split()) if table.multi_label else {text})
    known = label_sets.map(lambda labels: labels <= set(vocab))
    unknown = sorted(set().union(*label_sets) - set(vocab))
    if unknown:
        frame = frame[known].reset_index(drop=True)
        what = "labels" if table.multi_label else "classes"
        print(f"ignoring validation images of {what} the model does not know: {', '.join(unknown)}")
    out.mkdir(parents=True, exist_ok=True)
    if manifest.multi_label:
        return interpret_multi(learn, frame, base, out, k)
    dl = learn.dls.test_dl(frame, with_labels=True, num_workers=0)
    interp = ClassificationInterpretation.from_learner(learn, dl=dl)
    all_probs, _ = learn.get_preds(dl=dl)  # fastai 2.8's Interpretation keeps losses only, not preds

    interp.plot_confusion_matrix(figsize=(6, 6))
    save_current_figure(out / "confusion_matrix.png")

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
    targets = [vocab.index(str(row["predicted"])) for row in rows]
    captions = [f"{row['path']}\nwhere it saw {row['predicted']} ({row['predicted_probability']:.2f})\n"
                f"actual {row['actual']}" for row in rows]  # fmt: skip
    plot_why(learn, [base / str(row["path"]) for row in rows], targets, captions, out / WHY)

    return [(str(a), str(b), int(n)) for a, b, n in interp.most_confused(min_val=1)]


def plot_top_losses(rows: list[dict[str, object]], base: Path, path: Path) -> Path:
    """The images behind the top losses, each titled with its path in the data folder, as in the CSV."""
    images = [
        (base / str(row["path"]),
         f"{row['path']}\npredicted {row['predicted']} ({row['predicted_probability']:.2f})\n"
         f"actual {row['actual']} ({row['actual_probability']:.2f}), loss {row['loss']:.2f}")
        for row in rows
    ]  # fmt: skip
    return plot_image_grid(
        images, path, title="top losses: file, predicted and actual class (probability), loss"
    )
