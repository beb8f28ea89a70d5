"""`lr-find`: fastai's learning-rate finder, headless, with its plot saved as PNG."""

from __future__ import annotations

from pathlib import Path

from fastai.callback.schedule import minimum, slide, steep, valley
from fastai.learner import Learner

from training.plots import save_current_figure
from training.progress import quiet

SUGGESTERS = {"valley": valley, "slide": slide, "minimum": minimum, "steep": steep}


def find_lr(learn: Learner, plot: Path) -> dict[str, float]:
    """Run the finder (the model is restored afterwards), save the loss-vs-lr plot, return the suggestions."""
    with quiet(learn):
        found = learn.lr_find(suggest_funcs=tuple(SUGGESTERS.values()), show_plot=True)
    save_current_figure(plot, title="loss vs learning rate")
    return {name: float(value) for name, value in zip(SUGGESTERS, found, strict=True)}
