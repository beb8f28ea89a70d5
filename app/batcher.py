"""Dynamic batching: concurrent requests wait briefly in one queue and go through the model together.

The event loop only queues and wakes; the forward pass runs in one dedicated worker thread, so the loop never
blocks and the (not thread-safe) predictor is only ever called from that thread. Images that arrive while a
batch is running form the next batch at once. A batch waits for company (at most `max_wait_ms`) only while other
requests are still being decoded (`expecting`): a lone request at low load goes straight to the model.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image

from app.errors import NotReady, Overloaded
from app.predictor import Prediction

PredictFn = Callable[[Sequence[Image.Image]], list[Prediction]]


def model_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="learnserve-model")


@dataclass(slots=True)
class _Job:
    image: Image.Image
    future: asyncio.Future[Prediction]


class Batcher:
    def __init__(
        self,
        predict: PredictFn,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._waiting = 0  # images queued or in the running batch
        self._incoming = 0  # images being read or decoded, about to be submitted
        # One thread for all torch work: each thread that calls into torch gets its own OpenMP team, and idle
        # teams slow the busy one (measured: resnet18 at 64 px, 10.5 ms per image on one thread, 15 ms after
        # a second thread had run the model). The lifespan passes in the thread that loaded and warmed the model.
        self._executor = executor or model_thread()
        self._task: asyncio.Task[None] | None = None
        self.on_batch: Callable[[int, float], None] | None = None  # (batch size, seconds): metrics hook

    @property
    def depth(self) -> int:
        return self._waiting

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="learnserve-batcher")

    @contextlib.contextmanager
    def expecting(self, n: int = 1) -> Iterator[None]:
        """Announce images that are on their way (being read and decoded), so a forming batch waits for them."""
        self._incoming += n
        try:
            yield
        finally:
            self._incoming -= n

    async def submit(self, images: Sequence[Image.Image]) -> list[Prediction]:
        if self._task is None or self._task.done():
            raise NotReady("The model is not accepting work (starting up or shutting down).")
        if self._waiting + len(images) > self.max_queue:
            raise Overloaded(f"The server is busy ({self._waiting} images waiting); retry shortly.")
        loop = asyncio.get_running_loop()
        jobs = [_Job(image, loop.create_future()) for image in images]
        self._waiting += len(jobs)
        for job in jobs:
            self._queue.put_nowait(job)
        return list(await asyncio.gather(*(job.future for job in jobs)))

    async def _collect(self) -> list[_Job]:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0 or not self._incoming:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            jobs = [job for job in batch if not job.future.done()]  # skip clients that went away
            try:
                started = loop.time()
                if jobs:
                    results = await loop.run_in_executor(
                        self._executor, self._predict, [j.image for j in jobs]
                    )
                    for job, result in zip(jobs, results, strict=True):
                        if not job.future.done():
                            job.future.set_result(result)
                    if self.on_batch:
                        self.on_batch(len(jobs), loop.time() - started)
            except BaseException as e:  # a model failure fails this batch's requests, not the service
                failure = (
                    NotReady("The server is shutting down.") if isinstance(e, asyncio.CancelledError) else e
                )
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(failure)
                if isinstance(e, asyncio.CancelledError):
                    raise
            finally:
                self._waiting -= len(batch)

    async def stop(self) -> None:
        """Finish the running batch, fail anything still queued, release the worker thread."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(NotReady("The server is shutting down."))
        self._executor.shutdown(wait=True)
