"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import RepositoryDep, ServerState, ServerStateDep
from app.api.policy import Key, policy
from app.api.schemas import HealthResponse, error_responses
from app.core.errors import NotReady
from app.core.repository import ModelRepository
from app.core.unit import ModelUnit

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", summary="The process answers")
@policy(Key.NONE)
async def live() -> HealthResponse:
    return HealthResponse(status="alive")


def check_ready(state: ServerState, repository: ModelRepository, unit: ModelUnit | None = None) -> None:
    """The one readiness rule, for /health/ready, /v2/health/ready and v2 model readiness: the server has started
    and is not draining, a model is loaded, every process of the server is ready, and (asked about one model) that
    model accepts work."""
    if state.draining:
        raise NotReady("The server is shutting down.")
    if not state.started:
        raise NotReady("The models are still loading.")
    if not repository.ready:
        raise NotReady("No model is loaded.")
    if not state.every_process_ready:
        raise NotReady("A server process is starting or being replaced (LEARNSERVE_WORKERS).")
    if unit is not None and not unit.ready:
        raise NotReady(f"Model {unit.name!r} is not accepting work.")


@router.get(
    "/ready",
    summary="At least one model is loaded and warm, and the server is not draining",
    responses=error_responses(503),
)
@policy(Key.NONE)
async def ready(state: ServerStateDep, repository: RepositoryDep) -> HealthResponse:
    check_ready(state, repository)
    return HealthResponse(status="ready")
