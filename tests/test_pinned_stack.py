"""The internals of the HTTP stack that app/api leans on, checked by name and behaviour, so that an upgrade that
moves them fails here with a message that says what moved (constraints.txt pins the versions tested)."""

from __future__ import annotations

import asyncio
import inspect
import signal
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http import httptools_impl

from app.api.deps import ServerState
from app.api.protocol import HeaderDeadlineProtocol, with_header_timeout
from app.api.server import DrainingServer

ROOT = Path(__file__).resolve().parent.parent
PINNED = ("fastapi", "starlette", "uvicorn", "httptools", "python-multipart", "pydantic", "pydantic-settings",
          "prometheus-client")  # fmt: skip


def test_the_http_stack_is_pinned() -> None:
    pins = dict(
        line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line
    )
    missing = [name for name in PINNED if name not in pins]
    assert not missing, f"constraints.txt pins no version of {missing}"


def test_uvicorn_still_re_raises_the_captured_signals_our_drain_clears() -> None:
    """app/api/server.py clears Server._captured_signals so a drained SIGTERM exits 0, not 143."""
    source = inspect.getsource(uvicorn.Server.capture_signals)
    assert "self._captured_signals" in source, (
        "uvicorn.Server.capture_signals no longer re-raises from _captured_signals: "
        "revisit DrainingServer.handle_exit in app/api/server.py"
    )
    server = DrainingServer(uvicorn.Config(FastAPI()), ServerState())
    assert isinstance(vars(server).get("_captured_signals"), list), "uvicorn.Server lost _captured_signals"
    server.handle_exit(signal.SIGTERM, None)
    assert server._captured_signals == []
    assert server.state.draining


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5000)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def test_the_header_deadline_protocol_still_fits_uvicorns_httptools_protocol() -> None:
    """app/api/protocol.py subclasses HttpToolsProtocol and relies on its hooks and its loop/transport/logger."""
    hooks = ("connection_made", "on_message_begin", "on_headers_complete", "connection_lost")
    missing = [h for h in hooks if not callable(getattr(httptools_impl.HttpToolsProtocol, h, None))]
    assert not missing, f"uvicorn's HttpToolsProtocol lost {missing}: revisit app/api/protocol.py"
    assert issubclass(with_header_timeout(1.0), HeaderDeadlineProtocol)

    async def scenario() -> None:
        config = uvicorn.Config(FastAPI(), http=with_header_timeout(30.0))
        config.load()
        state = uvicorn.server.ServerState()
        protocol = config.http_protocol_class(config=config, server_state=state, app_state={})
        transport = FakeTransport()
        protocol.connection_made(transport)
        for attribute in ("loop", "transport", "logger"):
            assert hasattr(protocol, attribute), f"HttpToolsProtocol no longer sets self.{attribute}"
        assert protocol._header_timer is not None, "the header deadline was not armed on connection"
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert protocol._header_timer is None, "complete headers did not disarm the deadline"
        protocol.connection_lost(None)
        late = config.http_protocol_class(config=config, server_state=state, app_state={})
        quiet = FakeTransport()
        late.connection_made(quiet)
        late._expired()  # what the timer calls when the deadline passes
        assert quiet.closed
        late.connection_lost(None)

    asyncio.run(scenario())
