"""Backends run one model: `prepare` turns a decoded image into the model's input (the learner's item transforms,
e.g. the resize), `predict` runs a batch of prepared inputs. Two implementations: fastai (the `.pkl`) and
ONNX Runtime. The unit calls `prepare` as it decodes: a large image in a worker thread, so only model-sized inputs
wait in the queue; a small one (app/core/unit.py, SMALL_BYTES) on the model thread with its batch, or on the event
loop when scoring files. It calls `predict` and `warm_up` on the one model thread only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

from PIL import Image

from app.core.prediction import Answer
from app.core.verify import VerifiedFile

BackendKind = Literal["fastai", "onnx"]


class Backend(Protocol):
    kind: BackendKind
    classes: list[str]
    input_size: int  # the square side the model takes, in pixels
    device: str

    def prepare(self, image: Image.Image) -> Any:
        """An RGB image in, the model's input for it out. Thread-safe."""

    def predict(self, inputs: Sequence[Any]) -> list[Answer]:
        """Prepared inputs in, one answer each (of the model's kind: app/core/prediction.py), in order. Model thread
        only."""

    def warm_up(self) -> None:
        """Run a blank batch or two so the first client does not pay for lazy initialisation."""

    def describe(self) -> dict[str, Any]:
        """Runtime facts for /models/{name}: backend, device, threads, ..."""


def open_backend(file: VerifiedFile, kind: BackendKind, device: str, threads: int | None = None) -> Backend:
    """Load a verified model file with the chosen runtime (blocking: seconds for a large model).

    `threads`: intra-op threads for the forward pass (None: the runtime's choice)."""
    if kind == "fastai":
        from app.core.backends.fastai import FastaiBackend

        return FastaiBackend.load(file, device, threads)
    if kind == "onnx":
        from app.core.backends.onnx import OnnxBackend

        return OnnxBackend.load(file, device, threads)
    raise ValueError(f"unknown backend {kind!r}")


SUFFIX: dict[BackendKind, str] = {"fastai": ".pkl", "onnx": ".onnx"}


def predict_images(backend: Backend, images: Sequence[Image.Image]) -> list[Answer]:
    """prepare + predict in one call, for the tests and the benchmark (the command lines go through the unit)."""
    return backend.predict([backend.prepare(image) for image in images])
