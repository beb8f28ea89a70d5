"""GET /metrics: the app's Prometheus registry in the text exposition format."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.metrics import Metrics
from app.api.policy import Key, policy

router = APIRouter(tags=["health"])

DESCRIPTION = """Prometheus text format. Besides the usual `process_*` and `python_*` series:

| metric | type | labels |
|---|---|---|
| `learnserve_requests_total` | counter | `method`, `route` (template), `status`, `model` (the model that answered, or empty) |
| `learnserve_request_duration_seconds` | histogram | as above |
| `learnserve_predictions_total` | counter | `model`, `label` |
| `learnserve_batch_size` | histogram | `model`: images per forward pass |
| `learnserve_inference_seconds` | histogram | `model`: seconds per forward pass |
| `learnserve_explanations_total` | counter | `model`: explanations answered (/explain) |
| `learnserve_explain_seconds` | histogram | `model`: seconds per explanation |
| `learnserve_queue_depth` | gauge | `model`: images queued or in the running batch |
| `learnserve_model_load_seconds` | gauge | `model`: seconds to verify, load and warm its current version |
| `learnserve_model_info` | gauge (1) | `model`, `version`, `sha256`, `arch`, `backend`, `device`, `classes`, `kind` |
| `learnserve_model_reload_failures_total` | counter | `model`: files that failed verification or loading |
| `learnserve_server_errors_total` | counter | `route`: requests that failed with a server fault (500 `internal_error`, logged with the request ID) |
| `learnserve_capture_total` | counter | `outcome`: written, duplicate, dropped_full, failed, opted_out (with LEARNSERVE_CAPTURE_DIR) |
| `learnserve_capture_evicted_files_total`, `learnserve_capture_evicted_bytes_total` | counter | dropped to stay under CAPTURE_MAX_MB |
| `learnserve_capture_disk_bytes` | gauge | bytes under CAPTURE_DIR |
| `learnserve_feedback_total` | counter | `model`, `version`, `verdict` (agree, disagree) |
| `learnserve_feedback_disagreement` | gauge | `model`, `version`: share of feedback that disagreed |
"""


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.state.metrics
    return metrics


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description=DESCRIPTION,
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
)
@policy(Key.NONE)
def metrics(
    metrics: Annotated[Metrics, Depends(get_metrics)],
) -> Response:  # sync: reads /proc, runs in a thread
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
