"""Prometheus metrics: one registry per app, fed by one ASGI middleware and the batcher's hooks.

Hot-path cost is one counter increment and one histogram observation per request and per batch. Label values
are bounded: `route` is the route's template (`/v2/models/{name}/infer`, never the raw path; `unmatched` for
404s), `label` is one of the model's classes.
"""

from __future__ import annotations

import re
import time
from collections import Counter as Tally
from collections.abc import Callable, Sequence

from fastapi import FastAPI
from PIL import Image
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.batcher import PredictFn
from app.predictor import Prediction
from app.service import Service

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
UNMATCHED = "unmatched"

# No `*_created` series next to every counter and histogram: noise on dashboards. (A process-wide switch.)
disable_created_metrics()  # type: ignore[no-untyped-call]


def powers_of_two(limit: int) -> list[float]:
    buckets = [1.0]
    while buckets[-1] < limit:
        buckets.append(buckets[-1] * 2)
    return buckets


class Metrics:
    def __init__(self, max_batch_size: int) -> None:
        self.registry = r = CollectorRegistry()
        for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(standard)  # CPU, memory, open files, Python version, GC: the usual process metrics
        self.requests = Counter(
            "learnserve_requests", "HTTP requests answered", ["method", "route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "learnserve_request_duration_seconds", "Time from request to the end of the answer",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.predictions = Counter(
            "learnserve_predictions", "Images classified, by predicted label", ["label"], registry=r
        )
        self.batch_size = Histogram(
            "learnserve_batch_size",
            "Images per forward pass",
            buckets=powers_of_two(max_batch_size),
            registry=r,
        )
        self.inference_seconds = Histogram(
            "learnserve_inference_seconds", "Seconds per forward pass, preprocessing included",
            buckets=INFERENCE_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "learnserve_queue_depth", "Images queued for the model or in the running batch", registry=r
        )
        self.model_load_seconds = Gauge(
            "learnserve_model_load_seconds", "Seconds to verify, load and warm the model", registry=r
        )
        self.model = Info("learnserve_model", "The model being served", registry=r)

    def counting(self, predict: PredictFn) -> PredictFn:
        """Wrap the batcher's predict function so every answer counts towards its label."""

        def predict_and_count(images: Sequence[Image.Image]) -> list[Prediction]:
            results = predict(images)
            for label, n in Tally(p.label for p in results).items():
                self.predictions.labels(label).inc(n)
            return results

        return predict_and_count

    def watch(self, service: Service) -> None:
        """Read the batcher, the load time and the model's identity from the service built at startup."""
        batcher = service.batcher
        self.queue_depth.set_function(lambda: batcher.depth)  # read at scrape time: free on the hot path
        batcher.on_batch = self.observe_batch
        self.model_load_seconds.set(service.status.load_seconds)
        manifest = service.predictor.manifest
        self.model.info(
            {
                "name": service.model_name,
                "sha256": manifest.sha256 if manifest else "",
                "arch": manifest.arch if manifest else "",
                "device": str(service.predictor.device),
                "classes": str(len(service.predictor.classes)),
            }
        )

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference_seconds.observe(seconds)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.request_seconds.labels(*labels).observe(seconds)


class RouteTemplates:
    """The route template of a request. The router records the matched route in the scope; for answers given
    before routing (a 413 from the body limit, a CORS preflight) the path is matched against the API's paths."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._paths: list[tuple[re.Pattern[str], str]] | None = None

    def __call__(self, scope: Scope) -> str:
        route = scope.get("route")
        template = getattr(route, "path_format", None) or getattr(route, "path", None)
        if isinstance(template, str):
            return template
        if self._paths is None:
            self._paths = [(compile_path(path)[0], path) for path in self.app.openapi()["paths"]]
        return next((path for regex, path in self._paths if regex.match(scope["path"])), UNMATCHED)


class HttpMetrics:
    """Counts and times every HTTP answer by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics, route_of: Callable[[Scope], str]) -> None:
        self.app = app
        self.metrics = metrics
        self.route_of = route_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless an answer starts: an exception escaping the app becomes a 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            seconds = time.perf_counter() - started
            self.metrics.observe_request(scope["method"], self.route_of(scope), status, seconds)
