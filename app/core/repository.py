"""The model repository: every NAME.pkl (with its NAME.json) in one folder is served as model NAME, and a rescan
loads new files, swaps changed ones in and unloads removed ones, without dropping a request.

A rescan (`reload`, on SIGHUP, POST /admin/reload or the optional watch) verifies and loads a changed file beside
the running version (the pickle on a loader thread, the warm-up on the model thread), then swaps one reference;
requests already inside the old unit finish there, and the old unit is drained and stopped. A file that fails
(altered, writable by others or owned by another user, corrupt, another Python, a manifest naming another model)
is reported and the running version keeps serving. Only files inside the folder are loaded, never anything from a request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from app.config import Settings
from app.core.backends import SUFFIX, open_backend
from app.core.batcher import ModelWorker
from app.core.budget import MemoryBudget
from app.core.errors import ModelLoadError, ModelNotFound, ModelRequired, NotReady
from app.core.observer import Observer
from app.core.unit import ModelUnit, UnitLimits
from app.core.verify import VerifiedFile, verify_model_file
from training.manifest import manifest_path

logger = logging.getLogger("learnserve")

# (size, mtime_ns, ctime_ns, inode) of the .pkl and the .json, and (mode, owner) of their folder: ctime changes
# with chmod/chown too, so a file refused for its own or its folder's permissions is tried again once they are
# fixed (the folder's ctime is left out: it changes with every file added, which would rehash every model).
Signature = tuple[tuple[int, ...], ...]


@dataclass
class ReloadReport:
    loaded: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.loaded or self.replaced or self.removed or self.failed)

    def summary(self) -> str:
        """One line for the log: what each name became (`unchanged` as a count: a folder may hold many)."""
        parts = [
            f"{what} {', '.join(names)}"
            for what, names in (
                ("added", self.loaded),
                ("replaced", self.replaced),
                ("removed", self.removed),
            )
            if names
        ]
        parts += [f"failed {', '.join(self.failed)}"] if self.failed else []
        parts.append(f"{len(self.unchanged)} unchanged")
        return "; ".join(parts)


def signature(pkl: Path) -> Signature | None:
    try:
        stats = [p.stat() for p in (pkl, manifest_path(pkl))]
        folder = pkl.parent.stat()
    except OSError:
        return None
    files = tuple((s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino) for s in stats)
    return (*files, (folder.st_mode, folder.st_uid))


class ModelRepository:
    def __init__(
        self,
        settings: Settings,
        observer: Observer | None = None,
        budget: MemoryBudget | None = None,
        small_on_model_thread: bool = True,
    ) -> None:
        self.settings = settings
        self.small_on_model_thread = small_on_model_thread  # see app/core/unit.py: SMALL_BYTES
        self.budget = budget or MemoryBudget(settings.max_inflight_bytes, settings.memory_wait_seconds)
        self.folder, self.only = settings.model_source()
        # The one thread that runs every model's batches and warm-up (see app/core/batcher.py for why one).
        # Unpickling happens on the loader thread, so a reload does not stall the models being served.
        self.model_thread = ModelWorker()
        self.observer = observer
        self.units: dict[str, ModelUnit] = {}
        self.errors: dict[str, str] = {}  # the last load error of each name, until it loads
        self._signatures: dict[str, Signature | None] = {}  # of what is served, or of what last failed
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="learnserve-loader")
        self._lock = asyncio.Lock()
        self._draining: set[asyncio.Task[None]] = set()

    # -- lookup -------------------------------------------------------------------------------------------
    def get(self, name: str) -> ModelUnit:
        unit = self.units.get(name)
        if unit is None:
            served = ", ".join(sorted(self.units)) or "none"
            raise ModelNotFound(f"There is no model {name!r}; this server serves: {served}.")
        return unit

    def default(self) -> ModelUnit:
        """The model that answers /predict: LEARNSERVE_DEFAULT_MODEL, else the only one served."""
        if self.settings.default_model:
            return self.get(self.settings.default_model)
        if len(self.units) == 1:
            return next(iter(self.units.values()))
        if not self.units:
            raise NotReady("No model is loaded.")
        names = ", ".join(sorted(self.units))
        raise ModelRequired(
            f"{len(self.units)} models are served ({names}) and none is the default: use "
            "/models/{name}/predict, or start the server with LEARNSERVE_DEFAULT_MODEL."
        )

    @property
    def ready(self) -> bool:
        return bool(self.units)

    # -- loading ------------------------------------------------------------------------------------------
    def scan(self) -> dict[str, Path]:
        """NAME -> the file its backend serves (NAME.pkl or NAME.onnx) for every model in the folder (only the
        configured one with LEARNSERVE_MODEL_PATH)."""
        if self.only is not None:
            names = [self.only.stem]
        else:
            try:
                files = [*self.folder.glob("*.pkl"), *self.folder.glob("*.onnx")]
            except OSError:
                return {}
            names = sorted({f.stem for f in files if not f.name.startswith(".")})
        folder = self.only.parent if self.only is not None else self.folder
        return {n: folder / f"{n}{SUFFIX[self.settings.backend_for(n)]}" for n in names}

    async def start(self) -> None:
        """The first scan. Stops startup when nothing could be loaded, or the configured default failed."""
        if self.only is None and not self.folder.is_dir():
            raise ModelLoadError(f"LEARNSERVE_MODEL_DIR {self.folder} is not a folder")
        report = await self.reload("startup")
        if self.only is not None and report.failed:
            raise ModelLoadError(next(iter(report.failed.values())))
        if not self.units:
            reasons = "; ".join(f"{n}: {e}" for n, e in report.failed.items())
            raise ModelLoadError(
                f"no model could be loaded from {self.folder}" + (f" ({reasons})" if reasons else "")
            )
        default = self.settings.default_model
        if default and default not in self.units:
            why = report.failed.get(default, f"there is no {default}.pkl in {self.folder}")
            raise ModelLoadError(f"LEARNSERVE_DEFAULT_MODEL {default!r} cannot be served: {why}")

    async def reload(self, trigger: str = "startup") -> ReloadReport:
        """Rescan the folder: load new files, swap changed ones, unload removed ones. One rescan at a time.
        `trigger` (startup, SIGHUP, POST /admin/reload, watch) is logged with what changed and how long it took; a
        periodic watch that changed nothing logs nothing."""
        async with self._lock:
            started = time.perf_counter()
            quiet = trigger == "watch"
            if not quiet:
                logger.info("model reload started (%s): scanning %s", trigger, self.only or self.folder)
            report = await self._rescan()
            if report.changed or not quiet:
                logger.info(
                    "model reload (%s) done in %.2fs: %s",
                    trigger,
                    time.perf_counter() - started,
                    report.summary(),
                )
            return report

    async def _rescan(self) -> ReloadReport:
        report = ReloadReport()
        found = self.scan()
        for name, path in found.items():
            sig = signature(path)
            if name in self._signatures and self._signatures[name] == sig and sig is not None:
                report.unchanged.append(name)  # served and unchanged, or failed and unchanged
                continue
            previous = self.units.get(name)
            try:
                file = await self._verify(name, path)
                if previous and previous.file.sha256 == file.sha256:
                    self._signatures[name] = sig
                    report.unchanged.append(name)  # touched, not changed: keep the running unit
                    continue
                unit = await self._open(name, file)
            except Exception as e:  # refused, or e.g. removed mid-scan, or a learner we cannot serve
                self._signatures[name] = sig  # not retried until the file changes again
                unexpected = f"{path} cannot be loaded: {type(e).__name__}: {e}"
                self._failed(name, str(e) if isinstance(e, ModelLoadError) else unexpected, report)
                continue
            # Recorded only once the outcome is known: a rescan cancelled half-way retries the file next time.
            self._signatures[name] = sig
            self.units[name] = unit  # the swap: new requests get the new unit from here on
            self.errors.pop(name, None)
            (report.replaced if previous else report.loaded).append(name)
            logger.info("model %s version %s ready in %.2fs", name, unit.version, unit.load_seconds)
            if self.observer:
                self.observer.model_loaded(unit)
            if previous:
                self._retire(previous)
        for name in [n for n in self.units if n not in found]:
            self._signatures.pop(name, None)
            self._retire(self.units.pop(name))
            report.removed.append(name)
            logger.info("model %s removed", name)
            if self.observer:
                self.observer.model_unloaded(name)
        for name in [n for n in self.errors if n not in found]:
            self.errors.pop(name)
            self._signatures.pop(name, None)
        return report

    async def _verify(self, name: str, path: Path) -> VerifiedFile:
        """The checks before unpickling, on the loader thread (hashing a large file takes a while)."""
        if self.only is None and not path.resolve().is_relative_to(self.folder.resolve()):
            raise ModelLoadError(f"{path} points outside {self.folder}; only files inside it are loaded")
        loop = asyncio.get_running_loop()
        file = await loop.run_in_executor(self._loader, verify_model_file, path, self.settings.model_sha256)
        if self.only is None and file.manifest.name != name:
            raise ModelLoadError(
                f"{path.name}'s manifest names the model {file.manifest.name!r}; a model file must be named "
                f"after its model ({file.manifest.name}.pkl)"
            )
        return file

    async def _open(self, name: str, file: VerifiedFile) -> ModelUnit:
        """Unpickle on the loader thread, warm up on the model thread, start a unit (not yet served)."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        s = self.settings
        backend = await loop.run_in_executor(
            self._loader, open_backend, file, s.backend_for(name), s.device, s.torch_threads
        )
        try:
            await loop.run_in_executor(self.model_thread, backend.warm_up)
        except Exception as e:
            raise ModelLoadError(
                f"{file.path} loaded but failed its warm-up: {type(e).__name__}: {e}"
            ) from None
        limits = UnitLimits(
            max_pixels=s.max_pixels,
            max_batch_size=s.batch_size_for(backend.input_size),
            max_wait_ms=s.max_wait_ms,
            max_queue=s.max_queue,
        )
        unit = ModelUnit(name, file, backend, limits, self.model_thread, self.budget, self.observer,
                         load_seconds=time.perf_counter() - started,
                         small_on_model_thread=self.small_on_model_thread)  # fmt: skip
        unit.start()
        return unit

    def _failed(self, name: str, error: str, report: ReloadReport) -> None:
        report.failed[name] = error
        self.errors[name] = error
        still = " (the running version keeps serving)" if name in self.units else ""
        logger.error("model %s cannot be loaded: %s%s", name, error, still)
        if self.observer:
            self.observer.load_failed(name, error)

    def _retire(self, unit: ModelUnit) -> None:
        """Drain and stop an old unit in the background; its requests in progress finish on it."""
        task = asyncio.get_running_loop().create_task(unit.drain(self.settings.drain_seconds))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def close(self) -> None:
        """Stop every unit (uvicorn has drained the requests by now) and release the threads."""
        units = list(self.units.values())
        self.units.clear()
        await asyncio.gather(*(u.drain(0.0) for u in units), *self._draining)
        self._loader.shutdown(wait=False, cancel_futures=True)  # no wait for an unpickle in progress
        self.model_thread.shutdown(wait=True)


@asynccontextmanager
async def open_model(settings: Settings) -> AsyncIterator[ModelUnit]:
    """The default model of `settings`, loaded and warm, for work without a server (command lines, Ray actors):
    small images are decoded on the event loop, beside the model thread, which is the busy one here."""
    repository = ModelRepository(settings, small_on_model_thread=False)
    try:
        await repository.start()
        yield repository.default()
    finally:
        await repository.close()
