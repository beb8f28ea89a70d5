"""Explaining one upload with a served model: the checks, the limits and the memory charge around Grad-CAM.

An explanation costs a forward and a backward pass that keeps every activation, so it runs on the model thread (in
turn with the batches), at most `max_explains` at once in the process (past it: Overloaded, 503 + Retry-After, at
once rather than queued), and is charged to the memory budget: the decoding working set, the resize, the graph
(`graph_bytes`, measured once per model) and the overlay at the upload's size, and first what reading the header inflates.

The ONNX backend keeps no gradients: a model served from ONNX is explained with its `.pkl` when it is beside it
(verified against the manifest like any served pickle, loaded once per served version), else refused.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass
from typing import Any

from app.core.budget import request_scope
from app.core.errors import Overloaded
from app.core.explanation import ExplainUnsupported, Explanation
from app.core.imaging import load_rgb, open_image, working_bytes
from app.core.metadata import header_bytes
from app.core.overlay import overlay_bytes, overlay_png
from app.core.preprocess import resize_working_bytes
from app.core.unit import ModelUnit
from training.manifest import CLASSIFIERS


@dataclass(frozen=True, slots=True)
class Explained:
    explanation: Explanation
    overlay: bytes
    explained_with: str  # which file's model computed the map
    seconds: float


class _Torch:
    """A model's torch side for explaining: its backend and the graph's bytes (per unit, i.e. per version)."""

    def __init__(self, backend: Any, source: str, graph: int) -> None:
        self.backend, self.source, self.graph = backend, source, graph


class Explainer:
    def __init__(self, max_explains: int) -> None:
        self.max_explains = max_explains
        self.running = 0
        self._torch: weakref.WeakKeyDictionary[ModelUnit, _Torch] = weakref.WeakKeyDictionary()

    def check(self, unit: ModelUnit) -> None:
        """Refuse what cannot be explained before the body is read."""
        if unit.manifest.kind not in CLASSIFIERS:
            raise ExplainUnsupported(
                f"{unit.name} is a {unit.manifest.kind}: only classifiers can be explained"
            )
        if unit.backend.kind == "onnx" and not unit.file.path.with_suffix(".pkl").is_file():
            raise ExplainUnsupported(
                f"{unit.name} is served from ONNX, which keeps no gradients, and its .pkl is not beside it "
                f"({unit.file.path.with_suffix('.pkl').name}): put it there to explain this model"
            )

    async def explain(self, unit: ModelUnit, data: bytes, target: str | None) -> Explained:
        self.check(unit)
        if self.running >= self.max_explains:
            raise Overloaded(
                f"{self.running} explanation(s) in progress, the limit (LEARNSERVE_MAX_EXPLAINS); retry shortly."
            )
        self.running += 1
        try:
            with request_scope():
                return await self._explain(unit, data, target)
        finally:
            self.running -= 1

    async def _explain(self, unit: ModelUnit, data: bytes, target: str | None) -> Explained:
        loop = asyncio.get_running_loop()
        torch_side = await self._torch_of(unit)
        text = header_bytes(
            data
        )  # what reading a PNG's text chunks inflates (0 for most images), as /predict
        async with unit.budget.hold(text, "this image's header"):
            if text:
                image = await loop.run_in_executor(None, open_image, data, unit.limits.max_pixels)
            else:
                image = open_image(data, unit.limits.max_pixels)
        width, height = image.size
        spec = unit.manifest.preprocessing
        charge = (
            text
            + working_bytes(image)
            + resize_working_bytes(spec.resize_method, spec.size, width, height)
            + torch_side.graph
            + overlay_bytes(width, height)
        )
        async with unit.budget.hold(charge, "this explanation"):
            started = time.perf_counter()
            rgb = await loop.run_in_executor(None, load_rgb, image)
            backend = torch_side.backend
            prepared = await loop.run_in_executor(None, backend.prepare, rgb)
            worker = unit.batcher.worker
            from app.core.explain import explain_prepared  # torch: only where a model is explained

            explanation = await loop.run_in_executor(worker, explain_prepared, backend, prepared, target)
            png = await loop.run_in_executor(
                None, overlay_png, rgb, explanation.map, spec.resize_method, spec.size
            )
        return Explained(explanation, png, torch_side.source, time.perf_counter() - started)

    async def _torch_of(self, unit: ModelUnit) -> _Torch:
        if (known := self._torch.get(unit)) is not None:
            return known
        loop = asyncio.get_running_loop()
        backend: Any = unit.backend
        source = unit.file.path.name
        if backend.kind == "onnx":
            backend = await loop.run_in_executor(None, _load_pickle, unit)
            source = f"{unit.file.path.with_suffix('.pkl').name} (beside the served ONNX model, which has no gradients)"
        if not hasattr(backend, "model"):
            raise ExplainUnsupported(f"the {backend.kind} backend keeps no torch model to explain with")
        from app.core.explain import graph_bytes

        graph = await loop.run_in_executor(unit.batcher.worker, graph_bytes, backend)
        known = self._torch.setdefault(unit, _Torch(backend, source, graph))
        return known


def _load_pickle(unit: ModelUnit) -> Any:
    from app.core.backends.fastai import FastaiBackend
    from app.core.verify import verify_model_file

    pkl = verify_model_file(unit.file.path.with_suffix(".pkl"))
    return FastaiBackend.load(pkl, device="cpu")
