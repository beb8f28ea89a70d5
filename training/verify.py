"""Run in a fresh interpreter by `train`: load an export with fastai's own loader and score a validation CSV.

Usage: python -m training.verify MODEL.pkl VALID.csv  ->  prints {"accuracy": ..., "n": ...}
(multi-label: fastai's accuracy_multi, deciding `prob > loss_func.thresh` as learn.predict does).
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

    learn = load_learner(model)
    frame = pd.read_csv(valid_csv, dtype=str, keep_default_na=False)  # an image with no labels: "", not NaN
    dl = learn.dls.test_dl(frame, with_labels=True, num_workers=0)
    with learn.no_bar():
        probs, targets = learn.get_preds(dl=dl)
    thresh = getattr(learn.loss_func, "thresh", None)
    if targets.ndim == 2 and thresh is not None:  # multi-label: one-hot targets
        accuracy = float(((probs > thresh) == targets.bool()).float().mean())
    else:
        accuracy = float((probs.argmax(dim=1) == targets).float().mean())
    print(json.dumps({"accuracy": accuracy, "n": len(frame)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
