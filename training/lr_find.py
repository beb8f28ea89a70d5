"""`lr-find`: fastai's learning-rate finder, headless, with its plot saved as PNG.

The plot's legend gives every suggestion's value and says which one `train --lr find` uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastai.callback.schedule import minimum, slide, steep, valley
from fastai.learner import Learner

from training.plots import plt, save_current_figure
from training.progress import quiet

SUGGESTERS = {"valley": valley, "slide": slide, "minimum": minimum, "steep": steep}
USED = "valley"  # what `train --lr find` trains with (fastai's default suggestion)


def find_lr(learn: Learner, plot: Path) -> dict[str, float]:
    """Run the finder (the model is restored afterwards), save the loss-vs-lr plot, return the suggestions."""
    with quiet(learn):
        found = learn.lr_find(suggest_funcs=tuple(SUGGESTERS.values()), show_plot=True)
    suggestions = {name: float(value) for name, value in zip(SUGGESTERS, found, strict=True)}
    label_suggestions(plt.gca(), suggestions)
    save_current_figure(plot, title=f"loss vs learning rate: `train --lr find` uses {USED}")
    return suggestions


def label_suggestions(ax: Any, suggestions: dict[str, float]) -> None:
    """fastai labels its suggestion markers with the function names only; add the values and mark the one used."""
    for line in ax.get_lines():
        name = line.get_label()
        if name in suggestions:
            used = " (used by --lr find)" if name == USED else ""
            line.set_label(f"{name} {suggestions[name]:.2e}{used}")
    ax.legend(loc="best")
