"""The FastAPI application: settings in, models loaded once in the lifespan, middleware, routes and handlers.

Run with `python -m app serve` (graceful drain on SIGTERM, reload on SIGHUP), or serve the factory with
`uvicorn --factory app.main:create_app`: nothing is built at import.

The core (app/core: decoding, backends, batcher, one unit per model, the repository) knows nothing of HTTP; the
edge (app/api: routes, middleware, error table, schemas, metrics, security) calls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.api import errors
from app.api.capturing import Capture
from app.api.deps import ServerState
from app.api.inflight import InFlightLimit
from app.api.limits import BodyGuard
from app.api.metrics import HttpMetrics, Metrics
from app.api.policy import PolicyMiddleware, RoutePolicies
from app.api.request_id import HEADER as REQUEST_ID_HEADER
from app.api.request_id import RequestIdMiddleware
from app.api.routes import admin, demo, docs, explain, feedback, health, models, predict, prometheus, v2
from app.api.security import KeyGuard, document_keys
from app.config import Settings
from app.core.budget import MemoryBudget
from app.core.errors import ModelLoadError
from app.core.explain_service import Explainer
from app.core.repository import ModelRepository

logger = logging.getLogger("learnserve")

VERSION = "0.2.0"
DESCRIPTION = """Classify images with exported fastai learners.

Upload an image to **POST /predict** (multipart field `file`), or several to **POST /predict/batch**
(repeated field `files`); with several models, name one: **POST /models/{name}/predict** (GET /models lists them).
Every error answers `{"detail": "...", "code": "..."}`; the Open Inference Protocol endpoints under **/v2** answer
errors as `{"error": "..."}`. Every answer carries an `X-Request-ID`, every prediction `X-Model-Name` and
`X-Model-Version`. Try a model in a browser at [/](/); Prometheus metrics are at /metrics. With capture on
(LEARNSERVE_CAPTURE_DIR), **POST /feedback** takes the right label of an answer by its `X-Request-ID`.
"""


async def watch(repository: ModelRepository, seconds: float) -> None:
    """LEARNSERVE_WATCH_SECONDS: rescan now and then (a rescan of unchanged files costs a few stat calls)."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await repository.reload("watch")
        except Exception:  # never let one bad rescan end the watching
            logger.exception("the model rescan failed; the next one runs in %gs", seconds)


async def refresh(metrics: Metrics, seconds: float = 1.0) -> None:
    """Several processes: copy this process's queue depths and budget into the shared gauges now and then (the
    hot path stays free of it)."""
    while True:
        try:
            metrics.refresh()
        except Exception:  # a gauge left stale for a second is better than one frozen for good
            logger.exception("the metrics refresh failed; the next one runs in %gs", seconds)
        await asyncio.sleep(seconds)


def create_app(settings: Settings | None = None, state: ServerState | None = None) -> FastAPI:
    settings = settings or Settings()
    state = state or ServerState()
    metrics = Metrics(settings.max_batch_size)
    budget = MemoryBudget(settings.max_inflight_bytes, settings.memory_wait_seconds)
    metrics.watch_budget(budget)
    capture = Capture(settings, metrics.registry) if settings.capture_dir is not None else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        repository = ModelRepository(settings, metrics, budget)
        metrics.watch(repository)
        try:
            await repository.start()
        except ModelLoadError as e:
            await repository.close()
            logger.error("cannot start: %s", e)
            raise
        loop = asyncio.get_running_loop()
        background: set[asyncio.Task[Any]] = set()

        def on_sighup() -> None:
            task = loop.create_task(repository.reload("SIGHUP"))
            background.add(task)
            task.add_done_callback(background.discard)

        with contextlib.suppress(
            NotImplementedError, RuntimeError, ValueError
        ):  # not the main thread: no signals
            loop.add_signal_handler(signal.SIGHUP, on_sighup)
        watcher = (
            loop.create_task(watch(repository, settings.watch_seconds)) if settings.watch_seconds else None
        )
        if capture is not None:
            capture.store.start()
            logger.info("capture on: keeping %s in %s (README: Improving the model from traffic)",
                        capture.policy, settings.capture_dir)  # fmt: skip
        refresher = loop.create_task(refresh(metrics)) if metrics.multiprocess else None
        state.started = True
        names = ", ".join(f"{u.name} ({u.version}, {u.backend.device})" for u in repository.units.values())
        logger.info("ready: serving %s", names)
        try:
            explainer = Explainer(settings.max_explains)
            yield {"repository": repository, "server": state, "settings": settings, "metrics": metrics,
                   "explainer": explainer, "capture": capture}  # fmt: skip
        finally:
            state.started = False
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)
            for task in (watcher, refresher):
                if task:
                    task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await repository.close()
            if capture is not None:
                await asyncio.to_thread(capture.store.close)  # what is queued is written first

    app = FastAPI(
        title="learnserve",
        description=DESCRIPTION,
        version=VERSION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )  # /docs and /redoc come from app/api/routes/docs.py: their assets are served here, not from a CDN
    errors.install(app)
    app.include_router(predict.router)
    app.include_router(explain.router)
    app.include_router(models.router)
    app.include_router(feedback.router)
    app.include_router(v2.router)
    if settings.admin_key:
        app.include_router(admin.router)
    app.include_router(health.router)
    app.include_router(prometheus.router)
    app.include_router(demo.router)
    app.include_router(docs.router)
    app.mount(docs.ASSETS_URL, docs.assets(), name="docs-assets")  # before /static, which would shadow it
    app.mount("/static", demo.static_files(), name="static")

    # Each route declared its policy (key, body limit, error shape) where it is defined; compiled once here.
    policies = RoutePolicies.compile(app.routes, settings, app.openapi_url)
    document_keys(app, policies)
    # Middleware, innermost first: the body limit, the keys (checked before any byte of a body is read), CORS,
    # the limit on requests in progress, metrics, the request ID, so that every answer (a 413, a 401, a preflight)
    # is counted and carries its ID, and outermost the match of the request to its route's rule, which all read.
    app.add_middleware(
        BodyGuard,
        budget=budget,
        timeout=settings.body_timeout_seconds,
        min_rate=settings.min_upload_bytes_per_second,
    )
    app.add_middleware(KeyGuard)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER, "Retry-After", "X-Model-Name", "X-Model-Version"],
            max_age=600,
        )
    app.add_middleware(InFlightLimit, limit=settings.max_requests)
    app.add_middleware(HttpMetrics, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(PolicyMiddleware, policies=policies)
    return app
