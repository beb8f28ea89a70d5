"""Prometheus metrics: one registry per app, fed by one ASGI middleware (HTTP answers) and by the core, which
reports batches, predictions and model loads through the Observer protocol.

Hot-path cost: a counter increment and a histogram observation per request and per batch, on label children
cached after first use. Label values are bounded: `route` is the matched route's template from its rule
(app/api/policy.py: `/models/{name}/predict`, `/static/{path}`; never the raw path; `unmatched` for 404s), `model`
is a served model's name (from its files, never from a client), and `label` is one of a model's classes.
"""

from __future__ import annotations

import os
import time
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.policy import UNMATCHED, rule_of

if TYPE_CHECKING:
    from app.core.budget import MemoryBudget
    from app.core.repository import ModelRepository
    from app.core.unit import ModelUnit

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
MODEL_HEADER = b"x-model-name"

# No `*_created` series next to every counter and histogram: noise on dashboards. (A process-wide switch.)
disable_created_metrics()  # type: ignore[no-untyped-call]


def powers_of_two(limit: int) -> list[float]:
    buckets = [1.0]
    while buckets[-1] < limit:
        buckets.append(buckets[-1] * 2)
    return buckets


class QueueDepth(Collector):
    """learnserve_queue_depth{model}, read from the repository at scrape time: free on the hot path."""

    def __init__(self) -> None:
        self.repository: ModelRepository | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "learnserve_queue_depth", "Images queued for the model or in its running batch", labels=["model"]
        )
        for name, unit in sorted((self.repository.units if self.repository else {}).items()):
            family.add_metric([name], unit.batcher.depth)
        yield family


class BudgetInUse(Collector):
    """learnserve_memory_budget_bytes{kind="in_use|peak|limit"}: the memory budget, read at scrape time."""

    def __init__(self) -> None:
        self.budget: MemoryBudget | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "learnserve_memory_budget_bytes",
            "Bytes requests hold (bodies, images being decoded, inputs waiting): in use now, peak, and the limit",
            labels=["kind"],
        )
        if self.budget:
            for kind in ("in_use", "peak", "limit"):
                family.add_metric([kind], getattr(self.budget, kind))
        yield family


