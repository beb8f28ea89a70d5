"""`train`'s steps for a regression or key points (training/regression.py), beside a classifier's in train.py:
measure, warn against the mean, make the learner exportable, write the reports, and check the reload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.errors import TrainingError, warn
from training.export import fresh_process_scores
from training.learner import Prepared
from training.manifest import POINTS, Metrics
from training.regression import Figures, baseline_warning, describe, exportable, measure


def validate(prepared: Prepared, size: int) -> tuple[Metrics, Figures]:
    table = prepared.table
    assert table.target_kind is not None
    valid_loss, figures = measure(prepared.learn, table.target_kind, table.classes, size)
    return Metrics(accuracy=None, error_rate=None, valid_loss=valid_loss, mae=figures.mae), figures


def before_export(learn: Any, figures: Figures) -> None:
    print(describe(figures))
    message = baseline_warning(figures)
    if message:
        warn(message)
    outside = float((figures.targets.reshape(-1, 2).abs() > 1).any(dim=1).float().mean())
    if (
        figures.kind == POINTS and outside
    ):  # Resize crop keeps the centred square: points beside it are cut off
        warn(
            f"{outside:.0%} of the validation points lie outside the model's input after the resize (with "
            "--resize-method crop, outside the centred square it keeps): the model cannot see them; try squish or pad"
        )
    exportable(learn)


def reports(prepared: Prepared, figures: Figures, folder: Path) -> list[Path]:
    from training.regression_reports import write_numeric_reports

    return write_numeric_reports(prepared, figures, folder)


def reload_check(model: Path, prepared: Prepared, figures: Figures, workdir: Path) -> float:
    """The export, loaded in a fresh process, scores the validation set as in training (to float noise)."""
    got = float(fresh_process_scores(model, prepared, workdir)["mae"])
    if abs(got - figures.mae) > 1e-3 * max(1.0, figures.mae):
        raise TrainingError(
            f"reload check failed: {got:.4f} in a fresh process vs {figures.mae:.4f} in training"
        )
    what = "mean distance" if figures.kind == "key points" else "MAE"
    print(f"reload check: a fresh process predicts the validation set at {what} {got:.4f}")
    return got
