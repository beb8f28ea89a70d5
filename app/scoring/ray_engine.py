"""`score --engine ray`: Ray Data reads the files (any path Ray can read: local, s3://, gs://, ...) and
`map_batches` runs them through `RayScorer`, a callable class that loads the model once per actor and classifies
each batch with the server's own unit (the same decoding, limits, errors and backend as `serve`), then the driver
writes the same table as the local engine. Rows come back in input order (`preserve_order`).

Runs on a local Ray by default (or joins one started in this process, as the tests do); `--ray-address auto` or
`ray://host:10001` joins a cluster, whose workers need the project installed and the model file at the same path.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from app.config import Settings
from app.core.errors import CoreError, Unreadable
from app.core.files import bounded_item
from app.core.prediction import ItemError
from app.core.repository import open_model
from app.core.unit import Item
from app.scoring.output import Row, columns, row_of
from app.scoring.sources import is_uri

UNSENT = ("api_key", "admin_key")


class BadRaySetup(CoreError):
    """A Ray setup that would hang (actors taking every CPU, none left to read the files)."""

    code = "bad_ray_setup"  # settings the actors do not need, never shipped to a cluster


class RayScorer:
    """One model copy per Ray actor; `__call__` classifies one batch of file bytes."""

    def __init__(self, settings: dict[str, Any], top_k: int, threshold: float | None = None) -> None:
        self.settings = Settings(**settings)
        self.top_k = top_k
        self.threshold = threshold  # a multi-label model's: its `labels` column
        # One event loop for the actor's life, resumed by each batch (the unit's batcher lives on it). The model
        # stays loaded until the actor's process ends: its threads are daemons, and nothing is left to flush.
        # The context is kept: collecting it would close the model.
        self.runner = asyncio.Runner()
        self.context = open_model(self.settings)
        self.unit = self.runner.run(self.context.__aenter__())

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        limit = self.settings.max_upload_bytes
        items: list[Item] = [
            bounded_item(bytes(b), limit, str(p)) for b, p in zip(batch["bytes"], batch["path"], strict=True)
        ]
        outcomes = self.runner.run(self.unit.classify(items))
        rows = [
            row_of(str(p), o, self.unit.classes, self.top_k, self.threshold)
            for p, o in zip(batch["path"], outcomes, strict=True)
        ]
        manifest = self.unit.manifest
        names = columns(self.top_k, manifest.kind, manifest.classes)
        return {c: np.array([r.get(c) for r in rows], dtype=object) for c in names}


def unreadable(paths: list[str]) -> list[Row]:
    """Local files Ray could not read (missing, not a file, no permission): their rows, so one never stops the job."""
    rows = []
    for p in paths:
        path = Path(p)
        try:
            with path.open("rb"):
                pass
        except OSError as e:
            rows.append(row_of(p, ItemError.of(Unreadable(f"{p} cannot be read: {e.strerror or e}.")), [], 1))
    return rows


def ray_rows(
    settings: Settings, paths: list[str], top_k: int, address: str | None = None, concurrency: int = 1,
    num_gpus: float = 0.0, threshold: float | None = None,
) -> Iterator[list[Row]]:  # fmt: skip
    import ray

    if not paths:
        return
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # our own progress bar and summary line say enough
    try:
        failed = [] if any(is_uri(p) for p in paths) else unreadable(paths)
        if failed:
            yield failed
        skip = {r["path"] for r in failed}
        readable = [p for p in paths if p not in skip]
        if not readable:
            return
        cpus = ray.cluster_resources().get("CPU", 0)  # type: ignore[no-untyped-call]
        if not num_gpus and concurrency + 1 > cpus:
            raise BadRaySetup(
                f"--concurrency {concurrency} needs {concurrency} CPUs for its actors and one more to read files; "
                f"this Ray cluster has {cpus:g}: lower --concurrency"
            )
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        dataset = ray.data.read_binary_files(readable, include_paths=True, ignore_missing_paths=True)
        batch = settings.max_batch_size
        scored = dataset.map_batches(
            RayScorer,
            fn_constructor_kwargs={
                "settings": settings.model_dump(exclude=set(UNSENT)),
                "top_k": top_k,
                "threshold": threshold,
            },
            batch_size=min(batch, settings.max_queue),
            batch_format="numpy",
            concurrency=concurrency,
            num_gpus=num_gpus or None,
        )
        for out in scored.iter_batches(batch_size=256, batch_format="numpy"):
            yield [_row(out, i) for i in range(len(out["path"]))]
    finally:
        if started_here:
            ray.shutdown()


def _row(batch: dict[str, np.ndarray], i: int) -> Row:
    row: Row = {}
    for column, values in batch.items():
        value = values[i]
        value = value.item() if isinstance(value, np.generic) else value
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue  # an empty cell (Ray returns missing values as NaN)
        row[column] = value
    return row
