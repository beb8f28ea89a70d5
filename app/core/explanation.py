"""What an explanation is and why one can be refused: torch-free, so that the routes and the slim image (ONNX
Runtime, no torch) import it; the Grad-CAM itself (app/core/explain.py) is imported only when a model is explained.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from app.core.errors import CoreError
from app.core.prediction import Prediction


class ExplainUnsupported(CoreError):
    """This model (its backend, kind or architecture) cannot be explained with Grad-CAM."""

    code = "explain_unsupported"


class UnknownTarget(CoreError):
    code = "unknown_target"


@dataclass(frozen=True, slots=True)
class Explanation:
    prediction: Prediction
    target: str
    map: NDArray[np.float32]  # [height, width] of the explained layer's grid, values in [0, 1]


def target_index(classes: list[str], target: str | None, prediction: Prediction) -> int:
    """The class to explain: the given label, or the answer's top class."""
    label = prediction.label if target is None else target
    if label not in classes:
        shown = ", ".join(classes[:20]) + (" ..." if len(classes) > 20 else "")
        raise UnknownTarget(f"target {label!r} is not one of the model's classes ({shown})")
    return classes.index(label)
