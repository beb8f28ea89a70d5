"""Capture at the HTTP edge: what POST /predict hands to capture after it has its answer, the opt-out header, and
capture's and feedback's Prometheus metrics.

`note` runs on the event loop for every single-image answer when LEARNSERVE_CAPTURE_DIR is set: it remembers the
answer by request ID (for POST /feedback), asks the policy whether to keep the input, and if so hands the bytes and
the answer to the store's queue. No hashing, no JSON, no file access here: the writer thread does those.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.requests import Request

from app.config import Settings
from app.core.capture import Answered, CaptureStore, RecentAnswers
from app.core.capture_policy import CapturePolicy
from app.core.prediction import Answer, ItemError, Prediction
from app.core.unit import ModelUnit

OPT_OUT_HEADER = "X-Capture"  # `X-Capture: off`: this request's input is never kept
_OPT_OUT_KEY = OPT_OUT_HEADER.lower().encode()
MIB = 1024 * 1024
# The answer's fields a record keeps: the compact ones (a kind with a bulky answer keeps only its kind).
RECORDED = frozenset(("kind", "label", "probability", "top", "labels", "threshold", "values", "points"))


class CaptureMetrics:
    """learnserve_capture_*, learnserve_feedback_* (README: Metrics); the store reports through it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.outcomes = Counter(
            "learnserve_capture", "Inputs the capture policy kept, by outcome: written, duplicate (the blob was "
            "already stored), dropped_full (the writer's queue was full), failed (the folder could not be "
            "written), opted_out (X-Capture: off)", ["outcome"], registry=r,
        )  # fmt: skip
        self.evicted_files = Counter(
            "learnserve_capture_evicted_files", "Files dropped, oldest first, to keep CAPTURE_DIR under "
            "CAPTURE_MAX_MB", registry=r,
        )  # fmt: skip
        self.evicted_bytes = Counter("learnserve_capture_evicted_bytes", "Bytes of those files", registry=r)
        self.disk_bytes = Gauge(
            "learnserve_capture_disk_bytes",
            "Bytes under CAPTURE_DIR, as the writer accounts them",
            registry=r,
        )
        self.feedback = Counter(
            "learnserve_feedback", "Feedback received, by model, version and verdict (agree: the answer was "
            "right; disagree: the client named another label)", ["model", "version", "verdict"], registry=r,
        )  # fmt: skip
        self.disagreement = Gauge(
            "learnserve_feedback_disagreement", "Share of feedback that disagreed with the answer, by model and "
            "version", ["model", "version"], registry=r,
        )  # fmt: skip
        self._tally: dict[tuple[str, str], list[int]] = {}  # (model, version) -> [feedback, disagreements]

    def captured(self, outcome: str) -> None:
        self.outcomes.labels(outcome).inc()

    def evicted(self, files: int, size: int) -> None:
        self.evicted_files.inc(files)
        self.evicted_bytes.inc(size)

    def feedback_received(self, model: str, version: str, agrees: bool) -> None:
        self.feedback.labels(model, version, "agree" if agrees else "disagree").inc()
        tally = self._tally.setdefault((model, version), [0, 0])
        tally[0] += 1
        tally[1] += not agrees
        self.disagreement.labels(model, version).set(tally[1] / tally[0])


class Capture:
    """The policy, the answers remembered for feedback, and the store, for one app."""

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        assert settings.capture_dir is not None
        self.policy = CapturePolicy.parse(settings.capture)
        self.recent = RecentAnswers(settings.capture_remember)
        self.metrics = CaptureMetrics(registry)
        self.store = CaptureStore(
            settings.capture_dir,
            int(settings.capture_max_mb * MIB),
            int(settings.capture_queue_mb * MIB),
            observer=self.metrics,
        )
        self.metrics.disk_bytes.set_function(lambda: self.store.size)

    def note(
        self, request: Request, unit: ModelUnit, data: bytes, outcome: Answer, body: dict[str, Any]
    ) -> None:
        """Remember this answer for feedback and, if the policy keeps it, queue its input (never blocks)."""
        request_id: str = request.state.request_id
        reason = None
        if any(k == _OPT_OUT_KEY and v.lower() == b"off" for k, v in request.scope["headers"]):
            self.metrics.captured("opted_out")
        else:
            reason = self.policy.reason(outcome, body.get("threshold"))
        captured = reason is not None and self.store.offer(
            data,
            {"request_id": request_id, "time": time.time(), "model": unit.name, "version": unit.version,
             "kind": unit.manifest.kind, "reason": reason,
             "answer": {k: v for k, v in body.items() if k in RECORDED}},
        )  # fmt: skip
        predicted = outcome.label if isinstance(outcome, Prediction) else None
        self.recent.put(
            request_id,
            Answered(unit.name, unit.version, unit.manifest.kind, predicted, unit.classes, captured),
        )


def note(
    request: Request, unit: ModelUnit, data: bytes | ItemError, outcome: Answer, body: dict[str, Any]
) -> None:
    """The predict route's one hook: nothing when capture is off."""
    capture: Capture | None = getattr(request.state, "capture", None)
    if capture is not None and isinstance(data, bytes):
        capture.note(request, unit, data, outcome, body)