class Metrics:
    """Every metric /metrics exposes; the names and HELP texts are the documentation (README: Metrics)."""

    def __init__(self, max_batch_size: int) -> None:
        # Several server processes (LEARNSERVE_WORKERS, app/api/workers.py): every value goes to files shared by
        # them, and /metrics reads them all (`exposition`); the process_* and python_* series are per process and
        # would describe whichever answered, so they are left out then.
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = r = CollectorRegistry()
        if not self.multiprocess:
            for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                r.register(standard)  # CPU, memory, open files, Python version, GC: the usual process metrics
        labels = ["method", "route", "status", "model"]
        self.requests = Counter("learnserve_requests", "HTTP requests answered", labels, registry=r)
        self.request_seconds = Histogram(
            "learnserve_request_duration_seconds", "Time from request to the end of the answer", labels,
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.predictions = Counter(
            "learnserve_predictions", "Labels given, by model and label (one per image; a multi-label image gives those over its threshold)", ["model", "label"],
            registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "learnserve_batch_size", "Images per forward pass", ["model"],
            buckets=powers_of_two(max_batch_size), registry=r,
        )  # fmt: skip
        self.inference_seconds = Histogram(
            "learnserve_inference_seconds", "Seconds per batch on the model thread: the forward pass, batch "
            "transforms, and decoding the batch's small images", ["model"],
            buckets=INFERENCE_BUCKETS, registry=r,
        )  # fmt: skip
        self.explanations = Counter(
            "learnserve_explanations",
            "Grad-CAM explanations answered (/explain), by model",
            ["model"],
            registry=r,
        )
        self.explain_seconds = Histogram(
            "learnserve_explain_seconds", "Seconds per explanation: decoding, the forward and backward pass on the "
            "model thread, and drawing the overlay", ["model"], buckets=INFERENCE_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_depth = QueueDepth()
        self.budget = BudgetInUse()
        if (
            self.multiprocess
        ):  # collectors see one process: gauges in the shared files instead, set every second
            self.queue_gauge = Gauge(
                "learnserve_queue_depth", "Images queued for the model or in its running batch", ["model"],
                registry=r, multiprocess_mode="livesum",
            )  # fmt: skip
            self.budget_gauge = Gauge(
                "learnserve_memory_budget_bytes", "Bytes requests hold (bodies, images being decoded, inputs "
                "waiting): in use now, peak, and the limit (summed over the server's processes)", ["kind"],
                registry=r, multiprocess_mode="livesum",
            )  # fmt: skip
        else:
            r.register(self.queue_depth)
            r.register(self.budget)
        self.model_load_seconds = Gauge(
            "learnserve_model_load_seconds", "Seconds to verify, load and warm the model's current version",
            ["model"], registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.model_info = Gauge(
            "learnserve_model_info", "The version being served of each model (value 1)",
            ["model", "version", "sha256", "arch", "backend", "device", "classes", "kind"], registry=r,
            multiprocess_mode="livemax",
        )  # fmt: skip
        self.reload_failures = Counter(
            "learnserve_model_reload_failures", "Model files that failed verification or loading", ["model"],
            registry=r,
        )  # fmt: skip
        self.server_errors = Counter(
            "learnserve_server_errors", "Requests that failed with a server fault (an unexpected exception, "
            "answered 500 internal_error and logged with the request ID)", ["route"], registry=r,
        )  # fmt: skip
        self._info: dict[str, tuple[str, ...]] = {}  # model -> its info labels, to remove on swap
        self._request_children: dict[tuple[str, str, str, str], tuple[Counter, Histogram]] = {}

    def exposition(self) -> bytes:
        """The text /metrics answers: this registry, or with several processes every process's values merged."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged)

    def refresh(self) -> None:
        """Several processes: this process's queue depths and budget into the shared gauges (every second)."""
        for family in self.queue_depth.collect():
            for sample in family.samples:
                self.queue_gauge.labels(*sample.labels.values()).set(sample.value)
        for family in self.budget.collect():
            for sample in family.samples:
                self.budget_gauge.labels(*sample.labels.values()).set(sample.value)

    def watch(self, repository: ModelRepository) -> None:
        self.queue_depth.repository = repository

    def watch_budget(self, budget: MemoryBudget) -> None:
        self.budget.budget = budget

    # -- the core's Observer ----------------------------------------------------------------------------
    def batch_done(self, model: str, size: int, seconds: float) -> None:
        self.batch_size.labels(model).observe(size)
        self.inference_seconds.labels(model).observe(seconds)

    def predicted(self, model: str, labels: Iterable[str]) -> None:
        for label, n in Tally(labels).items():
            self.predictions.labels(model, label).inc(n)

    def model_loaded(self, unit: ModelUnit) -> None:
        self.model_unloaded(unit.name)
        m = unit.manifest
        info = (unit.name, unit.version, unit.file.sha256, m.arch, unit.backend.kind, unit.backend.device,
                str(len(unit.classes)), m.kind)  # fmt: skip
        self.model_info.labels(*info).set(1)
        self._info[unit.name] = info
        self.model_load_seconds.labels(unit.name).set(unit.load_seconds)

    def model_unloaded(self, model: str) -> None:
        if old := self._info.pop(model, None):
            if (
                self.multiprocess
            ):  # the shared files keep a removed series (remove() warns): 0 says it is gone
                self.model_info.labels(*old).set(0)
                self.queue_gauge.labels(model).set(0)
            else:
                self.model_info.remove(*old)

    def load_failed(self, model: str, error: str) -> None:
        self.reload_failures.labels(model).inc()

    # -- the HTTP edge ----------------------------------------------------------------------------------
    def observe_request(self, method: str, route: str, status: int, model: str, seconds: float) -> None:
        key = (method, route, str(status), model)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(*key),
                self.request_seconds.labels(*key),
            )
        children[0].inc()
        children[1].observe(seconds)


class HttpMetrics:
    """Counts and times every HTTP answer by method, route template, status and the model that answered."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless an answer starts: an exception escaping the app becomes a 500
        model = ""

        async def send_and_note(message: Message) -> None:
            nonlocal status, model
            if message["type"] == "http.response.start":
                status = message["status"]
                model = next((v.decode() for k, v in message.get("headers", ()) if k == MODEL_HEADER), "")
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            seconds = time.perf_counter() - started
            rule = rule_of(scope)
            route = rule.name if rule is not None else UNMATCHED
            self.metrics.observe_request(scope["method"], route, status, model, seconds)
