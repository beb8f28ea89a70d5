"""`python -m app serve`: uvicorn with a graceful drain.

On SIGTERM/SIGINT the service first reports not-ready, then uvicorn stops accepting connections, lets
in-flight requests finish (up to LEARNSERVE_DRAIN_SECONDS), runs the lifespan shutdown and exits 0.
"""

from __future__ import annotations

from types import FrameType

import uvicorn

from app.config import Settings
from app.logs import log_config
from app.main import create_app
from app.service import ServiceStatus

STARTUP_FAILED = 3


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, status: ServiceStatus) -> None:
        super().__init__(config)
        self.status = status

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.status.begin_drain()
        super().handle_exit(sig, frame)
        # uvicorn re-raises the signal after its graceful shutdown, so the process would die "killed by
        # SIGTERM" (exit 143 in a container). We drain completely first, so report a clean exit instead.
        self._captured_signals.clear()


def serve(settings: Settings, host: str, port: int) -> int:
    status = ServiceStatus()
    config = uvicorn.Config(
        create_app(settings, status),
        host=host,
        port=port,
        log_config=log_config(settings.log_level, settings.log_format),
        timeout_graceful_shutdown=int(settings.drain_seconds) or None,
        lifespan="on",
    )
    server = DrainingServer(config, status)
    server.run()
    return 0 if server.started else STARTUP_FAILED
