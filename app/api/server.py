"""`python -m app serve`: uvicorn with a graceful drain.

On SIGTERM/SIGINT the server first reports not-ready, then uvicorn stops accepting connections, lets in-flight
requests finish (up to LEARNSERVE_DRAIN_SECONDS), runs the lifespan shutdown and exits 0. SIGHUP reloads the
model files (the lifespan installs that handler).
"""

from __future__ import annotations

from types import FrameType

import uvicorn

from app.api.deps import ServerState
from app.api.logs import log_config
from app.api.protocol import with_header_timeout
from app.config import Settings
from app.main import create_app

STARTUP_FAILED = 3


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.state.begin_drain()
        super().handle_exit(sig, frame)
        # uvicorn re-raises the signal after its graceful shutdown, so the process would die "killed by
        # SIGTERM" (exit 143 in a container). We drain completely first, so report a clean exit instead.
        self._captured_signals.clear()


def serve(settings: Settings, host: str, port: int) -> int:
    state = ServerState()
    config = uvicorn.Config(
        create_app(settings, state),
        host=host,
        port=port,
        log_config=log_config(settings.log_level, settings.log_format),
        timeout_graceful_shutdown=settings.drain_seconds,  # type: ignore[arg-type]  # a float works; 0: no wait
        lifespan="on",
        http=with_header_timeout(settings.header_timeout_seconds),
        timeout_keep_alive=5,
    )
    server = DrainingServer(config, state)
    server.run()
    return 0 if server.started else STARTUP_FAILED
