"""`summary`: the layer table of an exported learner, computed from a dummy batch of the manifest's input size.

fastai's `learn.summary()` needs a training batch, which an export does not carry.
"""

from __future__ import annotations

from pathlib import Path

import torch
from fastai.callback.hook import module_summary
from fastai.learner import load_learner

from training.errors import TrainingError
from training.manifest import read_manifest


def summarize(model: Path) -> str:
    if not model.is_file():
        raise TrainingError(f"model file '{model}' does not exist")
    size = read_manifest(model).input_size
    learn = load_learner(model)
    with learn.no_bar():
        return str(module_summary(learn, torch.zeros(1, 3, size, size)))
