"""What one item gives: a Prediction (classifiers), Values (regression), Points (key points), a Mask (segmentation),
or an ItemError that says why this item (only) failed. `decode` turns a batch of model outputs (after the loss's activation) into them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.core.errors import CoreError
from training.manifest import POINTS, REGRESSION, SEGMENTATION


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


Ids = NDArray[Any]  # a mask's codes: uint8, or uint16 past 256 codes


@dataclass(frozen=True, slots=True)
class Mask:
    """A segmentation: the code of every pixel (uint8 [H, W], uint16 past 256 codes; an index into the manifest's
    `classes`). At the model's input size as the backend decodes it (learn.predict's TensorMask), then at the uploaded
    image's size once the unit maps it back through the resize, with `png`, that mask as a greyscale PNG."""

    ids: Ids
    png: bytes = b""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return int(self.ids.shape[1]), int(self.ids.shape[0])

    def shares(self, codes: int) -> tuple[float, ...]:
        """The share of the pixels of each code, in the order of the codes (they add up to 1)."""
        counts = np.bincount(self.ids.ravel(), minlength=codes)[:codes]
        return tuple((counts / max(1, self.ids.size)).tolist())


Answer = Prediction | Values | Points | Mask
Outcome = Answer | ItemError


def decode(kind: str, outputs: NDArray[np.float32], classes: Sequence[str], input_size: int) -> list[Answer]:
    """One answer per row of an [N, outputs] array: probabilities for a classifier, values for a regression, and
    for key points values in -1..1 across the input, unscaled as fastai's PointScaler decodes them. A segmentation's
    outputs are [N, codes, H, W] probabilities: each pixel's most likely code (as CrossEntropyLossFlat(axis=1)
    decodes; the first of equal ones, as torch's argmax)."""
    if kind == SEGMENTATION:
        return [Mask(ids) for ids in mask_ids(outputs.argmax(axis=1), len(classes))]
    if kind == REGRESSION:
        return [Values(tuple(row)) for row in outputs.reshape(len(outputs), -1).tolist()]
    if kind == POINTS:
        pixels = (outputs.reshape(len(outputs), -1, 2).astype(np.float64) + 1) * input_size / 2
        return [Points(tuple((x, y) for x, y in row)) for row in pixels.tolist()]
    return list(from_probabilities(outputs, classes))


def mask_ids(argmax: NDArray[np.int64], codes: int) -> Ids:
    """Class ids in the smallest type that holds them: uint8 up to 256 codes (a PNG's 8-bit greyscale)."""
    return argmax.astype(np.uint8 if codes <= 256 else np.uint16)


def from_probabilities(probs: NDArray[np.float32], classes: Sequence[str]) -> list[Prediction]:
    """One Prediction per row of an [N, classes] probability array."""
    best = probs.argmax(axis=1).tolist()
    rows: list[list[float]] = probs.tolist()
    return [Prediction(classes[i], row[i], tuple(row)) for i, row in zip(best, rows, strict=True)]
