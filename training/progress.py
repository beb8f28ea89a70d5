"""What training prints: fastai's progress bars on a terminal; in a log (stdout not a terminal), one line per epoch.

fastprogress redraws its bars with carriage returns whatever the output is, which turns a CI log or `> train.log`
into one enormous line. Off a terminal we remove the bars and print fastai's metrics table ourselves.
"""

from __future__ import annotations

import sys
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
