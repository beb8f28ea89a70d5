"""`python -m app serve`: uvicorn with a graceful drain.

On SIGTERM/SIGINT the server first reports not-ready, then uvicorn stops accepting connections, lets in-flight
requests finish (up to LEARNSERVE_DRAIN_SECONDS), runs the lifespan shutdown and exits 0. SIGHUP reloads the
model files (the lifespan installs that handler). With LEARNSERVE_WORKERS > 1 a supervisor runs that many such
processes on the one socket (app/api/workers.py).
"""

from __future__ import annotations

import logging
import logging.config
import sys
from types import FrameType

import uvicorn

from app.api.deps import ServerState
from app.api.logs import log_config
from app.api.protocol import with_header_timeout
from app.api.workers import serve_workers
from app.config import Settings
from app.core.process_plan import OVERSUBSCRIBED, Oversubscribed, available_cores, memory_limit, plan
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


def build_server(
    settings: Settings, state: ServerState, host: str = "127.0.0.1", port: int = 8000
) -> DrainingServer:
    """One server process: the app, uvicorn's settings, the drain (under a supervisor: its socket, not host:port)."""
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
    return DrainingServer(config, state)


def serve(settings: Settings, host: str, port: int) -> int:
    """One process, or LEARNSERVE_WORKERS of them under a supervisor (app/api/workers.py)."""
    try:
        chosen = plan(settings, available_cores(), memory_limit())
    except Oversubscribed as e:
        print(f"error: {e}", file=sys.stderr)
        return OVERSUBSCRIBED
    logging.config.dictConfig(log_config(settings.log_level, settings.log_format))  # uvicorn applies it again
    logging.getLogger("learnserve").info("%d server process(es), %d torch thread(s) each: %s", chosen.workers,
                                         chosen.threads, chosen.why)  # fmt: skip
    if chosen.workers > 1:
        return serve_workers(
            settings, host, port, chosen, log_config(settings.log_level, settings.log_format)
        )
    server = build_server(
        settings.model_copy(update={"torch_threads": chosen.threads}), ServerState(), host, port
    )
    server.run()
    return 0 if server.started else STARTUP_FAILED
