"""Classifying files on disk with a model's unit: the one loop behind `python -m app predict`, `score` and the
benchmark. Files are read and decoded in the unit's thread pool while the model thread runs the previous chunk,
answers come back in input order, and a file that cannot be read or decoded becomes an ItemError in its place.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable, Sequence
from pathlib import Path

from app.core.errors import FileTooLarge, Unreadable
from app.core.prediction import ItemError, Outcome
from app.core.unit import Item, ModelUnit


def bounded_item(data: bytes, max_bytes: int, name: str, complete: bool = True) -> Item:
    """`data`, or the file_too_large error of the file `name` when it holds more than `max_bytes` (`complete`:
    `data` is the whole file, so its size is told; else only the first `max_bytes + 1` bytes were read)."""
    if len(data) <= max_bytes:
        return data
    size = len(data) if complete else None
    return ItemError.of(FileTooLarge.over(max_bytes, size, subject=name))


def read_item(path: Path, max_bytes: int) -> Item:
    """A file's bytes, or why it cannot be classified; never raises."""
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)  # one byte past the limit tells a larger file
    except OSError as e:
        return ItemError.of(Unreadable(f"{path} cannot be read: {e.strerror or e}."))
    return bounded_item(data, max_bytes, str(path), complete=False)


def chunks(paths: Iterable[Path], size: int) -> Iterable[list[Path]]:
    chunk: list[Path] = []
    for path in paths:
        chunk.append(path)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def classify_files(
    unit: ModelUnit, paths: Iterable[Path], max_bytes: int, chunk_size: int | None = None
) -> AsyncGenerator[tuple[Sequence[Path], list[Outcome]]]:
    """(paths, outcomes) chunk by chunk, in order; a few chunks are in flight at once so that reading and
    decoding overlap the forward pass, never more than the unit's queue holds."""
    size = max(1, min(chunk_size or unit.limits.max_batch_size, unit.limits.max_queue))
    in_flight = max(1, min(4, unit.limits.max_queue // size))
    loop = asyncio.get_running_loop()

    async def one(chunk: list[Path]) -> list[Outcome]:
        items = await loop.run_in_executor(None, lambda: [read_item(p, max_bytes) for p in chunk])
        return await unit.classify(items)

    pending: list[tuple[list[Path], asyncio.Task[list[Outcome]]]] = []
    try:
        for chunk in chunks(paths, size):
            pending.append((chunk, asyncio.ensure_future(one(chunk))))
            if len(pending) >= in_flight:
                done, task = pending.pop(0)
                yield done, await task
        while pending:
            done, task = pending.pop(0)
            yield done, await task
    finally:
        for _, task in pending:
            task.cancel()
