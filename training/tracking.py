"""Keep the best epoch and stop early, with one numbering of epochs (1..N) everywhere the user reads one.

fastai's SaveModelCallback writes the best weights to a file and reloads it after each fit. With data-parallel
training every process would need that file (on every machine), and fine-tuning's second fit would forget the
first fit's best. `BestEpoch` keeps a copy of the best weights in memory instead, counts epochs across fits, and
numbers the rows of fastai's table the same way (fastai starts each fit at 0), so the table, "Better model found
at epoch N", history.csv and the final line all agree. It is passed to `fit`, never exported.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastai.callback.core import CancelFitException
from fastai.callback.tracker import TrackerCallback
from torch import nn

LOWER_IS_BETTER = ("mae", "rmse", "distance")


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel during a data-parallel fit; the model itself otherwise."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


class BestEpoch(TrackerCallback):  # type: ignore[misc]  # fastai is untyped
    order = TrackerCallback.order  # after the Recorder (order 50) has the epoch's values

    def __init__(self, monitor: str = "valid_loss", patience: int | None = None) -> None:
        # fastai picks the direction from the name: lower is better for losses and error rates, higher for the rest;
        # errors named otherwise (a regression's mae and rmse, key points' distance) are said to be lower-better.
        comp = np.less if monitor in LOWER_IS_BETTER else None
        super().__init__(monitor=monitor, comp=comp, reset_on_fit=False)  # one best across fits
        self.patience = patience
        self.epochs_done = 0
        self.kept: int | None = (
            None  # the best epoch so far (not `best_epoch`: that is this callback's name on the learner)
        )
        self.best_state: dict[str, Any] | None = None
        self.wait = 0
        self.stopped = False

    def before_epoch(self) -> None:
        self.recorder.log[0] = self.epochs_done + 1  # the table's epoch column

    def after_epoch(self) -> None:
        super().after_epoch()
        self.epochs_done += 1
        if self.new_best:
            self.kept, self.wait = self.epochs_done, 0
            weights = unwrap(self.learn.model).state_dict()
            self.best_state = {k: v.detach().clone() for k, v in weights.items()}
            print(f"Better model found at epoch {self.kept} with {self.monitor} value: {self.best:.6f}.")
            return
        self.wait += 1
        if self.patience and self.wait >= self.patience:
            self.stopped = True
            print(f"No better {self.monitor} for {self.wait} epochs since epoch {self.kept}: stopping early")
            raise CancelFitException()

    def restore(self, model: nn.Module) -> None:
        """Put the best epoch's weights back (after the fits, so the export holds them)."""
        if self.best_state is not None:
            unwrap(model).load_state_dict(self.best_state)
