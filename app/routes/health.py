"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import ServiceDep
from app.errors import NotReady
from app.schemas import HealthResponse, error_responses

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", summary="The process answers")
async def live() -> HealthResponse:
    return HealthResponse(status="alive")


@router.get(
    "/ready",
    summary="The model is loaded and warm, and the server is not draining",
    responses=error_responses(503),
)
async def ready(service: ServiceDep) -> HealthResponse:
    if service.status.draining:
        raise NotReady("The server is shutting down.")
    if not service.status.ready:
        raise NotReady("The model is still loading.")
    return HealthResponse(status="ready")
