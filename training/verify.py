"""Run in a fresh interpreter by `train`: load an export with fastai's own loader and score a validation CSV.

Usage: python -m training.verify MODEL.pkl VALID.csv  ->  prints {"accuracy": ..., "n": ...}
(multi-label: fastai's accuracy_multi, deciding `prob > loss_func.thresh` as learn.predict does; regression:
{"mae": ...}, the mean absolute error; key points: {"mae": ...}, the mean distance in pixels of the model's input).
Deliberately independent of `app`: it checks the pickle, not our serving code.
"""

from __future__ import annotations

import json
import sys
import warnings

import pandas as pd


def main(argv: list[str]) -> int:
    model, valid_csv = argv
    warnings.filterwarnings("ignore")
    from fastai.learner import load_learner

    from training.import_facts import input_size_of, learner_kind
    from training.manifest import POINTS, REGRESSION

    learn = load_learner(model)
    kind = learner_kind(learn)
    numeric = kind in (REGRESSION, POINTS)
    # Labels are text (an image with no labels: "", not NaN); a regression's or key points' targets are numbers.
    frame = pd.read_csv(valid_csv, keep_default_na=False, dtype=None if numeric else str)
    dl = learn.dls.test_dl(frame, with_labels=True, num_workers=0)
    with learn.no_bar():
        probs, targets = learn.get_preds(dl=dl)
    if numeric:
        n = targets.shape[0]
        if kind == REGRESSION:
            error = (probs.reshape(n, -1) - targets.reshape(n, -1)).abs().mean()
        else:  # points in -1..1 across the input: half its side in pixels
            diff = probs.reshape(n, -1, 2) - targets.reshape(n, -1, 2)
            error = diff.norm(dim=2).mean() * input_size_of(learn) / 2
        print(json.dumps({"mae": float(error), "n": len(frame)}))
        return 0
    thresh = getattr(learn.loss_func, "thresh", None)
    if targets.ndim == 2 and thresh is not None:  # multi-label: one-hot targets
        accuracy = float(((probs > thresh) == targets.bool()).float().mean())
    else:
        accuracy = float((probs.argmax(dim=1) == targets).float().mean())
    print(json.dumps({"accuracy": accuracy, "n": len(frame)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
