"""What classifying one item gives: a Prediction, or an ItemError that says why this item (only) failed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from app.core.errors import CoreError


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


Outcome = Prediction | ItemError


def from_probabilities(probs: NDArray[np.float32], classes: Sequence[str]) -> list[Prediction]:
    """One Prediction per row of an [N, classes] probability array."""
    best = probs.argmax(axis=1).tolist()
    rows: list[list[float]] = probs.tolist()
    return [Prediction(classes[i], row[i], tuple(row)) for i, row in zip(best, rows, strict=True)]
