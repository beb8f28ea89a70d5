"""`python -m app score SOURCE --model M --out predictions.csv|.parquet`: one row per input, a bad file never stops
the job, rows in input order, `--resume` skips what an earlier run wrote. The local engine runs the server's
unit in this process, or in several (LEARNSERVE_WORKERS, as the server decides: app/scoring/processes.py);
`--engine ray` runs the same unit in Ray actors (app/scoring/ray_engine.py)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.config import Settings
from app.core.errors import CoreError, ModelRequired
from app.core.files import classify_files
from app.core.process_plan import Oversubscribed, available_cores, memory_limit, plan, uses_gpu
from app.core.repository import open_model
from app.scoring.output import Journal, Row, chunk_rows, columns, done_rows, journal_path, write_table
from app.scoring.processes import WORTH_IT, process_rows
from app.scoring.sources import BadSource, is_uri, list_inputs
from training.manifest import read_manifest


class BadSetup(CoreError):
    code = "bad_setup"


@dataclass
class ScoreJob:
    source: str
    out: Path
    top_k: int
    resume: bool
    engine: str
    ray_address: str | None = None
    concurrency: int = 1
    num_gpus: float = 0.0
    threshold: float | None = None  # a multi-label model's (its `labels` column); None: single-label


@dataclass
class Summary:
    scored: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    warm_up: float = 0.0  # until the first rows came back: loading the model (starting Ray and its actors)

    def line(self) -> str:
        working = self.seconds - self.warm_up
        rate = (self.scored + self.failed) / working if working > 0 else 0.0
        return (f"scored {self.scored}, failed {self.failed}, skipped {self.skipped} already done, in "
                f"{self.seconds:.1f} s ({self.warm_up:.1f} s to load the model): {rate:,.1f} img/s")  # fmt: skip


def masks_folder(out: Path) -> Path:
    """Where `score` writes a segmentation's masks: beside OUT, in OUT's name without its suffix + `.masks`
    (predictions.parquet -> predictions.masks/)."""
    return out.with_name(f"{out.stem}.masks")


def local_rows(
    settings: Settings,
    paths: list[str],
    top_k: int,
    threshold: float | None = None,
    masks: Path | None = None,
) -> Iterator[list[Row]]:
    """Chunks of rows from the unit, in order (an event loop of its own, driven chunk by chunk so the journal is
    written as rows come; the model thread works beside it). A segmentation's masks are written into `masks`."""
    with asyncio.Runner() as runner:
        context = open_model(settings)
        unit = runner.run(context.__aenter__())
        try:
            chunks = classify_files(unit, [Path(p) for p in paths], settings.max_upload_bytes)
            while (chunk := runner.run(anext(chunks, None))) is not None:
                done, outcomes = chunk
                yield chunk_rows(done, outcomes, unit.classes, top_k, threshold, masks)
        finally:
            runner.run(chunks.aclose())
            runner.run(context.__aexit__(None, None, None))


def served_manifest(settings: Settings) -> Path:
    """The model file `open_model` serves: LEARNSERVE_MODEL_PATH, or in LEARNSERVE_MODEL_DIR the default model
    (LEARNSERVE_DEFAULT_MODEL, else the only one there)."""
    folder, only = settings.model_source()
    if only is not None:
        return only
    if settings.default_model:
        return folder / f"{settings.default_model}.pkl"
    names = sorted(
        {p.stem for p in [*folder.glob("*.pkl"), *folder.glob("*.onnx")] if not p.name.startswith(".")}
    )
    if len(names) != 1:
        raise ModelRequired(
            f"{len(names)} models are in {folder} ({', '.join(names) or 'none'}): set LEARNSERVE_DEFAULT_MODEL "
            "or pass --model"
        )
    return folder / f"{names[0]}.pkl"


def run_score(settings: Settings, job: ScoreJob) -> int:
    from tqdm import tqdm

    if job.out.suffix not in (".csv", ".parquet"):
        print(f"error: --out must end in .csv or .parquet, not {job.out.name}", file=sys.stderr)
        return 2
    if is_uri(job.source) and job.engine != "ray":
        print(f"error: {job.source} is read with --engine ray (Ray reads s3://, gs://, ...)", file=sys.stderr)
        return 2
    try:
        inputs = [job.source] if is_uri(job.source) else list_inputs(job.source)
    except BadSource as e:
        print(f"error: {e.detail}", file=sys.stderr)
        return 2
    try:
        model = served_manifest(settings)
        manifest = read_manifest(model)
        classes = len(manifest.classes)
    except ModelRequired as e:
        print(f"error: {e.detail}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"error: cannot read the manifest of {model}: {e}", file=sys.stderr)
        return 2
    job.top_k = min(job.top_k, classes)  # no empty label_K columns past the model's classes
    job.threshold = manifest.labels_threshold
    names = columns(job.top_k, manifest.kind, manifest.classes)
    if not job.resume:
        journal_path(job.out).unlink(missing_ok=True)
    done = done_rows(job.out) if job.resume else {}
    todo = [p for p in inputs if p not in done]
    summary = Summary(skipped=len(inputs) - len(todo) if not is_uri(job.source) else 0)
    job.out.parent.mkdir(parents=True, exist_ok=True)
    journal = Journal(job.out, names)
    started = time.perf_counter()
    terminal = sys.stderr.isatty()
    bar = tqdm(total=len(todo), unit="img", file=sys.stderr, disable=not terminal or is_uri(job.source))
    new: dict[str, Row] = {}
    try:
        for rows in engine_rows(settings, job, todo):
            if not new:
                summary.warm_up = time.perf_counter() - started
            journal.add(rows)
            for row in rows:
                new[row["path"]] = row
                summary.failed += "error" in row
            summary.scored += sum("error" not in r for r in rows)
            bar.update(len(rows))
    except CoreError as e:  # a setup the engine refuses; what was scored stays in the journal for --resume
        print(f"error: {e.detail}", file=sys.stderr)
        return 2
    finally:
        bar.close()
        journal.close()
    summary.seconds = time.perf_counter() - started
    order = list(new) if is_uri(job.source) else inputs
    rows = [new.get(p) or done[p] for p in order if p in new or p in done]
    write_table(job.out, rows, names)
    print(summary.line(), file=sys.stderr)
    return 0


def engine_rows(settings: Settings, job: ScoreJob, todo: list[str]) -> Iterator[list[Row]]:
    if job.engine == "ray":
        from app.scoring.ray_engine import ray_rows

        options: dict[str, Any] = {
            "address": job.ray_address,
            "concurrency": job.concurrency,
            "num_gpus": job.num_gpus,
            "threshold": job.threshold,
        }
        yield from ray_rows(settings, todo, job.top_k, **options)
    elif todo:
        try:  # capture is the server's: the scorer keeps nothing, so it does not limit the processes here
            chosen = plan(
                settings.model_copy(update={"capture_dir": None}), available_cores(), memory_limit()
            )
        except Oversubscribed as e:
            raise BadSetup(str(e)) from None
        # on a GPU one process: the local engine pipelines decoding beside one model copy (several scoring
        # processes on one card are not measured yet)
        if chosen.workers > 1 and len(todo) >= WORTH_IT and not uses_gpu(settings):
            print(f"scoring in {chosen.workers} processes, {chosen.threads} torch thread(s) each ({chosen.why})",
                  file=sys.stderr)  # fmt: skip
            yield from process_rows(settings, todo, job.top_k, job.threshold, masks_folder(job.out), chosen)
        else:
            yield from local_rows(settings, todo, job.top_k, job.threshold, masks_folder(job.out))
