"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import RepositoryDep, ServerStateDep
from app.api.policy import Key, policy
from app.api.schemas import HealthResponse, error_responses
from app.core.errors import NotReady

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", summary="The process answers")
@policy(Key.NONE)
async def live() -> HealthResponse:
    return HealthResponse(status="alive")


def check_ready(state: ServerStateDep, repository: RepositoryDep) -> None:
    """The one readiness rule, for /health/ready and /v2/health/ready."""
    if state.draining:
        raise NotReady("The server is shutting down.")
    if not state.started:
        raise NotReady("The models are still loading.")
    if not repository.ready:
        raise NotReady("No model is loaded.")


@router.get(
    "/ready",
    summary="At least one model is loaded and warm, and the server is not draining",
    responses=error_responses(503),
)
@policy(Key.NONE)
async def ready(state: ServerStateDep, repository: RepositoryDep) -> HealthResponse:
    check_ready(state, repository)
    return HealthResponse(status="ready")
