"""What one item gives: a Prediction (classifiers), Values (regression), Points (key points), or an ItemError that
says why this item (only) failed. `decode` turns a batch of model outputs (after the loss's activation) into them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from app.core.errors import CoreError
from training.manifest import POINTS, REGRESSION


@dataclass(frozen=True, slots=True)
class Prediction:
    label: str
    probability: float
    probabilities: tuple[float, ...]  # in the order of the model's classes

    def top(self, classes: Sequence[str], k: int) -> list[tuple[str, float]]:
        """The k most likely (class, probability) pairs, most likely first; k is capped at the class count."""
        ranked = sorted(zip(classes, self.probabilities, strict=True), key=lambda cp: cp[1], reverse=True)
        return ranked[: max(1, k)]

    def over(self, classes: Sequence[str], threshold: float) -> list[tuple[str, float]]:
        """Multi-label: the (class, probability) pairs over `threshold`, most likely first. Strictly over, as
        fastai's BCEWithLogitsLossFlat decodes (`probability > thresh`), so the labels are learn.predict's."""
        return [(c, p) for c, p in self.top(classes, len(classes)) if p > threshold]


@dataclass(frozen=True, slots=True)
class ItemError:
    code: str
    detail: str

    @classmethod
    def of(cls, error: CoreError) -> ItemError:
        return cls(error.code, error.detail)


@dataclass(frozen=True, slots=True)
class Values:
    """A regression's outputs, in the order of the manifest's `classes` (the value names)."""

    values: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Points:
    """Key points as (x, y) pixel coordinates: of the model's input as the backend decodes them (learn.predict's),
    then of the uploaded image once the unit maps them back through the resize (`in_image`)."""

    points: tuple[tuple[float, float], ...]


Answer = Prediction | Values | Points
Outcome = Answer | ItemError


def decode(kind: str, outputs: NDArray[np.float32], classes: Sequence[str], input_size: int) -> list[Answer]:
    """One answer per row of an [N, outputs] array: probabilities for a classifier, values for a regression, and
    for key points values in -1..1 across the input, unscaled as fastai's PointScaler decodes them."""
    if kind == REGRESSION:
        return [Values(tuple(row)) for row in outputs.reshape(len(outputs), -1).tolist()]
    if kind == POINTS:
        pixels = (outputs.reshape(len(outputs), -1, 2).astype(np.float64) + 1) * input_size / 2
        return [Points(tuple((x, y) for x, y in row)) for row in pixels.tolist()]
    return list(from_probabilities(outputs, classes))


def from_probabilities(probs: NDArray[np.float32], classes: Sequence[str]) -> list[Prediction]:
    """One Prediction per row of an [N, classes] probability array."""
    best = probs.argmax(axis=1).tolist()
    rows: list[list[float]] = probs.tolist()
    return [Prediction(classes[i], row[i], tuple(row)) for i, row in zip(best, rows, strict=True)]
