"""`interpret`: confusion matrix, top losses (grid and CSV) and most-confused pairs on the validation split."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from fastai.interpret import ClassificationInterpretation
from fastai.learner import load_learner
from fastai.vision import learner as _vision_learner  # noqa: F401  registers plot_top_losses for images

from training.datasets import load_table
from training.errors import TrainingError
from training.manifest import read_manifest
from training.plots import save_current_figure
from training.splits import DESCRIBED, given_split, split_indices

TOP_LOSSES_COLUMNS = ["path", "actual", "predicted", "loss", "probability"]


def validation_frame(model: Path, data: str) -> pd.DataFrame:
    """The same validation split `train` used: the data's own, or rebuilt from the manifest's seed and valid_pct."""
    manifest = read_manifest(model)
    kind, hyper = manifest.dataset.split, manifest.hyperparameters
    table = load_table(data)
    if kind != (table.split_by or "random"):
        now = DESCRIBED.get(table.split_by or "", "no split of its own")
        raise TrainingError(f"{model} was trained on a {kind} split, but {data} now has {now}")
    if kind == "random":
        _, valid_idx = split_indices(len(table.frame), float(hyper["valid_pct"]), int(hyper["seed"]))
    else:
        valid_idx = given_split(table).valid_idx
    return table.frame.iloc[valid_idx].reset_index(drop=True)


def interpret(model: Path, data: str, out: Path, k: int = 9) -> list[tuple[str, str, int]]:
    if not model.is_file():
        raise TrainingError(f"model file '{model}' does not exist")
    learn = load_learner(model)
    vocab = list(learn.dls.vocab)
    frame = validation_frame(model, data)
    unknown = sorted(set(frame["label"]) - set(vocab))
    if unknown:
        frame = frame[frame["label"].isin(vocab)].reset_index(drop=True)
        print(f"ignoring validation images of classes the model does not know: {', '.join(unknown)}")
    dl = learn.dls.test_dl(frame, with_labels=True, num_workers=0)
    with learn.no_bar():
        interp = ClassificationInterpretation.from_learner(learn, dl=dl)
        all_probs, _ = learn.get_preds(dl=dl)  # fastai 2.8's Interpretation keeps losses only, not preds
    out.mkdir(parents=True, exist_ok=True)

    interp.plot_confusion_matrix(figsize=(6, 6))
    save_current_figure(out / "confusion_matrix.png")

    k = min(k, len(frame))
    losses, idxs = interp.top_losses(k)
    probs = all_probs[idxs]
    rows = [
        {
            "path": frame.loc[int(i), "path"],
            "actual": frame.loc[int(i), "label"],
            "predicted": vocab[int(p.argmax())],
            "loss": round(float(loss), 4),
            "probability": round(float(p.max()), 4),
        }
        for loss, i, p in zip(losses, idxs, probs, strict=True)
    ]
    pd.DataFrame(rows, columns=TOP_LOSSES_COLUMNS).to_csv(out / "top_losses.csv", index=False)
    with learn.no_bar():
        interp.plot_top_losses(k, nrows=max(1, int(k**0.5)))
    save_current_figure(out / "top_losses.png", title="prediction/actual/loss/probability")

    return [(str(a), str(b), int(n)) for a, b, n in interp.most_confused(min_val=1)]
