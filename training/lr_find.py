"""`lr-find`: fastai's learning-rate finder, headless, with its plot saved as PNG.

The finder trains `num_it` batches (fastai's default 100) while the learning rate grows exponentially from 1e-7 to
10, then puts the model back as it was. Each iteration is one training step and nothing is validated, so its time
grows in proportion to `num_it`: about num_it / (training batches per epoch) epochs of training, less when the loss
diverges first (fastai then stops).

The plot draws every suggestion at its own learning rate on the loss curve, with its value in the legend, and says
which one `train --lr find` uses. The lowest loss gets its own marker: fastai's `minimum` suggestion is a tenth of
the learning rate there, not that learning rate (fastai's own plot puts the `minimum` dot at the lowest loss).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from fastai.callback.schedule import minimum, slide, steep, valley
from fastai.learner import Learner

from training.cli import DEFAULT_NUM_IT
from training.errors import TrainingError
from training.plots import plt, save_current_figure
from training.progress import finder_console

SUGGESTERS = {"valley": valley, "slide": slide, "minimum": minimum, "steep": steep}
USED = "valley"  # what `train --lr find` trains with (fastai's default suggestion)
SKIP_END = 5  # fastai leaves the last 5 losses (the divergence) out of its suggestions and its plot
MIN_POINTS = 16  # `slide` compares losses 15 points apart


def find_lr(learn: Learner, plot: Path, num_it: int = DEFAULT_NUM_IT) -> dict[str, float]:
    """Run the finder (the model is restored afterwards), save the loss-vs-lr plot, return the suggestions."""
    with finder_console(learn, num_it):
        learn.lr_find(num_it=num_it, suggest_funcs=None, show_plot=False)
    lrs, losses = recorded(learn, num_it)
    found = {name: suggest(lrs, losses, num_it) for name, suggest in SUGGESTERS.items()}
    suggestions = {name: float(lr) for name, (lr, _) in found.items()}
    draw(learn, suggestions, lowest=found["minimum"][1])
    save_current_figure(plot, title=f"loss vs learning rate: `train --lr find` uses {USED}")
    return suggestions


def recorded(learn: Learner, num_it: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The learning rates and smoothed losses fastai reads its suggestions from (as `Learner.lr_find` does): past the
    first tenth of the iterations, short of the last 5, and up to the first NaN."""
    rec = learn.recorder
    lrs = torch.tensor([float(x) for x in rec.lrs[num_it // 10 : -SKIP_END]])
    losses = torch.tensor([float(x) for x in rec.losses[num_it // 10 : -SKIP_END]])
    nan = torch.nonzero(torch.isnan(losses)).flatten()
    end = int(nan[0]) if len(nan) else len(losses)
    if end < MIN_POINTS:  # fastai stops when the loss diverges (stop_div), but runs on through a NaN loss
        if len(nan):
            bad = num_it // 10 + end
            how, lr = f"turned NaN at iteration {bad + 1} of {num_it}", rec.lrs[bad]
        else:
            how, lr = f"diverged after {len(rec.losses)} of {num_it} iterations", rec.lrs[-1]
        raise TrainingError(
            f"the lr finder's loss {how} (lr {float(lr):.1e}), leaving {end} losses to read, and its suggestions "
            f"need {MIN_POINTS}: raise --num-it (the rate then climbs in smaller steps)"
        )
    return lrs[:end], losses[:end]


def draw(learn: Learner, suggestions: dict[str, float], lowest: tuple[float, Any]) -> None:
    """The loss curve (as fastai draws it), each suggestion on it at its own lr, and the lowest loss apart."""
    rec = learn.recorder
    lrs = [float(x) for x in rec.lrs[:-SKIP_END]]
    losses = [float(x) for x in rec.losses[:-SKIP_END]]
    _, ax = plt.subplots(1, 1)
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set_xlabel("Learning Rate")
    ax.set_ylabel("Loss")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"][1:]
    for (name, lr), color in zip(suggestions.items(), colors, strict=False):
        used = " (used by --lr find)" if name == USED else ""
        ax.plot(lr, loss_at(lr, lrs, losses), "o", c=color, label=f"{name} {lr:.2e}{used}")
    lr_min, loss_min = float(lowest[0]), float(lowest[1])
    ax.plot(lr_min, loss_min, "x", c="black", ms=9,
            label=f"lowest loss, at lr {lr_min:.2e} (minimum suggests a tenth of it)")  # fmt: skip
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14))  # below the axes: it never hides the curve


def loss_at(lr: float, lrs: list[float], losses: list[float]) -> float:
    """The curve's loss at the recorded learning rate nearest `lr` (on the log scale the plot uses)."""
    i = min(range(len(lrs)), key=lambda j: abs(math.log(lrs[j] / lr)))
    return losses[i]
