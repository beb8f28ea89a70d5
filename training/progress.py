"""What training prints: fastai's progress bars on a terminal; in a log (stdout not a terminal), one line per epoch,
and for the lr finder one line every tenth of its iterations.

fastprogress redraws its bars with carriage returns whatever the output is, which turns a CI log or `> train.log`
into one enormous line. Off a terminal we remove the bars and print fastai's metrics table ourselves.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastai.callback.core import Callback
from fastai.learner import Learner


def on_terminal() -> bool:
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty())


class EpochTable(Callback):  # type: ignore[misc]  # fastai is untyped
    """fastai's table (header, then one row per epoch) through `learn.logger`, as ProgressCallback does, without bars."""

    order = 60

    def __init__(self) -> None:
        self.widths: list[int] = []

    def before_fit(self) -> None:
        self.old_logger, self.learn.logger = self.learn.logger, self.write
        self.widths = []
        self.write(list(self.recorder.metric_names))

    def after_fit(self) -> None:
        self.learn.logger = self.old_logger

    def write(self, log: Any) -> None:
        cells = [f"{v:.6f}" if isinstance(v, float) else str(v) for v in log]
        if not self.widths:  # the header sets the columns, as fastprogress does
            self.widths = [max(8, len(c)) for c in cells]
        print("  ".join(c.ljust(w) for c, w in zip(cells, self.widths, strict=False)).rstrip(), flush=True)


@contextmanager
def console(learn: Learner) -> Iterator[list[Callback]]:
    """The fit-only callbacks for this output: none on a terminal; off it, no bars and an EpochTable."""
    if on_terminal():
        yield []
        return
    with learn.no_bar():
        yield [EpochTable()]


@contextmanager
def quiet(learn: Learner) -> Iterator[None]:
    """No bars off a terminal (the lr finder, validation): they would only add redraws to a log."""
    if on_terminal():
        yield
        return
    with learn.no_bar():
        yield


class FinderLog(Callback):  # type: ignore[misc]  # fastai is untyped
    """The lr finder's progress as lines: every `every` iterations (0: never) its learning rate and smoothed loss,
    and, when it stops before `num_it` because the loss diverged (fastai's stop_div), where and why."""

    order = 55  # after the Recorder (50) has logged the batch, before the LRFinder (60) may end the fit

    def __init__(self, num_it: int, every: int) -> None:
        self.num_it, self.every, self.done = num_it, every, 0

    def before_fit(self) -> None:
        self.started, self.done = time.perf_counter(), 0

    def after_batch(self) -> None:
        if not self.training:
            return
        self.done += 1
        if self.every and (self.done % self.every == 0 or self.done == self.num_it):
            self.say(f"{self.done}/{self.num_it} iterations, {self.where()}")

    def after_fit(self) -> None:
        if 0 < self.done < self.num_it:
            self.say(
                f"stopped after {self.done} of {self.num_it} iterations: the loss diverged ({self.where()})"
            )

    def where(self) -> str:
        lr, loss = self.recorder.lrs[-1], float(self.recorder.losses[-1])
        return f"lr {lr:.2e}, loss {loss:.4f}, {time.perf_counter() - self.started:.1f}s"

    def say(self, text: str) -> None:
        print(f"lr finder: {text}", flush=True)


@contextmanager
def finder_console(learn: Learner, num_it: int) -> Iterator[None]:
    """The lr finder's output: fastai's bar on a terminal, a line every tenth of the iterations off it; both say
    where it stopped early."""
    log = FinderLog(num_it, every=0 if on_terminal() else max(1, num_it // 10))
    with quiet(learn), learn.added_cbs([log]):
        yield
