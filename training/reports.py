"""What `train` leaves beside the model for a person to read: history.csv, loss.png and schedule.png.

`History` is a fit-only callback that copies, batch by batch and epoch by epoch, what fastai's Recorder and
ParamScheduler see (smoothed training loss, learning rate and momentum; every epoch's metrics). It spans fits, so a
fine-tuning run (a frozen fit, then an unfrozen one) reads as one run, numbered like the table.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

from fastai.callback.core import Callback

from training.plots import plt, save_current_figure


class History(Callback):  # type: ignore[misc]  # fastai is untyped
    order = 55  # after the Recorder (50) has logged the epoch, before BestEpoch (60) may stop the fit

    def __init__(self) -> None:
        self.phase = "one-cycle"
        self.names: list[str] = []
        self.rows: list[dict[str, Any]] = []
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self.moms: list[float] = []
        self.epoch_ends: list[int] = []  # batches done at the end of each epoch
        self.phase_starts: list[tuple[int, str]] = []

    def before_fit(self) -> None:
        self.names = [str(n) for n in self.recorder.metric_names[1:] if n != "time"]
        self.phase_starts.append((len(self.losses), self.phase))

    def before_epoch(self) -> None:
        self.started = time.perf_counter()

    def after_batch(self) -> None:
        if not self.training or self.opt is None:
            return
        hypers = self.opt.hypers[-1]  # the last parameter group, as fastai's Recorder reads it
        self.lrs.append(float(hypers["lr"]))
        self.moms.append(float(hypers.get("mom", float("nan"))))
        self.losses.append(float(self.learn.smooth_loss))

    def after_epoch(self) -> None:
        values = dict(zip(self.names, self.recorder.values[-1], strict=False))
        seconds = round(time.perf_counter() - self.started, 2)
        self.rows.append({"epoch": len(self.rows) + 1, "phase": self.phase, **values, "seconds": seconds})
        self.epoch_ends.append(len(self.losses))


def write_reports(history: History, folder: Path, kept: int | None) -> list[Path]:
    """history.csv, loss.png and schedule.png in `folder`; nothing when no epoch ran."""
    if not history.rows:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    return [write_csv(history, folder / "history.csv"), plot_loss(history, folder / "loss.png", kept),
            plot_schedule(history, folder / "schedule.png")]  # fmt: skip


def write_csv(history: History, path: Path) -> Path:
    columns = ["epoch", "phase", *history.names, "seconds"]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in history.rows:
            writer.writerow({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()})
    return path


def epoch_axis(ax: Any, history: History) -> None:
    """Batches on the x axis, labelled by epoch number at each epoch's end (thin out the labels when many)."""
    step = max(1, len(history.epoch_ends) // 12)
    ticks = list(range(step - 1, len(history.epoch_ends), step))
    ax.set_xticks([history.epoch_ends[i] for i in ticks], [str(i + 1) for i in ticks])
    ax.set_xlabel("epoch (ticks at the end of each epoch)")
    for start, phase in history.phase_starts[1:]:
        ax.axvline(start, color="grey", linestyle=":", label=f"{phase} from here")


def plot_loss(history: History, path: Path, kept: int | None) -> Path:
    _, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(range(1, len(history.losses) + 1), history.losses, label="training loss (smoothed, per batch)")
    valid = [row["valid_loss"] for row in history.rows]
    ax.plot(history.epoch_ends, valid, "o-", label="validation loss (per epoch)")
    if kept is not None:
        ax.plot(
            history.epoch_ends[kept - 1], valid[kept - 1], "r*", markersize=14, label=f"kept: epoch {kept}"
        )
    epoch_axis(ax, history)
    ax.set_ylabel("loss")
    ax.legend()
    return save_current_figure(path, title="training and validation loss")


def plot_schedule(history: History, path: Path) -> Path:
    _, (ax_lr, ax_mom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    steps = range(1, len(history.lrs) + 1)
    ax_lr.plot(steps, history.lrs)
    ax_lr.set_ylabel("learning rate")
    ax_mom.plot(steps, history.moms, color="tab:orange")
    ax_mom.set_ylabel("momentum")
    epoch_axis(ax_mom, history)
    ax_lr.tick_params(labelbottom=False)
    return save_current_figure(path, title="one-cycle schedule, per batch")
