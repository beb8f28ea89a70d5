"""Typed dependencies: routes ask for what the lifespan built (the repository, the server state), never globals."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.core.repository import ModelRepository

READY_FILE = "all-ready"


@dataclass
class ServerState:
    """Started once the models are loaded and warm; draining from SIGTERM on (readiness then answers 503). Under a
    supervisor (LEARNSERVE_WORKERS > 1), its run folder: the supervisor keeps READY_FILE there while every process
    is ready (app/api/workers.py), and signals it for a reload."""

    started: bool = False
    draining: bool = False
    supervisor: Path | None = None
    supervisor_pid: int | None = None

    @property
    def every_process_ready(self) -> bool:
        return self.supervisor is None or (self.supervisor / READY_FILE).exists()

    def begin_drain(self) -> None:
        self.draining = True


# async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per request for a dict lookup.
async def get_repository(request: Request) -> ModelRepository:
    repository: ModelRepository = request.state.repository
    return repository


async def get_server_state(request: Request) -> ServerState:
    state: ServerState = request.state.server
    return state


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]
RepositoryDep = Annotated[ModelRepository, Depends(get_repository)]
ServerStateDep = Annotated[ServerState, Depends(get_server_state)]
