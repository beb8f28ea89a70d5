"""`show`: one batch as the model sees it in training (after item and batch transforms, augmentation included)
or in validation, with its labels: fastai's `show_batch`, saved as PNG.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from training.learner import ModelOptions, check_batch_size, load_data
from training.plots import save_current_figure


def show_batch(opts: ModelOptions, out: Path, valid: bool = False, n: int = 16) -> int:
    """Write the grid; returns how many images it shows."""
    with tempfile.TemporaryDirectory(prefix="learnserve-show-") as tmp:
        data = load_data(opts, Path(tmp))
        if not valid:
            check_batch_size(data)
        dl = data.dls.valid if valid else data.dls.train
        n = min(n, dl.bs, dl.n)
        dl.show_batch(max_n=n, nrows=max(1, round(n**0.5)))
    which = "validation" if valid else "training" + (", augmented" if opts.augment else "")
    save_current_figure(out, title=f"{which} batch at {opts.input_size} px: label above each image")
    return n
