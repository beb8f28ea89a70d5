"""Dynamic batching: concurrent requests wait briefly in one queue and go through the model together.

The event loop only queues and wakes; the forward pass runs on the one model thread (shared by every model), so
the loop never blocks and a backend is only ever called from that thread. Inputs that arrive while a batch is
running form the next batch at once. A batch waits for company (at most `max_wait_ms`) only while other inputs
are still being decoded (`expecting`): a lone request at low load goes straight to the model.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from app.core.errors import NotReady, Overloaded
from app.core.prediction import Prediction

PredictFn = Callable[[Sequence[Any]], list[Prediction]]
BatchHook = Callable[[int, float], None]  # (batch size, seconds)

SHUTTING_DOWN = "The model is not accepting work (starting up or shutting down)."


@dataclass(slots=True)
class _Job:
    item: Any
    future: asyncio.Future[Prediction]


class Batcher:
    def __init__(
        self,
        predict: PredictFn,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        executor: Executor,
        on_batch: BatchHook | None = None,
    ) -> None:
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self._executor = executor
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._waiting = 0  # inputs queued or in the running batch
        self._incoming = 0  # inputs being read or decoded, about to be submitted
        self._task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        return self._waiting

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="learnserve-batcher")

    @contextlib.contextmanager
    def expecting(self, n: int = 1) -> Iterator[None]:
        """Announce inputs that are on their way (being decoded), so a forming batch waits for them."""
        self._incoming += n
        try:
            yield
        finally:
            self._incoming -= n

    async def submit(self, items: Sequence[Any]) -> list[Prediction]:
        if self._task is None or self._task.done():
            raise NotReady(SHUTTING_DOWN)
        if self._waiting + len(items) > self.max_queue:
            raise Overloaded(f"The server is busy ({self._waiting} images waiting); retry shortly.")
        loop = asyncio.get_running_loop()
        jobs = [_Job(item, loop.create_future()) for item in items]
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
                if jobs:
                    started = loop.time()
                    results = await loop.run_in_executor(
                        self._executor, self._predict, [j.item for j in jobs]
                    )
                    for job, result in zip(jobs, results, strict=True):
                        if not job.future.done():
                            job.future.set_result(result)
                    if self._on_batch:
                        self._on_batch(len(jobs), loop.time() - started)
            except asyncio.CancelledError:
                _fail(jobs, NotReady(SHUTTING_DOWN))
                raise
            except Exception as e:  # a model failure fails this batch's requests, not the service
                _fail(jobs, e)
            finally:
                self._waiting -= len(batch)

    async def stop(self) -> None:
        """Stop taking work and fail whatever still waits (the unit drains its requests before this)."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        pending = []
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        _fail(pending, NotReady(SHUTTING_DOWN))


def _fail(jobs: list[_Job], error: BaseException) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(error)
