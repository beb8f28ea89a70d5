"""The FastAPI application: settings in, model loaded once in the lifespan, routes and error handlers wired.

Run with `python -m app serve` (graceful drain on SIGTERM) or `uvicorn app.main:app`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import torch
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app import handlers
from app.batcher import Batcher, model_thread
from app.config import Settings
from app.errors import ModelLoadError
from app.limits import BodySizeLimit
from app.metrics import HttpMetrics, Metrics, RouteTemplates
from app.predictor import Predictor
from app.request_id import HEADER as REQUEST_ID_HEADER
from app.request_id import RequestIdMiddleware
from app.routes import demo, health, metadata, predict, prometheus, v2
from app.schemas import error_responses
from app.security import ApiKeyGuard
from app.service import Service, ServiceStatus

logger = logging.getLogger("learnserve")

DESCRIPTION = """Classify images with an exported fastai learner.

Upload an image to **POST /predict** (multipart field `file`), or several to **POST /predict/batch**
(repeated field `files`). Every error answers `{"detail": "...", "code": "..."}`; the Open Inference
Protocol endpoints under **/v2** answer errors as `{"error": "..."}`. When the server has an API key, send it as
`Authorization: Bearer KEY` or `X-API-Key: KEY`. Every answer carries an `X-Request-ID`. Try the model in a browser
at [/](/); Prometheus metrics are at /metrics.
"""


def load_service(
    settings: Settings, status: ServiceStatus, metrics: Metrics, executor: ThreadPoolExecutor
) -> Service:
    """Verify, load and warm the model (blocking: runs at startup on `executor`, the thread that will serve it)."""
    started = time.perf_counter()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    predictor = Predictor.load(settings.model_path, settings.device, settings.model_sha256)
    predictor.warm_up()
    status.load_seconds = time.perf_counter() - started
    predict = metrics.counting(predictor.predict)
    batch_size = settings.batch_size_for(predictor.input_size)
    batcher = Batcher(predict, batch_size, settings.max_wait_ms, settings.max_queue, executor)
    service = Service(settings, predictor, batcher, status)
    metrics.watch(service)
    return service


def body_limit(settings: Settings) -> Callable[[str], int]:
    """Per-path request body limits for BodySizeLimit."""
    single = settings.max_upload_bytes + 64 * 1024

    def limit_for(path: str) -> int:
        if path == "/predict":
            return single
        if path.startswith("/v2/"):
            return settings.max_infer_bytes
        return settings.max_request_bytes

    return limit_for


def create_app(settings: Settings | None = None, status: ServiceStatus | None = None) -> FastAPI:
    settings = settings or Settings()
    status = status or ServiceStatus()
    metrics = Metrics(settings.max_batch_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        executor = model_thread()
        try:
            loop = asyncio.get_running_loop()
            service = await loop.run_in_executor(executor, load_service, settings, status, metrics, executor)
        except ModelLoadError as e:
            executor.shutdown()
            logger.error("cannot start: %s", e)
            raise
        service.batcher.start()
        status.ready = True
        manifest = service.predictor.manifest
        logger.info(
            "model %s ready on %s in %.2fs (%d classes)",
            manifest.name if manifest else settings.model_path, service.predictor.device,
            status.load_seconds, len(service.predictor.classes),
        )  # fmt: skip
        try:
            yield {"service": service, "metrics": metrics}
        finally:
            status.ready = False
            await service.batcher.stop()

    app = FastAPI(
        title="learnserve",
        description=DESCRIPTION,
        version="0.1.0",
        lifespan=lifespan,
    )
    handlers.install(app)
    # Middleware, innermost first: the body limit, CORS, metrics, and the request ID outermost, so that every
    # answer (a 413 from the limit, a CORS preflight) is counted and carries its ID.
    app.add_middleware(BodySizeLimit, limit_for=body_limit(settings))
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER, "Retry-After"],
            max_age=600,
        )
    app.add_middleware(HttpMetrics, metrics=metrics, route_of=RouteTemplates(app))
    app.add_middleware(RequestIdMiddleware)

    app.include_router(predict.router, dependencies=[ApiKeyGuard], responses=error_responses(401))
    app.include_router(metadata.router, dependencies=[ApiKeyGuard], responses=error_responses(401))
    app.include_router(v2.router)  # guards its model routes itself; its health and server metadata stay open
    app.include_router(health.router)
    app.include_router(prometheus.router)
    app.include_router(demo.router)
    app.mount("/static", demo.static_files(), name="static")
    return app


app = create_app()  # for `uvicorn app.main:app`; nothing loads until the lifespan starts
