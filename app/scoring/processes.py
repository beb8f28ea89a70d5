"""The local scorer on several processes: LEARNSERVE_WORKERS decides, by the server's rule (app/core/process_plan.py),
so a small model gets a process per core with one torch thread each, and a large one stays in one process.

In one process the main thread's reading, decoding and bookkeeping share the GIL with the model thread (0.64-0.67 of
the in-process limit for the digits CNN). Here each spawned process loads the model once and scores chunks of
paths with the same core as the one-process engine (`classify_files`, `row_of`); the parent hands out the chunks in
order and gets their rows back in order, so the journal, the resume and the table are the same.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from app.config import Settings
from app.core.files import classify_files
from app.core.process_plan import Plan, share
from app.core.repository import open_model
from app.core.unit import ModelUnit
from app.scoring.output import Row, chunk_rows

# Enough files per chunk that each process keeps its batches full and a hand-off is rare next to the work.
CHUNK = 256
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
# Below this many files a second model load costs more than it saves.
WORTH_IT = 2 * CHUNK


class _Scorer:
    """One process's model, opened on its first chunk (a load error then reaches the parent as the chunk's
    exception, instead of a pool that restarts a failing initialiser forever)."""

    def __init__(self, settings: Settings, top_k: int, threshold: float | None, masks: Path | None) -> None:
        self.settings, self.top_k, self.threshold, self.masks = settings, top_k, threshold, masks
        self.runner: asyncio.Runner | None = None
        self.context: AbstractAsyncContextManager[ModelUnit] | None = None
        self.unit: ModelUnit | None = None

    def score(self, paths: list[str]) -> list[Row]:
        if self.runner is None:
            self.runner = asyncio.Runner()
            self.context = open_model(self.settings)
            self.unit = self.runner.run(self.context.__aenter__())
        return self.runner.run(self._rows(paths))

    async def _rows(self, paths: list[str]) -> list[Row]:
        assert self.unit is not None
        unit, rows = self.unit, []
        async for done, outcomes in classify_files(
            unit, [Path(p) for p in paths], self.settings.max_upload_bytes
        ):
            rows += chunk_rows(done, outcomes, unit.classes, self.top_k, self.threshold, self.masks)
        return rows


_scorer: _Scorer | None = None


def _start(settings: Settings, top_k: int, threshold: float | None, masks: Path | None) -> None:
    global _scorer
    _scorer = _Scorer(settings, top_k, threshold, masks)


def _score(paths: list[str]) -> list[Row]:
    assert _scorer is not None
    return _scorer.score(paths)


def process_rows(
    settings: Settings,
    paths: list[str],
    top_k: int,
    threshold: float | None,
    masks: Path | None,
    chosen: Plan,
) -> Iterator[list[Row]]:
    """Chunks of rows, in order, from `chosen.workers` processes with `chosen.threads` torch threads each."""
    chunks = [paths[i : i + CHUNK] for i in range(0, len(paths), CHUNK)]
    saved = {k: os.environ.get(k) for k in THREAD_VARIABLES}
    os.environ.update(
        dict.fromkeys(THREAD_VARIABLES, str(chosen.threads))
    )  # inherited, read before torch loads
    try:
        # a process that dies (killed for memory, a crash) raises BrokenProcessPool here, never a hang
        spawn = multiprocessing.get_context("spawn")
        initargs = (share(settings, chosen), top_k, threshold, masks)
        with ProcessPoolExecutor(
            chosen.workers, mp_context=spawn, initializer=_start, initargs=initargs
        ) as pool:
            yield from pool.map(_score, chunks)
    finally:  # this process's environment as it was
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
