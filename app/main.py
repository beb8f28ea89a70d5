"""The FastAPI application: settings in, model loaded once in the lifespan, routes and error handlers wired.

Run with `python -m app serve` (graceful drain on SIGTERM) or `uvicorn app.main:app`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import torch
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from app import handlers
from app.batcher import Batcher
from app.config import Settings
from app.errors import ModelLoadError
from app.limits import BodySizeLimit
from app.predictor import Predictor
from app.routes import health, metadata, predict
from app.service import Service, ServiceStatus

logger = logging.getLogger("learnserve")

DESCRIPTION = """Classify images with an exported fastai learner.

Upload an image to **POST /predict** (multipart field `file`), or several to **POST /predict/batch**
(repeated field `files`). Every error answers `{"detail": "...", "code": "..."}`.
"""


def load_service(settings: Settings, status: ServiceStatus) -> Service:
    """Verify, load and warm the model (blocking: runs in a worker thread at startup)."""
    started = time.perf_counter()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    predictor = Predictor.load(settings.model_path, settings.device, settings.model_sha256)
    predictor.warm_up()
    status.load_seconds = time.perf_counter() - started
    batcher = Batcher(predictor.predict, settings.max_batch_size, settings.max_wait_ms, settings.max_queue)
    return Service(settings, predictor, batcher, status)


def create_app(settings: Settings | None = None, status: ServiceStatus | None = None) -> FastAPI:
    settings = settings or Settings()
    status = status or ServiceStatus()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        try:
            service = await run_in_threadpool(load_service, settings, status)
        except ModelLoadError as e:
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
            yield {"service": service}
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
    limits = {"/predict": settings.max_upload_bytes + 64 * 1024}
    app.add_middleware(BodySizeLimit, limit_for=lambda path: limits.get(path, settings.max_request_bytes))
    app.include_router(predict.router)
    app.include_router(health.router)
    app.include_router(metadata.router)
    return app


app = create_app()  # for `uvicorn app.main:app`; nothing loads until the lifespan starts
