"""One served model: its backend, its batcher, its readiness and version, behind one entry point.

`classify(items)` takes file bytes (or an ItemError for an item that already failed, e.g. too large to read)
and gives back, in the same order, a Prediction or an ItemError for each. It owns the whole path: decoding
within the limits, the learner's item transforms, announcing the inputs to the batcher while they are being
decoded, and submitting them. The HTTP routes, the v2 protocol, the command lines and the benchmark call only this.

A unit is never changed in place: a new version is a new unit, swapped in by the repository; requests finish on
the unit they started on, and `drain` waits for them before the old one stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from app.core.backends import Backend
from app.core.batcher import Batcher
from app.core.errors import CoreError, NotReady
from app.core.imaging import decode_image
from app.core.observer import Observer
from app.core.prediction import ItemError, Outcome
from app.core.verify import VerifiedFile
from training.manifest import Manifest

Item = bytes | ItemError


@dataclass(frozen=True, slots=True)
class UnitLimits:
    max_pixels: int  # per image, checked from the header before decoding
    max_batch_size: int  # after the batch pixel cap, see Settings.batch_size_for
    max_wait_ms: float
    max_queue: int


class ModelUnit:
    def __init__(
        self,
        name: str,
        file: VerifiedFile,
        backend: Backend,
        limits: UnitLimits,
        model_thread: Executor,
        observer: Observer | None = None,
        load_seconds: float = 0.0,
    ) -> None:
        self.name = name
        self.file = file
        self.backend = backend
        self.limits = limits
        self.observer = observer
        self.load_seconds = load_seconds
        self.loaded_at = time.time()
        self.batcher = Batcher(
            backend.predict, limits.max_batch_size, limits.max_wait_ms, limits.max_queue, model_thread,
            on_batch=self._batch_done,
        )  # fmt: skip
        self._accepting = False
        self._active = 0  # classify calls in progress
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def version(self) -> str:
        return self.file.version

    @property
    def manifest(self) -> Manifest:
        return self.file.manifest

    @property
    def classes(self) -> list[str]:
        return self.backend.classes

    @property
    def ready(self) -> bool:
        return self._accepting

    def start(self) -> None:
        self.batcher.start()
        self._accepting = True

    async def classify(self, items: Sequence[Item]) -> list[Outcome]:
        """Each item's Prediction or ItemError, in order. Raises Overloaded or NotReady for the whole request."""
        if not self._accepting:
            raise NotReady(f"Model {self.name!r} is not accepting work (starting up or shutting down).")
        self._active += 1
        self._idle.clear()
        try:
            loop = asyncio.get_running_loop()
            with self.batcher.expecting(len(items)):
                prepared = await loop.run_in_executor(None, self._prepare_all, items)
            inputs = [p for p in prepared if not isinstance(p, ItemError)]
            predictions = await self.batcher.submit(inputs) if inputs else []
            if self.observer and predictions:
                self.observer.predicted(self.name, predictions)
            answers = iter(predictions)
            return [p if isinstance(p, ItemError) else next(answers) for p in prepared]
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()

    def _prepare_all(self, items: Sequence[Item]) -> list[Any]:
        """Decode and transform one request's items, one after another (a thread-pool thread)."""
        return [self._prepare(item) for item in items]

    def _prepare(self, item: Item) -> Any:
        if isinstance(item, ItemError):
            return item
        try:
            image = decode_image(item, self.limits.max_pixels)
        except CoreError as e:
            return ItemError.of(e)
        return self.backend.prepare(image)

    def _batch_done(self, size: int, seconds: float) -> None:
        if self.observer:
            self.observer.batch_done(self.name, size, seconds)

    async def drain(self, timeout: float) -> None:
        """Finish the requests in progress (up to `timeout` seconds), then stop taking work."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        self._accepting = False
        await self.batcher.stop()

    def describe(self) -> dict[str, Any]:
        """Runtime facts for /models/{name} and /metadata."""
        return {
            "version": self.version,
            "ready": self.ready,
            "loaded_at": self.loaded_at,
            "load_seconds": round(self.load_seconds, 3),
            "max_batch_size": self.limits.max_batch_size,
            **self.backend.describe(),
        }
