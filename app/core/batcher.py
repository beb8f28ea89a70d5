"""Dynamic batching on the one model thread: concurrent requests queue their inputs, and the model thread takes
whatever is queued as its next batch the moment it is free.

The event loop only queues (`submit`) and receives results (one call per batch); it never blocks and never has
to wake up to dispatch the next batch, so the model thread does not sit idle between batches while the loop is
busy with HTTP. One `ModelWorker` thread runs the batches of every model, round-robin; each thread that calls into
torch gets its own OpenMP team, and idle teams slow the busy one (measured: resnet18 at 64 px, 10.5 ms per image
on one thread, 15 ms after a second thread had run the model), hence one thread for all. A batch waits for company
(at most `max_wait_ms`) only while other inputs are still being decoded (`expecting`): a lone request at low load
goes straight to the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any

from app.core.errors import NotReady, Overloaded
from app.core.prediction import Outcome

PredictFn = Callable[[Sequence[Any]], list[Outcome]]
BatchHook = Callable[[int, float], None]  # (batch size, seconds)

logger = logging.getLogger("learnserve")

SHUTTING_DOWN = "The model is not accepting work (starting up or shutting down)."


class ModelWorker(Executor):
    """The model thread. Runs batchers' batches and, as an Executor, any other torch work (loading, warm-up)."""

    def __init__(self) -> None:
        self._work: queue.SimpleQueue[Batcher | Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="learnserve-model", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (item := self._work.get()) is not None:
            try:
                if isinstance(item, Batcher):
                    item.run_batch()
                else:
                    item()
            except Exception:  # never lose the one model thread (batch failures are the batcher's to report)
                logger.exception("the model thread's work failed")

    def schedule(self, batcher: Batcher) -> None:
        self._work.put(batcher)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()

        def run() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as e:
                    future.set_exception(e)

        self._work.put(run)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._work.put(None)
        if wait and self._thread is not threading.current_thread():
            self._thread.join()


@dataclass(slots=True)
class Announcement:
    pending: int  # inputs announced by `expecting` and not yet submitted


@dataclass(slots=True)
class _Job:
    item: Any
    future: asyncio.Future[Outcome]


class Batcher:
    def __init__(
        self,
        predict: PredictFn,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        worker: ModelWorker,
        on_batch: BatchHook | None = None,
    ) -> None:
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self._worker = worker
        self._on_batch = on_batch
        self._jobs: deque[_Job] = deque()
        self._more = threading.Condition()  # guards _jobs and _scheduled; notified when jobs arrive
        self._scheduled = False  # in the worker's queue, or running a batch
        self._waiting = 0  # inputs queued or in the running batch (event loop only)
        self._incoming = 0  # inputs being decoded, about to be submitted (changed and read under _more)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting = False

    @property
    def depth(self) -> int:
        return self._waiting

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._accepting = True

    @contextlib.contextmanager
    def expecting(self, n: int = 1) -> Iterator[Announcement]:
        """Announce inputs that are on their way (being decoded), so a forming batch waits for them. Submit them
        inside the block with the announcement (`submit(items, announced)`): the submit ends the announcement as
        it queues them, in one step; if the block ends without one (every input failed, or the request was
        cancelled), a forming batch is told to stop waiting."""
        announced = Announcement(n)
        with self._more:
            self._incoming += n
        try:
            yield announced
        finally:
            if announced.pending:
                with self._more:
                    self._incoming -= announced.pending
                    announced.pending = 0
                    self._more.notify()

    @property
    def worker(self) -> ModelWorker:
        """The model thread this batcher's batches run on (other model-thread work, e.g. an explanation, too)."""
        return self._worker

    async def submit(self, items: Sequence[Any], announced: Announcement | None = None) -> list[Outcome]:
        if not self._accepting:
            raise NotReady(SHUTTING_DOWN)
        if self._waiting + len(items) > self.max_queue:
            raise Overloaded(f"The server is busy ({self._waiting} images waiting); retry shortly.")
        loop = asyncio.get_running_loop()
        jobs = [_Job(item, loop.create_future()) for item in items]
        self._waiting += len(jobs)
        with self._more:
            self._jobs.extend(jobs)
            if announced is not None:
                self._incoming -= announced.pending
                announced.pending = 0
            self._more.notify()
            schedule, self._scheduled = not self._scheduled, True
        if schedule:
            self._worker.schedule(self)
        if len(jobs) == 1:  # the common case: no gather (and its extra future) on the hot path
            return [await jobs[0].future]
        return list(await asyncio.gather(*(job.future for job in jobs)))

    # -- on the model thread --------------------------------------------------------------------------------
    def run_batch(self) -> None:
        """Take up to a batch of what is queued (waiting briefly for inputs still being decoded), run it, hand the
        results to the event loop, and stay in the worker's queue while more is waiting."""
        with self._more:
            if self._incoming and len(self._jobs) < self.max_batch_size and self.max_wait:
                deadline = time.monotonic() + self.max_wait
                while self._incoming and len(self._jobs) < self.max_batch_size:
                    if (remaining := deadline - time.monotonic()) <= 0:
                        break
                    self._more.wait(remaining)
            batch = [self._jobs.popleft() for _ in range(min(self.max_batch_size, len(self._jobs)))]
        started = time.perf_counter()
        results: list[Outcome] | BaseException
        try:
            results = self._predict([job.item for job in batch]) if batch else []
            if len(results) != len(batch):
                raise RuntimeError(f"the model answered {len(results)} of a batch of {len(batch)} inputs")
        except Exception as e:  # a model failure fails this batch's requests, not the service
            results = e if not isinstance(e, StopIteration) else RuntimeError(f"the model failed: {e!r}")
        seconds = time.perf_counter() - started
        with self._more:
            again = self._scheduled = bool(self._jobs)
        if again:
            self._worker.schedule(self)  # round-robin: other models' batches go first
        if batch and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the event loop is closed: nobody is waiting any more
                self._loop.call_soon_threadsafe(self._deliver, batch, results, seconds)

    # -- back on the event loop -----------------------------------------------------------------------------
    def _deliver(self, batch: list[_Job], results: list[Outcome] | BaseException, seconds: float) -> None:
        self._waiting -= len(batch)
        if isinstance(results, BaseException):
            _fail(batch, results)
            return
        for job, result in zip(batch, results, strict=True):
            if not job.future.done():  # the client may have gone away
                job.future.set_result(result)
        if self._on_batch:
            self._on_batch(len(batch), seconds)

    async def stop(self) -> None:
        """Stop taking work and fail whatever is still queued (the unit drains its requests before this)."""
        self._accepting = False
        with self._more:
            pending = list(self._jobs)
            self._jobs.clear()
        self._waiting -= len(pending)
        _fail(pending, NotReady(SHUTTING_DOWN))


def _fail(jobs: list[_Job], error: BaseException) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(error)
