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
from dataclasses import dataclass
from typing import Any

from PIL import Image

from app.core.backends import Backend
from app.core.batcher import Batcher, ModelWorker
from app.core.budget import MemoryBudget, request_scope
from app.core.errors import CoreError, NotReady, OverBudget
from app.core.imaging import load_rgb, open_image, working_bytes
from app.core.masks import ANSWER_BYTES_PER_PIXEL, png_of, to_image
from app.core.metadata import header_bytes
from app.core.observer import Observer
from app.core.prediction import Answer, ItemError, Mask, Outcome, Points, Prediction
from app.core.preprocess import input_to_image, resize_working_bytes
from app.core.verify import VerifiedFile
from training.manifest import POINTS, SEGMENTATION, Manifest

Item = bytes | ItemError
# Below this decoding working set (a 128x128 RGB image) an image is decoded without a hop to a thread: on the model
# thread as part of its batch in a server (as a minimal server would: it keeps the event loop free for HTTP), or on
# the event loop when scoring files (`small_on_model_thread=False`: there the model thread is the busy one).
SMALL_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class _Small:
    """An opened (header-checked), not yet decoded small image, waiting to be decoded with its batch."""

    image: Image.Image


@dataclass(frozen=True, slots=True)
class _Sized:
    """A prepared input with the size of the image it came from (key points and masks are answered in that image's
    pixels)."""

    input: Any
    size: tuple[int, int]  # (width, height) of the decoded upload, EXIF rotation applied


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
        model_thread: ModelWorker,
        budget: MemoryBudget,
        observer: Observer | None = None,
        load_seconds: float = 0.0,
        small_on_model_thread: bool = True,
    ) -> None:
        self.name = name
        self.small_on_model_thread = small_on_model_thread
        self.budget = budget
        self.input_bytes = 3 * backend.input_size * backend.input_size  # a uint8 RGB input at model size
        self.file = file
        self._resize = file.manifest.preprocessing
        # answered in the upload's pixels: its size travels along
        self._sized = file.manifest.kind in (POINTS, SEGMENTATION)
        self._masks = file.manifest.kind == SEGMENTATION
        self.backend = backend
        self.limits = limits
        self.observer = observer
        self.load_seconds = load_seconds
        self.loaded_at = time.time()
        self.batcher = Batcher(
            self._run_batch, limits.max_batch_size, limits.max_wait_ms, limits.max_queue, model_thread,
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
        held = 0  # the model-sized inputs of this request, charged until their batch is done
        try:
            with request_scope(), self.batcher.expecting(len(items)) as announced:
                prepared: list[Any] = []
                for item in items:  # one at a time: a request never decodes two images at once
                    outcome, cost = await self._prepare(item)
                    prepared.append(outcome)
                    held += cost
                inputs = [p for p in prepared if not isinstance(p, ItemError)]
                outcomes = await self.batcher.submit(inputs, announced) if inputs else []
                outcomes = [await self._encoded(o) for o in outcomes]
            if self.observer and outcomes:
                self.observer.predicted(self.name, self._labels_given(outcomes))
            answers = iter(outcomes)
            return [p if isinstance(p, ItemError) else next(answers) for p in prepared]
        finally:
            self.budget.release(held)
            self._active -= 1
            if not self._active:
                self._idle.set()

    async def _prepare(self, item: Item) -> tuple[Any, int]:
        """Decode one item and run the item transforms, charged to the memory budget: what reading its header
        inflates (PNG text, `header_bytes`) from before the header is read, its decoding working set (with the
        learner's crop or pad) while decoding, then its model-sized input (the returned cost, still held) until
        the batch is done. A small image is only opened here, and decoded on the model thread with its batch."""
        if isinstance(item, ItemError):
            return item, 0
        text = header_bytes(item)  # from chunk lengths: 0 unless a PNG has compressed text or ICC chunks
        try:
            if text:
                await self.budget.acquire(text, "this image's header")
        except OverBudget as e:
            return ItemError.of(e), 0
        try:
            image = await self._open(item, text)
        except CoreError as e:
            return ItemError.of(e), 0
        width, height = image.size
        answer = ANSWER_BYTES_PER_PIXEL * width * height if self._masks else 0  # a mask the upload's size
        keep = self.input_bytes + answer
        resize = resize_working_bytes(self._resize.resize_method, self._resize.size, width, height)
        charge = max(working_bytes(image) + resize, self.input_bytes) + answer
        try:
            await self.budget.acquire(charge, "this image")
        except OverBudget as e:
            self.budget.release(text)
            return ItemError.of(e), 0
        charge += text  # the text chunks after the pixels are inflated while decoding
        if charge <= SMALL_BYTES and self.small_on_model_thread:
            return _Small(image), charge  # held until its batch is done
        try:
            if charge <= SMALL_BYTES:
                outcome = self._load(image)
            else:
                outcome = await asyncio.get_running_loop().run_in_executor(None, self._load, image)
        except BaseException:
            self.budget.release(charge)
            raise
        if isinstance(outcome, ItemError):
            self.budget.release(charge)
            return outcome, 0
        self.budget.release(charge - keep)
        return outcome, keep

    async def _open(self, item: bytes, text: int) -> Image.Image:
        """The header, read on the event loop when that is cheap, in a thread when it inflates text (then the
        charge `text` is held; released here if the header is refused)."""
        if not text:
            return open_image(item, self.limits.max_pixels)
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, open_image, item, self.limits.max_pixels
            )
        except BaseException:
            self.budget.release(text)
            raise

    def _load(self, image: Image.Image) -> Any:
        try:
            rgb = load_rgb(image)
            prepared = self.backend.prepare(rgb)
        except CoreError as e:
            return ItemError.of(e)
        return _Sized(prepared, rgb.size) if self._sized else prepared

    def _labels_given(self, outcomes: Sequence[Outcome]) -> list[str]:
        predictions = [o for o in outcomes if isinstance(o, Prediction)]
        threshold = self.manifest.labels_threshold
        if threshold is None:
            return [p.label for p in predictions]
        return [label for p in predictions for label, _ in p.over(self.classes, threshold)]

    def _run_batch(self, items: Sequence[Any]) -> list[Outcome]:
        """The model thread's work for one batch: decode its small images, then the backend's forward pass."""
        ready = [self._load(i.image) if isinstance(i, _Small) else i for i in items]
        inputs = [r.input if isinstance(r, _Sized) else r for r in ready if not isinstance(r, ItemError)]
        answers = iter(self.backend.predict(inputs))
        return [r if isinstance(r, ItemError) else self._in_image(next(answers), r) for r in ready]

    def _in_image(self, answer: Answer, item: Any) -> Answer:
        """Key points and masks from the model's input back to the uploaded image's pixels (through the learner's
        resize)."""
        if isinstance(answer, Mask) and isinstance(item, _Sized):
            pre = self._resize
            return Mask(
                to_image(answer.ids, pre.resize_method, pre.size, self.backend.input_size, *item.size)
            )
        if not (isinstance(answer, Points) and isinstance(item, _Sized)):
            return answer
        sx, sy, ox, oy = input_to_image(self._resize.resize_method, self._resize.size, *item.size)
        # Points come in the model input's pixels; a presized learner (Resize(460), then a batch transform to
        # 224) resizes once more after the Resize this undoes.
        presized = self._resize.size / self.backend.input_size
        return Points(tuple((ox + x * presized * sx, oy + y * presized * sy) for x, y in answer.points))

    async def _encoded(self, outcome: Outcome) -> Outcome:
        """A mask with its PNG, encoded off the model thread (in a worker thread for a large one): its memory was
        charged with the image's (ANSWER_BYTES_PER_PIXEL) and is held until classify returns (the route then makes its
        answer without an await: no other request is granted memory meanwhile)."""
        if not isinstance(outcome, Mask):
            return outcome
        if outcome.ids.size * ANSWER_BYTES_PER_PIXEL <= SMALL_BYTES:
            return Mask(outcome.ids, png_of(outcome.ids))
        png = await asyncio.get_running_loop().run_in_executor(None, png_of, outcome.ids)
        return Mask(outcome.ids, png)

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
