"""The dynamic batcher: concurrent requests share forward passes and get exactly their own answers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from PIL import Image

from app.core.backends.fastai import FastaiBackend
from app.core.batcher import Batcher, ModelWorker
from app.core.errors import NotReady, Overloaded
from app.core.prediction import Prediction
from tests.backends import classify, fastai_backend
from tests.images import sample


@pytest.fixture(scope="module")
def predictor(tiny_model: Path) -> FastaiBackend:
    return fastai_backend(tiny_model)


@pytest.fixture
def thread() -> Iterator[ModelWorker]:
    worker = ModelWorker()
    yield worker
    worker.shutdown()


async def until(condition: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    """Poll `condition` on the event loop until it holds (a deadline only for a test that would hang)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"still not {what} after {seconds} s"
        await asyncio.sleep(0.001)


NEVER_MS = 600_000  # a max_wait no test outlives: a batch that sits it out fails by its test's deadline


def images_of(backend: FastaiBackend):  # type: ignore[no-untyped-def]
    return lambda images: classify(backend, images)


def test_concurrent_submissions_get_their_sequential_answers(
    predictor: FastaiBackend, thread: ModelWorker
) -> None:
    images = [sample(label, seed=i) for i, label in enumerate(["red", "green", "blue"] * 20)]
    sequential = [classify(predictor, [img])[0] for img in images]
    sizes: list[int] = []

    async def main() -> list[Prediction]:
        batcher = Batcher(
            images_of(predictor), max_batch_size=16, max_wait_ms=20, max_queue=1000, worker=thread,
            on_batch=lambda n, _: sizes.append(n),
        )  # fmt: skip
        batcher.start()
        try:
            return await asyncio.gather(*(one(batcher, img) for img in images))
        finally:
            await batcher.stop()

    async def one(batcher: Batcher, img: Image.Image) -> Prediction:
        await asyncio.sleep(0)
        [p] = await batcher.submit([img])
        return p

    concurrent = asyncio.run(main())
    for got, want in zip(concurrent, sequential, strict=True):
        assert got.label == want.label
        assert max(abs(a - b) for a, b in zip(got.probabilities, want.probabilities, strict=True)) < 1e-5
    assert sum(sizes) == len(images)
    assert max(sizes) > 1
    assert max(sizes) <= 16


def test_full_queue_answers_overloaded_and_recovers(thread: ModelWorker) -> None:
    running, release = threading.Event(), threading.Event()

    def slow(images: Sequence[Image.Image]) -> list[Prediction]:
        running.set()
        release.wait(30)
        return [Prediction("x", 1.0, (1.0,)) for _ in images]

    async def main() -> None:
        batcher = Batcher(slow, max_batch_size=2, max_wait_ms=0, max_queue=4, worker=thread)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit([sample()] * 4))
        await until(running.is_set, "running the first batch")  # 2 in the model, 2 queued: full
        with pytest.raises(Overloaded) as info:
            await batcher.submit([sample()])
        assert info.value.code == "overloaded"
        release.set()
        assert len(await first) == 4
        assert len(await batcher.submit([sample()])) == 1  # room again
        await batcher.stop()

    asyncio.run(main())


def test_a_failing_model_fails_only_its_batch(thread: ModelWorker) -> None:
    calls = 0

    def flaky(images: Sequence[Image.Image]) -> list[Prediction]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return [Prediction("ok", 1.0, (1.0,)) for _ in images]

    async def main() -> None:
        batcher = Batcher(flaky, max_batch_size=4, max_wait_ms=0, max_queue=10, worker=thread)
        batcher.start()
        with pytest.raises(RuntimeError):
            await batcher.submit([sample()])
        assert (await batcher.submit([sample()]))[0].label == "ok"
        await batcher.stop()
        with pytest.raises(NotReady):
            await batcher.submit([sample()])

    asyncio.run(main())


def test_lone_request_does_not_wait_for_company(predictor: FastaiBackend, thread: ModelWorker) -> None:
    async def main() -> None:
        batcher = Batcher(
            images_of(predictor), max_batch_size=64, max_wait_ms=NEVER_MS, max_queue=10, worker=thread
        )
        batcher.start()
        # nobody else is being decoded, so it does not sit out max_wait
        [answer] = await asyncio.wait_for(batcher.submit([sample("red")]), 30)
        assert answer.label == "red"
        await batcher.stop()

    asyncio.run(main())


def test_batch_waits_for_requests_still_being_decoded(predictor: FastaiBackend, thread: ModelWorker) -> None:
    sizes: list[int] = []

    async def main() -> None:
        batcher = Batcher(
            images_of(predictor), max_batch_size=8, max_wait_ms=NEVER_MS, max_queue=10, worker=thread,
            on_batch=lambda n, _: sizes.append(n),
        )  # fmt: skip
        batcher.start()
        announced, decoded = asyncio.Event(), asyncio.Event()

        async def late() -> list[Prediction]:
            with batcher.expecting(1) as expected:
                announced.set()
                await decoded.wait()  # "decoding"
                return await batcher.submit([sample("blue")], expected)

        late_task = asyncio.ensure_future(late())
        await announced.wait()
        first = asyncio.ensure_future(batcher.submit([sample("red")]))
        await until(lambda: batcher.depth == 1, "queued")
        assert not sizes  # the first request waits for the one being decoded
        decoded.set()
        assert (await asyncio.wait_for(first, 30))[0].label == "red"
        assert (await asyncio.wait_for(late_task, 30))[0].label == "blue"
        await batcher.stop()

    asyncio.run(main())
    assert sizes == [2]  # the first request waited for the one being decoded


def test_a_model_that_answers_short_fails_its_batch_and_the_thread_lives_on(thread: ModelWorker) -> None:
    answers = [[], "stop", None]

    def short(images: Sequence[Image.Image]) -> list[Prediction]:
        kind = answers.pop(0)
        if kind == "stop":
            next(iter([]))  # a StopIteration escaping the model's code
        if kind is None:
            return [Prediction("ok", 1.0, (1.0,)) for _ in images]
        return []

    async def main() -> None:
        batcher = Batcher(short, max_batch_size=4, max_wait_ms=0, max_queue=10, worker=thread)
        batcher.start()
        with pytest.raises(RuntimeError, match="answered 0 of a batch of 1"):
            await asyncio.wait_for(batcher.submit([sample()]), 5)
        with pytest.raises(RuntimeError, match="StopIteration"):
            await asyncio.wait_for(batcher.submit([sample()]), 5)
        assert (await asyncio.wait_for(batcher.submit([sample()]), 5))[0].label == "ok"
        assert batcher.depth == 0
        await batcher.stop()

    asyncio.run(main())


def test_a_batch_stops_waiting_for_an_input_that_will_not_come(
    predictor: FastaiBackend, thread: ModelWorker
) -> None:
    async def main() -> None:
        batcher = Batcher(
            images_of(predictor), max_batch_size=8, max_wait_ms=NEVER_MS, max_queue=10, worker=thread
        )
        batcher.start()
        announced, decoded = asyncio.Event(), asyncio.Event()

        async def refused() -> None:
            with batcher.expecting(1):
                announced.set()
                await decoded.wait()  # "decoding", then the image is refused: nothing is submitted

        task = asyncio.ensure_future(refused())
        await announced.wait()
        first = asyncio.ensure_future(batcher.submit([sample("red")]))
        await until(lambda: batcher.depth == 1, "queued")
        decoded.set()
        # the batch runs once the announced input is given up, not after max_wait
        assert (await asyncio.wait_for(first, 30))[0].label == "red"
        await task
        await batcher.stop()

    asyncio.run(main())
