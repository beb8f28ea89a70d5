"""Regression and key point learning (fastai's chapter 6, BIWI head pose): the data block, the output range, the
loss and metrics, the figures measured on the validation set, and the baseline a model must beat.

Both kinds train with MSELossFlat on numbers: a regression on the CSV's values (`RegressionBlock(n_out)`), key
points on their coordinates scaled by fastai's PointScaler to -1..1 of the model's input (`PointBlock`), which
Resize moves with the image (squish, crop or pad). The model ends in a SigmoidRange: a regression's from the
training values (per value, 10% of their span beyond each end, so the extremes stay reachable), key points' -1.1..1.1
(a point may sit on the edge). Only fastai and torch objects go into the exported learner, so the pickle loads
without this package: the targets are read by fastai's ColReader, and the key point metric (a function of this
module) is taken off the learner before export.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from fastai.data.block import DataBlock, RegressionBlock
from fastai.data.transforms import ColReader, IndexSplitter
from fastai.layers import SigmoidRange
from fastai.losses import MSELossFlat
from fastai.metrics import AccumMetric, mae, rmse
from fastai.vision.augment import Resize
from fastai.vision.data import ImageBlock, PointBlock
from torch import nn

from training.datasets import ImageTable
from training.manifest import POINTS, REGRESSION
from training.progress import quiet

POINT_RANGE = (-1.1, 1.1)
MARGIN = 0.1  # of the values' span, beyond each end of a regression's range


def target_block(
    table: ImageTable, valid_idx: list[int], size: int, method: str, batch_tfms: list[Any]
) -> DataBlock:
    """ColReader of the target columns -> RegressionBlock(n_out) or PointBlock (pairs of x, y)."""
    points = table.target_kind == POINTS
    return DataBlock(
        blocks=(ImageBlock, PointBlock if points else RegressionBlock(n_out=len(table.target_columns))),
        get_x=ColReader("path"),
        get_y=ColReader(
            list(table.target_columns)
        ),  # one column: a float; several: a list (TensorPoint: pairs)
        splitter=IndexSplitter(valid_idx),
        item_tfms=Resize(size, method=method),
        batch_tfms=batch_tfms,
    )


def output_range(table: ImageTable, train_idx: list[int]) -> SigmoidRange:
    """fastai's SigmoidRange over the range of the training targets (per value). Its bounds are registered as
    buffers, so they move to the GPU with the model and are saved with it."""
    if table.target_kind == POINTS:
        return SigmoidRange(*POINT_RANGE)
    values = torch.tensor(table.frame[table.target_columns].to_numpy()[train_idx], dtype=torch.float32)
    low, high = values.min(0).values, values.max(0).values
    span = (high - low).clamp_min(1e-3)
    layer = SigmoidRange(0.0, 1.0)
    del layer.low, layer.high
    layer.register_buffer("low", low - MARGIN * span)
    layer.register_buffer("high", high + MARGIN * span)
    return layer


def append_range(learn: Any, layer: nn.Module) -> None:
    """Put the range at the end of the model (a vision_learner's: at the end of its head, as its y_range does)."""
    model = learn.model
    head = model[-1] if isinstance(model[-1], nn.Sequential) else model
    head.append(layer)


def point_distance(pred: torch.Tensor, targ: torch.Tensor, half: float) -> torch.Tensor:
    """The mean distance between predicted and true points, in pixels of the model's input (`half`: half its side;
    points are -1..1 across it). Both come flat: x, y, x, y, ..."""
    distance: torch.Tensor = (pred.reshape(-1, 2) - targ.reshape(-1, 2)).norm(dim=1).mean() * half
    return distance


def loss_and_metrics(kind: str, size: int) -> tuple[Any, list[Any]]:
    """MSELossFlat; a regression's metrics are fastai's mae and rmse, key points' the mean distance in pixels."""
    if kind == REGRESSION:
        return MSELossFlat(), [mae, AccumMetric(rmse.func, name="rmse")]  # fastai's is named _rmse
    distance = AccumMetric(functools.partial(point_distance, half=size / 2), name="distance")
    return MSELossFlat(), [distance]


def exportable(learn: Any) -> None:
    """Take off the metrics that are this module's functions (key points), so the pickle needs only fastai."""
    learn.metrics = [m for m in learn.metrics if getattr(m, "name", "") != "distance"]


@dataclass
class Figures:
    """Validation figures of a regression (per value) or of key points (per point), and the mean's."""

    kind: str
    names: list[str]
    mae: float  # regression: mean absolute error over every value; key points: mean distance, input pixels
    rmse: float  # regression: root mean squared error; key points: root mean squared distance
    per_target: list[float]  # each value's MAE, or each point's mean distance
    baseline: float  # the same figure for always answering the training targets' mean
    baseline_per_target: list[float]
    preds: torch.Tensor  # [images, outputs] as the model gave them (key points: -1..1 across the input)
    targets: torch.Tensor


def errors(kind: str, preds: torch.Tensor, targets: torch.Tensor, half: float) -> torch.Tensor:
    """[images, targets]: each value's absolute error, or each point's distance in input pixels."""
    if kind == REGRESSION:
        return (preds.reshape(targets.shape[0], -1) - targets.reshape(targets.shape[0], -1)).abs()
    diff = preds.reshape(targets.shape[0], -1, 2) - targets.reshape(targets.shape[0], -1, 2)
    distances: torch.Tensor = diff.norm(dim=2) * half
    return distances


def figures(kind: str, names: list[str], preds: torch.Tensor, targets: torch.Tensor, train_mean: torch.Tensor,
            size: int) -> Figures:  # fmt: skip
    half = size / 2
    e = errors(kind, preds, targets, half)
    mean = train_mean.reshape(1, -1).expand(targets.shape[0], -1)
    b = errors(kind, mean, targets, half)
    return Figures(kind, names, float(e.mean()), float(e.pow(2).mean().sqrt()), e.mean(0).tolist(),
                   float(b.mean()), b.mean(0).tolist(), preds, targets)  # fmt: skip


def train_mean(learn: Any) -> torch.Tensor:
    """The mean training target, flat (key points: in the model's -1..1, after Resize moved them)."""
    ys = [y.reshape(y.shape[0], -1) for _, y in learn.dls.train.new(shuffle=False, drop_last=False)]
    mean: torch.Tensor = torch.cat(ys).float().mean(0).cpu()
    return mean


def measure(learn: Any, kind: str, names: list[str], size: int) -> tuple[float, Figures]:
    """The validation loss and figures, from learn.get_preds (as learn.predict answers: no activation)."""
    with quiet(learn):
        valid_loss, *_ = learn.validate()
        preds, targets = learn.get_preds()
        mean = train_mean(learn)
    return float(valid_loss), figures(kind, names, preds, targets, mean, size)


def to_image_pixels(points: torch.Tensor, method: str, size: int, width: int, height: int) -> torch.Tensor:
    """[..., 2] points in -1..1 across the model's square input -> pixels of the original `width` x `height`
    image, undoing fastai's validation Resize (squish: each axis stretched; crop/pad: the centred square of
    int(m * size) pixels, m the smaller (crop) or larger (pad) of width/size and height/size, at its int offset)."""
    unit = (points + 1) / 2
    if method == "squish":
        return unit * torch.tensor([width, height], dtype=unit.dtype)
    ratio = (min if method == "crop" else max)(width / size, height / size)
    side = int(ratio * size)
    offset = torch.tensor([int(0.5 * (width - side)), int(0.5 * (height - side))], dtype=unit.dtype)
    return offset + unit * side


def describe(f: Figures) -> str:
    unit = "mean distance" if f.kind == POINTS else "MAE"
    px = " px (of the model's input)" if f.kind == POINTS else ""
    return f"{unit} {f.mae:.4f}{px}; always answering the training mean scores {f.baseline:.4f}"


def baseline_warning(f: Figures) -> str | None:
    """A warning when the model is not clearly better than answering the training mean: within 10% of it."""
    if f.mae < 0.9 * f.baseline:
        return None
    what = "mean point distance" if f.kind == POINTS else "MAE"
    return (
        f"validation {what} {f.mae:.4f} is not clearly better than answering without looking: always answering "
        f"the training mean scores {f.baseline:.4f}, and only below {0.9 * f.baseline:.4f} (10% less) is clearly "
        "better. The model has not learned anything measurable; try more epochs, another --lr (lr-find), or check "
        "the targets"
    )
