"""POST /admin/reload: rescan the model folder, as SIGHUP does. Exists only when LEARNSERVE_ADMIN_KEY is set;
KeyGuard checks that key before the route runs."""

from __future__ import annotations

import os
import signal
from dataclasses import asdict

from fastapi import APIRouter

from app.api.deps import RepositoryDep, ServerStateDep
from app.api.policy import Key, policy
from app.api.schemas import ReloadResponse

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post(
    "/reload",
    summary="Rescan the model folder: load new files, swap changed ones in, unload removed ones",
    description="A file that fails verification or loading is reported under `failed` (and in GET /models) "
    "and its running version keeps serving. Requests in flight finish on the version they started on. With "
    "several server processes (LEARNSERVE_WORKERS) the answer is this process's; every other one reloads too, "
    "signalled through the supervisor, within a moment.",
)
@policy(Key.ADMIN)
async def reload(repository: RepositoryDep, state: ServerStateDep) -> ReloadResponse:
    done = await repository.reload("POST /admin/reload")
    if state.supervisor_pid is not None and os.getppid() == state.supervisor_pid:
        os.kill(state.supervisor_pid, signal.SIGUSR1)  # the supervisor sends SIGHUP to every process
    return ReloadResponse(**asdict(done))
