"""GET /metrics: the app's Prometheus registry in the text exposition format."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.metrics import Metrics

router = APIRouter(tags=["health"])


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.state.metrics
    return metrics


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
)
def metrics(
    metrics: Annotated[Metrics, Depends(get_metrics)],
) -> Response:  # sync: reads /proc, runs in a thread
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
